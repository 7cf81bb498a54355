"""The deadline monitor: every open deadline of the profile table with its due date, and what
is overdue today, per institution (DESIGN.md deadline profiles; 000 and 004).

A deadline opens on the event that starts it (the due date travels on that event, counted by
the domain) and closes on the event that completes it, which records whether it was late.
Subjects (exam sessions, sittings, certificates) are kept to know each one's institution.
"""

from __future__ import annotations

import heapq
from datetime import date
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from domain.deadlines import IN_WORKING_DAYS, Deadline, Step, recount, working_days_between
from domain.exam import sitting_id
from projections.store import copy_rows

T = "cn.skillcert."

# event type -> (deadline field on the event, step it opens)
OPENS = {
    "exam_session.day_closed": [("scores_due", Step.SCORES_PUBLISHED), ("review_window", Step.REVIEW_WINDOW)],
    "exam_session.scores_published": [("review_window", Step.REVIEW_WINDOW)],  # when late: the window, extended
    "exam_session.results_confirmed": [("numbering", Step.CERTIFICATE_NUMBER)],
    "sitting.review_requested": [("answer", Step.REVIEW_ANSWERED)],
    "certificate.issued": [("data_report", Step.DATA_REPORTED), ("queryable", Step.QUERYABLE)],
    "certificate.data_returned": [("correction", Step.RETURNED_DATA_CORRECTED)],
    "certificate.data_reported": [("centre_review", Step.CENTRE_REVIEWED)],
    "certificate.data_accepted": [("ministry", Step.MINISTRY_QUERYABLE)],
    "certificate.correction_approved": [("report", Step.DATA_REPORTED)],  # as a new certificate's (000 二4)
    "certificate.made_queryable": [("physical", Step.PHYSICAL_CERTIFICATE)],
    "certificate.proof_applied": [("proof", Step.LOSS_PROOF)],
}
# event type -> (field holding the day it was done, steps it closes)
CLOSES = {
    "exam_session.scores_published": ("published_on", [Step.SCORES_PUBLISHED]),
    "exam_session.results_reported": ("reported_on", [Step.REVIEW_WINDOW]),
    "sitting.review_answered": ("answered_on", [Step.REVIEW_ANSWERED]),
    "certificate.data_reported": ("reported_on", [Step.DATA_REPORTED, Step.RETURNED_DATA_CORRECTED]),
    "certificate.made_queryable": ("on", [Step.QUERYABLE, Step.MINISTRY_QUERYABLE]),
    "certificate.data_accepted": ("on", [Step.CENTRE_REVIEWED]),
    "certificate.data_returned": ("returned_on", [Step.CENTRE_REVIEWED]),
    "certificate.handed_over": ("on", [Step.PHYSICAL_CERTIFICATE]),
    "certificate.proof_issued": ("on", [Step.LOSS_PROOF]),
}
SUPERSEDED_BY_CORRECTION = [Step.DATA_REPORTED, Step.RETURNED_DATA_CORRECTED, Step.CENTRE_REVIEWED,
                            Step.MINISTRY_QUERYABLE, Step.PHYSICAL_CERTIFICATE]  # fmt: skip
# A window is open until its day passes; it is never overdue.
WINDOWS = {Step.REVIEW_WINDOW}
_WINDOW_STEPS = sorted(str(s) for s in WINDOWS)  # as a query's parameter


