"""Exam sessions, each candidate's sitting, scores, score review and result reporting
(000 exam and results flows, DESIGN.md steps 5-7)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field, create_model

from domain.access import CENTRE, STAFF, STAFF_OR_CANDIDATE, require
from domain.deadlines import Deadline, Step, add_working_days, deadline, review_days_after_publication
from domain.errors import Conflict, InvalidInput
from domain.institution import DeadlineProfile
from domain.levels import Level
from domain.model import Actor, Aggregate, Immutable, Snapshot
from domain.personal import Personal, personal
from domain.plan import PlanDetails
from domain.registration import Holder

TICKETS_OPEN_DAYS = 7  # admission tickets are available one week before the exam (000 ②)
PASS_MARK = Decimal(60)


class Subject(StrEnum):
    THEORY = "理论知识"
    SKILLS = "操作技能"
    COMPREHENSIVE = "综合评审"  # technicians and senior technicians


def subjects_for(level: Level) -> tuple[Subject, ...]:
    if level in (Level.ONE, Level.TWO):
        return (Subject.THEORY, Subject.SKILLS, Subject.COMPREHENSIVE)
    return (Subject.THEORY, Subject.SKILLS)


class Room(Immutable):
    name: str = Field(min_length=1, max_length=30, json_schema_extra=personal(Personal.NONE))
    seats: int = Field(gt=0, le=500)


class SeatAssignment(Immutable):
    registration_id: UUID
    room: str
    seat: int


class ReviewRequest(Immutable):
    subject: Subject
    reason: str
    requested_on: date
    answer: Deadline  # when the answer is due


class ResultEntry(Immutable):
    """One line of the score book."""

    registration_id: UUID
    holder: Holder
    absent: bool = False
    scores: dict[Subject, Decimal] = Field(default_factory=dict, json_schema_extra=personal(Personal.RESULTS))
    passed: bool = False


def exam_id(plan_id: UUID, session: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"skillcert:exam:{plan_id}:{session}")


def sitting_id(registration_id: UUID) -> UUID:
    # One sitting per registration: a resit is a new registration for a new plan.
    return uuid5(NAMESPACE_URL, f"skillcert:sitting:{registration_id}")


class ExamSession(Aggregate):
    class Scheduled(Aggregate.Created):
        actor: Actor
        institution_id: UUID
        plan_id: UUID
        plan_number: str
        occupation: str
        job: str | None
        level: Level
        profile: DeadlineProfile
        session: str
        exam_date: date
        starts_at: time
        ends_at: time
        location: str
        rooms: list[Room]

    class SeatsAssigned(Aggregate.Event):
        assignments: list[SeatAssignment]

    class DayClosed(Aggregate.Event):
        """The exam is over: the score and review clocks start."""

        scores_due: Deadline
        review_window: Deadline

    class ScoresPublished(Aggregate.Event):
        published_on: date
        late: bool
        # Scores published late: the review window as it now runs (see `publish_scores`); None when unchanged.
        review_window: Deadline | None = None

    class ResultsReported(Aggregate.Event):
        attempt: int
        reported_on: date
        entries: list[ResultEntry]

    class ResultsConfirmed(Aggregate.Event):
        attempt: int
        numbering: Deadline  # certificate numbers due

    class ResultsReturned(Aggregate.Event):
        attempt: int
        reasons: str

    class ScoresCancelled(Aggregate.Event):
        """A candidate's scores for the session, every subject's, cancelled: their declaration was found false
        (001 承诺: 已参加考试则被取消当次考试所有科目成绩)."""

        registration_id: UUID
        reasons: str
        # Whether the results reported (or confirmed) counted the candidate as passed: a pass rate has one fewer.
        was_passed: bool = False
        # Whether a certificate had been issued on them (it is revoked, or its data was deleted): if not, the
        # session owes one certificate fewer.
        certificate_issued: bool = False
        cancelled_on: date | None = None  # the service's day (None only in events stored before it was recorded)

    @event(Scheduled)
    def __init__(
        self,
        actor: Actor,
        institution_id: UUID,
        plan_id: UUID,
        plan_number: str,
        occupation: str,
        job: str | None,
        level: Level,
        profile: DeadlineProfile,
        session: str,
        exam_date: date,
        starts_at: time,
        ends_at: time,
        location: str,
        rooms: list[Room],
    ) -> None:
        self.institution_id = institution_id
        self.plan_id = plan_id
        self.plan_number = plan_number
        self.occupation = occupation
        self.job = job
        self.level = level
        self.profile = profile
        self.session = session
        self.exam_date = exam_date
        self.starts_at = starts_at
        self.ends_at = ends_at
        self.location = location
        self.rooms = rooms
        # How many seats are taken: a count, not a seat map, so the session's state (and its snapshot)
        # stays the same size however many sit. Seats are filled in room order and never given back, so
        # the taken ones are the first `seated`; who sits is in the events (candidates_in()), and one
        # ticket per registration is the sitting's own id (sitting_id).
        self.seated = 0
        self.scores_due: Deadline | None = None
        self.review_window: Deadline | None = None
        self.published_on: date | None = None
        self.attempt = 0
        self.reported: list[ResultEntry] | None = None
        self.numbering: Deadline | None = None  # set when the centre confirms
        self.cancelled: dict[UUID, str] = {}  # registration -> why its scores were cancelled

    Snapshot = Snapshot

    def snapshot_state(self) -> dict[str, Any]:
        return _SessionState.model_validate({k: getattr(self, k) for k in _SessionState.model_fields}).model_dump(
            mode="json"
        )

    @staticmethod
    def restore_state(state: dict[str, Any]) -> dict[str, Any]:
        return dict(_SessionState.model_validate(state))

    @staticmethod
    def candidates_in(events: Iterable[Any]) -> list[UUID]:
        """Who has a ticket for the session, in seat order, from its events (a score book needs it)."""
        return [a.registration_id for e in events if isinstance(e, ExamSession.SeatsAssigned) for a in e.assignments]

    @classmethod
    def schedule(
        cls,
        actor: Actor,
        institution_id: UUID,
        profile: DeadlineProfile,
        plan_id: UUID,
        plan: PlanDetails,
        session: str,
        exam_date: date,
        starts_at: time,
        ends_at: time,
        location: str,
        rooms: list[Room],
    ) -> ExamSession:
        require(actor, STAFF, "schedule exams", institution_id)
        problems = []
        if not session.strip() or len(session) > 20:
            problems.append(("session", "must name the session, 1-20 characters"))
        if not plan.evaluation_start <= exam_date <= plan.evaluation_end:
            problems.append(
                (
                    "exam_date",
                    f"must fall in the plan's evaluation period {plan.evaluation_start} to {plan.evaluation_end}",
                )
            )
        if ends_at <= starts_at:
            problems.append(("ends_at", "must be after starts_at"))
        if not rooms or len({r.name for r in rooms}) != len(rooms):
            problems.append(("rooms", "at least one room, each named once"))
        if not location.strip():
            problems.append(("location", "is required"))
        if problems:
            raise InvalidInput(problems)
        return cls._create(
            cls.Scheduled,
            id=exam_id(plan_id, session.strip()),
            actor=actor,
            institution_id=institution_id,
            plan_id=plan_id,
            plan_number=plan.plan_number,
            occupation=plan.occupation,
            job=plan.job,
            level=plan.level,
            profile=profile,
            session=session.strip(),
            exam_date=exam_date,
            starts_at=starts_at,
            ends_at=ends_at,
            location=location.strip(),
            rooms=rooms,
        )

    @property
    def subjects(self) -> tuple[Subject, ...]:
        return subjects_for(self.level)

    @property
    def capacity(self) -> int:
        return sum(r.seats for r in self.rooms)

    def assign_seats(self, actor: Actor, registration_ids: list[UUID], today: date) -> list[SeatAssignment]:
        """Seat candidates in room order, filling the first free seats; tickets open one week before."""
        require(actor, STAFF, "issue admission tickets", self.institution_id)
        opens = self.exam_date - timedelta(days=TICKETS_OPEN_DAYS)
        if today < opens:
            raise Conflict(f"admission tickets are issued from {opens}, one week before the exam on {self.exam_date}")
        if today > self.exam_date or self.scores_due is not None:
            raise Conflict(f"the exam on {self.exam_date} has taken place; no more tickets")
        new = list(dict.fromkeys(registration_ids))  # who has a ticket already, the caller has left out
        if not new:
            raise Conflict("every candidate given already has an admission ticket")
        if len(new) > self.capacity - self.seated:
            raise Conflict(
                f"{len(new)} candidates but only {self.capacity - self.seated} free seats in the session's rooms"
            )
        assignments = [SeatAssignment(registration_id=r, room=room, seat=n)
                       for r, (room, n) in zip(new, self._free_seats(len(new)), strict=True)]  # fmt: skip
        self._seats_assigned(actor, assignments)
        return assignments

    def _free_seats(self, count: int) -> list[tuple[str, int]]:
        """The next `count` seats in room order after the first `seated`, without listing the taken ones."""
        skip, free = self.seated, []
        for room in self.rooms:
            if skip >= room.seats:
                skip -= room.seats
                continue
            free += [(room.name, n) for n in range(skip + 1, min(room.seats, skip + count - len(free)) + 1)]
            skip = 0
            if len(free) == count:
                break
        return free

    @event(SeatsAssigned)
    def _seats_assigned(self, actor: Actor, assignments: list[SeatAssignment]) -> None:
        self.seated += len(assignments)

    def close_day(self, actor: Actor, today: date) -> None:
        require(actor, STAFF, "close the exam day", self.institution_id)
        if today < self.exam_date:
            raise Conflict(f"the exam is on {self.exam_date}; it cannot close before")
        if self.scores_due is not None:
            raise Conflict("the exam day is already closed")
        self._day_closed(
            actor,
            deadline(self.profile, Step.SCORES_PUBLISHED, self.exam_date),
            deadline(self.profile, Step.REVIEW_WINDOW, self.exam_date),
        )

    @event(DayClosed)
    def _day_closed(self, actor: Actor, scores_due: Deadline, review_window: Deadline) -> None:
        self.scores_due = scores_due
        self.review_window = review_window

    def ensure_scoring_open(self) -> None:
        if self.scores_due is None:
            raise Conflict("scores are recorded after the exam day is closed")
        if self.published_on is not None:
            raise Conflict("scores are published; a change now goes through a score review")

    def publish_scores(self, actor: Actor, today: date) -> None:
        require(actor, STAFF, "publish scores", self.institution_id)
        if self.scores_due is None:
            raise Conflict("scores are published after the exam day is closed")
        if self.published_on is not None:
            raise Conflict(f"scores were already published on {self.published_on}")
        assert self.review_window is not None  # set with scores_due
        # 000 成绩复核 gives candidates the days from publication to the window's end to ask for a review. Published
        # late, the scores would leave fewer, or none: the institution's delay would take the candidates' right. The
        # window then runs as many working days after publication as it does after publication on time.
        window, late = self.review_window, self.scores_due.missed_by(today)
        if late:
            due, provisional = add_working_days(today, review_days_after_publication(self.profile))
            if due > window.due:
                window = Deadline(step=Step.REVIEW_WINDOW, start=today, due=due, provisional=provisional)
        self._scores_published(actor, today, late, window if window is not self.review_window else None)

    @event(ScoresPublished)
    def _scores_published(
        self, actor: Actor, published_on: date, late: bool, review_window: Deadline | None = None
    ) -> None:
        self.published_on = published_on
        if review_window is not None:
            self.review_window = review_window

    def report_results(self, actor: Actor, today: date, entries: list[ResultEntry]) -> None:
        """Undisputed results and the score book, after the review window (000 results flow)."""
        require(actor, STAFF, "report results", self.institution_id)
        if self.published_on is None or self.review_window is None:
            raise Conflict("results are reported after the scores are published")
        if today <= self.review_window.due:
            raise Conflict(f"the score review window runs until {self.review_window.due}; report after it")
        if self.confirmed:
            raise Conflict("the results are already confirmed")
        if self.reported is not None:
            raise Conflict(f"attempt {self.attempt} is awaiting the provincial centre")
        # Which candidates, the service takes from the seat events (candidates_in); here, that none is
        # missing or listed twice.
        if not len({e.registration_id for e in entries}) == len(entries) == self.seated:
            raise Conflict("the score book must list every candidate of the session exactly once")
        if any(e.registration_id in self.cancelled and (e.passed or e.scores) for e in entries):
            raise Conflict("a candidate whose scores were cancelled is reported with no scores, not passed")
        self._results_reported(actor, self.attempt + 1, today, entries)

    @event(ResultsReported)
    def _results_reported(self, actor: Actor, attempt: int, reported_on: date, entries: list[ResultEntry]) -> None:
        self.attempt = attempt
        self.reported = entries

    def confirm_results(self, actor: Actor, today: date) -> None:
        require(actor, CENTRE, "confirm results")
        if self.reported is None or self.confirmed:
            raise Conflict("no reported results await confirmation")
        self._results_confirmed(actor, self.attempt, deadline(self.profile, Step.CERTIFICATE_NUMBER, today))

    @event(ResultsConfirmed)
    def _results_confirmed(self, actor: Actor, attempt: int, numbering: Deadline) -> None:
        self.numbering = numbering

    @property
    def confirmed(self) -> bool:
        return self.numbering is not None

    def return_results(self, actor: Actor, reasons: str) -> None:
        require(actor, CENTRE, "return results")
        if self.reported is None or self.confirmed:
            raise Conflict("no reported results await confirmation")
        if not reasons.strip():
            raise InvalidInput([("reasons", "say what the institution must correct")])
        self._results_returned(actor, self.attempt, reasons.strip())

    @event(ResultsReturned)
    def _results_returned(self, actor: Actor, attempt: int, reasons: str) -> None:
        self.reported = None

    def passed(self) -> list[ResultEntry]:
        if not self.confirmed or self.reported is None:
            raise Conflict(f"the results of session {self.session} are not confirmed by the provincial centre")
        return [e for e in self.reported if e.passed and e.registration_id not in self.cancelled]

    def cancel_scores(
        self, actor: Actor, registration_id: UUID, reasons: str, certificate_issued: bool, today: date
    ) -> None:
        """Cancel one candidate's scores for this session, whatever stage its results are at: before the report
        they are reported as none; reported or confirmed, the candidate no longer passes, and no certificate is
        issued on them. The caller has checked that the candidate has a ticket for this session."""
        require(actor, STAFF + CENTRE, "cancel scores", self.institution_id)
        if registration_id in self.cancelled:
            raise Conflict("the candidate's scores for this session are already cancelled")
        if not reasons.strip():
            raise InvalidInput([("reasons", "say why the scores are cancelled")])
        was_passed = any(e.registration_id == registration_id and e.passed for e in self.reported or [])
        self._scores_cancelled(actor, registration_id, reasons.strip(), was_passed, certificate_issued, today)

    @event(ScoresCancelled)
    def _scores_cancelled(
        self,
        actor: Actor,
        registration_id: UUID,
        reasons: str,
        was_passed: bool,
        certificate_issued: bool,
        cancelled_on: date | None = None,
    ) -> None:
        self.cancelled = {**self.cancelled, registration_id: reasons}
        if self.reported is not None:
            self.reported = [
                e.model_copy(update={"scores": {}, "passed": False}) if e.registration_id == registration_id else e
                for e in self.reported
            ]

    def ensure_not_cancelled(self, registration_id: UUID) -> None:
        if registration_id in self.cancelled:
            raise Conflict(
                f"the candidate's scores for session {self.session} were cancelled: {self.cancelled[registration_id]}"
            )


# What a session's snapshot holds, typed for JSON: what it was scheduled with (the Scheduled event's
# fields, so a field added there is snapshotted too) and what changes after.
_SessionState = create_model(
    "_SessionState",
    __base__=Immutable,
    **{
        k: (f.annotation, ...)
        for k, f in ExamSession.Scheduled.model_fields.items()
        if k not in Aggregate.Created.model_fields
    },  # fmt: skip
    seated=(int, ...),
    scores_due=(Deadline | None, ...),
    review_window=(Deadline | None, ...),
    published_on=(date | None, ...),
    attempt=(int, ...),
    reported=(list[ResultEntry] | None, ...),
    numbering=(Deadline | None, ...),
    cancelled=(dict[UUID, str], Field(default_factory=dict)),  # not in snapshots taken before it existed
)


class Attendance(StrEnum):
    TICKETED = "ticketed"
    CHECKED_IN = "checked_in"  # online, on the day
    AT_ENTRY = "identity_checked"  # ID card and ticket checked at the entrance
    SIGNED_IN = "signed_in"  # at the ticket's seat, after the proctor's second identity check
    STARTED = "started"
    FINISHED = "finished"
    ABSENT = "absent"


class ReviewOutcome(StrEnum):
    UPHELD = "upheld"
    CHANGED = "changed"


class Sitting(Aggregate):
    """One candidate at one exam session: ticket, the day, scores, the score review."""

    class TicketIssued(Aggregate.Created):
        actor: Actor
        registration_id: UUID
        exam_id: UUID
        institution_id: UUID
        exam_date: date
        starts_at: time
        location: str
        room: str
        seat: int

    class CheckedIn(Aggregate.Event):
        pass

    class IdentityChecked(Aggregate.Event):
        pass

    class SignedIn(Aggregate.Event):
        seat: int

    class Started(Aggregate.Event):
        pass

    class Finished(Aggregate.Event):
        pass

    class MarkedAbsent(Aggregate.Event):
        reason: str

    class ScoresRecorded(Aggregate.Event):
        scores: dict[Subject, Decimal] = Field(json_schema_extra=personal(Personal.RESULTS))

    class ReviewRequested(Aggregate.Event):
        request: ReviewRequest

    class ReviewAnswered(Aggregate.Event):
        outcome: ReviewOutcome
        subject: Subject
        score: Decimal = Field(json_schema_extra=personal(Personal.RESULTS))
        note: str
        answered_on: date
        late: bool

    @event(TicketIssued)
    def __init__(
        self,
        actor: Actor,
        registration_id: UUID,
        exam_id: UUID,
        institution_id: UUID,
        exam_date: date,
        starts_at: time,
        location: str,
        room: str,
        seat: int,
    ) -> None:
        self.registration_id = registration_id
        self.exam_id = exam_id
        self.institution_id = institution_id
        self.exam_date = exam_date
        self.room = room
        self.seat = seat
        self.attendance = Attendance.TICKETED
        self.scores: dict[Subject, Decimal] = {}
        self.scored_by: str | None = None
        self.reviews: dict[Subject, ReviewRequest] = {}  # one request per subject (000; see the README)
        self.answered: set[Subject] = set()

    @classmethod
    def issue_ticket(cls, actor: Actor, session: ExamSession, assignment: SeatAssignment) -> Sitting:
        return cls._create(
            cls.TicketIssued,
            id=sitting_id(assignment.registration_id),
            actor=actor,
            registration_id=assignment.registration_id,
            exam_id=session.id,
            institution_id=session.institution_id,
            exam_date=session.exam_date,
            starts_at=session.starts_at,
            location=session.location,
            room=assignment.room,
            seat=assignment.seat,
        )

    # The exam day, in the order of 000's exam flow. Each step needs the one before it.
    def _step(self, actor: Actor, today: date, before: Attendance, what: str, roles: tuple = STAFF) -> None:
        require(actor, roles, what, self.institution_id)
        if today != self.exam_date:
            raise Conflict(f"{what} happens on the exam day, {self.exam_date}")
        if self.attendance is not before:
            raise Conflict(f"cannot {what}: the candidate is {self.attendance.value}, not {before.value}")

    def check_in(self, actor: Actor, today: date) -> None:
        self._step(actor, today, Attendance.TICKETED, "check in", STAFF_OR_CANDIDATE)
        self._checked_in(actor)

    @event(CheckedIn)
    def _checked_in(self, actor: Actor) -> None:
        self.attendance = Attendance.CHECKED_IN

    def check_identity(self, actor: Actor, today: date) -> None:
        self._step(actor, today, Attendance.CHECKED_IN, "check identity at the entrance")
        self._identity_checked(actor)

    @event(IdentityChecked)
    def _identity_checked(self, actor: Actor) -> None:
        self.attendance = Attendance.AT_ENTRY

    def sign_in(self, actor: Actor, today: date, seat: int, second_identity_check: bool) -> None:
        self._step(actor, today, Attendance.AT_ENTRY, "sign in at the seat")
        if not second_identity_check:
            raise Conflict("the proctor signs a candidate in only after the second identity check")
        if seat != self.seat:
            raise InvalidInput([("seat", f"the ticket's seat is {self.room} seat {self.seat}, not seat {seat}")])
        self._signed_in(actor, seat)

    @event(SignedIn)
    def _signed_in(self, actor: Actor, seat: int) -> None:
        self.attendance = Attendance.SIGNED_IN

    def start(self, actor: Actor, today: date) -> None:
        self._step(actor, today, Attendance.SIGNED_IN, "start the exam")
        self._started(actor)

    @event(Started)
    def _started(self, actor: Actor) -> None:
        self.attendance = Attendance.STARTED

    def finish(self, actor: Actor, today: date) -> None:
        self._step(actor, today, Attendance.STARTED, "finish the exam")
        self._finished(actor)

    @event(Finished)
    def _finished(self, actor: Actor) -> None:
        self.attendance = Attendance.FINISHED

    def mark_absent(self, actor: Actor, today: date, reason: str) -> None:
        require(actor, STAFF, "mark candidates absent", self.institution_id)
        if today < self.exam_date:
            raise Conflict(f"a candidate can be absent only from the exam day, {self.exam_date}")
        if self.attendance in (Attendance.STARTED, Attendance.FINISHED, Attendance.ABSENT):
            raise Conflict(f"the candidate is {self.attendance.value}; not absent")
        self._marked_absent(actor, reason.strip() or "did not sit")

    @event(MarkedAbsent)
    def _marked_absent(self, actor: Actor, reason: str) -> None:
        self.attendance = Attendance.ABSENT

    def record_scores(self, actor: Actor, session: ExamSession, scores: dict[Subject, Decimal]) -> None:
        require(actor, STAFF, "record scores", self.institution_id)
        session.ensure_scoring_open()
        session.ensure_not_cancelled(self.registration_id)
        if self.attendance is not Attendance.FINISHED:
            raise Conflict(f"the candidate is {self.attendance.value}; only a finished exam is scored")
        problems = [(f"scores.{s.value}", "is missing") for s in session.subjects if s not in scores]
        problems += [
            (f"scores.{s.value}", f"is not a subject at level {int(session.level)}")
            for s in scores
            if s not in session.subjects
        ]
        problems += [
            (f"scores.{s.value}", "must be 0-100 with at most one decimal")
            for s, v in scores.items()
            if not _valid_score(v)
        ]
        if problems:
            raise InvalidInput(problems)
        self._scores_recorded(actor, dict(scores))

    @event(ScoresRecorded)
    def _scores_recorded(self, actor: Actor, scores: dict[Subject, Decimal]) -> None:
        self.scores = scores
        self.scored_by = actor.id

    def request_review(self, actor: Actor, session: ExamSession, subject: Subject, reason: str, today: date) -> None:
        """A written request inside the window from the exam (000 成绩复核: 10 working days). The seed
        sets no number; one per subject per exam is the reading here: a candidate may dispute the
        theory paper and the skills test, each once."""
        require(actor, STAFF_OR_CANDIDATE, "request a score review", self.institution_id)
        session.ensure_not_cancelled(self.registration_id)
        if session.published_on is None or session.review_window is None:
            raise Conflict("a score review is requested after the scores are published")
        if today > session.review_window.due:
            raise Conflict(f"the score review window closed on {session.review_window.due}")
        if subject in self.reviews:
            raise Conflict(
                f"a review of the {subject.value} score was already requested on {self.reviews[subject].requested_on}; "
                "one per subject per exam",
                field="subject",
            )
        if subject not in self.scores:
            raise InvalidInput([("subject", f"the candidate has no {subject.value} score to review")])
        if not reason.strip():
            raise InvalidInput([("reason", "the written request says what is disputed")])
        request = ReviewRequest(
            subject=subject,
            reason=reason.strip(),
            requested_on=today,
            answer=deadline(session.profile, Step.REVIEW_ANSWERED, today),
        )
        self._review_requested(actor, request)

    @event(ReviewRequested)
    def _review_requested(self, actor: Actor, request: ReviewRequest) -> None:
        self.reviews = {**self.reviews, request.subject: request}

    def answer_review(
        self,
        actor: Actor,
        outcome: ReviewOutcome,
        today: date,
        score: Decimal | None = None,
        note: str = "",
        subject: Subject | None = None,
    ) -> None:
        """Answer the open request for `subject` (may be left out while only one is open)."""
        require(actor, STAFF, "answer score reviews", self.institution_id)
        waiting = [s for s in self.reviews if s not in self.answered]
        if not waiting:
            raise Conflict("no score review request awaits an answer")
        if subject is None:
            if len(waiting) > 1:
                raise InvalidInput(
                    [("subject", f"reviews of {', '.join(s.value for s in waiting)} await answers: name one")]
                )
            subject = waiting[0]
        elif subject not in waiting:
            raise Conflict(f"no review of the {subject.value} score awaits an answer", field="subject")
        if actor.id == self.scored_by:
            raise Conflict("a score review is answered by someone other than who recorded the scores")
        if outcome is ReviewOutcome.UPHELD:
            if score is not None and score != self.scores[subject]:
                raise InvalidInput([("score", "an upheld score stays as it was; use outcome 'changed'")])
            score = self.scores[subject]
        elif score is None or not _valid_score(score) or score == self.scores[subject]:
            raise InvalidInput([("score", "a changed outcome gives the new score, 0-100, different from the old")])
        if not note.strip():
            raise InvalidInput([("note", "say what the review found")])
        late = self.reviews[subject].answer.missed_by(today)
        self._review_answered(actor, outcome, subject, score, note.strip(), today, late)

    @event(ReviewAnswered)
    def _review_answered(
        self,
        actor: Actor,
        outcome: ReviewOutcome,
        subject: Subject,
        score: Decimal,
        note: str,
        answered_on: date,
        late: bool,
    ) -> None:
        self.scores = {**self.scores, subject: score}
        self.answered = self.answered | {subject}

    @property
    def review_open(self) -> bool:
        return any(s not in self.answered for s in self.reviews)

    def result(self, subjects: tuple[Subject, ...], holder: Holder) -> ResultEntry:
        if self.attendance is Attendance.ABSENT:
            return ResultEntry(registration_id=self.registration_id, holder=holder, absent=True)
        if any(s not in self.scores for s in subjects):
            raise Conflict(f"the candidate in {self.room} seat {self.seat} has no scores")
        passed = all(self.scores[s] >= PASS_MARK for s in subjects)
        return ResultEntry(registration_id=self.registration_id, holder=holder, scores=self.scores, passed=passed)


def _valid_score(v: Decimal) -> bool:
    # Finite first: comparing NaN raises (InvalidOperation), and a score book file may say NaN.
    return v.is_finite() and Decimal(0) <= v <= Decimal(100) and v.as_tuple().exponent >= -1  # type: ignore[operator]
