"""The exam day, scores, score reviews and result reporting: each rule, tried to be broken."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date, time, timedelta
from decimal import Decimal
from threading import Barrier
from uuid import uuid4

import pytest

from domain.deadlines import add_working_days
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from domain.exam import Attendance, ExamSession, ReviewOutcome, Room, Subject, sitting_id
from tests.builders import candidate, plan_details, working_years_form
from tests.lifecycle import (
    CENTRE,
    EXAM_DAY,
    REPORT_DAY,
    REVIEW_CLOSES,
    REVIEWER,
    SCORER,
    TICKETS_OPEN,
    approved_cohort,
    score,
    score_and_publish,
    sit_exam,
    staff,
)

ROOMS = [Room(name="301", seats=2), Room(name="302", seats=2)]


def stored(w) -> int:
    return w.exams.recorder.max_notification_id() or 0


def schedule(w, iid, pid, rooms=ROOMS):
    return w.exams.schedule(staff(iid), pid, "A", EXAM_DAY, time(9), time(11, 30), "南山考点", rooms)


def test_a_session_is_scheduled_inside_the_plans_evaluation_period(world):
    iid, pid, _ = approved_cohort(world, 1)
    before = stored(world)
    with pytest.raises(InvalidInput) as e:
        world.exams.schedule(staff(iid), pid, "A", date(2026, 5, 1), time(11), time(9), "南山考点",
                             [Room(name="301", seats=2), Room(name="301", seats=3)])  # fmt: skip
    assert {f for f, _ in e.value.problems} == {"exam_date", "ends_at", "rooms"}
    with pytest.raises(Forbidden):
        schedule(world, uuid4(), pid)  # staff of another institution
    with pytest.raises(NotFound):
        world.exams.schedule(staff(iid), uuid4(), "A", EXAM_DAY, time(9), time(10), "x", ROOMS)
    assert stored(world) == before
    schedule(world, iid, pid)
    with pytest.raises(Conflict, match="already scheduled"):
        schedule(world, iid, pid)


def test_tickets_open_one_week_before_and_need_approval_and_the_fee(world):
    iid, pid, rids = approved_cohort(world, 4, seats=5)
    code = world.registrations.repository.get(pid).registration_code
    registration = world.registrations.register(candidate(9), code, working_years_form(9))  # not yet reviewed
    exam = schedule(world, iid, pid)
    world.at(date(2026, 4, 2))
    with pytest.raises(Conflict, match="from 2026-04-03"):
        world.exams.issue_tickets(staff(iid), exam)
    world.at(TICKETS_OPEN)
    before = stored(world)
    with pytest.raises(InvalidInput, match="tickets need approval and the fee"):
        world.exams.issue_tickets(staff(iid), exam, [rids[0], registration])
    assert stored(world) == before
    seats = world.exams.issue_tickets(staff(iid), exam)  # the unapproved one is left out
    assert [(a.room, a.seat) for a in seats] == [("301", 1), ("301", 2), ("302", 1), ("302", 2)]
    assert {a.registration_id for a in seats} == set(rids)
    with pytest.raises(Conflict, match="already has an admission ticket"):
        world.exams.issue_tickets(staff(iid), exam, rids[:1])
    # Everyone of a plan where none is approved and paid: said so (it said every candidate given had a ticket).
    world.at(date(2026, 3, 2))
    other, other_code = world.registrations.publish_plan(staff(iid), iid, plan_details("2699"))
    world.registrations.register(candidate(10), other_code, working_years_form(10))
    later = schedule(world, iid, other)
    world.at(TICKETS_OPEN)
    with pytest.raises(Conflict, match="no registration of plan 2699 is approved with its fee paid"):
        world.exams.issue_tickets(staff(iid), later)


def test_a_full_session_refuses_more_tickets(world):
    iid, pid, rids = approved_cohort(world, 5)
    exam = schedule(world, iid, pid)
    world.at(TICKETS_OPEN)
    before = stored(world)
    with pytest.raises(Conflict, match="5 candidates but only 4 free seats"):
        world.exams.issue_tickets(staff(iid), exam)
    assert stored(world) == before


def test_tickets_issued_one_at_a_time_by_racing_staff_across_snapshots_fill_seats_once_in_room_order(world):
    """The session counts its seats (its state and snapshot stay small) and is loaded from a snapshot every
    SNAPSHOT_EVERY events: 8 threads issuing 70 tickets one by one, crossing a snapshot, give each candidate
    one seat, the seats the first 70 in room order, and a loaded session equals its replayed history."""
    from infra.store.eventstore import SNAPSHOT_EVERY

    iid, pid, rids = approved_cohort(world, 70, seats=80)
    exam = schedule(world, iid, pid, [Room(name="A", seats=30), Room(name="B", seats=30), Room(name="C", seats=30)])
    world.at(TICKETS_OPEN)
    barrier = Barrier(8)

    def issue(chunk: list) -> list:
        barrier.wait()
        return [a for rid in chunk for a in world.exams.issue_tickets(staff(iid), exam, [rid, rid])]

    with ThreadPoolExecutor(8) as pool:
        seats = [a for part in pool.map(issue, [rids[k::8] for k in range(8)]) for a in part]
    assert sorted(a.registration_id for a in seats) == sorted(rids)
    assert sorted((a.room, a.seat) for a in seats) == [(r, n) for r in "AB" for n in range(1, 31)] + [
        ("C", n) for n in range(1, 11)
    ]
    with pytest.raises(Conflict, match="already has an admission ticket"):
        world.exams.issue_tickets(staff(iid), exam, rids[:1])
    loaded = world.exams.get(ExamSession, exam, "exam session")
    replayed = None
    for e in world.exams.events.get(exam):
        replayed = e.mutate(replayed)
    assert loaded.version == replayed.version == 71 > SNAPSHOT_EVERY
    assert loaded.snapshot_state() == replayed.snapshot_state() and loaded.seated == 70
    public = {k: v for k, v in vars(replayed).items() if not k.startswith("_")}
    assert {k: v for k, v in vars(loaded).items() if not k.startswith("_")} == public  # nothing left out
    assert list(world.exams.snapshots.get(exam))  # it was loaded from one
    assert [s.registration_id for s in world.exams.sittings(loaded)] == [
        a.registration_id for a in sorted(seats, key=lambda a: (a.room, a.seat))
    ]


def test_the_exam_day_goes_in_order_on_the_day_at_the_tickets_seat(world):
    iid, pid, rids = approved_cohort(world, 2)
    exam = schedule(world, iid, pid)
    world.at(TICKETS_OPEN)
    seats = {a.registration_id: a.seat for a in world.exams.issue_tickets(staff(iid), exam)}
    rid, proctor = rids[0], staff(iid, "proctor-liu")
    with pytest.raises(Conflict, match="on the exam day, 2026-04-10"):
        world.exams.check_in(candidate(1), rid)
    world.at(EXAM_DAY)
    before = stored(world)
    with pytest.raises(Conflict, match="ticketed, not checked_in"):
        world.exams.check_identity(proctor, rid)
    with pytest.raises(Forbidden):
        world.exams.check_identity(candidate(1), rid)
    world.exams.check_in(candidate(1), rid)
    world.exams.check_identity(proctor, rid)
    assert stored(world) == before + 2
    with pytest.raises(Conflict, match="after the second identity check"):
        world.exams.sign_in(proctor, rid, seats[rid], second_identity_check=False)
    with pytest.raises(InvalidInput, match=f"the ticket's seat is 301 seat {seats[rid]}, not seat {3 - seats[rid]}"):
        world.exams.sign_in(proctor, rid, 3 - seats[rid], second_identity_check=True)
    world.exams.sign_in(proctor, rid, seats[rid], second_identity_check=True)
    with pytest.raises(Conflict, match="signed_in, not started"):
        world.exams.finish(proctor, rid)
    world.exams.start(proctor, rid)
    with pytest.raises(Conflict, match="started but not finished"):
        world.exams.close_day(staff(iid), exam)
    with pytest.raises(Conflict, match="not absent"):
        world.exams.mark_absent(proctor, rid, "left")
    world.exams.finish(proctor, rid)
    assert world.exams.close_day(staff(iid), exam) == 1  # the other never came
    assert world.exams.sitting(rids[1]).attendance is Attendance.ABSENT
    with pytest.raises(NotFound):
        world.exams.check_in(candidate(1), uuid4())


def test_a_score_book_is_all_or_nothing_and_names_every_problem(world):
    iid, pid, rids = approved_cohort(world, 3)
    exam = sit_exam(world, iid, pid, rids, absent=frozenset(rids[2:]))
    world.at(date(2026, 4, 13))
    before = stored(world)
    book = {
        rids[0]: {Subject.THEORY: Decimal("101"), Subject.SKILLS: Decimal("70.25")},
        rids[1]: score(2),
        rids[2]: score(3),
    }
    with pytest.raises(InvalidInput) as e:
        world.exams.record_scores(staff(iid, SCORER), exam, book)
    fields = {f for f, _ in e.value.problems}
    assert {
        f"book.{rids[0]}.理论知识",
        f"book.{rids[0]}.操作技能",
        f"book.{rids[0]}.综合评审",
        f"book.{rids[2]}",
    } <= fields
    assert stored(world) == before
    with pytest.raises(Conflict, match="have no scores yet: 2"):
        world.exams.publish_scores(staff(iid), exam)
    world.exams.record_scores(staff(iid, SCORER), exam, {rids[0]: score(1), rids[1]: score(2)})
    world.at(date(2026, 4, 16))  # one day after the 3 working days
    world.exams.publish_scores(staff(iid), exam)
    published = world.exams.mapper.to_domain_event(
        world.exams.recorder.select_notifications(start=stored(world), limit=1)[0]
    )
    assert isinstance(published, ExamSession.ScoresPublished) and published.late
    with pytest.raises(Conflict, match="goes through a score review"):
        world.exams.record_scores(staff(iid, SCORER), exam, {rids[0]: score(5)})


def test_scores_published_late_still_leave_candidates_the_review_days_they_would_have_had(world):
    """What an outside reading of 000 (成绩复核) found: scores published after the review window had closed left no
    day to ask for a review, and results could be reported at once: the institution's delay took the candidates'
    right away. The window now runs 7 working days after a late publication, as it does after one on time."""
    iid, pid, rids = approved_cohort(world, 2)
    exam = sit_exam(world, iid, pid, rids)
    world.at(date(2026, 4, 13))
    world.exams.record_scores(staff(iid, SCORER), exam, {rid: score(i) for i, rid in enumerate(rids, 1)})
    late = date(2026, 4, 27)  # the Monday after the window closed (REVIEW_CLOSES)
    world.at(late).exams.publish_scores(staff(iid), exam)
    published = world.exams.mapper.to_domain_event(
        world.exams.recorder.select_notifications(start=stored(world), limit=1)[0]
    )
    closes, _ = add_working_days(late, 7)
    assert closes > REVIEW_CLOSES and published.late
    assert (published.review_window.start, published.review_window.due) == (late, closes)
    with pytest.raises(Conflict, match=f"runs until {closes}"):
        world.exams.report_results(staff(iid), exam)
    world.at(closes).exams.request_review(candidate(1), rids[0], Subject.THEORY, "成绩公布晚了，仍可复核")
    world.at(closes + timedelta(days=1))
    with pytest.raises(Conflict, match=f"closed on {closes}"):
        world.exams.request_review(candidate(2), rids[1], Subject.THEORY, "过期了")


@pytest.mark.parametrize("way", ["score book", "score-book file"])
def test_scores_recorded_again_while_another_worker_publishes_them_land_before_the_publication(
    world, database_url, schema, clock, way
):
    """Once published, a score changes only through a score review. One worker records a candidate's scores again
    (a score book, or a file of one) while another publishes the session's scores: the publication waits until the
    recording is saved, and publishes it; no score is recorded after the publication."""
    import threading

    from infra.services.exams import Exams
    from infra.services.imports import import_scores

    iid, pid, rids = approved_cohort(world, 3)
    exam = sit_exam(world, iid, pid, rids)
    world.at(date(2026, 4, 13))
    world.exams.record_scores(staff(iid, SCORER), exam, {r: score(i) for i, r in enumerate(rids, 1)})
    publisher = Exams(database_url, schema, today=clock)  # another API worker
    checked, published = threading.Event(), threading.Event()
    save_once = world.exams.save_once

    def save_once_the_publication_is_done(*aggregates, **kwargs):  # type: ignore[no-untyped-def]
        checked.set()  # the session was open to scoring when the recording looked
        published.wait(2)  # the other worker publishes meanwhile, unless it has to wait for this recording
        return save_once(*aggregates, **kwargs)

    world.exams.save_once = save_once_the_publication_is_done  # type: ignore[method-assign]

    def publish() -> None:
        assert checked.wait(10)
        publisher.publish_scores(staff(iid), exam)
        published.set()

    def record() -> None:
        if way == "score book":
            world.exams.record_scores(staff(iid, SCORER), exam, {rids[0]: score(7)})
            return
        form = world.registrations.repository.get(rids[0]).form
        row = {"姓名": form.name, "证件号码": form.id_number} | {s.value: str(v) for s, v in score(7).items()}
        import_scores(world.exams, staff(iid, SCORER), exam, b"", "book.xlsx", read=lambda *_: [(2, row)])

    try:
        with ThreadPoolExecutor(2) as pool:
            recording = pool.submit(record)
            publishing = pool.submit(publish)
            recording.result(30)
            publishing.result(30)
    finally:
        publisher.close()
    notes = world.exams.recorder.select_notifications(start=1, limit=100_000)
    sittings = {sitting_id(r) for r in rids}
    recorded = [n.id for n in notes if n.topic.endswith("Sitting.ScoresRecorded") and n.originator_id in sittings]
    [publication] = [n.id for n in notes if n.topic.endswith("ExamSession.ScoresPublished") and n.originator_id == exam]
    assert len(recorded) == 4 and max(recorded) < publication
    assert world.exams.sitting(rids[0]).scores == score(7)


def test_a_session_held_by_a_stuck_worker_fails_scoring_retryably_and_stores_nothing(world, database_url,
                                                                                     monkeypatch):  # fmt: skip
    """A worker stuck while holding a session's scoring (its score book or its publication never ends) holds up the
    session's scoring only until the lock timeout: then recording and publishing fail with an OperationalError (the
    API's 503, try again), and store nothing; once its session is gone, both go through."""
    import psycopg

    import infra.services.base as base
    from infra.services.exams import scoring_lock

    iid, pid, rids = approved_cohort(world, 2)
    exam = sit_exam(world, iid, pid, rids)
    world.at(date(2026, 4, 13))
    monkeypatch.setattr(base, "LOCK_TIMEOUT", "1s")
    before = stored(world)
    with psycopg.connect(database_url, autocommit=True) as stuck:
        stuck.execute("SELECT pg_advisory_lock(%s, %s)", scoring_lock(exam))
        with pytest.raises(psycopg.errors.LockNotAvailable):
            world.exams.record_scores(staff(iid, SCORER), exam, {rids[0]: score(7)})
        with pytest.raises(psycopg.errors.LockNotAvailable):
            world.exams.publish_scores(staff(iid), exam)
        assert stored(world) == before
    world.exams.record_scores(staff(iid, SCORER), exam, {r: score(i) for i, r in enumerate(rids, 1)})
    world.exams.publish_scores(staff(iid), exam)
    assert world.exams.sitting(rids[0]).scores == score(1)


