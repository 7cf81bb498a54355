"""Deadlines in working days on the official calendar (chinesecalendar), per profile."""

from __future__ import annotations

from datetime import date

import pytest

from domain.deadlines import Step, add_working_days, deadline
from domain.institution import DeadlineProfile

S, T = DeadlineProfile.S, DeadlineProfile.T


def test_scores_after_an_exam_before_spring_festival_count_the_swapped_saturday():
    # Exam Thu 12 Feb 2026: Fri 13 and the swapped working Saturday 14 count, 15-23 are the holiday.
    due = deadline(S, Step.SCORES_PUBLISHED, date(2026, 2, 12))
    assert (due.due, due.provisional) == (date(2026, 2, 24), False)


def test_the_review_window_runs_through_the_festival_and_the_second_swapped_saturday():
    # 13, 14 (Sat), 24, 25, 26, 27, 28 (Sat), 2 Mar, 3 Mar, 4 Mar.
    assert deadline(S, Step.REVIEW_WINDOW, date(2026, 2, 12)).due == date(2026, 3, 4)


def test_national_day_and_its_swapped_saturday():
    # 30 Sep + 3: 8 Oct, 9 Oct, Sat 10 Oct (a working day), 1-7 Oct being the holiday.
    assert deadline(S, Step.SCORES_PUBLISHED, date(2026, 9, 30)).due == date(2026, 10, 10)


def test_the_start_day_itself_does_not_count():
    assert add_working_days(date(2026, 3, 2), 1) == (date(2026, 3, 3), False)  # Mon -> Tue
    assert add_working_days(date(2026, 3, 6), 1) == (date(2026, 3, 9), False)  # Fri -> Mon


@pytest.mark.parametrize(
    "step, s_due, t_due",
    [
        (Step.PHYSICAL_CERTIFICATE, date(2026, 3, 4), date(2026, 3, 11)),  # 10 vs 15 working days
        (Step.LOSS_PROOF, date(2026, 3, 4), date(2026, 2, 26)),  # 10 vs 5 working days
        (Step.CERTIFICATE_NUMBER, date(2026, 3, 4), date(2026, 3, 4)),
    ],
)
def test_profiles_differ_where_the_seeds_differ(step, s_due, t_due):
    assert deadline(S, step, date(2026, 2, 12)).due == s_due
    assert deadline(T, step, date(2026, 2, 12)).due == t_due


def test_data_reporting_counts_calendar_days_not_working_days():
    assert deadline(S, Step.DATA_REPORTED, date(2026, 2, 12)).due == date(2026, 3, 14)


def test_a_deadline_past_the_calendars_last_year_is_counted_mon_to_fri_and_marked_provisional():
    d = deadline(S, Step.LOSS_PROOF, date(2026, 12, 24))
    assert d.provisional
    assert d.due == date(2027, 1, 7)  # 25, 28-31 Dec, then 1, 4, 5, 6, 7 Jan 2027 as weekdays
    assert not deadline(S, Step.LOSS_PROOF, date(2026, 12, 1)).provisional


def test_late_is_after_the_due_day_not_on_it():
    d = deadline(S, Step.SCORES_PUBLISHED, date(2026, 2, 12))
    assert not d.missed_by(date(2026, 2, 24))
    assert d.missed_by(date(2026, 2, 25))


def test_a_provisional_deadline_recounted_with_the_same_calendar_is_the_same_deadline():
    """What an outsider found: recounting took every weekday of the span for a working day, National Day's holidays
    included, and a deadline started on 25 September of the calendar's last year came out four working days late:
    shown "2 days left" on a day the write side judged it missed. Recounted with the calendar that counted it, a
    provisional deadline is itself; only a calendar that learnt its year moves it."""
    from domain.deadlines import is_working_day, recount

    last = max(y for y in range(2020, 2200) if is_working_day(date(y, 6, 1))[1])  # the calendar's last known year
    assert deadline(S, Step.QUERYABLE, date(last, 9, 25)).provisional  # 75 working days: into the unknown year
    for step in (Step.QUERYABLE, Step.CENTRE_REVIEWED, Step.LOSS_PROOF):
        for start in (date(last, 9, 25), date(last, 12, 24), date(last + 5, 3, 2)):
            d = deadline(S, step, start)
            assert recount(d) == d, (step, start, d, recount(d))
