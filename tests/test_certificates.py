"""Numbering and issuance, data reporting, printing, handover, loss proofs, corrections and
deletion: each rule tried to be broken, the numbering and correction rules under races."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from threading import Barrier
from uuid import uuid4

import pytest

from domain.certificate import (
    Certificate,
    Correction,
    DataStatus,
    Delivery,
    IdDocument,
    LossKind,
    certificate_id,
    counter_id,
)
from domain.certnumber import parse
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.levels import Level
from domain.registration import AttachmentKind
from tests.builders import attachment, resident_id
from tests.lifecycle import (
    ASSOCIATION,
    CENTRE,
    CONFIRM_DAY,
    HR,
    ISSUE_DAY,
    approve_correction,
    approved_cohort,
    card,
    confirmed_exam,
    handed_over_certificates,
    id_check,
    queryable_certificates,
    reject_correction,
    score_and_publish,
    sit_exam,
    staff,
)

FORM = attachment(AttachmentKind.CERTIFICATE_APPLICATION)
EVIDENCE = attachment(AttachmentKind.CORRECTION_EVIDENCE)


def stored(w) -> int:
    return w.certificates.recorder.max_notification_id() or 0


def issued_events(w) -> list[Certificate.Issued]:
    notes = w.certificates.recorder.select_notifications(start=1, limit=100_000, topics=[])
    events = [w.certificates.mapper.to_domain_event(n) for n in notes if n.topic.endswith("Certificate.Issued")]
    return events


def test_twenty_issuers_racing_leave_serials_without_gap_or_repeat(world):
    iid, _, rids, exam = confirmed_exam(world, 100)
    passed = [e.registration_id for e in world.exams.repository.get(exam).passed()]
    assert len(passed) == 86  # every seventh candidate failed theory
    world.at(ISSUE_DAY)
    barrier = Barrier(20)

    def issuer(k: int) -> dict:
        # Overlapping slices, three certificates per transaction: many commits, many collisions.
        mine = passed[(k * 5) % 86 : (k * 5) % 86 + 12]
        barrier.wait()
        return world.certificates.issue(staff(iid, f"issuer-{k}"), exam, mine, chunk=3)

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(issuer, range(20)))
    by_registration = Counter(r for result in results for r in result)
    assert set(by_registration) == set(passed) and set(by_registration.values()) == {1}
    events = issued_events(world)
    assert len(events) == 86
    serials = sorted(parse(e.number).serial for e in events)
    assert serials == list(range(1, 87))
    assert world.certificates.repository.get(counter_id(iid, 2026, Level.TWO)).last == 86
    # Issuing again issues nothing and stores nothing.
    before = stored(world)
    assert world.certificates.issue(staff(iid), exam) == {}
    assert stored(world) == before


def test_a_lone_issuer_reads_the_serial_counter_once_and_numbers_each_part_on_from_the_last(world, monkeypatch):
    """Uncontended, the counter is loaded once for a whole issue: each part of `chunk` certificates numbers on
    from the counter as the part before left it, rather than reading and replaying it again per part."""
    iid, _, _, exam = confirmed_exam(world, 8)
    world.at(ISSUE_DAY)
    counter = counter_id(iid, 2026, Level.TWO)
    recorder, reads = world.certificates.recorder, Counter()
    select_events = recorder.select_events

    def counting(originator_id, **kwargs):
        reads[originator_id] += 1
        return select_events(originator_id, **kwargs)

    monkeypatch.setattr(recorder, "select_events", counting)
    issued = world.certificates.issue(staff(iid), exam, chunk=3)  # 7 passes: parts of 3, 3 and 1
    assert sorted(parse(n).serial for n in issued.values()) == list(range(1, 8))
    assert reads[counter] == 1
    monkeypatch.undo()
    assert world.certificates.repository.get(counter).last == 7


def test_serials_restart_each_year_and_the_number_carries_the_filing(world):
    iid, _, _, exam = confirmed_exam(world, 6)
    passed = [e.registration_id for e in world.exams.repository.get(exam).passed()]
    world.at(date(2026, 12, 31))
    late = world.certificates.issue(staff(iid), exam, passed[:2])
    world.at(date(2027, 1, 4))
    rest = world.certificates.issue(staff(iid), exam)
    assert sorted(late.values()) == ["S000044032015262000001", "S000044032015262000002"]
    assert sorted(rest.values())[:1] == ["S000044032015272000001"]
    c = world.certificates.repository.get(certificate_id(passed[0]))
    assert c.issued_on == date(2026, 12, 31)
    event = next(e for e in issued_events(world) if e.number == late[passed[0]])
    assert event.numbering_late  # confirmed 28 Apr: due 14 May
    assert event.queryable.provisional  # 75 working days reach into 2027, which the calendar lacks


def test_issuance_needs_confirmed_results_and_a_pass(world):
    iid, pid, rids = approved_cohort(world, 7)
    exam = sit_exam(world, iid, pid, rids)
    score_and_publish(world, iid, exam, rids)
    before = stored(world)
    with pytest.raises(Conflict, match="not confirmed by the provincial centre"):
        world.certificates.issue(staff(iid), exam)
    world.at(date(2026, 4, 27)).exams.report_results(staff(iid), exam)
    world.at(CONFIRM_DAY).exams.confirm_results(CENTRE, exam)
    with pytest.raises(InvalidInput, match="no confirmed pass"):
        world.certificates.issue(staff(iid), exam, [rids[6]])  # candidate 7 failed theory
    with pytest.raises(Forbidden):
        world.certificates.issue(staff(uuid4()), exam)
    assert stored(world) == before + 2  # only the report and the confirmation


def test_data_goes_to_the_centre_and_comes_back_with_reasons(world):
    iid, _, rids, exam = confirmed_exam(world, 2)
    world.at(ISSUE_DAY)
    cids = [certificate_id(r) for r in world.certificates.issue(staff(iid), exam)]
    before = stored(world)
    with pytest.raises(InvalidInput, match="not reported"):
        world.certificates.accept_data(CENTRE, cids)
    with pytest.raises(InvalidInput, match="not accepted"):
        world.certificates.make_queryable(CENTRE, cids)
    with pytest.raises(Forbidden):
        world.certificates.report_data(CENTRE, cids)
    assert stored(world) == before
    world.at(date(2026, 6, 1))  # 30 days after 29 Apr is 29 May: late
    world.certificates.report_data(staff(iid), cids)
    with pytest.raises(InvalidInput, match="nothing to report"):
        world.certificates.report_data(staff(iid), cids[:1])
    with pytest.raises(InvalidInput, match="must correct"):
        world.certificates.return_data(CENTRE, cids[0], " ")
    world.certificates.return_data(CENTRE, cids[0], "证书信息表照片不合格")
    world.at(date(2026, 6, 5))
    world.certificates.report_data(staff(iid), cids[:1])  # inside the 20 working days: not late
    reports = [
        world.certificates.mapper.to_domain_event(n)
        for n in world.certificates.recorder.select_notifications(start=before + 1, limit=100)
        if n.topic.endswith("DataReported")
    ]
    assert [(r.attempt, r.late) for r in reports] == [(1, True), (1, True), (2, False)]
    world.certificates.accept_data(CENTRE, cids)
    world.certificates.make_queryable(CENTRE, cids)
    assert world.certificates.certificate(cids[0]).data_status is DataStatus.QUERYABLE


def test_a_certificate_is_printed_once_on_a_received_form_and_never_reissued(world):
    iid, cids = queryable_certificates(world, 3)
    with pytest.raises(Conflict, match="no blank stock"):
        world.certificates.print(staff(iid), cids[0])
    world.certificates.receive_forms(staff(iid), iid, 501, 510, "SH-1")
    before = stored(world)
    with pytest.raises(InvalidInput, match="NO. 00000499 was never received"):
        world.certificates.print(staff(iid), cids[0], 499)
    assert stored(world) == before
    assert world.certificates.print(staff(iid), cids[0]) == 501
    with pytest.raises(Conflict, match="NO. 00000501 is already used for a print"):
        world.certificates.print(staff(iid), cids[1], 501)
    with pytest.raises(Conflict, match="not reissued"):
        world.certificates.print(staff(iid), cids[0])
    assert world.certificates.print(staff(iid), cids[1], 505) == 505
    assert world.certificates.print(staff(iid), cids[2]) == 502


def test_a_handover_after_a_spoiled_print_is_late_as_any_other(world):
    """What an outside reading found: lateness was judged only on a certificate's first print, so one whose first
    print jammed was never late (000: 可查后10个工作日内颁发实体证书)."""
    iid, cids = queryable_certificates(world, 1)
    world.certificates.receive_forms(staff(iid), iid, 1, 10, "SH-1")
    due = world.certificates.certificate(cids[0]).physical.due
    world.at(due + timedelta(days=7))
    form = world.certificates.print(staff(iid), cids[0])
    world.certificates.spoil_print(staff(iid), cids[0], form, "卡纸")
    world.certificates.print(staff(iid), cids[0])
    world.certificates.hand_over(
        staff(iid), cids[0], Delivery.PICKUP, FORM, id_number=card(world.certificates, cids[0])
    )
    handed = world.certificates.mapper.to_domain_event(
        world.certificates.recorder.select_notifications(start=stored(world), limit=1)[0]
    )
    assert isinstance(handed, Certificate.HandedOver) and handed.late


def test_handover_by_pickup_or_by_mail_with_a_signed_receipt(world):
    iid, cids = queryable_certificates(world, 2)
    world.certificates.receive_forms(staff(iid), iid, 1, 10, "SH-1")
    with pytest.raises(Conflict, match="no current print"):
        world.certificates.hand_over(
            staff(iid), cids[0], Delivery.PICKUP, FORM, id_number=card(world.certificates, cids[0])
        )
    for cid in cids:
        world.certificates.print(staff(iid), cid)
    before = stored(world)
    with pytest.raises(InvalidInput) as e:
        world.certificates.hand_over(staff(iid), cids[0], Delivery.MAIL, attachment(AttachmentKind.DIPLOMA))
    assert {f for f, _ in e.value.problems} == {"application_form", "tracking_number"}
    assert stored(world) == before
    world.certificates.hand_over(staff(iid), cids[0], Delivery.MAIL, FORM, "SF1234567890")
    assert not world.certificates.certificate(cids[0]).receipt_signed
    holder = world.certificates.certificate(cids[0]).holder.name
    for someone_else in ("本人", "张三（代签）", holder + "之母"):  # 000: 本人签收, by the holder in person
        with pytest.raises(InvalidInput, match="signed for by its holder"):
            world.certificates.sign_receipt(staff(iid), cids[0], someone_else)
    assert stored(world) == before + 1
    world.certificates.sign_receipt(staff(iid), cids[0], holder)
    # Collected in person with the holder's ID card (000: 凭身份证到社评组织领取): its number checked, and recorded.
    before = stored(world)
    for presented, says in (
        (None, "the number on the ID card presented"),
        (card(world.certificates, cids[0]), "not the holder's: the numbers differ"),
    ):
        with pytest.raises(InvalidInput, match=says):
            world.certificates.hand_over(staff(iid), cids[1], Delivery.PICKUP, FORM, id_number=presented)
    with pytest.raises(InvalidInput, match="only for certificates collected in person"):
        world.certificates.hand_over(staff(iid), cids[1], Delivery.MAIL, FORM, "SF1", card(world.certificates, cids[1]))
    assert stored(world) == before
    world.certificates.hand_over(
        staff(iid), cids[1], Delivery.PICKUP, FORM, id_number=card(world.certificates, cids[1]).lower()
    )  # an x typed in lower case
    handed = world.certificates.mapper.to_domain_event(
        world.certificates.recorder.select_notifications(start=before + 1, limit=1)[0]
    )
    assert handed.id_checked is IdDocument.ORIGINAL_SEEN
    with pytest.raises(Conflict, match="already handed over"):
        world.certificates.hand_over(
            staff(iid), cids[1], Delivery.PICKUP, FORM, id_number=card(world.certificates, cids[1])
        )
    with pytest.raises(Conflict, match="no mailed delivery"):
        world.certificates.sign_receipt(staff(iid), cids[1], world.certificates.certificate(cids[1]).holder.name)


def test_a_lost_certificate_gets_a_proof_with_its_own_number(world):
    iid, cids = handed_over_certificates(world, 1)
    cid = cids[0]
    certs = world.certificates
    with pytest.raises(Conflict, match="no proof application"):
        certs.issue_proof(staff(iid), cid)
    with pytest.raises(InvalidInput, match="annex 3"):
        certs.apply_for_proof(staff(iid), cid, LossKind.LOST, FORM, **id_check(certs, cid))
    world.at(date(2026, 8, 3))
    certs.apply_for_proof(staff(iid), cid, LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                          **id_check(certs, cid))  # fmt: skip
    with pytest.raises(Conflict, match="already being handled"):
        certs.apply_for_proof(staff(iid), cid, LossKind.DAMAGED, attachment(AttachmentKind.PROOF_APPLICATION),
                              **id_check(certs, cid))  # fmt: skip
    first = certs.issue_proof(staff(iid), cid)
    certs.apply_for_proof(staff(iid), cid, LossKind.DAMAGED, attachment(AttachmentKind.PROOF_APPLICATION),
                          **id_check(certs, cid))  # fmt: skip
    second = certs.issue_proof(staff(iid), cid)
    number = certs.certificate(cid).number
    assert (first, second) == (f"{number}-Z01", f"{number}-Z02")


def test_a_certificate_never_handed_over_gets_no_proof(world):
    """What an outside reading found: a proof (000 一1-3: for a certificate lost or damaged, checked with the national
    query record, 004 annex 4) was issued for a certificate never printed nor handed over."""
    iid, cids = queryable_certificates(world, 1)
    before = stored(world)
    with pytest.raises(Conflict, match="never handed to its holder"):
        world.certificates.apply_for_proof(staff(iid), cids[0], LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                                           **id_check(world.certificates, cids[0]))  # fmt: skip
    assert stored(world) == before


def test_a_proof_application_checks_the_holders_id_and_the_proof_is_collected_with_its_receipt(world):
    """000 (profile S): a copy of the ID card is handed in; 004 §13 (三): the proof is collected with
    the original ID card and the acceptance receipt (受理回执), which has a number of its own."""
    iid, cids = handed_over_certificates(world, 1)
    cid = cids[0]
    certs = world.certificates
    form = attachment(AttachmentKind.PROOF_APPLICATION)
    good = id_check(certs, cid)
    before = stored(world)
    for wrong, field in (
        ({"id_number": "11010519491231002X"}, "id_number"),  # someone else's card
        ({"id_number": None}, "id_number"),
        ({"id_document": IdDocument.ORIGINAL_SEEN}, "id_document"),  # profile S wants the copy handed in
        ({"id_copy": None}, "id_copy"),
        ({"id_copy": attachment(AttachmentKind.DIPLOMA)}, "id_copy"),
    ):
        with pytest.raises(InvalidInput) as e:
            certs.apply_for_proof(staff(iid), cid, LossKind.LOST, form, **(good | wrong))
        assert field in {f for f, _ in e.value.problems}, (wrong, e.value.problems)
    assert stored(world) == before
    world.at(date(2026, 8, 3))
    receipt = certs.apply_for_proof(staff(iid), cid, LossKind.LOST, form, **good)
    number = certs.certificate(cid).number
    assert receipt == f"{number}-R01"
    with pytest.raises(InvalidInput, match="receipt"):
        certs.hand_over_proof(staff(iid), cid, receipt, good["id_number"])  # not issued yet
    proof = certs.issue_proof(staff(iid), cid)
    with pytest.raises(InvalidInput, match="receipt"):
        certs.hand_over_proof(staff(iid), cid, f"{number}-R02", good["id_number"])
    with pytest.raises(InvalidInput, match="not the holder's"):
        certs.hand_over_proof(staff(iid), cid, receipt, "11010519491231002X")
    assert certs.hand_over_proof(staff(iid), cid, receipt, good["id_number"]) == proof
    with pytest.raises(Conflict, match="already handed over"):
        certs.hand_over_proof(staff(iid), cid, receipt, good["id_number"])


def test_one_correction_application_per_certificate_even_when_two_arrive_at_once(world):
    iid, cids = queryable_certificates(world, 1)
    cid = cids[0]
    holder = world.certificates.certificate(cid).holder
    barrier = Barrier(8)

    def apply(k: int) -> str:
        barrier.wait()
        try:
            world.certificates.apply_for_correction(staff(iid), cid, Correction(name=f"更正{k}"), "录入错误", EVIDENCE)
            return "accepted"
        except Conflict:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(apply, range(8)))
    assert outcomes.count("accepted") == 1
    c = world.certificates.certificate(cid)
    assert c.correction is not None and c.holder == holder  # nothing changes before approval
    with pytest.raises(Forbidden):
        world.certificates.approve_correction(staff(iid), cid)
    reject_correction(world.certificates, cid, "证明材料不足")
    with pytest.raises(Conflict, match="already had its one correction application"):
        world.certificates.apply_for_correction(staff(iid), cid, Correction(gender="女"), "再次申请", EVIDENCE)


def test_a_correction_names_only_changed_identity_fields_that_agree_with_each_other(world):
    iid, cids = queryable_certificates(world, 1)
    cid = cids[0]
    holder = world.certificates.certificate(cid).holder
    before = stored(world)
    with pytest.raises(InvalidInput, match="differ from the certificate"):
        world.certificates.apply_for_correction(staff(iid), cid, Correction(name=holder.name), "无", EVIDENCE)
    with pytest.raises(InvalidInput, match="not a valid resident ID number"):
        world.certificates.apply_for_correction(
            staff(iid), cid, Correction(id_number="440305199001081234"), "错", EVIDENCE
        )
    with pytest.raises(InvalidInput, match="does not match the ID number"):
        world.certificates.apply_for_correction(staff(iid), cid, Correction(gender="女"), "性别错", EVIDENCE)
    with pytest.raises(ValueError, match="extra"):
        Correction(name="x", occupation="焊工")  # type: ignore[call-arg]
    assert stored(world) == before
    # Gender and ID number corrected together, in the one application.
    new_id = resident_id("440305", date(1990, 1, 8), 2)  # even: female
    world.certificates.apply_for_correction(
        staff(iid), cid, Correction(gender="女", id_number=new_id), "身份证号与性别录入错误", EVIDENCE
    )
    assert world.certificates.certificate(cid).correction == Correction(gender="女", id_number=new_id)


def test_an_approved_correction_is_reported_again_and_printed_on_a_new_form(world):
    iid, cids = queryable_certificates(world, 1)
    cid = cids[0]
    world.certificates.receive_forms(staff(iid), iid, 1, 5, "SH-1")
    world.certificates.print(staff(iid), cid)
    world.certificates.hand_over(staff(iid), cid, Delivery.PICKUP, FORM, id_number=card(world.certificates, cid))
    world.certificates.apply_for_correction(staff(iid), cid, Correction(name="考生一更正"), "录入错误", EVIDENCE)
    world.at(date(2026, 9, 1))
    approve_correction(world.certificates, cid)
    c = world.certificates.certificate(cid)
    assert (c.holder.name, c.data_status, c.needs_print) == ("考生一更正", DataStatus.UNREPORTED, True)
    # Re-reported within the new-certificate reporting deadline (000 二4): 30 days, not the 20 working
    # days a returned report gets.
    assert (c.correction_due.step, c.correction_due.due) == ("data_reported", date(2026, 10, 1))
    with pytest.raises(Conflict, match="after its corrected data is re-reported"):
        world.certificates.print(staff(iid), cid)
    world.certificates.report_data(staff(iid), [cid])
    assert world.certificates.print(staff(iid), cid) == 2
    c = world.certificates.certificate(cid)
    assert c.printed_forms == [1, 2] and c.printed_holder.name == "考生一更正" and c.handed_over is None


def test_deleting_data_needs_the_holders_commitment_and_keeps_the_history(world):
    iid, cids = queryable_certificates(world, 1)
    cid = cids[0]
    with pytest.raises(Conflict, match="signed commitment first"):
        world.certificates.delete_data(staff(iid), cid, "放弃待遇")
    with pytest.raises(InvalidInput, match="证书持有人承诺书"):
        world.certificates.record_holder_commitment(staff(iid), cid, FORM)
    world.certificates.record_holder_commitment(staff(iid), cid, attachment(AttachmentKind.HOLDER_COMMITMENT))
    # Profile S (000 二3): the association checks the data against the national network first; what an outside
    # reading found: the deletion went ahead without it.
    before = stored(world)
    with pytest.raises(Conflict, match="association has not yet checked the deletion"):
        world.certificates.delete_data(staff(iid), cid, "持证人放弃证书相关待遇")
    with pytest.raises(Forbidden):
        world.certificates.check_deletion(staff(iid), cid, queryable_nationally=True)
    with pytest.raises(InvalidInput, match="work order"):
        world.certificates.check_deletion(ASSOCIATION, cid, queryable_nationally=False)
    assert stored(world) == before
    world.certificates.check_deletion(ASSOCIATION, cid, queryable_nationally=True)
    with pytest.raises(Conflict, match="already checked"):
        world.certificates.check_deletion(ASSOCIATION, cid, queryable_nationally=True)
    version = world.certificates.certificate(cid).version
    world.certificates.delete_data(staff(iid), cid, "持证人放弃证书相关待遇")
    c = world.certificates.certificate(cid)
    assert c.data_status is DataStatus.DELETED and c.version == version + 1
    assert world.certificates.repository.get(cid, version=1).number == c.number  # history kept
    for act in (
        lambda: world.certificates.report_data(staff(iid), [cid]),
        lambda: world.certificates.apply_for_proof(
            staff(iid),
            cid,
            LossKind.LOST,
            attachment(AttachmentKind.PROOF_APPLICATION),
            **id_check(world.certificates, cid),
        ),
        lambda: world.certificates.delete_data(staff(iid), cid, "again"),
    ):
        with pytest.raises((Conflict, InvalidInput), match="was deleted"):
            act()


def test_a_cohort_is_issued_together_and_only_once(world):
    iid, _, rids, exam = confirmed_exam(world, 8)
    world.at(ISSUE_DAY)
    with pytest.raises(NotFound):
        world.certificates.issue_cohort(staff(iid), [exam, uuid4()])
    issued = world.certificates.issue_cohort(staff(iid), [exam, exam], chunk=3)
    assert sorted(parse(n).serial for n in issued.values()) == list(range(1, 8))  # candidate 7 failed
    assert world.certificates.issue_cohort(staff(iid), [exam]) == {}


def test_profile_s_corrections_go_through_the_association_then_the_skills_centre_of_the_region(world):
    """000 二3: the association first checks whether the data is queryable nationally; data that is not
    goes on a work order to the provincial or city skills centre (属地管理), which decides."""
    iid, cids = queryable_certificates(world, 2)  # the test institution: profile S, filed in Shenzhen (03)
    certs = world.certificates
    for cid in cids:
        certs.apply_for_correction(staff(iid), cid, Correction(name="更正姓名"), "录入错误", EVIDENCE)
    before = stored(world)
    with pytest.raises(Conflict, match="association has not yet checked"):
        certs.approve_correction(CENTRE, cids[0])
    with pytest.raises(Forbidden):
        certs.approve_correction(HR, cids[0])  # profile S: not the HR department
    with pytest.raises(Forbidden):
        certs.check_correction(staff(iid), cids[0], queryable_nationally=True)
    with pytest.raises(InvalidInput, match="work order"):
        certs.check_correction(ASSOCIATION, cids[0], queryable_nationally=False)
    assert stored(world) == before
    certs.check_correction(ASSOCIATION, cids[0], queryable_nationally=False, work_order="GD-2026-0815")
    with pytest.raises(Conflict, match="awaits the association's check"):
        certs.check_correction(ASSOCIATION, cids[0], queryable_nationally=True)
    guangzhou = CENTRE.model_copy(update={"jurisdiction": "01"})
    with pytest.raises(Forbidden, match="属地管理"):
        certs.approve_correction(guangzhou, cids[0])
    shenzhen = CENTRE.model_copy(update={"jurisdiction": "03"})
    certs.approve_correction(shenzhen, cids[0])  # the city's centre
    certs.check_correction(ASSOCIATION, cids[1], queryable_nationally=True)
    certs.reject_correction(CENTRE, cids[1], "证明材料不足")  # the provincial centre
    assert stored(world) == before + 4


def test_profile_t_corrections_are_decided_by_the_hr_department_where_the_institution_is_filed(world):
    """004 §14: the HR department of the filing region; another region's is refused."""
    from decimal import Decimal

    from domain.institution import DeadlineProfile, Filing
    from infra.services.registrations import Decision
    from tests.builders import L2_CONDITION, L2_EVIDENCE, SCOPE, candidate, plan_details, working_years_form

    svc = world.registrations
    iid = svc.register_institution(CENTRE, "广州市技工学校评价中心", Filing(city_code="01", station_serial="101"),
                                   DeadlineProfile.T, SCOPE)  # fmt: skip
    world.at(date(2026, 3, 2))
    pid, code = svc.publish_plan(staff(iid), iid, plan_details("2701", seats=2))
    rids = [svc.register(candidate(i), code, working_years_form(i)) for i in (1, 2)]
    for i, rid in enumerate(rids, 1):
        svc.review(staff(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
        svc.pay_fee(staff(iid), rid, f"T{i:08d}", Decimal("380.00"))
    exam = sit_exam(world, iid, pid, rids)
    score_and_publish(world, iid, exam, rids)
    world.at(date(2026, 4, 27))
    world.exams.report_results(staff(iid), exam)
    world.at(CONFIRM_DAY)
    world.exams.confirm_results(CENTRE, exam)
    world.at(ISSUE_DAY)
    cid = certificate_id(rids[0])
    world.certificates.issue(staff(iid), exam)
    world.certificates.apply_for_correction(staff(iid), cid, Correction(name="更正姓名"), "录入错误", EVIDENCE)
    with pytest.raises(Conflict, match="profile S"):
        world.certificates.check_correction(ASSOCIATION, cid, queryable_nationally=True)
    for wrong in (HR, CENTRE, HR.model_copy(update={"jurisdiction": None})):  # Shenzhen's HR; the centre; no region
        with pytest.raises(Forbidden):
            world.certificates.approve_correction(wrong, cid)
    world.certificates.approve_correction(HR.model_copy(update={"jurisdiction": "01"}), cid)
    assert world.certificates.certificate(cid).holder.name == "更正姓名"