@pytest.fixture
def published(world):
    iid, pid, rids = approved_cohort(world, 3)
    exam = sit_exam(world, iid, pid, rids)
    score_and_publish(world, iid, exam, rids)
    return iid, exam, rids


def test_one_score_review_per_subject_per_candidate_inside_the_window(world, published):
    iid, exam, rids = published
    world.at(REVIEW_CLOSES)
    before = stored(world)
    with pytest.raises(InvalidInput, match="says what is disputed"):
        world.exams.request_review(candidate(1), rids[0], Subject.THEORY, " ")
    world.exams.request_review(candidate(1), rids[0], Subject.THEORY, "理论成绩有误")
    with pytest.raises(Conflict, match="one per subject per exam"):
        world.exams.request_review(candidate(1), rids[0], Subject.THEORY, "理论成绩还是有误")
    world.exams.request_review(candidate(1), rids[0], Subject.SKILLS, "技能成绩也有误")  # another subject: its own
    world.at(date(2026, 4, 25))
    with pytest.raises(Conflict, match="window closed on 2026-04-24"):
        world.exams.request_review(candidate(2), rids[1], Subject.THEORY, "有误")
    assert stored(world) == before + 2
    # Two open: an answer names its subject; each is answered once.
    reviewer = staff(iid, REVIEWER)
    with pytest.raises(InvalidInput, match="name one"):
        world.exams.answer_review(reviewer, rids[0], ReviewOutcome.UPHELD, "复核无误")
    world.exams.answer_review(reviewer, rids[0], ReviewOutcome.UPHELD, "复核无误", subject=Subject.SKILLS)
    with pytest.raises(Conflict, match="no review of the"):
        world.exams.answer_review(reviewer, rids[0], ReviewOutcome.UPHELD, "复核无误", subject=Subject.SKILLS)
    world.exams.answer_review(reviewer, rids[0], ReviewOutcome.UPHELD, "复核无误")  # the one left
    assert stored(world) == before + 4


