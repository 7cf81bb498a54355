"""How far each projection is behind the event store: the end-to-end lag from a committed
command to its read model, relay and broker included.

Counted against the store rather than the broker's offsets: an event is behind while its
aggregate's version in the projection's version guard is lower than its own. This is exact
whatever the partitioning, counts what the relay has not published yet, and does not trust a
broker's high watermark (Tansu's is wrong). It reads the whole store's index of aggregate
versions, tens of milliseconds per 100,000 events: an operator's query, not a hot path.
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
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    events = sql.Identifier(schema, app.recorder.events_table_name)
    now = datetime.now(UTC)
    out = []
    with conn.cursor(row_factory=dict_row) as cur:
        for p in projections:
            cur.execute(
                sql.SQL(
                    """SELECT count(*) AS behind, min(e.notification_id) AS oldest FROM {} e
                       LEFT JOIN projection_versions v ON v.projection = %s AND v.aggregate_id = e.originator_id
                       WHERE e.topic LIKE ANY(%s) AND e.originator_version > coalesce(v.version, 0)"""
                ).format(events),
                (p.name, _patterns(p)),
            )
            behind = cur.fetchone()
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
            cur.execute("SELECT version, rebuilt_at FROM projection_schemas WHERE projection = %s", (p.name,))
            built = cur.fetchone() or {}
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
                "seconds_behind": round(max(seconds, 0.0), 3),
                "last_applied_at": max((r["applied_at"] for r in partitions if r["applied_at"]), default=None),
                "rebuilt_at": built.get("rebuilt_at"),
                "up_to_date_version": built.get("version") == p.version,
                "partitions": partitions,
                "stalls": stalls,
            })  # fmt: skip
    conn.commit()
    return out
