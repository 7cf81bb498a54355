"""Statistics: certificates issued per institution, occupation, level and month, and how many of them are void now
(revoked, 001 承诺 and 004 第九条/第十条, or their data deleted, 000); pass rates per plan from the results each exam
session reported (confirmed by the centre, or still pending), and how many candidates' scores were cancelled."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from projections.store import copy_rows, read_tolerantly

T = "cn.skillcert."


class Statistics:
    name = "statistics"
    topics = ("exams", "certificates")
    tables = ("stats_issued", "stats_exams", "stats_certificates")
    # 2: void certificates counted against the month they were issued in; cancelled scores counted per session
    version = 2

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS stats_issued (
                institution_id uuid NOT NULL,
                institution_name text NOT NULL,
                occupation text NOT NULL,
                level int NOT NULL,
                month date NOT NULL,  -- first day of the month of issue
                issued int NOT NULL,
                void int NOT NULL DEFAULT 0,  -- of those issued, revoked or their data deleted since
                PRIMARY KEY (institution_id, occupation, level, month)
            )""",
            # Where each certificate was counted: a revocation or a deletion names only the certificate, and is
            # counted against the row its issue was. On the certificate's own topic and partition, so after its issue.
            """CREATE TABLE IF NOT EXISTS stats_certificates (
                certificate_id uuid PRIMARY KEY,
                institution_id uuid NOT NULL,
                occupation text NOT NULL,
                level int NOT NULL,
                month date NOT NULL,
                void boolean NOT NULL DEFAULT false
            )""",
            """CREATE TABLE IF NOT EXISTS stats_exams (
                exam_id uuid PRIMARY KEY,
                plan_id uuid NOT NULL,
                plan_number text NOT NULL,
                institution_id uuid NOT NULL,
                occupation text NOT NULL,
                level int NOT NULL,
                exam_date date NOT NULL,
                candidates int NOT NULL DEFAULT 0,
                absent int NOT NULL DEFAULT 0,
                passed int NOT NULL DEFAULT 0,
                cancelled uuid[] NOT NULL DEFAULT '{}',  -- registrations whose scores were cancelled (001 承诺)
                absent_ids uuid[] NOT NULL DEFAULT '{}',  -- as last reported: a cancelled one among them did not sit
                reported boolean NOT NULL DEFAULT false,
                confirmed boolean NOT NULL DEFAULT false
            )""",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        event, d = m["type"].removeprefix(T).rpartition(".")[0], m["data"]
        if event == "certificate.issued":
            cur.execute(
                """INSERT INTO stats_issued VALUES (%s, %s, %s, %s, date_trunc('month', %s::date), 1)
                   ON CONFLICT (institution_id, occupation, level, month)
                   DO UPDATE SET issued = stats_issued.issued + 1""",
                (d["institution_id"], d["institution_name"], d["occupation"], d["level"], d["issued_on"]),
            )
            cur.execute(
                """INSERT INTO stats_certificates VALUES (%s, %s, %s, %s, date_trunc('month', %s::date))""",
                (d["originator_id"], d["institution_id"], d["occupation"], d["level"], d["issued_on"]),
            )
        elif event in ("certificate.revoked", "certificate.data_deleted"):  # void from now on, whichever came first
            cur.execute(
                """WITH c AS (UPDATE stats_certificates SET void = true WHERE certificate_id = %s AND NOT void
                              RETURNING institution_id, occupation, level, month)
                   UPDATE stats_issued s SET void = s.void + 1 FROM c
                   WHERE (s.institution_id, s.occupation, s.level, s.month) = (c.institution_id, c.occupation, c.level,
                                                                                c.month)""",
                (d["originator_id"],),
            )
        elif event == "exam_session.scheduled":
            cur.execute(
                """INSERT INTO stats_exams (exam_id, plan_id, plan_number, institution_id, occupation, level, exam_date)
                   VALUES (%s,%s,%s,%s,%s,%s,%s)""",
                (d["originator_id"], d["plan_id"], d["plan_number"], d["institution_id"], d["occupation"],
                 d["level"], d["exam_date"]),
            )  # fmt: skip
        elif event == "exam_session.results_reported":  # a re-report after a return replaces the figures
            entries = d["entries"]
            cur.execute(
                """UPDATE stats_exams SET candidates = %s, absent = %s, passed = %s, absent_ids = %s::uuid[],
                          reported = true, confirmed = false
                   WHERE exam_id = %s""",
                (len(entries), sum(e["absent"] for e in entries), sum(e["passed"] for e in entries),
                 [e["registration_id"] for e in entries if e["absent"]], d["originator_id"]),
            )  # fmt: skip
        elif event == "exam_session.scores_cancelled":  # a disqualification (001 承诺)
            cur.execute(
                """UPDATE stats_exams SET passed = passed - %s::int, cancelled = array_append(cancelled, %s::uuid)
                   WHERE exam_id = %s""",
                (1 if d["was_passed"] else 0, d["registration_id"], d["originator_id"]),
            )
        elif event == "exam_session.results_confirmed":
            cur.execute("UPDATE stats_exams SET confirmed = true WHERE exam_id = %s", (d["originator_id"],))
        elif event == "exam_session.results_returned":  # rejected: not counted until reported again
            cur.execute(
                "UPDATE stats_exams SET reported = false, confirmed = false WHERE exam_id = %s", (d["originator_id"],)
            )

    def apply_many(self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]]) -> None:
        """What `apply` does to each message in turn, for a rebuild: the certificates a batch issues are counted
        per institution, occupation, level and month, and each count added by one statement, rather than a row
        updated once per certificate (PostgreSQL walks every version one transaction made of a row on each
        update of it). A count's row, when new, takes the institution's name from its first certificate, as
        one at a time. The rest is applied event by event."""
        counts: dict[tuple[str, str, int, str], list[Any]] = {}  # key -> [institution name, certificates]
        certificates, rest = [], []
        for m in messages:
            if m["type"].startswith(T + "certificate.issued."):
                d = m["data"]
                key = (d["institution_id"], d["occupation"], d["level"], d["issued_on"][:7] + "-01")
                counts.setdefault(key, [d["institution_name"], 0])[1] += 1
                certificates.append((d["originator_id"], *key))
            else:
                rest.append(m)
        # Issued before anything of theirs in `rest` (a revocation), which follows its issue in the log.
        copy_rows(cur, "stats_certificates", ("certificate_id", "institution_id", "occupation", "level", "month"),
                  certificates)  # fmt: skip
        if counts:
            keys, values = list(counts), list(counts.values())
            cur.execute(
                """INSERT INTO stats_issued (institution_id, institution_name, occupation, level, month, issued)
                   SELECT * FROM unnest(%b::uuid[], %b::text[], %b::text[], %b::int[], %b::date[], %b::int[])
                   ON CONFLICT (institution_id, occupation, level, month)
                   DO UPDATE SET issued = stats_issued.issued + EXCLUDED.issued""",
                ([k[0] for k in keys], [v[0] for v in values], [k[1] for k in keys], [k[2] for k in keys],
                 [k[3] for k in keys], [v[1] for v in values]),
            )  # fmt: skip
        with cur.connection.pipeline():
            for m in rest:
                self.apply(cur, m)