def test_a_review_requested_on_the_windows_last_day_while_another_worker_reports_the_results_holds_the_report(
    world, published, database_url, schema
):
    """One worker's clock is still on the window's last day, another's already on the next: a review requested on
    the first while the second reports the results is either seen by the report, which is then refused, or refused
    itself; never saved after a report that did not see it."""
    import threading

    from infra.services.exams import Exams

    iid, exam, rids = published
    world.at(REVIEW_CLOSES)
    reporter = Exams(database_url, schema, today=lambda: REPORT_DAY)  # another API worker, past midnight
    checked, reported = threading.Event(), threading.Event()
    save_once = world.exams.save_once

    def save_once_the_report_is_done(*aggregates, **kwargs):  # type: ignore[no-untyped-def]
        checked.set()  # the window was open when the request looked
        reported.wait(2)  # the other worker reports meanwhile, unless it has to wait for this request
        return save_once(*aggregates, **kwargs)

    world.exams.save_once = save_once_the_report_is_done  # type: ignore[method-assign]

    def report() -> str:
        assert checked.wait(10)
        try:
            reporter.report_results(staff(iid), exam)
            return "reported"
        except Conflict as e:
            return e.message
        finally:
            reported.set()

    try:
        with ThreadPoolExecutor(2) as pool:
            requesting = pool.submit(world.exams.request_review, candidate(1), rids[0], Subject.THEORY, "理论成绩有误")
            reporting = pool.submit(report)
            requesting.result(30)
            outcome = reporting.result(30)
    finally:
        reporter.close()
    assert "score reviews still open: 1" in outcome
    assert world.exams.sitting(rids[0]).review_open
    notes = world.exams.recorder.select_notifications(start=1, limit=100_000)
    assert not [n for n in notes if n.topic.endswith("ExamSession.ResultsReported")]


