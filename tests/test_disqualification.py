"""A false declaration found (001 承诺: 如有虚假，愿意接受取消申报资格、已参加考试则被取消当次考试所有科目成绩、
已获得证书则被收回、注销证书数据检索及注销证书资格的处理): at each stage a candidate can be in, and racing the
steps that would otherwise hand a disqualified candidate a ticket or a certificate."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal
from threading import Barrier
from uuid import uuid4

import pytest

from domain.certificate import Certificate, Delivery, certificate_id
from domain.errors import Conflict, Forbidden, InvalidInput
from domain.exam import ExamSession, Sitting, Subject, sitting_id
from domain.model import Actor, Role
from domain.plan import EvaluationPlan
from domain.registration import AttachmentKind, Registration, Status
from infra.services.registrations import Decision
from tests.builders import attachment, candidate
from tests.lifecycle import (
    CENTRE,
    CONFIRM_DAY,
    EXAM_DAY,
    HR,
    ISSUE_DAY,
    REPORT_DAY,
    TICKETS_OPEN,
    approved_cohort,
    confirmed_exam,
    handed_over_certificates,
    queryable_certificates,
    score,
    sit_exam,
    staff,
)
from tests.test_read_models import conn  # noqa: F401

FALSE = "工作年限证明系伪造（单位核实回函）"


def stored(w) -> int:
    return w.registrations.recorder.max_notification_id() or 0


def test_before_the_exam_the_registration_is_disqualified_and_its_place_goes_back(world):
    iid, pid, rids = approved_cohort(world, 3)
    reg = world.registrations
    before = stored(world)
    for who in (candidate(1), HR, staff(uuid4()), Actor(id="auditor-x", role=Role.AUDITOR)):
        with pytest.raises(Forbidden):
            reg.disqualify(who, rids[0], FALSE)
    with pytest.raises(InvalidInput, match="found false"):
        reg.disqualify(staff(iid), rids[0], "  ")
    assert stored(world) == before  # nothing refused was stored
    taken = reg.get(EvaluationPlan, pid, "plan").taken

    assert reg.disqualify(staff(iid), rids[0], FALSE) == ["registration.disqualified", "evaluation_plan.seat_released"]
    r = reg.get(Registration, rids[0], "registration")
    assert (r.status, r.reasons) == (Status.DISQUALIFIED, FALSE)
    assert reg.get(EvaluationPlan, pid, "plan").taken == taken - 1
    # Nothing follows: no second disqualification, no fee, no amendment, no ticket.
    with pytest.raises(Conflict, match="disqualified"):
        reg.disqualify(CENTRE, rids[0], FALSE)
    with pytest.raises(Conflict):
        reg.open_training_account(staff(iid), rids[0], "T-1")
    world.at(TICKETS_OPEN)
    exam = world.exams.schedule(staff(iid), pid, "A", EXAM_DAY, *_hours(), "考点", _rooms())
    seated = {a.registration_id for a in world.exams.issue_tickets(staff(iid), exam)}
    assert seated == set(rids[1:])
    with pytest.raises(InvalidInput, match="disqualified"):
        world.exams.issue_tickets(staff(iid), exam, [rids[0]])
    # The provincial centre may disqualify too.
    assert reg.disqualify(CENTRE, rids[1], FALSE)[:2] == ["registration.disqualified", "exam_session.scores_cancelled"]


def _hours():
    from datetime import time

    return time(9), time(11)


def _rooms():
    from domain.exam import Room

    return [Room(name="301", seats=30)]


def test_after_the_exam_every_score_of_the_session_is_cancelled_and_no_certificate_is_issued(world):
    iid, pid, rids = approved_cohort(world, 8)
    exam = sit_exam(world, iid, pid, rids)
    world.at(date(2026, 4, 13))
    assert world.registrations.disqualify(staff(iid), rids[0], FALSE) == [
        "registration.disqualified", "exam_session.scores_cancelled"]  # fmt: skip
    # The score book may not score them; the rest are scored and published without them.
    book = {rid: score(i) for i, rid in enumerate(rids, 1)}
    with pytest.raises(InvalidInput) as refused:
        world.exams.record_scores(staff(iid, "scorer-chen"), exam, book)
    assert [f for f, _ in refused.value.problems] == [f"book.{rids[0]}"]
    assert "cancelled" in refused.value.problems[0][1]
    del book[rids[0]]
    world.exams.record_scores(staff(iid, "scorer-chen"), exam, book)
    world.exams.publish_scores(staff(iid), exam)
    world.at(date(2026, 4, 16))
    with pytest.raises(Conflict, match="cancelled"):
        world.exams.request_review(candidate(1), rids[0], Subject.THEORY, "有异议")
    world.at(REPORT_DAY).exams.report_results(staff(iid), exam)
    session = world.exams.get(ExamSession, exam, "exam session")
    [entry] = [e for e in session.reported if e.registration_id == rids[0]]
    assert (entry.passed, entry.scores, entry.absent) == (False, {}, False)
    world.at(CONFIRM_DAY).exams.confirm_results(CENTRE, exam)
    world.at(ISSUE_DAY)
    issued = world.certificates.issue(staff(iid), exam)
    assert set(issued) == set(rids) - {rids[0], rids[6]}  # candidate 7 failed theory


def test_a_candidate_disqualified_before_the_exam_day_cannot_check_in(world):
    iid, pid, rids = approved_cohort(world, 2)
    world.at(TICKETS_OPEN)
    exam = world.exams.schedule(staff(iid), pid, "A", EXAM_DAY, *_hours(), "考点", _rooms())
    world.exams.issue_tickets(staff(iid), exam)
    world.registrations.disqualify(staff(iid), rids[0], FALSE)
    world.at(EXAM_DAY)
    with pytest.raises(Conflict, match="disqualified"):
        world.exams.check_in(candidate(1), rids[0])
    world.exams.check_in(candidate(2), rids[1])


def test_a_confirmed_pass_cancelled_before_issuance_gets_no_certificate(world):
    iid, _, rids, exam = confirmed_exam(world, 8)
    assert rids[0] in {e.registration_id for e in world.exams.get(ExamSession, exam, "exam session").passed()}
    world.at(ISSUE_DAY).registrations.disqualify(CENTRE, rids[0], FALSE)
    session = world.exams.get(ExamSession, exam, "exam session")
    assert rids[0] not in {e.registration_id for e in session.passed()}
    with pytest.raises(InvalidInput, match="no confirmed pass"):
        world.certificates.issue(staff(iid), exam, [rids[0]])
    assert rids[0] not in world.certificates.issue(staff(iid), exam)


def test_an_issued_certificate_is_revoked_and_nothing_more_is_done_with_it(world):
    iid, cids = handed_over_certificates(world, 2)
    certs = world.certificates
    rid = certs.certificate(cids[0]).registration_id
    world.at(date(2026, 9, 1))
    done = world.registrations.disqualify(staff(iid), rid, FALSE)
    assert done == ["registration.disqualified", "exam_session.scores_cancelled", "certificate.revoked"]
    c = certs.certificate(cids[0])
    assert c.revoked == date(2026, 9, 1)
    before = stored(world)
    from domain.certificate import Correction, LossKind
    from tests.lifecycle import id_check

    for act in (
        lambda: certs.apply_for_proof(staff(iid), cids[0], LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                                      **id_check(certs, cids[0])),
        lambda: certs.apply_for_correction(staff(iid), cids[0], Correction(name="新名"), "更名",
                                           attachment(AttachmentKind.CORRECTION_EVIDENCE)),
        lambda: certs.report_data(staff(iid), [cids[0]]),
    ):  # fmt: skip
        with pytest.raises((Conflict, InvalidInput), match="revoked"):
            act()
    assert stored(world) == before
    # The other holder's certificate is untouched.
    assert certs.certificate(cids[1]).revoked is None
    assert certs.certificate(cids[1]).handed_over is Delivery.PICKUP


@pytest.mark.parametrize("k", range(4))
def test_issuance_racing_a_disqualification_never_leaves_a_live_certificate_for_the_disqualified(world, k):
    """Issuance and the disqualification each take the session's scoring lock: whichever comes second sees the
    first. Without it, a certificate could be numbered on scores cancelled a moment before."""
    iid, _, rids, exam = confirmed_exam(world, 3)
    rid = rids[k % 3]
    world.at(ISSUE_DAY)
    barrier = Barrier(2)

    def issue():
        barrier.wait()
        return world.certificates.issue(staff(iid), exam)

    def disqualify():
        barrier.wait()
        return world.registrations.disqualify(CENTRE, rid, FALSE)

    with ThreadPoolExecutor(2) as pool:
        issuing, disqualifying = pool.submit(issue), pool.submit(disqualify)
        issued, done = issuing.result(), disqualifying.result()
    found = world.certificates.get_many([certificate_id(rid)]).get(certificate_id(rid))
    if isinstance(found, Certificate):  # issued first: revoked by the disqualification
        assert rid in issued and found.revoked == ISSUE_DAY and "certificate.revoked" in done
    else:  # disqualified first: never issued
        assert rid not in issued and "certificate.revoked" not in done
    assert set(issued) | {rid} == set(rids)  # everyone else passed and got theirs


@pytest.mark.parametrize("k", range(3))
def test_ticket_issuance_racing_a_disqualification_never_seats_a_candidate_whose_scores_stand(world, k):
    """A ticket issued after the disqualification is refused; one issued before it has its scores cancelled."""
    iid, pid, rids = approved_cohort(world, 2)
    world.at(TICKETS_OPEN)
    exam = world.exams.schedule(staff(iid), pid, "A", EXAM_DAY, *_hours(), "考点", _rooms())
    barrier = Barrier(2)

    def tickets():
        barrier.wait()
        return world.exams.issue_tickets(staff(iid), exam)

    def disqualify():
        barrier.wait()
        return world.registrations.disqualify(staff(iid), rids[k % 2], FALSE)

    with ThreadPoolExecutor(2) as pool:
        seating, disqualifying = pool.submit(tickets), pool.submit(disqualify)
        seated, done = seating.result(), disqualifying.result()
    session = world.exams.get(ExamSession, exam, "exam session")
    rid = rids[k % 2]
    if isinstance(world.exams.get_many([sitting_id(rid)]).get(sitting_id(rid)), Sitting):
        assert rid in session.cancelled and "exam_session.scores_cancelled" in done
    else:
        assert rid not in {a.registration_id for a in seated} and "evaluation_plan.seat_released" in done


def test_a_disqualification_is_refused_for_a_rejected_registration_and_by_another_institution(world):
    iid, pid, rids = approved_cohort(world, 1, seats=2)
    from tests.builders import working_years_form

    plan_code = world.registrations.get(EvaluationPlan, pid, "plan").registration_code
    rid = world.registrations.register(candidate(9), plan_code, working_years_form(9))
    world.registrations.review(staff(iid), rid, Decision.REJECTED, reasons="不符合条件")
    with pytest.raises(Conflict, match="rejected"):
        world.registrations.disqualify(staff(iid), rid, FALSE)
    with pytest.raises(Forbidden, match="own institution"):
        world.registrations.disqualify(staff(uuid4()), rids[0], FALSE)
    # A city's skills centre acts for the institutions filed in its city (Shenzhen, 03) only.
    guangzhou = Actor(id="centre-gz", role=Role.PROVINCIAL_CENTRE, jurisdiction="01")
    with pytest.raises(Forbidden, match="属地管理"):
        world.registrations.disqualify(guangzhou, rids[0], FALSE)
    shenzhen = Actor(id="centre-sz", role=Role.PROVINCIAL_CENTRE, jurisdiction="03")
    assert world.registrations.disqualify(shenzhen, rids[0], FALSE)[0] == "registration.disqualified"


def test_through_the_api_the_record_and_the_public_verification_show_it(world, conn, database_url, schema):  # noqa: F811
    from fastapi.testclient import TestClient

    from infra.api import create_app
    from tests.api import bearer
    from tests.test_read_models import KEY, apply_live, bus_messages

    iid, cids = handed_over_certificates(world, 2)
    certs = world.certificates
    rid, number = certs.certificate(cids[0]).registration_id, certs.certificate(cids[0]).number
    staff_token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid, pseudonym_key=KEY.hex())
    other = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-b", uuid4(), pseudonym_key=KEY.hex())
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex())) as http:
        before = stored(world)
        for headers, body, status in ((other, {"reasons": FALSE}, 403), (staff_token, {"reasons": ""}, 422),
                                      (staff_token, {"reasons": FALSE, "extra": 1}, 422)):  # fmt: skip
            r = http.post(f"/registrations/{rid}/disqualification", headers=headers, json=body)
            assert r.status_code == status, r.text
        assert stored(world) == before
        r = http.post(f"/registrations/{rid}/disqualification", headers=staff_token, json={"reasons": FALSE})
        assert r.status_code == 200, r.text
        assert r.json()["events"] == ["registration.disqualified", "exam_session.scores_cancelled",
                                      "certificate.revoked"]  # fmt: skip
        again = http.post(f"/registrations/{rid}/disqualification", headers=staff_token, json={"reasons": FALSE})
        assert again.status_code == 409 and "disqualified" in again.json()["detail"]
        apply_live(conn, bus_messages(world.registrations))
        conn.commit()
        v = http.get(f"/verify/{number}").json()
        assert (v["status"], v["holder_name"], v["id_number"]) == ("revoked", None, None)
        page = http.get(f"/verify/{number}", headers={"Accept": "text/html"}).text
        assert 'data-status="revoked"' in page
        record = http.get(f"/registrations/{rid}", headers=staff_token).json()
        assert (record["status"], record["scores"], record["passed"], record["scores_cancelled"]) == (
            "disqualified", None, False, FALSE)  # fmt: skip
        assert record["certificate"]["status"] == "revoked"
        still = http.get(f"/verify/{certs.certificate(cids[1]).number}").json()
        assert still["status"] == "valid"


def test_the_integrity_record_warns_the_reviewer_of_a_later_registration_by_the_same_person(world):
    """ "……并登记在诚信档案": a disqualification is entered on the person's record, by ID number across plans; each
    later registration of that number carries a warning naming where and when (not why), alone, in a batch of
    concurrent registrations, and from an imported list; a resubmission and an amendment keep it."""
    from domain.registration import IntegrityRecord, integrity_key
    from tests.builders import plan_details, staff_of, working_years_form

    iid, pid, rids = approved_cohort(world, 2)
    reg = world.registrations
    world.at(date(2026, 3, 5))
    reg.disqualify(staff(iid), rids[0], FALSE)
    form = reg.get(Registration, rids[0], "registration").form
    record = reg.get(IntegrityRecord, integrity_key(form.id_type, form.id_number, reg.id_key), "record")
    assert [(e.registration_id, e.plan_number, e.on) for e in record.entries] == [(rids[0], "2501", date(2026, 3, 5))]

    def warned(rid) -> list[str]:
        return [w for w in reg.get(Registration, rid, "registration").warnings if "诚信档案" in w]

    # Alone.
    pid2, code2 = reg.publish_plan(staff_of(iid), iid, plan_details("2502", seats=20))
    again = reg.register(candidate(1), code2, working_years_form(1))
    [warning] = warned(again)
    assert "2026-03-05" in warning and "2501" in warning and "深圳市技能人才评价示范中心" in warning
    assert FALSE not in warning  # the reasons stay with the registration they concern
    assert warned(reg.register(candidate(2), code2, working_years_form(2))) == []
    # In a batch: several at once, so the group registers them together.
    _, code3 = reg.publish_plan(staff_of(iid), iid, plan_details("2503", seats=20))
    barrier = Barrier(6)

    def register(i):
        barrier.wait()
        return reg.register(candidate(i), code3, working_years_form(i))

    with ThreadPoolExecutor(6) as pool:
        batch = list(pool.map(register, range(1, 7)))
    assert [bool(warned(r)) for r in batch] == [True] + [False] * 5
    # A second disqualification is entered on the same record; both are named from then on.
    # From an imported list.
    pid5, _ = reg.publish_plan(staff_of(iid), iid, plan_details("2505", seats=20))
    listed = reg.register_many(staff(iid), pid5, [(1, working_years_form(3), []), (2, working_years_form(1), [])])
    assert [bool(warned(r)) for r in listed] == [False, True]
    # Returned and resubmitted: the warning stays.
    reg.review(staff(iid), again, Decision.RETURNED, reasons="补充材料")
    reg.resubmit(candidate(1), again, working_years_form(1))
    assert len(warned(again)) == 1
    reg.disqualify(staff(iid), again, FALSE)
    record = reg.get(IntegrityRecord, integrity_key(form.id_type, form.id_number, reg.id_key), "record")
    assert [e.plan_number for e in record.entries] == ["2501", "2502"]
    _, code4 = reg.publish_plan(staff_of(iid), iid, plan_details("2504", seats=20))
    assert len(warned(reg.register(candidate(1), code4, working_years_form(1)))) == 2


# What an outside review of the first version found, each now refused or shown as the rule wants.
def test_after_a_revocation_no_credential_is_signed_and_the_one_signed_before_is_marked_revoked(
    world, database_url, schema
):
    from infra.api import create_app
    from tests.api import bearer
    from tests.test_credentials import proof_holds, revoked
    from tests.test_read_models import KEY

    public = "https://verify.example.cn"
    iid, cids = handed_over_certificates(world, 2)
    app = create_app(database_url, schema, pseudonym_key=KEY.hex(), public_url=public, today=world.clock)
    from fastapi.testclient import TestClient

    with TestClient(app) as http:

        def fetch(url: str) -> dict:
            return http.get(url.removeprefix(public)).json()

        token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
        vc = http.get(f"/certificates/{cids[0]}/credential", headers=token).json()
        other = http.get(f"/certificates/{cids[1]}/credential", headers=token).json()
        assert proof_holds(vc, fetch) and not revoked(vc, fetch)
        world.registrations.disqualify(CENTRE, world.certificates.certificate(cids[0]).registration_id, FALSE)
        assert revoked(vc, fetch) and not revoked(other, fetch)
        again = http.get(f"/certificates/{cids[0]}/credential", headers=token)
        assert again.status_code == 409 and "revoked" in again.json()["detail"]


def test_a_proof_issued_before_the_revocation_is_neither_handed_over_nor_printed(world, database_url, schema):
    from fastapi.testclient import TestClient

    from domain.certificate import LossKind
    from infra.api import create_app
    from tests.api import bearer
    from tests.lifecycle import id_check
    from tests.test_read_models import KEY

    iid, cids = handed_over_certificates(world, 1)
    certs = world.certificates
    world.at(date(2026, 8, 1))
    receipt = certs.apply_for_proof(staff(iid), cids[0], LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                                    **id_check(certs, cids[0]))  # fmt: skip
    certs.issue_proof(staff(iid), cids[0])
    world.registrations.disqualify(staff(iid), certs.certificate(cids[0]).registration_id, FALSE)
    with pytest.raises(Conflict, match="revoked"):
        certs.hand_over_proof(staff(iid), cids[0], receipt, certs.certificate(cids[0]).holder.id_number)
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex())) as http:
        token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
        r = http.get(f"/certificates/{cids[0]}/proof.pdf", headers=token)
        assert r.status_code == 409 and "void" in r.json()["detail"]


def test_a_revoked_certificate_never_printed_is_left_out_of_the_plans_and_the_sessions_batch_print(world):
    """It kept needs_print and its place in the plan: the plan's batch print picked it and was refused whole, for
    good, as nothing could clear it."""
    from infra.services.printing import plan_to_print, to_print

    iid, cids = queryable_certificates(world, 3)
    certs = world.certificates
    rid = certs.certificate(cids[0]).registration_id
    plan_id = world.registrations.get(Registration, rid, "registration").plan_id
    exam = world.exams.sitting(rid).exam_id
    world.at(date(2026, 7, 2))
    certs.receive_forms(staff(iid), iid, 1, 10, "SH-1")
    world.registrations.disqualify(staff(iid), rid, FALSE)
    assert set(plan_to_print(certs, plan_id)) == set(to_print(certs, exam)) == set(cids[1:])
    certs.print_many(staff(iid), plan_to_print(certs, plan_id))
    assert plan_to_print(certs, plan_id) == []


def test_a_holder_whose_certificate_data_was_deleted_is_still_disqualified(world):
    """The certificate is void already (000): no revocation, but the scores are cancelled and the record kept."""
    from tests.lifecycle import ASSOCIATION

    iid, cids = handed_over_certificates(world, 1)
    certs = world.certificates
    certs.record_holder_commitment(staff(iid), cids[0], attachment(AttachmentKind.HOLDER_COMMITMENT))
    certs.check_deletion(ASSOCIATION, cids[0], queryable_nationally=True)
    certs.delete_data(staff(iid), cids[0], "持证人放弃证书相关待遇")
    rid = certs.certificate(cids[0]).registration_id
    assert world.registrations.disqualify(CENTRE, rid, FALSE) == [
        "registration.disqualified", "exam_session.scores_cancelled"]  # fmt: skip
    assert certs.certificate(cids[0]).revoked is None


def test_an_open_score_review_is_not_answered_once_the_scores_are_cancelled_and_owes_no_answer(world, conn):  # noqa: F811
    from domain.deadlines import Step
    from domain.exam import ReviewOutcome
    from projections import deadlines
    from tests.lifecycle import report_and_confirm, score_and_publish
    from tests.test_read_models import apply_live, bus_messages

    iid, pid, rids = approved_cohort(world, 4)
    exam = sit_exam(world, iid, pid, rids)
    score_and_publish(world, iid, exam, rids)
    world.at(date(2026, 4, 16))
    for i in (0, 1):
        world.exams.request_review(candidate(i + 1), rids[i], Subject.THEORY, "有异议")
        world.registrations.disqualify(staff(iid), rids[i], FALSE)
    world.at(date(2026, 4, 20))
    with pytest.raises(Conflict, match="cancelled"):
        world.exams.answer_review(staff(iid, "reviewer-he"), rids[1], ReviewOutcome.CHANGED, "改分", Decimal("99"))
    report_and_confirm(world, iid, exam)  # the open reviews of cancelled scores hold nothing up
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    for rid in rids[:2]:
        [review] = [d for d in deadlines.deadlines_of(conn, str(sitting_id(rid))) if d["step"] == Step.REVIEW_ANSWERED]
        assert review["closed_by"] == "exam_session.scores_cancelled" and review["late"] is None
    overdue = deadlines.open_deadlines(conn, date(2026, 12, 1), institution_id=str(iid), overdue=True)[1]
    assert [d["step"] for d in overdue] == ["certificate_number"]  # no certificates issued here: rightly overdue


def test_a_candidate_disqualified_after_checking_in_goes_no_further_and_the_day_still_closes(world):
    from domain.exam import Attendance

    iid, pid, rids = approved_cohort(world, 2)
    world.at(TICKETS_OPEN)
    exam = world.exams.schedule(staff(iid), pid, "A", EXAM_DAY, *_hours(), "考点", _rooms())
    seats = {a.registration_id: a.seat for a in world.exams.issue_tickets(staff(iid), exam)}
    world.at(EXAM_DAY)
    proctor = staff(iid, "proctor-liu")
    for i, rid in enumerate(rids, 1):
        world.exams.check_in(candidate(i), rid)
        world.exams.check_identity(proctor, rid)
        world.exams.sign_in(proctor, rid, seats[rid], second_identity_check=True)
    world.exams.start(proctor, rids[1])
    world.registrations.disqualify(staff(iid), rids[0], FALSE)
    world.registrations.disqualify(staff(iid), rids[1], FALSE)  # mid-exam
    with pytest.raises(Conflict, match="disqualified"):
        world.exams.start(proctor, rids[0])
    with pytest.raises(Conflict, match="disqualified"):
        world.exams.finish(proctor, rids[1])
    world.exams.close_day(staff(iid), exam)  # one started and never finished: not held up by them
    assert world.exams.sitting(rids[0]).attendance is Attendance.ABSENT


@pytest.mark.parametrize("mode", ["live", "rebuild"])
def test_a_sessions_numbering_deadline_stays_open_while_a_certificate_is_owed_after_a_revocation(world, conn, mode):  # noqa: F811
    """Three passes; A's certificate issued, A disqualified (revoked), B's issued: C's is still owed. The revoked
    certificate had been counted as issued while the passes owed fell by one, and the deadline closed."""
    from consumers.rebuild import rebuild
    from domain.deadlines import Step
    from projections import PROJECTIONS, deadlines
    from tests.test_read_models import KEY, apply_live, bus_messages

    iid, _, rids, exam = confirmed_exam(world, 3)
    world.at(ISSUE_DAY)
    world.certificates.issue(staff(iid), exam, [rids[0]])
    world.registrations.disqualify(CENTRE, rids[0], FALSE)
    world.certificates.issue(staff(iid), exam, [rids[1]])

    def numbering():
        if mode == "live":
            apply_live(conn, bus_messages(world.registrations))
        else:
            rebuild(conn, PROJECTIONS, world.registrations, KEY)
        conn.commit()
        [d] = [d for d in deadlines.deadlines_of(conn, str(exam)) if d["step"] == Step.CERTIFICATE_NUMBER]
        return d

    assert numbering()["closed_on"] is None
    world.at(date(2026, 4, 30)).certificates.issue(staff(iid), exam, [rids[2]])
    assert numbering()["closed_on"] == date(2026, 4, 30)


def test_sixteen_disqualifications_at_once_in_one_process_each_go_through(world):
    """Each held one lock connection while it asked the same pool for a second: eight at once took the pool, and
    waited the lock timeout (10 s) to fail with 503."""
    from infra.services.base import LOCK_CONNECTIONS

    n = 2 * LOCK_CONNECTIONS
    iid, _, rids = approved_cohort(world, n)
    barrier = Barrier(n)

    def one(rid):
        barrier.wait()
        return world.registrations.disqualify(staff(iid), rid, FALSE)

    with ThreadPoolExecutor(n) as pool:
        done = list(pool.map(one, rids))
    assert all(d[0] == "registration.disqualified" for d in done)


def test_a_pending_correction_is_moot_once_the_certificate_is_revoked(world, conn):  # noqa: F811
    from domain.certificate import Correction
    from projections import certificates as registry
    from tests.test_read_models import apply_live, bus_messages

    iid, cids = handed_over_certificates(world, 1)
    certs = world.certificates
    certs.apply_for_correction(staff(iid), cids[0], Correction(name="新名字"), "录入错误",
                               attachment(AttachmentKind.CORRECTION_EVIDENCE))  # fmt: skip
    world.registrations.disqualify(CENTRE, certs.certificate(cids[0]).registration_id, FALSE)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    entry = registry.correction_of(conn, certificate_id=str(cids[0]))
    assert entry["decision"] == "moot" and "revoked" in entry["decision_reasons"]


# What a second outside review found.
def _warned(reg, rid) -> list[str]:
    return [w for w in reg.get(Registration, rid, "registration").warnings if "诚信档案" in w]


def _other_number(form, serial: int = 777) -> str:
    """Another valid resident ID of the form's birth date and gender."""
    from tests.builders import resident_id

    g = int(form.id_number[16]) % 2
    return resident_id("440305", form.date_of_birth, serial if serial % 2 == g else serial + 1)


