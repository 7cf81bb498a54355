"""200 candidates of one plan through the whole lifecycle against PostgreSQL, then every
aggregate's final state checked."""

from __future__ import annotations

from domain.certificate import DataStatus, Delivery, certificate_id
from domain.certnumber import parse
from domain.exam import Attendance, ExamSession, Sitting, Subject, sitting_id
from domain.levels import Level
from domain.registration import Registration, Status
from domain.stock import stock_id
from tests.lifecycle import full_lifecycle

N = 200


def test_two_hundred_candidates_from_registration_to_printed_certificate(world):
    w = world
    life = full_lifecycle(w, N)
    reg = w.registrations
    iid, rids, absent, passed, cids, numbers = life.iid, life.rids, life.absent, life.passed, life.cids, life.numbers
    exam_id, lost, corrected, refused, deleted = life.exam_id, life.lost, life.corrected, life.refused, life.deleted
    proof, reprint_form = life.proof, life.reprint_form
    assert set(numbers) == set(passed)
    assert life.discrepancy == 0

    # Final state of every aggregate.
    repo = reg.repository
    disqualified = repo.get(life.revoked).registration_id
    for i, rid in enumerate(rids, 1):
        r: Registration = repo.get(rid)
        status = Status.DISQUALIFIED if rid == disqualified else Status.APPROVED
        assert (r.status, r.condition, r.fee_receipt) == (status, "2.1", f"R2026{i:06d}")
        assert (r.training_hours is not None) == (i <= 50)
        s: Sitting = repo.get(sitting_id(rid))
        assert s.attendance is (Attendance.ABSENT if rid in absent else Attendance.FINISHED)
        assert bool(s.scores) == (rid not in absent)
        assert (s.answered == {Subject.THEORY}) == (i in (1, 7, 14))
    assert repo.get(rids[1]).form.name == "考生二"
    session: ExamSession = repo.get(exam_id)
    assert session.confirmed and session.attempt == 1 and len(session.reported) == N
    assert sorted(e.registration_id for e in session.passed()) == sorted(set(passed) - {disqualified})
    assert session.cancelled == {disqualified: "工作年限证明系伪造（单位核实回函）"}

    serials = []
    for rid, cid in zip(passed, cids, strict=True):
        c = repo.get(cid)
        number = parse(c.number)
        serials.append(number.serial)
        assert (number.prefix, number.year, number.level) == ("S000044032015", 2026, Level.TWO)
        assert c.number == numbers[rid]
        expected = DataStatus.DELETED if cid == deleted else DataStatus.QUERYABLE
        assert c.data_status is expected, c.number
        assert (c.revoked is not None) == (cid == life.revoked)
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
    assert reprint_form in stock.used and repo.get(corrected).printed_forms[-1] == reprint_form
    all_forms = [f for cid in cids for f in repo.get(cid).printed_forms]
    assert len(all_forms) == len(set(all_forms)) == books.used