def test_two_review_requests_at_the_same_moment_one_is_refused(world, published):
    iid, exam, rids = published
    world.at(date(2026, 4, 20))
    barrier = Barrier(8)

    def request(k):
        barrier.wait()
        try:
            world.exams.request_review(candidate(1), rids[0], Subject.THEORY, f"请求{k}")
            return "accepted"
        except Conflict:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(request, range(8)))
    assert outcomes.count("accepted") == 1
    events = world.exams.repository.get(sitting_id(rids[0])).version
    assert events == 8  # ticket, five day steps, scores, one request


def test_a_review_is_answered_by_someone_else_and_may_change_the_result(world, published):
    iid, exam, rids = published
    world.at(date(2026, 4, 16))
    world.exams.request_review(candidate(1), rids[0], Subject.THEORY, "漏计分")
    with pytest.raises(Conflict, match="still open"):
        world.at(REPORT_DAY).exams.report_results(staff(iid), exam)
    world.at(date(2026, 4, 22))  # answer due 3 working days after the 16th: the 21st
    with pytest.raises(Conflict, match="someone other than who recorded"):
        world.exams.answer_review(staff(iid, SCORER), rids[0], ReviewOutcome.CHANGED, "改分", Decimal("30"))
    with pytest.raises(InvalidInput, match="different from the old"):
        world.exams.answer_review(
            staff(iid, REVIEWER), rids[0], ReviewOutcome.CHANGED, "改分", score(1)[Subject.THEORY]
        )
    world.exams.answer_review(staff(iid, REVIEWER), rids[0], ReviewOutcome.CHANGED, "复核改分", Decimal("30"))
    answered = world.exams.mapper.to_domain_event(
        world.exams.recorder.select_notifications(start=stored(world), limit=1)[0]
    )
    assert answered.late and answered.actor.id == REVIEWER
    with pytest.raises(Conflict, match="no score review request awaits"):
        world.exams.answer_review(staff(iid, REVIEWER), rids[0], ReviewOutcome.UPHELD, "再次")
    world.at(REPORT_DAY)
    world.exams.report_results(staff(iid), exam)
    entries = {e.registration_id: e for e in world.exams.repository.get(exam).reported}
    assert not entries[rids[0]].passed and entries[rids[0]].scores[Subject.THEORY] == Decimal("30")
    assert entries[rids[1]].passed