def test_an_id_number_typed_in_full_width_digits_is_the_same_number(world):
    """An input method types ４４０３…: the form kept it as typed, so the same person was another number, registered
    twice in one plan, and the integrity record missed them."""
    from tests.builders import plan_details, staff_of, working_years_form

    iid, _, rids = approved_cohort(world, 1)
    reg = world.registrations
    reg.disqualify(staff(iid), rids[0], FALSE)
    _, code = reg.publish_plan(staff_of(iid), iid, plan_details("2502", seats=20))
    number = working_years_form(1).id_number
    wide = " " + number.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")) + "\u3000"
    again = reg.register(staff(iid), code, working_years_form(1, id_number=wide))
    assert reg.get(Registration, again, "registration").form.id_number == number
    assert len(_warned(reg, again)) == 1
    with pytest.raises(Conflict, match="already registered"):
        reg.register(staff(iid), code, working_years_form(1))


def test_the_record_is_kept_under_every_number_the_person_was_known_by(world):
    """Amended before the disqualification, corrected on the certificate after it: the number first declared, the
    amended one and the corrected one each carry the warning; an amendment of a warned registration keeps it."""
    from domain.certificate import Correction
    from tests.builders import plan_details, staff_of
    from tests.lifecycle import approve_correction

    iid, cids = handed_over_certificates(world, 2)
    certs, reg = world.certificates, world.registrations
    rid = certs.certificate(cids[0]).registration_id
    first = reg.get(Registration, rid, "registration").form
    right = _other_number(first)
    world.at(date(2026, 8, 1))
    certs.apply_for_correction(staff(iid), cids[0], Correction(id_number=right), "身份证号录入错误",
                               attachment(AttachmentKind.CORRECTION_EVIDENCE))  # fmt: skip
    approve_correction(certs, cids[0])
    reg.disqualify(CENTRE, rid, FALSE)
    world.at(date(2026, 3, 5))  # the next year's plans, as far as their registration dates go
    _, code = reg.publish_plan(staff_of(iid), iid, plan_details("2502", seats=20))
    for number in (first.id_number, right):
        again = reg.register(staff(iid), code, first.model_copy(update={"id_number": number}))
        assert len(_warned(reg, again)) == 1
    # A warned registration amended to another number (typed wrong) keeps its warning.
    _, code3 = reg.publish_plan(staff_of(iid), iid, plan_details("2503", seats=20))
    warned = reg.register(staff(iid), code3, first)
    reg.amend(staff(iid), warned, first.model_copy(update={"id_number": _other_number(first, 901)}), "录入错误",
              attachment(AttachmentKind.WRITTEN_EXPLANATION))  # fmt: skip
    assert len(_warned(reg, warned)) == 1