class Deadlines:
    name = "deadline_monitor"
    topics = ("exams", "certificates")
    tables = ("deadline_subjects", "deadline_numbering", "deadlines", "deadline_cancelled")
    version = 7  # 7: scores cancelled owe no review answer (deadline_cancelled); 6: a correction closes what it supersedes; 5: a session nobody passed closes its numbering deadline

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS deadline_subjects (
                subject_id uuid PRIMARY KEY,  -- an exam session, a sitting or a certificate
                institution_id uuid NOT NULL,
                label text NOT NULL,          -- plan, session and day; room and seat; or certificate number
                exam_id uuid                  -- a sitting's session
            )""",
            # A session's numbering is done once every pass has a number. Its counts come from two
            # topics, consumed in either order: each side adds its part, then checks.
            """CREATE TABLE IF NOT EXISTS deadline_numbering (
                exam_id uuid PRIMARY KEY,
                passed int,
                issued int NOT NULL DEFAULT 0,
                last_issued_on date
            )""",
            # Sittings whose scores were cancelled (a disqualification): a review of them is owed no answer. From the
            # session's topic partition, while the review's deadline opens from the sitting's: either may come first.
            """CREATE TABLE IF NOT EXISTS deadline_cancelled (
                sitting_id uuid PRIMARY KEY,
                cancelled_on date NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS deadlines (
                subject_id uuid NOT NULL,
                step text NOT NULL,
                opened_version int NOT NULL,
                institution_id uuid NOT NULL,
                label text NOT NULL,
                part text NOT NULL DEFAULT '',  -- which of several at once: a score review's subject
                start date NOT NULL,
                due date NOT NULL,
                provisional boolean NOT NULL,
                closed_on date,
                closed_by text,
                late boolean,
                PRIMARY KEY (subject_id, step, opened_version)
            )""",
        ]

    def read_indexes(self) -> list[str]:
        return [
            "CREATE INDEX IF NOT EXISTS deadlines_open ON deadlines (institution_id, due) WHERE closed_on IS NULL",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        kind = m["type"].removeprefix(T).rpartition(".")[0]
        d = m["data"]
        subject = d["originator_id"]
        if kind == "exam_session.scheduled":
            self._subject(cur, subject, d["institution_id"], f"{d['plan_number']} {d['session']} {d['exam_date']}")
        elif kind == "sitting.ticket_issued":
            self._subject(cur, subject, d["institution_id"], f"{d['room']}-{d['seat']}", d["exam_id"])
        elif kind == "certificate.issued":
            self._subject(cur, subject, d["institution_id"], d["number"])
            cur.execute(
                """INSERT INTO deadline_numbering (exam_id, issued, last_issued_on) VALUES (%s, 1, %s)
                   ON CONFLICT (exam_id) DO UPDATE SET issued = deadline_numbering.issued + 1,
                   last_issued_on = greatest(deadline_numbering.last_issued_on, EXCLUDED.last_issued_on)""",
                (d["exam_id"], d["issued_on"]),
            )
        elif kind == "exam_session.results_reported":
            cur.execute(
                "INSERT INTO deadline_numbering (exam_id, passed) VALUES (%s, %s)"
                " ON CONFLICT (exam_id) DO UPDATE SET passed = EXCLUDED.passed",
                (subject, sum(e["passed"] for e in d["entries"])),
            )
        elif kind == "exam_session.scores_cancelled":
            # One certificate fewer owed, unless it was issued (and is revoked): then it stays counted on both sides.
            # Counted off the issued instead, a certificate issued after it but consumed before its revocation (another
            # partition) completed the count while one was still owed.
            if d["was_passed"] and not d["certificate_issued"]:
                cur.execute("UPDATE deadline_numbering SET passed = passed - 1 WHERE exam_id = %s", (subject,))
            # A review of a cancelled score is owed no answer: those open now close; one opened after (its event
            # consumed later) closes as it opens.
            sitting, on = str(sitting_id(UUID(d["registration_id"]))), d["cancelled_on"] or d["timestamp"][:10]
            cur.execute("INSERT INTO deadline_cancelled VALUES (%s, %s) ON CONFLICT DO NOTHING", (sitting, on))
            self._close(cur, sitting, [Step.REVIEW_ANSWERED], on, kind, moot=True)
        elif kind == "exam_session.results_confirmed":
            # The session's count locked before its numbering deadline opens: the certificates are counted by another
            # agent, on a connection of its own. Without it, the last certificate's count and the opening each
            # closed nothing, as neither saw the other's change, and the deadline stayed open for ever. Now the
            # count waits for the opening's commit, and its closing statement sees the deadline.
            cur.execute("SELECT 1 FROM deadline_numbering WHERE exam_id = %s FOR UPDATE", (subject,))

        if kind in CLOSES and d.get(CLOSES[kind][0]) is not None:  # events stored before a step was tracked lack it
            field, steps = CLOSES[kind]
            self._close(
                cur,
                subject,
                steps,
                d[field],
                kind,
                part=d.get("subject", "") if kind == "sitting.review_answered" else None,
            )
            if kind == "sitting.review_answered":
                # Answered before the scores were cancelled (after, it is refused), but consumed after the
                # cancellation closed it as moot (another partition): the answer is what closed it, as a rebuild,
                # reading in order, finds.
                cur.execute(
                    """UPDATE deadlines SET closed_on = %s, closed_by = %s, late = %s > due WHERE subject_id = %s
                       AND step = %s AND part = %s AND closed_by = 'exam_session.scores_cancelled'""",
                    (d["answered_on"], kind, d["answered_on"], subject, Step.REVIEW_ANSWERED, d.get("subject", "")),
                )
        elif kind in ("certificate.data_deleted", "certificate.revoked"):  # nothing more is owed on a void certificate
            self._close(cur, subject, list(Step), d.get("revoked_on") or d["timestamp"][:10], kind, moot=True)
        if kind == "certificate.correction_approved":
            # The certificate goes back to data reporting, as a new certificate's (000 二4): what was owed on the data
            # reported before, and on its print, is owed no more (each opens again as the steps come round). Left
            # open, they showed overdue and closed late, while the write side judged the steps against the new ones.
            self._close(cur, subject, SUPERSEDED_BY_CORRECTION, d["timestamp"][:10], kind, moot=True)
        if kind == "exam_session.scores_published" and d.get("review_window") is not None:
            # The window as it ran before the late publication gives way to the one opened below.
            self._close(cur, subject, [Step.REVIEW_WINDOW], d["published_on"], kind, moot=True)
        for field, step in OPENS.get(kind, []):
            due = d["request"][field] if kind == "sitting.review_requested" else d.get(field)
            if due is None:
                continue  # stored before the step was tracked
            part = d["request"]["subject"] if kind == "sitting.review_requested" else ""
            cur.execute(
                """INSERT INTO deadlines (subject_id, step, opened_version, institution_id, label, part, start, due,
                   provisional)
                   SELECT subject_id, %s, %s, institution_id, label, %s, %s, %s, %s
                   FROM deadline_subjects WHERE subject_id = %s""",
                (step, m["aggregateversion"], part, due["start"], due["due"], due["provisional"], subject),
            )
        if kind == "sitting.review_requested":
            cur.execute(
                """UPDATE deadlines SET closed_on = c.cancelled_on, closed_by = 'exam_session.scores_cancelled',
                   late = NULL FROM deadline_cancelled c WHERE c.sitting_id = %s AND deadlines.subject_id = c.sitting_id
                   AND step = %s AND closed_on IS NULL""",
                (subject, Step.REVIEW_ANSWERED),
            )
        if kind in (
            "certificate.issued",
            "exam_session.results_confirmed",
            "exam_session.results_reported",
            "exam_session.scores_cancelled",
        ):
            # A session nobody passed owes no number: its deadline closes as it opens, on its first day, neither
            # late nor in time (late NULL, as for a step made moot).
            cur.execute(
                """UPDATE deadlines SET closed_on = coalesce(n.last_issued_on, deadlines.start),
                   closed_by = CASE WHEN n.passed = 0 THEN 'exam_session.results_confirmed' ELSE 'certificate.issued' END,
                   late = n.last_issued_on > due
                   FROM deadline_numbering n WHERE deadlines.subject_id = n.exam_id AND n.exam_id = %s
                   AND step = %s AND closed_on IS NULL AND n.issued >= n.passed""",
                (d["exam_id"] if kind == "certificate.issued" else subject, Step.CERTIFICATE_NUMBER),
            )

    def apply_many(self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]]) -> None:
        """What `apply` does to each message in turn, with fewer statements, for a rebuild. A batch's tickets and
        certificates are its subjects' creation events, so nothing before them in the batch concerns them:
        - their subjects are copied in at once, and the deadlines a certificate opens (its label and institution
          are its own);
        - the certificates of one session add their count and latest day to its numbering once, and its numbering
          deadline is closed, if still open, with the latest day as it stood at the certificate that completed
          the count, as one at a time would (the count as the rest of the batch left it is read first).
        The rest is applied event by event, in order, in one pipeline, before the numbering: a session's own events
        (its results reported, confirmed) set what its certificates' count is checked against, so a certificate
        followed in the batch by an event of its session is left to the event-by-event path too."""
        events = [(m, m["type"].removeprefix(T).rpartition(".")[0]) for m in messages]
        last = {m["data"]["originator_id"]: i for i, (m, kind) in enumerate(events) if kind.startswith("exam_session.")}
        subjects: list[tuple[Any, ...]] = []
        opened: list[tuple[Any, ...]] = []
        issued: dict[str, list[date]] = {}  # session -> the days its certificates in the batch were issued, in order
        rest = []
        for i, (m, kind) in enumerate(events):
            d = m["data"]
            if kind == "sitting.ticket_issued":
                subjects.append((d["originator_id"], d["institution_id"], f"{d['room']}-{d['seat']}", d["exam_id"]))
            elif kind == "certificate.issued" and last.get(d["exam_id"], -1) < i:
                subjects.append((d["originator_id"], d["institution_id"], d["number"], None))
                issued.setdefault(d["exam_id"], []).append(date.fromisoformat(d["issued_on"]))
                for field, step in OPENS[kind]:
                    if (due := d.get(field)) is not None:  # stored before the step was tracked
                        opened.append((d["originator_id"], step, m["aggregateversion"], d["institution_id"], d["number"],
                                       "", due["start"], due["due"], due["provisional"]))  # fmt: skip
            else:
                rest.append(m)
        copy_rows(cur, "deadline_subjects", ("subject_id", "institution_id", "label", "exam_id"), subjects)
        copy_rows(cur, "deadlines", ("subject_id", "step", "opened_version", "institution_id", "label", "part", "start",
                                     "due", "provisional"), opened)  # fmt: skip
        with cur.connection.pipeline():
            for m in rest:
                self.apply(cur, m)
        if issued:
            self._number(cur, issued)

    @staticmethod
    def _number(cur: psycopg.Cursor[Any], issued: dict[str, list[date]]) -> None:
        before = {
            str(exam): (passed, count, last)
            for exam, passed, count, last in cur.execute(
                "SELECT exam_id, passed, issued, last_issued_on FROM deadline_numbering WHERE exam_id = ANY(%b::uuid[])",
                (list(issued),),
            )
        }
        closes: dict[str, date] = {}
        for exam, days in issued.items():
            passed, count, last = before.get(exam, (None, 0, None))
            for day in days:
                count, last = count + 1, day if last is None else max(last, day)
                if exam not in closes and passed is not None and count >= passed:
                    closes[exam] = last  # where the first certificate's attempt to close it would find it
        cur.execute(
            """INSERT INTO deadline_numbering (exam_id, issued, last_issued_on)
               SELECT * FROM unnest(%b::uuid[], %b::int[], %b::date[])
               ON CONFLICT (exam_id) DO UPDATE SET issued = deadline_numbering.issued + EXCLUDED.issued,
               last_issued_on = greatest(deadline_numbering.last_issued_on, EXCLUDED.last_issued_on)""",
            (list(issued), [len(days) for days in issued.values()], [max(days) for days in issued.values()]),
        )
        if closes:
            cur.execute(
                """UPDATE deadlines SET closed_on = v.day, closed_by = 'certificate.issued', late = v.day > due
                   FROM unnest(%b::uuid[], %b::date[]) AS v(exam, day)
                   WHERE subject_id = v.exam AND step = %s AND closed_on IS NULL""",
                (list(closes), list(closes.values()), Step.CERTIFICATE_NUMBER),
            )

    @staticmethod
    def _subject(cur: psycopg.Cursor[Any], subject: str, institution: str, label: str, exam: str | None = None) -> None:
        cur.execute("INSERT INTO deadline_subjects VALUES (%s, %s, %s, %s)", (subject, institution, label, exam))

    @staticmethod
    def _close(
        cur: psycopg.Cursor[Any], subject: str, steps: list[Step], on: str, by: str, moot: bool = False,
        part: str | None = None,
    ) -> None:  # fmt: skip
        cur.execute(
            """UPDATE deadlines SET closed_on = %s, closed_by = %s, late = CASE WHEN %s THEN NULL ELSE %s > due END
               WHERE subject_id = %s AND step = ANY(%s) AND closed_on IS NULL AND (%s::text IS NULL OR part = %s)""",
            (on, by, moot, on, subject, [str(s) for s in steps], part, part),
        )


def _with_days_left(row: dict[str, Any], today: date) -> dict[str, Any]:
    """Recount a provisional due date (the calendar may know the year by now) and say how many
    days are left in the step's own unit; negative when overdue."""
    step = Step(row["step"])
    if row["provisional"]:
        fresh = recount(Deadline(step=step, start=row["start"], due=row["due"], provisional=True))
        row["due"], row["provisional"] = fresh.due, fresh.provisional
    working = step in IN_WORKING_DAYS
    row["unit"] = "working_days" if working else "calendar_days"
    row["days_left"] = working_days_between(today, row["due"]) if working else (row["due"] - today).days
    row["overdue"] = step not in WINDOWS and row["due"] < today
    return row


# A deadline's label: its subject's, after its session's for a sitting, then which part.
_LABEL = "coalesce(s.label || ' ', '') || d.label || coalesce(' ' || nullif(d.part, ''), '')"
_ROWS = f"""SELECT d.subject_id, d.step, d.institution_id, {_LABEL} AS label, d.start, d.due, d.provisional
    FROM deadlines d LEFT JOIN deadline_subjects own ON own.subject_id = d.subject_id
    LEFT JOIN deadline_subjects s ON s.subject_id = own.exam_id"""


def _filters(institution_id: str | list[str] | None, step: str | None, overdue: bool) -> tuple[list[str], list[Any]]:
    where, args = ["d.closed_on IS NULL"], []
    if isinstance(institution_id, list):  # several institutions: an HR department's jurisdiction
        where.append("d.institution_id = ANY(%s::uuid[])")
        args.append(institution_id)
    elif institution_id:
        where.append("d.institution_id = %s")
        args.append(institution_id)
    if step:
        where.append("d.step = %s")
        args.append(step)
    if overdue:
        where.append("d.step <> ALL(%s)")
        args.append(_WINDOW_STEPS)
    return where, args


def _order(row: dict[str, Any]) -> tuple[date, str, str]:
    # The SQL's ORDER BY, in Python: labels and steps compared in "C" order, that is by code point.
    return row["due"], row["label"], row["step"]


def _provisional(
    cur: psycopg.Cursor[Any], where: list[str], args: list[Any], today: date, overdue: bool
) -> list[dict[str, Any]]:
    """The open deadlines counted before the calendar knew their year, recounted and judged here: few,
    those due early next year while the State Council has not yet published its holidays."""
    cur.execute(f"{_ROWS} WHERE {' AND '.join([*where, 'd.provisional'])}", args)
    rows = [_with_days_left(r, today) for r in cur.fetchall()]
    return sorted((r for r in rows if r["overdue"] or not overdue), key=_order)


def open_deadlines(
    conn: psycopg.Connection[Any],
    today: date,
    *,
    institution_id: str | list[str] | None = None,
    step: str | None = None,
    overdue: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Open deadlines, soonest first; `overdue` keeps only those past due today. Counted, sorted and cut
    to the page by PostgreSQL, since a province has tens of thousands open at any time (every one read
    and judged here took 6 s at a million events); only provisional ones are recounted here, then
    merged in order. A page reads at most its length and the provisional ones, however deep it is."""
    where, args = _filters(institution_id, step, overdue)
    settled, settled_args = [*where, "NOT d.provisional"], list(args)
    if overdue:
        settled.append("d.due < %s")
        settled_args.append(today)
    cond = " AND ".join(settled)
    with conn.cursor(row_factory=dict_row) as cur:
        total = cur.execute(f"SELECT count(*) AS n FROM deadlines d WHERE {cond}", settled_args).fetchone()["n"]
        provisional = _provisional(cur, where, args, today, overdue)
        total += len(provisional)
        # A page at `offset` of the merged list starts at or after settled row offset - len(provisional):
        # only those rows are read, however deep the page.
        skip = max(0, offset - len(provisional))
        cur.execute(f'{_ROWS} WHERE {cond} ORDER BY d.due, ({_LABEL}) COLLATE "C", d.step COLLATE "C"'
                    " OFFSET %s LIMIT %s", [*settled_args, skip, offset + limit - skip])  # fmt: skip
        rows = [_with_days_left(r, today) for r in cur.fetchall()]
    start = 0  # the position in the whole merged list of what is merged here
    if skip:
        if not rows:  # the page lies past every settled row, and so past every provisional one
            return total, []
        # Provisional deadlines sorting before the first row read come before the page (fewer than `skip`
        # settled rows precede each of them).
        before = sum(1 for p in provisional if _order(p) < _order(rows[0]))
        provisional, start = provisional[before:], skip + before
    return total, list(heapq.merge(rows, provisional, key=_order))[offset - start : offset - start + limit]


def overdue_by_institution(conn: psycopg.Connection[Any], today: date) -> list[dict[str, Any]]:
    """Per institution: open deadlines, how many are overdue today, per step. Counted by PostgreSQL,
    but for the provisional ones."""
    where, args = _filters(None, None, False)
    out: dict[str, dict[str, Any]] = {}

    def add(institution: Any, step: str, opened: int, late: int) -> None:
        entry = out.setdefault(str(institution), {"institution_id": institution, "open": 0, "overdue": 0,
                                                  "overdue_by_step": {}})  # fmt: skip
        entry["open"] += opened
        if late:
            entry["overdue"] += late
            entry["overdue_by_step"][step] = entry["overdue_by_step"].get(step, 0) + late

    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT d.institution_id, d.step, count(*) AS open,"
            " count(*) FILTER (WHERE d.due < %s AND d.step <> ALL(%s)) AS overdue"
            f" FROM deadlines d WHERE {' AND '.join([*where, 'NOT d.provisional'])}"
            " GROUP BY d.institution_id, d.step ORDER BY d.institution_id, d.step",
            [today, _WINDOW_STEPS, *args],
        )
        for r in cur.fetchall():
            add(r["institution_id"], r["step"], r["open"], r["overdue"])
        for r in _provisional(cur, where, args, today, False):
            add(r["institution_id"], r["step"], 1, int(r["overdue"]))
    return sorted(out.values(), key=lambda e: (-e["overdue"], str(e["institution_id"])))


def deadlines_of(conn: psycopg.Connection[Any], subject_id: str) -> list[dict[str, Any]]:
    """Every deadline of one exam session, sitting or certificate, open and closed."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT step, part, start, due, provisional, closed_on, closed_by, late FROM deadlines"
            " WHERE subject_id = %s ORDER BY opened_version, step",
            (subject_id,),
        )
        return cur.fetchall()
