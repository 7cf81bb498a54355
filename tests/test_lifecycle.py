"""200 candidates of one plan through the whole lifecycle against PostgreSQL, then every
aggregate's final state checked."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from domain.certificate import Correction, DataStatus, Delivery, LossKind, certificate_id
from domain.certnumber import parse
from domain.exam import Attendance, ExamSession, ReviewOutcome, Sitting, Subject, sitting_id
from domain.levels import Level
from domain.registration import AttachmentKind, Registration, Status
from domain.stock import stock_id
from tests.builders import attachment, working_years_form
from tests.lifecycle import (
    CENTRE,
    HR,
    ISSUE_DAY,
    REVIEWER,
    approved_cohort,
    candidate,
    report_and_confirm,
    score_and_publish,
    sit_exam,
    staff,
)

N = 200


def test_two_hundred_candidates_from_registration_to_printed_certificate(world):
    w = world
    iid, pid, rids = approved_cohort(w, N)
    reg, exams, certs = w.registrations, w.exams, w.certificates
    # Training for the first 50; candidate 2 misspelled their name and explains it in writing.
    for rid in rids[:50]:
        reg.open_training_account(staff(iid), rid, f"train-{rid.hex[:8]}")
        reg.complete_training(staff(iid), rid, Decimal("64"), attachment(AttachmentKind.TRAINING_CERTIFICATE))
    reg.amend(staff(iid), rids[1], working_years_form(2, name="考生二"), "报名时姓名录入错误，附身份证复印件",
              attachment(AttachmentKind.WRITTEN_EXPLANATION))  # fmt: skip

    absent = frozenset(rids[i - 1] for i in (50, 100, 150, 200))
    exam_id = sit_exam(w, iid, pid, rids, absent)
    score_and_publish(w, iid, exam_id, rids, absent)
    # Three score reviews in the window: candidate 7 (failed theory) is changed to a pass.
    w.at(date(2026, 4, 16))
    for i in (1, 7, 14):
        exams.request_review(candidate(i), rids[i - 1], Subject.THEORY, "对理论成绩有异议")
    w.at(date(2026, 4, 20))
    exams.answer_review(staff(iid, REVIEWER), rids[6], ReviewOutcome.CHANGED, "复核发现漏计一题", Decimal("60.5"))
    for i in (1, 14):
        exams.answer_review(staff(iid, REVIEWER), rids[i - 1], ReviewOutcome.UPHELD, "复核无误")
    report_and_confirm(w, iid, exam_id)

    failed = {rids[i - 1] for i in range(1, N + 1) if i % 7 == 0 and i != 7} - absent
    passed = [r for r in rids if r not in absent and r not in failed]
    w.at(ISSUE_DAY)
    numbers = certs.issue(staff(iid), exam_id)
    assert set(numbers) == set(passed)
    cids = [certificate_id(r) for r in passed]

    # Data reporting: two returned, corrected and re-reported; all accepted, then queryable.
    w.at(date(2026, 5, 20))
    certs.report_data(staff(iid), cids)
    w.at(date(2026, 6, 1))
    for cid in cids[:2]:
        certs.return_data(CENTRE, cid, "工作信息审批表缺少审批人签字")
    certs.accept_data(CENTRE, cids[2:])
    w.at(date(2026, 6, 10))
    certs.report_data(staff(iid), cids[:2])
    certs.accept_data(CENTRE, cids[:2])
    w.at(date(2026, 7, 1))
    certs.make_queryable(CENTRE, cids)

    # Blank stock: demand filed in January, 300 forms received; two spoiled while printing.
    w.at(date(2026, 1, 20))
    certs.file_demand(staff(iid), iid, 2026, {Level.TWO: 250, Level.THREE: 40})
    w.at(date(2026, 7, 2))
    certs.receive_forms(staff(iid), iid, 10_000_001, 10_000_300, "SH-2026-0701")
    for k, cid in enumerate(cids):
        if k in (10, 11):
            certs.spoil_form(staff(iid), iid, certs.stock(iid).next_form(), "卡纸")
        certs.print(staff(iid), cid)
    certs.destroy_forms(staff(iid), iid, [10_000_011, 10_000_013], "监销人：王主任")
    w.at(date(2026, 7, 8))
    for k, cid in enumerate(cids):
        if k % 2:
            certs.hand_over(
                staff(iid), cid, Delivery.MAIL, attachment(AttachmentKind.CERTIFICATE_APPLICATION), f"SF{k:010d}"
            )
            certs.sign_receipt(staff(iid), cid, "本人")
        else:
            certs.hand_over(staff(iid), cid, Delivery.PICKUP, attachment(AttachmentKind.CERTIFICATE_APPLICATION))

    # After handover: a loss proof, an approved correction, a rejected one, a deletion.
    lost, corrected, refused, deleted = cids[3], cids[4], cids[5], cids[6]
    w.at(date(2026, 9, 1))
    certs.apply_for_proof(staff(iid), lost, LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION))
    proof = certs.issue_proof(staff(iid), lost)
    evidence = attachment(AttachmentKind.CORRECTION_EVIDENCE)
    certs.apply_for_correction(staff(iid), corrected, Correction(name="考生改名"), "公安机关更名证明", evidence)
    certs.apply_for_correction(staff(iid), refused, Correction(name="另一个名字"), "本人要求", evidence)
    certs.approve_correction(HR, corrected)
    certs.reject_correction(HR, refused, "非录入错误，不属纠错范围")
    certs.report_data(staff(iid), [corrected])
    certs.accept_data(CENTRE, [corrected])
    certs.make_queryable(CENTRE, [corrected])
    reprint_form = certs.print(staff(iid), corrected)
    certs.hand_over(staff(iid), corrected, Delivery.PICKUP, attachment(AttachmentKind.CERTIFICATE_APPLICATION))
    certs.record_holder_commitment(staff(iid), deleted, attachment(AttachmentKind.HOLDER_COMMITMENT))
    certs.delete_data(staff(iid), deleted, "持证人放弃证书相关待遇")
    w.at(date(2026, 10, 8))
    in_books = certs.books(iid).in_stock
    assert certs.take_stock(staff(iid), iid, "2026-H2", in_books) == 0

    # Final state of every aggregate.
    repo = reg.repository
    for i, rid in enumerate(rids, 1):
        r: Registration = repo.get(rid)
        assert (r.status, r.condition, r.fee_receipt) == (Status.APPROVED, "2.1", f"R2026{i:06d}")
        assert (r.training_hours is not None) == (i <= 50)
        s: Sitting = repo.get(sitting_id(rid))
        assert s.attendance is (Attendance.ABSENT if rid in absent else Attendance.FINISHED)
        assert bool(s.scores) == (rid not in absent)
        assert s.review_answered == (i in (1, 7, 14))
    assert repo.get(rids[1]).form.name == "考生二"
    session: ExamSession = repo.get(exam_id)
    assert session.confirmed and session.attempt == 1 and len(session.reported) == N
    assert sorted(e.registration_id for e in session.passed()) == sorted(passed)

    serials = []
    for rid, cid in zip(passed, cids, strict=True):
        c = repo.get(cid)
        number = parse(c.number)
        serials.append(number.serial)
        assert (number.prefix, number.year, number.level) == ("S000044032015", 2026, Level.TWO)
        assert c.number == numbers[rid]
        expected = DataStatus.DELETED if cid == deleted else DataStatus.QUERYABLE
        assert c.data_status is expected, c.number
        assert c.handed_over in (Delivery.PICKUP, Delivery.MAIL) and c.receipt_signed
        assert len(c.printed_forms) == (2 if cid == corrected else 1)
    assert sorted(serials) == list(range(1, len(passed) + 1))
    assert repo.get(lost).proofs == [proof] and proof == repo.get(lost).number + "-Z01"
    assert repo.get(corrected).holder.name == "考生改名"
    assert repo.get(refused).holder.name != "另一个名字"
    assert repo.get(rids[1]).form.name == repo.get(certificate_id(rids[1])).holder.name

    stock = repo.get(stock_id(iid))
    books = stock.books
    assert books.balanced
    assert (books.received, books.used, books.spoiled, books.destroyed) == (300, len(passed) + 1, 2, 2)
    assert stock.used[reprint_form] == repo.get(corrected).number
    all_forms = [f for cid in cids for f in repo.get(cid).printed_forms]
    assert len(all_forms) == len(set(all_forms)) == books.used