def test_a_review_answered_before_the_cancellation_stays_answered_whichever_partition_is_consumed_first(
    world,
    conn,  # noqa: F811
    database_url,
):
    from consumers.rebuild import rebuild
    from domain.deadlines import Step
    from domain.exam import ReviewOutcome
    from projections import PROJECTIONS, candidates, deadlines
    from projections.store import apply_message
    from tests.lifecycle import score_and_publish
    from tests.test_read_models import KEY, bus_messages

    iid, pid, rids = approved_cohort(world, 2)
    exam = sit_exam(world, iid, pid, rids)
    score_and_publish(world, iid, exam, rids)
    world.at(date(2026, 4, 16)).exams.request_review(candidate(1), rids[0], Subject.THEORY, "有异议")
    world.at(date(2026, 4, 17)).exams.answer_review(staff(iid, "reviewer-he"), rids[0], ReviewOutcome.UPHELD, "维持")
    world.at(date(2026, 4, 20)).registrations.disqualify(staff(iid), rids[0], FALSE)
    messages = bus_messages(world.registrations)
    # The session's partition consumed ahead of the sitting's: the cancellation before the review's two events.
    session_first = sorted(messages, key=lambda m: not m["type"].startswith("cn.skillcert.exam_session."))
    offsets: dict[str, int] = {}
    for m in session_first:
        offsets[m["aggregateid"]] = offsets.get(m["aggregateid"], -1) + 1
        for p in PROJECTIONS:
            if m["source"].rpartition("/")[2] in p.topics:
                apply_message(conn, p, m["source"], hash(m["aggregateid"]) % 1000, offsets[m["aggregateid"]], m)
    conn.commit()

    def review():
        [d] = [d for d in deadlines.deadlines_of(conn, str(sitting_id(rids[0]))) if d["step"] == Step.REVIEW_ANSWERED]
        return d["closed_on"], d["closed_by"], d["late"]

    assert review() == (date(2026, 4, 17), "sitting.review_answered", False)
    record = candidates.get_registration(conn, str(rids[0]))
    assert (record["scores"], record["review"]) == (None, None)  # a reviewed score is a score too
    rebuild(conn, PROJECTIONS, world.registrations, KEY)
    conn.commit()
    assert review() == (date(2026, 4, 17), "sitting.review_answered", False)


