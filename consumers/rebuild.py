"""Dropping projections and building them again from the event store, the system of record.

The rebuild reads the notification log once, in order, and applies each event of the
projections' topics exactly as the consumer would, as the bus would carry it. The
projections' Kafka offsets are forgotten; their per-aggregate versions (written at the end)
make the live consumer skip what the rebuild already applied.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from infra.bus.envelope import envelope, published
from infra.store.eventstore import SkillcertApplication
from projections.store import DDL_LOCK, Projection, create_tables, outdated

BATCH = 2000


def rebuild(
    conn: psycopg.Connection[Any],
    projections: list[Projection],
    app: SkillcertApplication,
    key: bytes,
    progress: Callable[[int, int], None] = lambda done, total: None,
    until: int | None = None,
) -> int:
    """Rebuild in one transaction: readers wait for the new tables rather than see half-built
    ones, and a failed rebuild leaves the old tables as they were. Returns the events applied.
    With `until`, only the log up to that position: the read models as they stood then."""
    head = app.recorder.max_notification_id() or 0
    if until is not None:
        head = min(head, until)
    names = [p.name for p in projections]
    by_context: dict[str, list[Projection]] = {}
    for p in projections:
        for context in p.topics:
            by_context.setdefault(context, []).append(p)
    # Applied in log order, each event once, so the version guard is kept in memory and written
    # at the end; every apply is write-only, so a batch's statements go out in one pipeline.
    versions: dict[tuple[str, str], int] = {}
    applied = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(DDL_LOCK)
        for p in projections:
            for table in p.tables:
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(table)))
        create_tables(conn, projections)
        for table in ("projection_offsets", "projection_versions"):
            cur.execute(sql.SQL("DELETE FROM {} WHERE projection = ANY(%s)").format(sql.Identifier(table)), (names,))
        start = 1
        while start <= head:
            batch = app.recorder.select_notifications(start=start, limit=BATCH, stop=head)
            if not batch:
                break
            with conn.pipeline():
                for n in batch:
                    p = published(n.topic)
                    if p is None or p.context not in by_context:
                        continue
                    message = envelope(n.topic, n.id, app.mapper.decode_state(n), key)
                    for projection in by_context[p.context]:
                        projection.apply(cur, message)
                        versions[(projection.name, message["aggregateid"])] = message["aggregateversion"]
                    applied += 1
            start = batch[-1].id + 1
            progress(batch[-1].id, head)
        with cur.copy("COPY projection_versions (projection, aggregate_id, version) FROM STDIN") as copy:
            for (name, aggregate), version in versions.items():
                copy.write_row((name, aggregate, version))
        cur.executemany(
            "INSERT INTO projection_schemas VALUES (%s, %s, now())"
            " ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version, rebuilt_at = EXCLUDED.rebuilt_at",
            [(p.name, p.version) for p in projections],
        )
    return applied


def bring_up_to_date(
    conn: psycopg.Connection[Any], projections: list[Projection], app: SkillcertApplication, key: bytes
) -> list[str]:
    """At a worker's start: rebuild the projections that are new or changed, then make sure
    every table exists. Workers starting together queue on the DDL lock; the first rebuilds."""
    with conn.transaction():
        conn.execute(DDL_LOCK)
        stale = outdated(conn, projections)
        if stale:
            rebuild(conn, stale, app, key)
    create_tables(conn, projections)
    return [p.name for p in stale]


def position_at(app: SkillcertApplication, at: datetime) -> int:
    """The last log position whose event was recorded at or before `at` (0: none). The log is in
    commit order and events are stamped just before their commit, so the search is exact up to
    writers committing within milliseconds of `at`."""
    low, high = 0, app.recorder.max_notification_id() or 0
    while low < high:  # the last position stamped <= at lies in (low, high]
        mid = (low + high + 1) // 2
        first = app.recorder.select_notifications(start=mid, limit=1)[0]
        if app.mapper.to_domain_event(first).timestamp <= at:
            low = first.id
        else:
            high = mid - 1
    return low
