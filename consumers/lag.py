"""How far each projection is behind the event store: the end-to-end lag from a committed
command to its read model, relay and broker included.

Counted against the store rather than the broker's offsets: an event is behind while its
aggregate's version in the projection's version guard is lower than its own. This is exact
whatever the partitioning, counts what the relay has not published yet, and does not trust a
broker's high watermark (Tansu's is wrong).

Only the log after each projection's watermark is looked at: the last position at and below which
the previous look found every event applied (projection_watermarks). Versions only grow until the
projection is rebuilt, and the store's writers commit in the order of their positions (one at a time,
infra.store.recorder), so a position once found stays true; a rebuild (which may build as of an earlier
moment) changes the projection's rebuilt_at, and the watermark found before it is not used. Without
it, every look read the whole store: about 2.5 s a million events, for each call of /projections.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from infra.bus.envelope import CONTEXTS
from infra.store.eventstore import SkillcertApplication
from projections.store import Projection


def _patterns(p: Projection) -> list[str]:
    return [f"{aggregate}.%" for aggregate, context in CONTEXTS.items() if context in p.topics]


def lag(
    conn: psycopg.Connection[Any], app: SkillcertApplication, projections: list[Projection]
) -> list[dict[str, Any]]:
    conn.commit()  # what follows reads one snapshot, which begins a transaction of its own
    now = datetime.now(UTC)
    out, found = [], []
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        # One snapshot: the head and every projection's versions as of the same moment.
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # The store's own schema: read models rebuilt as of a moment into a schema of their own (read with
        # X-As-Of) are measured against the live store too, which their schema does not hold.
        events = sql.Identifier(app.recorder.datastore.schema, app.recorder.events_table_name)
        cur.execute(sql.SQL("SELECT coalesce(max(notification_id), 0) AS head FROM {}").format(events))
        head = cur.fetchone()["head"]
        marks = _watermarks(cur)
        for p in projections:
            cur.execute("SELECT version, rebuilt_at FROM projection_schemas WHERE projection = %s", (p.name,))
            built = cur.fetchone() or {}
            mark = (marks or {}).get(p.name)
            after = mark[0] if mark is not None and mark[1] == built.get("rebuilt_at") else 0
            cur.execute(
                sql.SQL(
                    """SELECT count(*) AS behind, min(e.notification_id) AS oldest FROM {} e
                       LEFT JOIN projection_versions v ON v.projection = %s AND v.aggregate_id = e.originator_id
                       WHERE e.topic LIKE ANY(%s) AND e.originator_version > coalesce(v.version, 0) {}"""
                ).format(
                    events,
                    # A range, closed at the head: even where the log's statistics are old (a copied store not
                    # analysed yet), PostgreSQL takes a closed range for a narrow one and reads it by the index,
                    # where `> after` alone it guessed a third of the log and read all of it. Without a
                    # watermark, no condition: a range over the whole log, read by its index, took three times
                    # as long as reading the table.
                    sql.SQL("AND e.notification_id BETWEEN {} AND {}").format(after + 1, head)
                    if after
                    else sql.SQL(""),
                ),
                (p.name, _patterns(p)),
            )
            behind = cur.fetchone()
            if built and marks is not None:
                found.append((p.name, head if behind["oldest"] is None else behind["oldest"] - 1, built["rebuilt_at"]))
            seconds = 0.0
            if behind["oldest"] is not None:
                [n] = app.recorder.select_notifications(start=behind["oldest"], limit=1)
                committed = datetime.fromisoformat(app.mapper.decode_state(n)["timestamp"])
                seconds = (now - committed).total_seconds()
            cur.execute(
                'SELECT topic, partition, "offset", position, applied_at FROM projection_offsets'
                " WHERE projection = %s ORDER BY topic, partition",
                (p.name,),
            )
            partitions = cur.fetchall()
            cur.execute(
                'SELECT topic, partition, "offset", position, event_id, event_type, error, attempts, since, last_attempt'
                " FROM projection_stalls WHERE projection = %s ORDER BY since",
                (p.name,),
            )
            stalls = cur.fetchall()
            out.append({
                "projection": p.name,
                "status": "stalled" if stalls else "behind" if behind["behind"] else "current",
                "events_behind": behind["behind"],
                # Every event at and below this position is applied: what it shows is complete up to there.
                "applied_through": head if behind["oldest"] is None else behind["oldest"] - 1,
                "seconds_behind": round(max(seconds, 0.0), 3),
                "last_applied_at": max((r["applied_at"] for r in partitions if r["applied_at"]), default=None),
                "rebuilt_at": built.get("rebuilt_at"),
                "up_to_date_version": built.get("version") == p.version,
                "partitions": partitions,
                "stalls": stalls,
            })  # fmt: skip
    if found:
        # Outside the snapshot: a watermark only moves forward within one rebuild, and one found under an
        # older rebuild never replaces one found under a newer.
        with conn.transaction():
            conn.cursor().executemany(
                "INSERT INTO projection_watermarks AS w VALUES (%s, %s, %s) ON CONFLICT (projection) DO UPDATE SET"
                " position = CASE WHEN w.rebuilt_at = EXCLUDED.rebuilt_at THEN greatest(w.position, EXCLUDED.position)"
                " ELSE EXCLUDED.position END, rebuilt_at = EXCLUDED.rebuilt_at WHERE w.rebuilt_at <= EXCLUDED.rebuilt_at",
                found,
            )
    return out


def _watermarks(cur: psycopg.Cursor[Any]) -> dict[str, tuple[int, datetime]] | None:
    """projection -> (its watermark, the rebuild it holds for); None where the table is not made yet (the API
    upgraded before the consumers that make it): then every look reads the whole store, as before."""
    cur.execute("SELECT to_regclass('projection_watermarks') IS NOT NULL AS made")
    if not cur.fetchone()["made"]:
        return None
    cur.execute("SELECT projection, position, rebuilt_at FROM projection_watermarks")
    return {r["projection"]: (r["position"], r["rebuilt_at"]) for r in cur.fetchall()}