def issued(
    conn: psycopg.Connection[Any],
    *,
    institution_id: str | list[str] | None = None,
    occupation: str | None = None,
    level: int | None = None,
    year: int | None = None,
) -> list[dict[str, Any]]:
    where, args = ["TRUE"], []
    for column, value in (("institution_id", institution_id), ("occupation", occupation), ("level", level)):
        if isinstance(value, list):  # several institutions: an HR department's jurisdiction
            where.append(f"{column} = ANY(%s::uuid[])")
            args.append(value)
        elif value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if year is not None:
        where.append("extract(year FROM month) = %s")
        args.append(year)

    def read(void: str) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT institution_id, institution_name, occupation, level, to_char(month, 'YYYY-MM') AS month,
                           issued, {void} AS void
                    FROM stats_issued WHERE {" AND ".join(where)} ORDER BY month, institution_name, occupation, level""",
                args,
            )
            return cur.fetchall()

    # Version 1's table, read while a worker rebuilds it after an upgrade, did not count them: not known yet (null).
    return read_tolerantly(conn, lambda: read("void"), lambda: read("NULL::int"))


def pass_rates(
    conn: psycopg.Connection[Any], *, institution_id: str | list[str] | None = None, confirmed_only: bool = True
) -> list[dict[str, Any]]:
    """Per plan, over its reported exam sessions (a report the centre returned counts again once reported again):
    candidates, absent, sat, passed and the pass rate among those who sat; and of those who sat, how many had their
    scores cancelled (counted as sat and not passed: they sat, and their results are void)."""
    where, args = ["reported"], []
    if confirmed_only:
        where.append("confirmed")
    if isinstance(institution_id, list):
        where.append("institution_id = ANY(%s::uuid[])")
        args.append(institution_id)
    elif institution_id:
        where.append("institution_id = %s")
        args.append(institution_id)

    def read(disqualified: str) -> list[dict[str, Any]]:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"""SELECT plan_id, plan_number, institution_id, occupation, level, count(*) AS sessions,
                           sum(candidates)::int AS candidates, sum(absent)::int AS absent,
                           sum(candidates - absent)::int AS sat, sum(passed)::int AS passed,
                           {disqualified} AS disqualified,
                           round(sum(passed)::numeric / nullif(sum(candidates - absent), 0), 4) AS pass_rate
                    FROM stats_exams WHERE {" AND ".join(where)}
                    GROUP BY plan_id, plan_number, institution_id, occupation, level ORDER BY plan_number, plan_id""",
                args,
            )
            return cur.fetchall()

    sat_and_cancelled = "sum((SELECT count(*) FROM unnest(cancelled) AS c WHERE c <> ALL(absent_ids)))::int"
    return read_tolerantly(conn, lambda: read(sat_and_cancelled), lambda: read("NULL::int"))
