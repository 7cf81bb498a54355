"""Review against the eligibility table, fee and training, and changes after confirmation."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from uuid import uuid4

import pytest

from domain.eligibility import Evidence, School
from domain.errors import Conflict, Forbidden, InvalidInput
from domain.levels import Level
from domain.model import Actor, Role
from domain.registration import AttachmentKind, PlanSummary, Registration, Status
from infra.services.registrations import Decision
from tests.builders import (
    L2_CONDITION,
    L2_EVIDENCE,
    attachment,
    candidate,
    entry_level_form,
    resident_id,
    setup_plan,
    staff_of,
    working_years_form,
)

EXPLANATION = attachment(AttachmentKind.WRITTEN_EXPLANATION)


def stored(svc) -> int:
    return svc.recorder.max_notification_id() or 0


@pytest.fixture
def submitted(service):
    iid, pid, code = setup_plan(service)
    rid = service.register(candidate(1), code, working_years_form(1))
    return iid, code, rid


def test_approval_names_a_condition_the_evidence_meets(service, submitted):
    iid, _, rid = submitted
    before = stored(service)
    with pytest.raises(InvalidInput, match="names the eligibility condition"):
        service.review(staff_of(iid), rid, Decision.APPROVED)
    with pytest.raises(InvalidInput, match="condition 2.1 not met: needs 5 years after the level-3"):
        service.review(staff_of(iid), rid, Decision.APPROVED, condition="2.1",
                       evidence=Evidence(prior_level=3, years_since_prior=2))  # fmt: skip
    with pytest.raises(InvalidInput, match="condition 4.1 is for level 4, not 2"):
        service.review(staff_of(iid), rid, Decision.APPROVED, condition="4.1", evidence=L2_EVIDENCE)
    assert stored(service) == before
    service.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    r: Registration = service.repository.get(rid)
    assert r.condition == "2.1"
    event = service.mapper.to_domain_event(service.recorder.select_notifications(start=stored(service), limit=1)[0])
    assert event.evidence.age == 36  # born 1990-01-08, reviewed 2026-03-02: taken from the form


def test_approval_rests_on_what_the_candidate_applied_with(service):
    """What an outside reading of 001 found: a condition resting on a skill certificate or a title was approved with
    neither uploaded, and on more working years than the application form states ("从业年限也需跟个人申请表上工作年限
    一致"; "用对应职称和技能证书报考，一定要上传职称和对应的技能证书"). Each is refused, naming what disagrees."""
    iid, _, code = setup_plan(service)
    bare = [a for a in working_years_form().attachments if a.kind is not AttachmentKind.PRIOR_CERTIFICATE]
    rid = service.register(candidate(2), code, working_years_form(2, holds_prior_certificate=False, attachments=bare))
    declared = service.register(candidate(3), code, working_years_form(3, years_in_occupation=4))
    before = stored(service)
    with pytest.raises(InvalidInput, match="rests on a skill certificate, which the candidate must upload"):
        service.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    with pytest.raises(InvalidInput) as e:
        service.review(staff_of(iid), declared, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    assert e.value.problems == [("evidence.years_since_prior", "5 years, more than the 4 the application form "
                                 "states: the working years must agree with the form (001)")]  # fmt: skip
    assert stored(service) == before
    service.review(staff_of(iid), rid, Decision.RETURNED, "请上传三级证书")
    service.resubmit(candidate(2), rid, working_years_form(2))  # now with the certificate
    service.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)


def test_a_school_certificate_must_agree_with_the_education_on_the_form():
    staff = Actor(id="s", role=Role.INSTITUTION_STAFF, institution_id=uuid4())
    summary = PlanSummary(
        plan_number="1", plan_name="x", institution_name="i", occupation="o", job=None, level=Level.FOUR
    )

    def submitted(education: str) -> Registration:
        kinds = (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD)
        form = entry_level_form(11, basis="education", education=education, attachments=[attachment(k) for k in kinds])
        return Registration.submit(staff, uuid4(), staff.institution_id, summary, form, bytes(32))

    college = Evidence(school=School.HIGHER_VOCATIONAL)
    with pytest.raises(InvalidInput, match="does not agree with the education on the form"):
        submitted("普通高中").approve(staff, "4.3", college, date(2026, 3, 1))
    with pytest.raises(InvalidInput, match=r"\(职业高中\)"):
        submitted("职业高中").approve(staff, "4.3", college, date(2026, 3, 1))
    submitted("职业高中").approve(staff, "4.3", Evidence(school=School.SECONDARY_VOCATIONAL), date(2026, 3, 1))
    submitted("大学专科").approve(staff, "4.3", college, date(2026, 3, 1))


def test_fee_and_training_follow_approval_and_happen_once(service, submitted):
    iid, _, rid = submitted
    with pytest.raises(Conflict, match="follows approval"):
        service.pay_fee(staff_of(iid), rid, "R0001", Decimal("380"))
    service.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    before = stored(service)
    with pytest.raises(InvalidInput) as e:
        service.pay_fee(staff_of(iid), rid, "R?", Decimal("-1.005"))
    assert {f for f, _ in e.value.problems} == {"receipt_number", "amount"}
    with pytest.raises(Forbidden):
        service.pay_fee(candidate(1), rid, "R0001", Decimal("380"))
    with pytest.raises(Conflict, match="open one first"):
        service.complete_training(staff_of(iid), rid, Decimal("40"), attachment(AttachmentKind.TRAINING_CERTIFICATE))
    assert stored(service) == before
    service.pay_fee(staff_of(iid), rid, "R0001", Decimal("380"))
    with pytest.raises(Conflict, match="already paid"):
        service.pay_fee(staff_of(iid), rid, "R0002", Decimal("380"))
    service.open_training_account(staff_of(iid), rid, "acct-1")
    with pytest.raises(InvalidInput, match="completion certificate"):
        service.complete_training(staff_of(iid), rid, Decimal("40"), attachment(AttachmentKind.DIPLOMA))
    service.complete_training(staff_of(iid), rid, Decimal("40"), attachment(AttachmentKind.TRAINING_CERTIFICATE))
    r = service.repository.get(rid)
    assert (r.fee_receipt, r.training_account, r.training_hours) == ("R0001", "acct-1", Decimal("40"))


def test_a_change_after_confirmation_needs_a_written_explanation(service, submitted):
    iid, _, rid = submitted
    before = stored(service)
    with pytest.raises(InvalidInput) as e:
        service.amend(
            staff_of(iid), rid, working_years_form(1, phone="13900139000"), " ", attachment(AttachmentKind.DIPLOMA)
        )
    assert {f for f, _ in e.value.problems} == {"explanation", "explanation_document"}
    with pytest.raises(InvalidInput, match="nothing changed"):
        service.amend(staff_of(iid), rid, working_years_form(1), "录入错误说明", EXPLANATION)
    assert stored(service) == before
    assert service.amend(
        staff_of(iid), rid, working_years_form(1, phone="13900139000"), "手机号录入错误", EXPLANATION
    ) == ["phone"]


def test_of_name_and_id_number_only_one_may_ever_change(service, submitted):
    iid, code, rid = submitted
    form = working_years_form(1)
    new_id = resident_id("440305", form.date_of_birth, 3)  # same birth date and gender, another serial
    with pytest.raises(InvalidInput, match="cannot both change"):
        service.amend(
            staff_of(iid), rid, working_years_form(1, name="考生一", id_number=new_id), "两项都错了", EXPLANATION
        )
    service.amend(staff_of(iid), rid, working_years_form(1, id_number=new_id), "身份证号录入错误", EXPLANATION)
    before = stored(service)
    with pytest.raises(InvalidInput, match="the other already has"):
        service.amend(
            staff_of(iid), rid, working_years_form(1, name="考生一", id_number=new_id), "姓名也错了", EXPLANATION
        )
    assert stored(service) == before
    # The new number is now taken for this plan: the same person cannot register again under it.
    with pytest.raises(Conflict, match="already registered"):
        service.register(candidate(1), code, working_years_form(1, id_number=new_id))
    # Other fields may still change, with the ID number kept as corrected.
    service.amend(
        staff_of(iid), rid, working_years_form(1, phone="13700137000", id_number=new_id), "电话变更", EXPLANATION
    )


def test_an_amendment_cannot_undo_what_the_approval_rests_on(service, submitted):
    """What an outside reading of 000 found: an approved registration amended to a date of birth making the candidate
    14, or to fewer working years than the approval verified, stayed approved, past every check of the review (000
    ①). The approval is checked again on the amended form; what it no longer holds on is refused, storing nothing."""
    iid, _, rid = submitted
    service.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    born = date(2012, 1, 8)
    child = working_years_form(1, id_number=resident_id("440305", born, 1), date_of_birth=born)
    before = stored(service)
    with pytest.raises(InvalidInput, match="approval on condition 2.1 would no longer hold: .*needs age 16 or over"):
        service.amend(staff_of(iid), rid, child, "身份证号录入错误", EXPLANATION)
    with pytest.raises(InvalidInput, match="would no longer hold: 5 years, more than the 4"):
        service.amend(staff_of(iid), rid, working_years_form(1, years_in_occupation=4), "年限录入错误", EXPLANATION)
    assert stored(service) == before
    service.amend(staff_of(iid), rid, working_years_form(1, years_in_occupation=6), "年限录入错误", EXPLANATION)
    assert service.repository.get(rid).status is Status.APPROVED


def test_an_approval_from_before_the_rule_does_not_block_an_amendment_that_breaks_nothing():
    """What a reviewer found: approvals stored before the approval checked the uploads (condition 2.1 with no
    certificate uploaded) could not be amended at all, not even a phone number, and an approved registration
    cannot be returned. Only what the amendment itself breaks is refused."""
    staff = Actor(id="s", role=Role.INSTITUTION_STAFF, institution_id=uuid4())
    summary = PlanSummary(
        plan_number="1", plan_name="x", institution_name="i", occupation="o", job=None, level=Level.TWO
    )
    bare = [a for a in working_years_form().attachments if a.kind is not AttachmentKind.PRIOR_CERTIFICATE]
    form = working_years_form(1, holds_prior_certificate=False, attachments=bare)
    r = Registration.submit(staff, uuid4(), staff.institution_id, summary, form, bytes(32))
    r._approved(staff, "", L2_CONDITION, L2_EVIDENCE.model_copy(update={"age": 36}))  # as stored before the rule
    r.amend(staff, form.model_copy(update={"phone": "13900000000"}), "手机号录入错误", EXPLANATION, date(2026, 3, 2))
    with pytest.raises(InvalidInput, match="would no longer hold: 5 years, more than the 4") as e:
        r.amend(
            staff, form.model_copy(update={"years_in_occupation": 4}), "年限录入错误", EXPLANATION, date(2026, 3, 2)
        )
    assert [f for f, _ in e.value.problems] == ["evidence.years_since_prior"]  # not the upload it always lacked


def test_a_technician_class_student_is_approved_on_years_since_the_certificate_not_working_years():
    """What a reviewer found: condition 2.5 ("取得…证书满2年的…技师班学生") was held to the working years on the form,
    so a student stating 1 year of work could never be approved on a certificate held for 2."""
    staff = Actor(id="s", role=Role.INSTITUTION_STAFF, institution_id=uuid4())
    summary = PlanSummary(
        plan_number="1", plan_name="x", institution_name="i", occupation="o", job=None, level=Level.TWO
    )
    form = working_years_form(1, years_in_occupation=1, education="技工学校")
    r = Registration.submit(staff, uuid4(), staff.institution_id, summary, form, bytes(32))
    r.approve(staff, "2.5", Evidence(prior_level=3, years_since_prior=2, school=School.TECHNICIAN_CLASS_STUDENT,
                                     insured_work_unit=form.work_unit), date(2026, 3, 1))  # fmt: skip
    assert r.status is Status.APPROVED


def test_an_id_number_another_registration_holds_cannot_be_taken(service, submitted):
    iid, code, rid = submitted
    other = working_years_form(2)
    service.register(candidate(2), code, other)
    # candidate 1 "corrects" to candidate 2's number: same birth date needed for a consistent form
    taken = working_years_form(1, id_number=other.id_number, date_of_birth=other.date_of_birth, gender=other.gender)
    before = stored(service)
    with pytest.raises(Conflict, match="already registered for this plan"):
        service.amend(staff_of(iid), rid, taken, "身份证号录入错误", EXPLANATION)
    assert stored(service) == before


def test_the_reviewer_compares_the_insured_work_unit_and_a_different_one_needs_a_work_certificate(service):
    """000 ②: the work unit on the social insurance record against the declared one."""
    iid, _, code = setup_plan(service)
    plain = service.register(candidate(1), code, working_years_form(1))
    with_certificate = service.register(candidate(2), code, working_years_form(2, attachments=[
        *working_years_form(2).attachments, attachment(AttachmentKind.WORK_CERTIFICATE)]))  # fmt: skip
    before = stored(service)
    unrecorded = L2_EVIDENCE.model_copy(update={"insured_work_unit": None})
    with pytest.raises(InvalidInput) as e:
        service.review(staff_of(iid), plain, Decision.APPROVED, condition=L2_CONDITION, evidence=unrecorded)
    assert e.value.problems[0][0] == "evidence.insured_work_unit"
    elsewhere = L2_EVIDENCE.model_copy(update={"insured_work_unit": "广州市另一家公司"})
    with pytest.raises(InvalidInput, match="names 广州市另一家公司, not the declared 深圳市某某科技有限公司: a stamped "
                                           "work certificate from the actual employer is required"):  # fmt: skip
        service.review(staff_of(iid), plain, Decision.APPROVED, condition=L2_CONDITION, evidence=elsewhere)
    assert stored(service) == before
    service.review(staff_of(iid), with_certificate, Decision.APPROVED, condition=L2_CONDITION, evidence=elsewhere)
    service.review(staff_of(iid), plain, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    approved = [service.mapper.to_domain_event(n) for n in service.recorder.select_notifications(before + 1, 10)]
    assert [a.evidence.insured_work_unit for a in approved] == ["广州市另一家公司", "深圳市某某科技有限公司"]