def test_results_are_reported_after_the_window_and_confirmed_by_the_centre(world, published):
    iid, exam, rids = published
    world.at(REVIEW_CLOSES)
    with pytest.raises(Conflict, match="runs until 2026-04-24"):
        world.exams.report_results(staff(iid), exam)
    world.at(REPORT_DAY)
    world.exams.report_results(staff(iid), exam)
    with pytest.raises(Conflict, match="awaiting the provincial centre"):
        world.exams.report_results(staff(iid), exam)
    with pytest.raises(Forbidden):
        world.exams.confirm_results(staff(iid), exam)
    with pytest.raises(InvalidInput, match="what the institution must correct"):
        world.exams.return_results(CENTRE, exam, "")
    world.exams.return_results(CENTRE, exam, "成绩册缺少考评员签名")
    with pytest.raises(Conflict, match="no reported results"):
        world.exams.confirm_results(CENTRE, exam)
    world.exams.report_results(staff(iid), exam)
    world.exams.confirm_results(CENTRE, exam)
    session = world.exams.repository.get(exam)
    assert session.attempt == 2 and session.confirmed
    # Confirmed on 27 Apr: 28, 29, 30 Apr, (1-5 May off), 6, 7, 8, Sat 9 (worked), 11, 12, 13 May.
    assert session.numbering.due == date(2026, 5, 13)
    with pytest.raises(Conflict, match="already confirmed"):
        world.exams.report_results(staff(iid), exam)
    with pytest.raises(Conflict, match="no reported results await confirmation"):
        world.exams.confirm_results(CENTRE, exam)
