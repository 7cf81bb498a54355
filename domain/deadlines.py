"""Deadlines of the profile table (DESIGN.md), counted on the official mainland calendar.

Working days come from `chinesecalendar`, which knows holidays and swapped working
weekends for the years the State Council has published. A deadline that reaches into
a year the library does not know yet is counted Monday to Friday and marked
provisional, so it can be recomputed once the calendar is updated instead of stopping
the institution's work.
"""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from functools import cache, lru_cache

import chinese_calendar

from domain.institution import DeadlineProfile
from domain.model import Immutable


class Step(StrEnum):
    SCORES_PUBLISHED = "scores_published"  # after the exam
    REVIEW_WINDOW = "review_window"  # from the exam
    REVIEW_ANSWERED = "review_answered"  # after the request
    CERTIFICATE_NUMBER = "certificate_number"  # after result confirmation
    DATA_REPORTED = "data_reported"  # after issue, calendar days
    RETURNED_DATA_CORRECTED = "returned_data_corrected"  # after the return
    CENTRE_REVIEWED = "centre_reviewed"  # the provincial centre reviews and forwards reported data
    MINISTRY_QUERYABLE = "ministry_queryable"  # the ministry centre makes forwarded data queryable
    QUERYABLE = "queryable"  # after issue
    PHYSICAL_CERTIFICATE = "physical_certificate"  # after queryable
    LOSS_PROOF = "loss_proof"  # after the application


# (count, working days?) per step and profile; S is seed 000, T is seed 004.
PROFILES: dict[DeadlineProfile, dict[Step, tuple[int, bool]]] = {
    DeadlineProfile.S: {
        Step.SCORES_PUBLISHED: (3, True),
        Step.REVIEW_WINDOW: (10, True),
        Step.REVIEW_ANSWERED: (3, True),
        Step.CERTIFICATE_NUMBER: (10, True),
        Step.DATA_REPORTED: (30, False),
        Step.RETURNED_DATA_CORRECTED: (20, True),
        # 000 (证书数据报备): "省鉴定中心30个工作日内审核并上报，部中心15个工作日内" — the same for technical
        # schools, whose data goes the same way (004 §10 names no other).
        Step.CENTRE_REVIEWED: (30, True),
        Step.MINISTRY_QUERYABLE: (15, True),
        Step.QUERYABLE: (75, True),
        Step.PHYSICAL_CERTIFICATE: (10, True),
        Step.LOSS_PROOF: (10, True),
    },
}
PROFILES[DeadlineProfile.T] = {
    **PROFILES[DeadlineProfile.S],
    Step.PHYSICAL_CERTIFICATE: (15, True),
    Step.LOSS_PROOF: (5, True),
}


# Whether a step counts working days; the same in every profile.
IN_WORKING_DAYS = {step for step, (_, working) in PROFILES[DeadlineProfile.S].items() if working}
assert all({s for s, (_, w) in table.items() if w} == IN_WORKING_DAYS for table in PROFILES.values())


class Deadline(Immutable):
    step: Step
    start: date
    due: date
    provisional: bool = False  # counted past the calendar library's last known year

    def missed_by(self, done: date) -> bool:
        return done > self.due


@cache  # the library scans its whole table on every call; a day's answer never changes in a process
def is_working_day(day: date) -> tuple[bool, bool]:
    """(working?, known?) for one day."""
    try:
        return chinese_calendar.is_workday(day), True
    except NotImplementedError:
        return day.weekday() < 5, False


def add_working_days(start: date, n: int) -> tuple[date, bool]:
    """The n-th working day after `start` (start itself not counted), and whether it is provisional."""
    day, known = start, True
    while n > 0:
        day += timedelta(days=1)
        working, k = is_working_day(day)
        known = known and k
        n -= working
    return day, not known


def review_days_after_publication(profile: DeadlineProfile) -> int:
    """The working days a candidate has to ask for a score review after scores published on their due day (000
    成绩复核: published within 3 of the exam, the window 10): what scores published late still leave."""
    table = PROFILES[profile]
    return table[Step.REVIEW_WINDOW][0] - table[Step.SCORES_PUBLISHED][0]


@cache  # a cohort's certificates share their start day
def deadline(profile: DeadlineProfile, step: Step, start: date) -> Deadline:
    count, working = PROFILES[profile][step]
    if working:
        due, provisional = add_working_days(start, count)
    else:
        due, provisional = start + timedelta(days=count), False
    return Deadline(step=step, start=start, due=due, provisional=provisional)


@lru_cache(maxsize=8192)  # a page of deadlines shares a few due days; each call walks the days between
def working_days_between(today: date, due: date) -> int:
    """Working days left after today up to and including `due` (0: due today); once `due`
    has passed, minus the working days since it, today included."""
    first, last, sign = (today, due, 1) if due >= today else (due, today, -1)
    days = (first + timedelta(days=k) for k in range(1, (last - first).days + 1))
    return sign * sum(is_working_day(day)[0] for day in days)


def recount(d: Deadline) -> Deadline:
    """A provisional deadline counted again, now that the calendar may know its year. Its length in working days is
    what was counted then: the calendar's working days in the years before the due day's (known then: a deadline is
    provisional because its end ran past the calendar), and Monday to Friday in the due day's year. Counting every
    weekday of the span, as this did, took the National Day holidays for working days: a deadline started in late
    September 2026 came out four working days later, and the monitor showed it not yet overdue when it was."""
    if not d.provisional:
        return d
    days = (d.start + timedelta(days=k) for k in range(1, (d.due - d.start).days + 1))
    counted = sum(is_working_day(day)[0] if day.year < d.due.year else day.weekday() < 5 for day in days)
    due, provisional = add_working_days(d.start, counted)
    return Deadline(step=d.step, start=d.start, due=due, provisional=provisional)
