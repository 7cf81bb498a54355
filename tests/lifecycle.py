"""Drive candidates through the lifecycle with the real services, step by step, as an
institution would. Dates follow one exam on Friday 10 April 2026 (after Qingming)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from uuid import UUID

from domain.exam import Room, Subject
from domain.levels import Level
from domain.model import Actor, Role
from infra.certificates import Certificates
from infra.exams import Exams
from infra.registrations import Decision, Registrations
from tests.builders import L2_CONDITION, L2_EVIDENCE, candidate, setup_plan, staff_of, working_years_form

EXAM_DAY = date(2026, 4, 10)  # a Friday
TICKETS_OPEN = date(2026, 4, 3)
SCORES_DUE = date(2026, 4, 15)  # 3 working days: Mon 13, Tue 14, Wed 15
REVIEW_CLOSES = date(2026, 4, 24)  # 10 working days
REPORT_DAY = date(2026, 4, 27)
CONFIRM_DAY = date(2026, 4, 28)
ISSUE_DAY = date(2026, 4, 29)
CENTRE = Actor(id="centre-wang", role=Role.PROVINCIAL_CENTRE)
HR = Actor(id="hr-zhao", role=Role.HR_DEPARTMENT)
SCORER = "scorer-chen"
REVIEWER = "reviewer-he"


@dataclass
class World:
    registrations: Registrations
    exams: Exams
    certificates: Certificates
    clock: object

    def at(self, day: date) -> World:
        self.clock.today = day  # type: ignore[attr-defined]
        return self


def staff(iid: UUID, who: str = "staff-li") -> Actor:
    return Actor(id=who, role=Role.INSTITUTION_STAFF, institution_id=iid)


def approved_cohort(w: World, n: int, seats: int | None = None) -> tuple[UUID, UUID, list[UUID]]:
    """n level-2 candidates registered, approved on condition 2.1 and fee paid."""
    w.at(date(2026, 3, 2))
    iid, pid, code = setup_plan(w.registrations, seats=seats or n, level=Level.TWO)
    rids = [w.registrations.register(candidate(i), code, working_years_form(i)) for i in range(1, n + 1)]
    for i, rid in enumerate(rids, 1):
        w.registrations.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
        w.registrations.pay_fee(staff(iid), rid, f"R2026{i:06d}", Decimal("380.00"))
    return iid, pid, rids


def rooms_for(n: int) -> list[Room]:
    return [Room(name=f"30{k}", seats=30) for k in range(1, n // 30 + 2)]


def sit_exam(w: World, iid: UUID, pid: UUID, rids: list[UUID], absent: frozenset[UUID] = frozenset()) -> UUID:
    w.at(TICKETS_OPEN)
    exam_id = w.exams.schedule(
        staff(iid), pid, "A", EXAM_DAY, time(9), time(11, 30), "深圳市南山区科技园考点", rooms_for(len(rids))
    )
    seats = {a.registration_id: a.seat for a in w.exams.issue_tickets(staff(iid), exam_id)}
    w.at(EXAM_DAY)
    proctor = staff(iid, "proctor-liu")
    for i, rid in enumerate(rids, 1):
        if rid in absent:
            continue
        w.exams.check_in(candidate(i), rid)
        w.exams.check_identity(proctor, rid)
        w.exams.sign_in(proctor, rid, seats[rid], second_identity_check=True)
        w.exams.start(proctor, rid)
        w.exams.finish(proctor, rid)
    w.exams.close_day(staff(iid), exam_id)
    return exam_id


def score(i: int) -> dict[Subject, Decimal]:
    """Every seventh candidate fails the theory paper; the rest pass everything."""
    theory = Decimal("52.5") if i % 7 == 0 else Decimal("60") + Decimal(i % 40)
    return {Subject.THEORY: theory, Subject.SKILLS: Decimal("75"), Subject.COMPREHENSIVE: Decimal("81.5")}


def score_and_publish(
    w: World, iid: UUID, exam_id: UUID, rids: list[UUID], absent: frozenset[UUID] = frozenset()
) -> None:
    w.at(date(2026, 4, 13))
    book = {rid: score(i) for i, rid in enumerate(rids, 1) if rid not in absent}
    w.exams.record_scores(staff(iid, SCORER), exam_id, book)
    w.exams.publish_scores(staff(iid), exam_id)


def report_and_confirm(w: World, iid: UUID, exam_id: UUID) -> None:
    w.at(REPORT_DAY)
    w.exams.report_results(staff(iid), exam_id)
    w.at(CONFIRM_DAY)
    w.exams.confirm_results(CENTRE, exam_id)


def confirmed_exam(w: World, n: int, absent_every: int = 0) -> tuple[UUID, UUID, list[UUID], UUID]:
    iid, pid, rids = approved_cohort(w, n)
    absent = frozenset(r for i, r in enumerate(rids, 1) if absent_every and i % absent_every == 0)
    exam_id = sit_exam(w, iid, pid, rids, absent)
    score_and_publish(w, iid, exam_id, rids, absent)
    report_and_confirm(w, iid, exam_id)
    return iid, pid, rids, exam_id


def queryable_certificates(w: World, n: int) -> tuple[UUID, list[UUID]]:
    """n candidates through to certificates on the national query platform. Returns the
    institution and the certificate ids."""
    from domain.certificate import certificate_id

    iid, _, _, exam_id = confirmed_exam(w, n)
    w.at(ISSUE_DAY)
    cids = [certificate_id(r) for r in w.certificates.issue(staff(iid), exam_id)]
    w.certificates.report_data(staff(iid), cids)
    w.certificates.accept_data(CENTRE, cids)
    w.at(date(2026, 7, 1))
    w.certificates.make_queryable(CENTRE, cids)
    return iid, cids