def test_deadlines_a_disqualification_closes_close_on_the_services_day_not_the_utc_clocks(world, conn):  # noqa: F811
    from domain.deadlines import Step
    from projections import deadlines
    from tests.lifecycle import score_and_publish
    from tests.test_read_models import apply_live, bus_messages

    iid, pid, rids = approved_cohort(world, 2)
    exam = sit_exam(world, iid, pid, rids)
    score_and_publish(world, iid, exam, rids)
    world.at(date(2026, 4, 16)).exams.request_review(candidate(1), rids[0], Subject.THEORY, "有异议")
    world.at(date(2026, 4, 20)).registrations.disqualify(staff(iid), rids[0], FALSE)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    [review] = [d for d in deadlines.deadlines_of(conn, str(sitting_id(rids[0]))) if d["step"] == Step.REVIEW_ANSWERED]
    assert review["closed_on"] == date(2026, 4, 20)


def test_a_revoked_certificate_says_so_on_its_page_and_its_proof_paperwork_and_the_wide_topic_says_not_why(
    world,
    conn,  # noqa: F811
    database_url,
    schema,
):
    from fastapi.testclient import TestClient

    from domain.certificate import LossKind
    from infra.api import create_app
    from tests.api import bearer
    from tests.lifecycle import id_check
    from tests.test_read_models import KEY, apply_live, bus_messages

    iid, cids = handed_over_certificates(world, 1)
    certs = world.certificates
    certs.apply_for_proof(staff(iid), cids[0], LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                          **id_check(certs, cids[0]))  # fmt: skip
    world.registrations.disqualify(staff(iid), certs.certificate(cids[0]).registration_id, FALSE)
    messages = bus_messages(world.registrations)
    apply_live(conn, messages)
    conn.commit()
    [revoked] = [m for m in messages if m["type"] == "cn.skillcert.certificate.revoked.v2"]
    assert FALSE not in str(revoked) and "finding" not in revoked["data"]
    [disqualified] = [m for m in messages if m["type"] == "cn.skillcert.registration.disqualified.v1"]
    assert disqualified["data"]["reasons"] == FALSE  # on the restricted registrations topic
    number = certs.certificate(cids[0]).number
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex())) as http:
        v = http.get(f"/verify/{number}").json()
        assert (v["status"], v["void_because"]) == ("revoked", "revoked")
        page = http.get(f"/verify/{number}", headers={"Accept": "text/html"}).text
        assert "收回并注销" in page and "数据已删除" not in page
        token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
        for paper in ("proof-receipt.pdf", "proof-application.pdf"):
            r = http.get(f"/certificates/{cids[0]}/{paper}", headers=token)
            assert r.status_code == 409 and "void" in r.json()["detail"], paper
