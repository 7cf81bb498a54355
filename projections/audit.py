"""The audit trail: every published event, by aggregate, by actor, or by institution in a
time range, with who did it, in which role and when; paged by position.

The trail indexes the event store: it holds who, what, when and where, not the event's data, which a
reader takes from the store by position (infra/api/queries.py). A copy of every event here was most of
what a rebuild wrote to this table, and about a seventh of its time (docs/benchmarks.md, "a seventh machine").

An event is attributed to the institution its aggregate was created under (plans,
registrations, sessions, sittings and certificates name it when created), so a
candidate's own actions count towards the institution whose plan they joined.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from projections.store import copy_rows


class Audit:
    name = "audit_trail"
    topics = ("registrations", "exams", "certificates", "stock")
    tables = ("audit_events", "audit_aggregates")
    version = 3  # 2: the event as json, not jsonb; 3: no event, only the number it names

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS audit_events (
                position bigint PRIMARY KEY,
                event_id uuid NOT NULL,
                type text NOT NULL,
                aggregate_id uuid NOT NULL,
                aggregate_version int NOT NULL,
                actor_id text NOT NULL,
                actor_role text NOT NULL,
                request_id text,
                institution_id uuid,
                at timestamptz NOT NULL,
                number text  -- the certificate number an event names, for the audit report
            )""",
            """CREATE TABLE IF NOT EXISTS audit_aggregates (
                aggregate_id uuid PRIMARY KEY, institution_id uuid NOT NULL
            )""",
        ]

    def read_indexes(self) -> list[str]:
        return [
            # The events' ids are random: kept unique row by row, their index cost a rebuild more than the rest
            # of the trail at a million events; sorted once at the end, a few seconds. (Named as the UNIQUE
            # constraint that made it before, so tables made then are left as they are.)
            "CREATE UNIQUE INDEX IF NOT EXISTS audit_events_event_id_key ON audit_events (event_id)",
            "CREATE INDEX IF NOT EXISTS audit_events_aggregate ON audit_events (aggregate_id, aggregate_version)",
            "CREATE INDEX IF NOT EXISTS audit_events_actor ON audit_events (actor_id, position)",
            "CREATE INDEX IF NOT EXISTS audit_events_institution ON audit_events (institution_id, at, position)",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        d = m["data"]
        actor = d.get("actor") or {}
        institution, _ = _institution(m)
        if institution is not None:
            cur.execute(
                "INSERT INTO audit_aggregates VALUES (%s, %s) ON CONFLICT DO NOTHING", (m["aggregateid"], institution)
            )
        # Write-only, so a rebuild can pipeline it: the institution is looked up in the statement.
        cur.execute(
            """INSERT INTO audit_events SELECT %s,%s,%s,%s,%s,%s,%s,%s,
               coalesce(%s::uuid, (SELECT institution_id FROM audit_aggregates WHERE aggregate_id = %s), %s::uuid),
               %s,%s ON CONFLICT DO NOTHING""",
            (
                m["position"], m["id"], m["type"], m["aggregateid"], m["aggregateversion"], m["actorid"],
                m["actorrole"], actor.get("request_id"), institution, m["aggregateid"], actor.get("institution_id"),
                m["time"], d.get("number"),
            ),
        )  # fmt: skip

    def apply_many(
        self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]], memo: dict[str, Any] | None = None
    ) -> None:
        """What `apply` does to each message in turn, set-based: a rebuild writes one audit row per event,
        and two statements per event cost it more than every other projection together. Each event takes
        its institution as `apply` would: its own; else the one its aggregate was first recorded with,
        before this batch or earlier in it; else its actor's.

        With a `memo` (a rebuild from empty tables, every event once, in order), the institution each
        aggregate was first recorded with is remembered in it, so the rows are resolved here and copied
        straight into the tables. Without one, the tables may hold what nothing here knows: the rows are
        copied into a staging table and merged by two statements that look the aggregates up."""
        if memo is not None:  # aggregate -> its first institution
            return self._copy(cur, messages, memo)
        cur.execute(STAGE_DDL)
        with cur.copy(STAGE_COPY) as copy:
            for m in messages:
                institution, actors = _institution(m)
                copy.write_row(_row(m, institution, actors))
        cur.execute(
            """WITH first AS (SELECT DISTINCT ON (aggregate_id) aggregate_id, own, position FROM audit_stage
                              WHERE own IS NOT NULL ORDER BY aggregate_id, position)
               INSERT INTO audit_events
               SELECT s.position, s.event_id, s.type, s.aggregate_id, s.aggregate_version, s.actor_id, s.actor_role,
                      s.request_id,
                      coalesce(s.own, a.institution_id, CASE WHEN f.position < s.position THEN f.own END, s.actors),
                      s.at, s.number
               FROM audit_stage s LEFT JOIN audit_aggregates a USING (aggregate_id) LEFT JOIN first f USING (aggregate_id)
               ORDER BY s.position ON CONFLICT DO NOTHING"""
        )
        cur.execute(
            "INSERT INTO audit_aggregates SELECT aggregate_id, own FROM audit_stage WHERE own IS NOT NULL"
            " ORDER BY position ON CONFLICT DO NOTHING"
        )
        cur.execute("TRUNCATE audit_stage")

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], messages: list[dict[str, Any]], institutions: dict[str, str]) -> None:
        first: list[tuple[str, str]] = []
        with cur.copy(EVENTS_COPY) as copy:
            for m in messages:
                own, actors = _institution(m)
                aggregate = m["aggregateid"]
                known = institutions.get(aggregate)
                if own is not None and known is None:
                    institutions[aggregate] = own
                    first.append((aggregate, own))
                copy.write_row(_row(m, own or known or actors))
        copy_rows(cur, "audit_aggregates", ("aggregate_id", "institution_id"), first)


