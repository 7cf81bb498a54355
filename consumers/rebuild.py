"""Dropping projections and building them again from the event store, the system of record.

The rebuild reads the notification log once, in order, and applies each event of the
projections' topics exactly as the consumer would, as the bus would carry it. The
projections' Kafka offsets are forgotten; their per-aggregate versions (written at the end)
make the live consumer skip what the rebuild already applied.

One event cannot stop a rebuild: a batch that fails is applied again event by event, each in a
savepoint, and an event a projection cannot apply is left out and recorded in projection_stalls
(partition -1: found by a rebuild), which /projections and the command show.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from infra.bus.envelope import cloud_event, published
from infra.store.eventstore import SkillcertApplication
from projections.store import DDL_LOCK, NUL, Message, Projection, create_tables, outdated, without_nul

log = logging.getLogger("skillcert.rebuild")

BATCH = 2000
ANALYSE_FIRST = 20_000  # events applied before a rebuild first gathers its tables' statistics


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
        cur.execute("DELETE FROM projection_stalls WHERE projection = ANY(%s) AND partition = -1", (names,))
        analyse_at = ANALYSE_FIRST
        for position, events in read_as_published(conn, app, key, head, set(by_context)):
            applied += _apply(conn, cur, events, by_context, versions)
            progress(position, head)
            if applied >= analyse_at:
                # Tables made in this transaction have no statistics, and autovacuum cannot see them before
                # it commits. The generic plans PostgreSQL keeps for prepared statements then guess, and one
                # guess (closing a deadline by a scan of every open deadline) made a province's rebuild
                # quadratic. Analysed at every doubling: a few dozen times over a billion events.
                _analyse(cur, projections)
                analyse_at *= 2
        with cur.copy("COPY projection_versions (projection, aggregate_id, version) FROM STDIN") as copy:
            for (name, aggregate), version in versions.items():
                copy.write_row((name, aggregate, version))
        cur.executemany(
            "INSERT INTO projection_schemas VALUES (%s, %s, now())"
            " ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version, rebuilt_at = EXCLUDED.rebuilt_at",
            [(p.name, p.version) for p in projections],
        )
    return applied


def _analyse(cur: psycopg.Cursor[Any], projections: list[Projection]) -> None:
    # A small sample: the plans need each key's rough number of distinct values, and the default sample
    # (30,000 rows, jsonb columns sorted for their histograms) cost more than the rebuild of 24,000
    # events. Autovacuum analyses the tables again after the commit, with the server's target.
    cur.execute("SET LOCAL default_statistics_target = 10")
    for p in projections:
        for table in p.tables:
            cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))


def read_as_published(
    conn: psycopg.Connection[Any], app: SkillcertApplication, key: bytes, head: int, contexts: set[str]
) -> Iterator[tuple[int, list[tuple[str, Message]]]]:
    """The log up to `head` in batches: (the batch's last position, its events of these contexts as
    (context, event as published)). What a rebuild reads; benchmarks.projections times it alone."""
    position = 0
    while position < head:
        batch = app.stored_rows(conn, position, BATCH, head)
        if not batch:
            return
        events = []
        for at, topic, state in batch:
            p = published(topic)
            if p is not None and p.context in contexts:
                events.append((p.context, _as_published(app, topic, at, state, key)))
        position = batch[-1][0]
        yield position, events


def _as_published(app: SkillcertApplication, topic: str, position: int, state: bytes, key: bytes) -> Message:
    """The event as the bus carries it and a projection applies it (projections.store.decode), built
    as a dict: writing it out as JSON and parsing it back would cost more than decrypting it."""
    plain = app.mapper.plaintext(state)
    event = cloud_event(topic, position, orjson.loads(plain), key)[1]
    return without_nul(event) if NUL in plain else event


def _apply(
    conn: psycopg.Connection[Any],
    cur: psycopg.Cursor[Any],
    events: list[tuple[str, Message]],
    by_context: dict[str, list[Projection]],
    versions: dict[tuple[str, str], int],
) -> int:
    """Apply a batch in one pipeline within a savepoint; if anything in it fails, again one event at
    a time, leaving out (and recording) what a projection cannot apply."""
    try:
        with conn.transaction():
            # Projections own disjoint tables, so each can take the batch on its own: those that can
            # apply it set-based do, outside the pipeline (COPY cannot run in one), the rest event by event.
            whole = {p.name: p for ps in by_context.values() for p in ps if hasattr(p, "apply_many")}
            for projection in whole.values():
                projection.apply_many(cur, [m for context, m in events if projection in by_context[context]])
            with conn.pipeline():
                for context, m in events:
                    for projection in by_context[context]:
                        if projection.name not in whole:
                            projection.apply(cur, m)
    except Exception:  # whatever it was, the slow path finds the event and says which
        log.warning("a rebuild batch failed; applying it event by event to find what cannot be applied")
    else:
        for context, m in events:
            for projection in by_context[context]:
                versions[(projection.name, m["aggregateid"])] = m["aggregateversion"]
        return len(events)
    for context, m in events:
        for projection in by_context[context]:
            try:
                with conn.transaction():
                    projection.apply(cur, m)
            except Exception as e:
                log.error("%s cannot apply %s at position %s: %r", projection.name, m["type"], m["position"], e)
                cur.execute(
                    "INSERT INTO projection_stalls VALUES (%s, %s, -1, NULL, %s, %s, %s, %s, 1, now(), now())"
                    " ON CONFLICT (projection, topic, partition) DO NOTHING",
                    (projection.name, context, m["position"], m["id"], m["type"], f"{type(e).__name__}: {e}"[:2000]),
                )
            versions[(projection.name, m["aggregateid"])] = m["aggregateversion"]
    return len(events)


def failures(conn: psycopg.Connection[Any], projections: list[Projection]) -> list[dict[str, Any]]:
    """The events the last rebuild of these projections had to leave out, and why."""
    return conn.execute(
        "SELECT projection, topic, position, event_type, error FROM projection_stalls"
        " WHERE partition = -1 AND projection = ANY(%s) ORDER BY position",
        ([p.name for p in projections],),
    ).fetchall()


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
