"""The exams application service: sessions, admission tickets, the exam day, scores,
score reviews and result reporting."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import date, time
from decimal import Decimal
from uuid import UUID

from domain.errors import Conflict, InvalidInput
from domain.exam import (
    Attendance,
    ExamSession,
    ResultEntry,
    ReviewOutcome,
    Room,
    SeatAssignment,
    Sitting,
    Subject,
    sitting_id,
)
from domain.institution import Institution
from domain.model import Actor, Aggregate
from domain.plan import EvaluationPlan
from domain.registration import Registration, Status
from infra.collector import collecting_less
from infra.services.base import Service

SCORING_LOCKS = 0x736B7363  # "sksc": the first key of a session's scoring lock (see PLAN_LOCKS)


def scoring_lock(exam_id: UUID) -> tuple[int, int]:
    return SCORING_LOCKS, int.from_bytes(exam_id.bytes[:4], "big", signed=True)


TICKET_LOCKS = 0x736B746B  # "sktk"


def ticket_lock(plan_id: UUID) -> tuple[int, int]:
    """Held while a plan's tickets are issued, and by a disqualification (Registrations.disqualify): a ticket and
    a disqualification each see the other or come first. Nothing else is saved in common to tell them apart."""
    return TICKET_LOCKS, int.from_bytes(plan_id.bytes[:4], "big", signed=True)


class Exams(Service):
    def schedule(
        self,
        actor: Actor,
        plan_id: UUID,
        session: str,
        exam_date: date,
        starts_at: time,
        ends_at: time,
        location: str,
        rooms: list[Room],
    ) -> UUID:
        plan = self.get(EvaluationPlan, plan_id, "plan")
        institution = self.get(Institution, plan.institution_id, "institution")
        # No certificate is issued outside the filed scope (004 §8); an exam for a plan the scope stopped covering after
        # it was published is refused now, before candidates sit it for nothing.
        try:
            institution.check_scope(plan.details.occupation, plan.details.job, plan.details.level)
        except InvalidInput as e:
            raise Conflict(f"plan {plan.details.plan_number} lies outside the evaluation scope as amended since it was "
                           f"published, so no certificate could follow: {e.message}", field="plan_id") from None  # fmt: skip
        exam = ExamSession.schedule(actor, institution.id, institution.profile, plan.id, plan.details, session,
                                    exam_date, starts_at, ends_at, location, rooms)  # fmt: skip
        with self.evaluating(institution.id, "schedule exams"):
            if exam.id in self.repository:
                raise Conflict(
                    f"session {session} of plan {plan.details.plan_number} is already scheduled", field="session"
                )
            self.save_once(exam)
        return exam.id

    def issue_tickets(
        self, actor: Actor, exam_id: UUID, registration_ids: Sequence[UUID] | None = None
    ) -> list[SeatAssignment]:
        """Admission tickets for the given registrations, or for every approved, fee-paid
        registration of the plan that has none yet."""
        exam = self.get(ExamSession, exam_id, "exam session")
        # The registrations' statuses hold still until it is saved (the plan's ticket lock). Everyone's tickets are
        # thousands of objects held at once: collected less often (infra.collector); 5,000 in 1.44 s rather than
        # 1.67 (medians of 3, in turn, with and without, one process; 2026-11-28).
        with (
            self.evaluating(exam.institution_id, "issue admission tickets", ticket_lock(exam.plan_id)),
            collecting_less(),
        ):
            return self._issue_tickets(actor, exam, registration_ids)

    def _issue_tickets(
        self, actor: Actor, exam: ExamSession, registration_ids: Sequence[UUID] | None
    ) -> list[SeatAssignment]:
        exam_id = exam.id
        plan = self.get(EvaluationPlan, exam.plan_id, "plan")
        # Named registrations are checked by their own plan and status; only "everyone" reads the plan's
        # history for its holders, so one ticket costs the same in a plan of 10 or of 100,000. Everyone is seated
        # in the order they registered (before, by registration id: another order in every installation, so the
        # demo's certificate numbers, which follow the seats, went to other people in each new store).
        wanted = (list(registration_ids) if registration_ids is not None
                  else EvaluationPlan.holders_in_order(self.events.get(plan.id)))  # fmt: skip
        loaded = self.get_many(wanted)
        problems = []
        ready = []
        for rid in wanted:
            registration = loaded.get(rid)
            if not isinstance(registration, Registration) or registration.plan_id != plan.id:
                problems.append(("registration_ids", f"{rid} is not a registration of plan {plan.details.plan_number}"))
                continue
            if registration.status is not Status.APPROVED or registration.fee_receipt is None:
                if registration_ids is not None:
                    problems.append(
                        ("registration_ids", f"{rid} is {registration.status.value} and its fee is "
                         f"{'paid' if registration.fee_receipt else 'unpaid'}: tickets need approval and the fee")
                    )  # fmt: skip
                continue
            ready.append(rid)
        if problems:
            raise InvalidInput(problems)
        if registration_ids is None and not ready:  # "every candidate given already has a ticket" said none was given
            raise Conflict(f"no registration of plan {plan.details.plan_number} is approved with its fee paid: no "
                           "admission ticket to issue")  # fmt: skip
        assignments: list[SeatAssignment] = []

        def attempt() -> list[Aggregate]:
            nonlocal assignments
            session = self.get(ExamSession, exam_id, "exam session")
            ticketed = self.existing(sitting_id(r) for r in ready)
            todo = [r for r in ready if sitting_id(r) not in ticketed]
            assignments = session.assign_seats(actor, todo, self.today())
            return [session, *(Sitting.issue_ticket(actor, session, a) for a in assignments)]

        self.retry(attempt)
        return assignments

    def sitting(self, registration_id: UUID) -> Sitting:
        return self.get(Sitting, sitting_id(registration_id), "admission ticket for registration")

    def sittings(self, exam: ExamSession) -> list[Sitting]:
        """The session's sittings, in seat order: who sits is read from its events (the session counts seats)."""
        return self.get_all(Sitting, (sitting_id(r) for r in ExamSession.candidates_in(self.events.get(exam.id))),
                            "sitting")  # fmt: skip

    def _on_sitting(self, registration_id: UUID, act: Callable[[Sitting], None]) -> None:
        self.change(Sitting, sitting_id(registration_id), "admission ticket for registration", act)

    def _exam_step(
        self, registration_id: UUID, act: Callable[[Sitting], None], registration: Registration | None = None
    ) -> None:
        """A step of the exam day, for a candidate not disqualified: their ticket stands (the seat stays theirs),
        they may not sit. Their scores are cancelled whatever step they reached (Registrations.disqualify)."""
        registration = registration or self.get(Registration, registration_id, "registration")
        if registration.status is Status.DISQUALIFIED:
            raise Conflict(f"the candidate was disqualified: {registration.reasons}")
        self._on_sitting(registration_id, act)

    def check_in(self, actor: Actor, registration_id: UUID) -> None:
        """The first step of a sitting: none begins while the institution's business is suspended (004 第十条); one
        begun before goes on to its end, its scores recorded, though no certificate follows while it lasts."""
        registration = self.get(Registration, registration_id, "registration")
        with self.evaluating(registration.institution_id, "let candidates sit exams"):
            self._exam_step(registration_id, lambda s: s.check_in(actor, self.today()), registration)

    def check_identity(self, actor: Actor, registration_id: UUID) -> None:
        self._exam_step(registration_id, lambda s: s.check_identity(actor, self.today()))

    def sign_in(self, actor: Actor, registration_id: UUID, seat: int, second_identity_check: bool) -> None:
        self._exam_step(registration_id, lambda s: s.sign_in(actor, self.today(), seat, second_identity_check))

    def start(self, actor: Actor, registration_id: UUID) -> None:
        self._exam_step(registration_id, lambda s: s.start(actor, self.today()))

    def finish(self, actor: Actor, registration_id: UUID) -> None:
        self._exam_step(registration_id, lambda s: s.finish(actor, self.today()))

    def mark_absent(self, actor: Actor, registration_id: UUID, reason: str) -> None:
        self._on_sitting(registration_id, lambda s: s.mark_absent(actor, self.today(), reason))

    def close_day(self, actor: Actor, exam_id: UUID) -> int:
        """Close the exam day: whoever did not start is absent. Returns how many were marked absent."""
        absent = 0

        def attempt() -> list[Aggregate]:
            nonlocal absent
            session = self.get(ExamSession, exam_id, "exam session")
            session.close_day(actor, self.today())
            sittings = self.sittings(session)
            running = [f"{s.room} seat {s.seat}" for s in sittings if s.attendance is Attendance.STARTED
                       and s.registration_id not in session.cancelled]  # disqualified mid-exam: not finished  # fmt: skip
            if running:
                raise Conflict(f"{len(running)} candidates have started but not finished: {', '.join(running[:10])}")
            marked = []
            for s in sittings:
                if s.attendance not in (Attendance.FINISHED, Attendance.ABSENT, Attendance.STARTED):
                    s.mark_absent(actor, self.today(), "did not sit")
                    marked.append(s)
            absent = len(marked)
            return [session, *marked]

        self.retry(attempt)
        return absent

    def scoring(self, exam_id: UUID) -> AbstractContextManager[None]:
        """Hold the session's scoring lock while the block runs. Scores and review requests are recorded on the
        sittings, publication and the result report on the session: two kinds of aggregate, so neither's version
        tells a sitting's change that the session moved on after it looked. They take turns on a session instead,
        across processes; without it, a score book saved a moment after the publication changed published scores
        outside a review, and a review requested on the window's last day could land after the report."""
        return self.holding(scoring_lock(exam_id))

    def record_scores(self, actor: Actor, exam_id: UUID, book: dict[UUID, dict[Subject, Decimal]]) -> None:
        """A score book for the session, in one transaction: all of it or none."""
        with self.scoring(exam_id):
            changed, problems = self.check_scores(actor, exam_id, book)
            if problems:
                raise InvalidInput(problems)
            self.save_once(*changed)

    def check_scores(
        self, actor: Actor, exam_id: UUID, book: dict[UUID, dict[Subject, Decimal]]
    ) -> tuple[list[Sitting], list[tuple[str, str]]]:
        """Apply a score book to the sittings without saving: the changed sittings, and every
        problem as ("book.<registration id>[.<subject>]", message). Call it, and save what it
        changed, holding `scoring(exam_id)`."""
        session = self.get(ExamSession, exam_id, "exam session")
        session.ensure_scoring_open()
        found = self.get_many(sitting_id(r) for r in book)
        sittings = {
            r: s for r in book if isinstance(s := found.get(sitting_id(r)), Sitting) and s.exam_id == session.id
        }
        unknown = [r for r in book if r not in sittings]
        if unknown:
            raise InvalidInput([("book", f"{r} has no ticket for session {session.session}") for r in unknown[:20]])
        changed = []
        problems: list[tuple[str, str]] = []
        for rid, scores in book.items():
            s = sittings[rid]
            try:
                s.record_scores(actor, session, scores)
            except InvalidInput as e:
                problems += [(f"book.{rid}.{f.removeprefix('scores.')}", m) for f, m in e.problems]
            except Conflict as e:
                problems.append((f"book.{rid}", e.message))
            changed.append(s)
        return changed, problems

    def publish_scores(self, actor: Actor, exam_id: UUID) -> None:
        with self.scoring(exam_id):  # the scores it checks are the scores it publishes
            session = self.get(ExamSession, exam_id, "exam session")
            unscored = [s for s in self.sittings(session) if s.attendance is Attendance.FINISHED and not s.scores
                        and s.registration_id not in session.cancelled]  # fmt: skip
            if unscored:
                raise Conflict(f"candidates who sat and have no scores yet: {len(unscored)}")
            session.publish_scores(actor, self.today())
            self.save_once(session)

    def request_review(self, actor: Actor, registration_id: UUID, subject: Subject, reason: str) -> None:
        # Under the scoring lock: a report decided at the same moment (the window's last day for one worker, the
        # next day for another) has either seen this request or is decided after it.
        with self.scoring(self.sitting(registration_id).exam_id):
            s = self.sitting(registration_id)
            session = self.get(ExamSession, s.exam_id, "exam session")
            s.request_review(actor, session, subject, reason, self.today())
            self.save_once(s)

    def answer_review(
        self,
        actor: Actor,
        registration_id: UUID,
        outcome: ReviewOutcome,
        note: str,
        score: Decimal | None = None,
        subject: Subject | None = None,
    ) -> None:
        # Under the scoring lock, which a disqualification takes too: an answer never changes a cancelled score.
        with self.scoring(self.sitting(registration_id).exam_id):
            s = self.sitting(registration_id)
            self.get(ExamSession, s.exam_id, "exam session").ensure_not_cancelled(registration_id)
            s.answer_review(actor, outcome, self.today(), score, note, subject)
            self.save_once(s)

    def report_results(self, actor: Actor, exam_id: UUID) -> None:
        with self.scoring(exam_id):  # the scores and reviews it reads hold still until it is saved
            session = self.get(ExamSession, exam_id, "exam session")
            sittings = self.sittings(session)
            disputed = [s for s in sittings if s.review_open and s.registration_id not in session.cancelled]
            if disputed:
                raise Conflict(
                    f"score reviews still open: {len(disputed)}; results are reported once they are answered"
                )
            # The score book names each candidate as the registration now has them (amendments included); one
            # whose scores were cancelled is reported with none (ExamSession.cancel_scores).
            entries = []
            for s in sittings:
                holder = self.get(Registration, s.registration_id, "registration").holder
                if s.registration_id in session.cancelled:
                    entries.append(ResultEntry(registration_id=s.registration_id, holder=holder,
                                               absent=s.attendance is Attendance.ABSENT))  # fmt: skip
                else:
                    entries.append(s.result(session.subjects, holder))
            session.report_results(actor, self.today(), entries)
            self.save_once(session)

    def confirm_results(self, actor: Actor, exam_id: UUID) -> None:
        self.change(ExamSession, exam_id, "exam session", lambda e: e.confirm_results(actor, self.today()))

    def return_results(self, actor: Actor, exam_id: UUID, reasons: str) -> None:
        self.change(ExamSession, exam_id, "exam session", lambda e: e.return_results(actor, reasons))