def _institution(m: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the event's own institution, its actor's)."""
    d = m["data"]
    if m["type"].startswith("cn.skillcert.institution."):
        return m["aggregateid"], (d.get("actor") or {}).get("institution_id")
    return d.get("institution_id"), (d.get("actor") or {}).get("institution_id")


def _row(m: dict[str, Any], *institutions: str | None) -> tuple[Any, ...]:
    d = m["data"]
    return (
        m["position"], m["id"], m["type"], m["aggregateid"], m["aggregateversion"], m["actorid"], m["actorrole"],
        (d.get("actor") or {}).get("request_id"), *institutions, m["time"], d.get("number"),
    )  # fmt: skip


EVENTS_COPY = (
    "COPY audit_events (position, event_id, type, aggregate_id, aggregate_version, actor_id, actor_role, request_id,"
    " institution_id, at, number) FROM STDIN"
)

# Per session, emptied after each use: what apply_many copies in before merging.
STAGE_DDL = """CREATE TEMP TABLE IF NOT EXISTS audit_stage (
    position bigint, event_id uuid, type text, aggregate_id uuid, aggregate_version int, actor_id text,
    actor_role text, request_id text, own uuid, actors uuid, at timestamptz, number text)"""
STAGE_COPY = (
    "COPY audit_stage (position, event_id, type, aggregate_id, aggregate_version, actor_id, actor_role, request_id,"
    " own, actors, at, number) FROM STDIN"
)


def trail(
    conn: psycopg.Connection[Any],
    *,
    aggregate_id: str | None = None,
    actor_id: str | None = None,
    institution_id: str | list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: int = 0,
    limit: int = 100,
) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, one page of them in position order after position `after`)."""
    where, args = ["TRUE"], []
    for column, value in (("aggregate_id", aggregate_id), ("actor_id", actor_id), ("institution_id", institution_id)):
        if isinstance(value, list):  # several institutions: an HR department's jurisdiction
            where.append(f"{column} = ANY(%s::uuid[])")
            args.append(value)
        elif value is not None:
            where.append(f"{column} = %s")
            args.append(value)
    if since is not None:
        where.append("at >= %s")
        args.append(since)
    if until is not None:
        where.append("at < %s")
        args.append(until)
    condition = " AND ".join(where)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT count(*) AS n FROM audit_events WHERE {condition}", args)
        total = cur.fetchone()["n"]
        cur.execute(
            f"SELECT * FROM audit_events WHERE {condition} AND position > %s ORDER BY position LIMIT %s",
            [*args, after, limit],
        )
        return total, cur.fetchall()
