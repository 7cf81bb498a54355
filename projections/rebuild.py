"""Dropping a projection and building it again from the event store, the system of record.

The rebuild reads the notification log in order and applies each event of the
projection's topics exactly as the consumer would, as the bus would carry it. The
projection's Kafka offsets are forgotten; its per-aggregate versions make the live
consumer skip what the rebuild already applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from infra.envelope import envelope, published
from infra.eventstore import SkillcertApplication
from projections.store import Projection, apply_once, create_tables

BATCH = 2000


def rebuild(
    conn: psycopg.Connection[Any],
    projection: Projection,
    app: SkillcertApplication,
    key: bytes,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> int:
    """Rebuild in one transaction: readers wait for the new tables rather than see a half-built
    one, and a failed rebuild leaves the old tables as they were. Returns the events applied."""
    head = app.recorder.max_notification_id() or 0
    applied = 0
    with conn.transaction(), conn.cursor() as cur:
        for table in projection.tables:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        create_tables(conn, [projection])
        for table in ("projection_offsets", "projection_versions"):
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE projection = %s").format(sql.Identifier(table)), (projection.name,)
            )
        start = 1
        while start <= head:
            batch = app.recorder.select_notifications(start=start, limit=BATCH, stop=head)
            if not batch:
                break
            for n in batch:
                p = published(n.topic)
                if p is not None and p.context in projection.topics:
                    applied += apply_once(cur, projection, envelope(n.topic, n.id, app.mapper.decode_state(n), key))
            start = batch[-1].id + 1
            progress(batch[-1].id, head)
    return applied
