"""Building projections again from the event store, the system of record, beside the live ones.

The rebuild reads the notification log once, in order, and applies each event of the
projections' topics exactly as the consumer would, as the bus would carry it. It builds the new
tables in a schema of its own (the read models' schema's name with `__rebuild`), committing as it
goes, while readers and the live consumer go on using the old tables; then, in one short
transaction, it stops the consumer, applies what was recorded since it began, and swaps the new
tables in. The projections' Kafka offsets stay where the live consumer left them: every message at or
before them was applied before the swap, so it is in the new tables too, and their per-aggregate versions
(written beside the new tables, swapped in with them) make the live consumer skip what the rebuild already
applied after them. Forgotten, as they were, the topics were read again from their first message after a
rebuild of one projection, by every projection reading them.

Built in one transaction, as it was until the province benchmark, a rebuild blocked every reader
of its tables for its whole length, and every UPDATE left a row version nothing could prune before
the commit: ten million events grew the database past 36 GB. Committed every CHUNK events, its
garbage is pruned as it goes, and a rebuild stopped part way leaves the old tables as they were. The
chunks are small because some rows are updated by every event of a kind (a plan's places taken, by
each registration): PostgreSQL follows the chain of a row's versions made in one transaction on every
update, so a plan with 20,000 registrations rebuilt at 2,695 events/s in chunks of 50,000 and 7,954 in
chunks of 2,000, while a store without such rows rebuilt as fast either way (benchmarks.projections). Since
the projections apply each batch set-based, such a plan rebuilds as fast in chunks of 5,000 as of 2,000 (40,005
events: 2.02 to 2.42 s against 2.28 to 2.56), and the whole cohort's store faster (101,095 events: a median of
4.61 s against 5.27, six runs of each in turn): each batch's statements wait for PostgreSQL, and for the
interpreter's lock after it, about as long whatever their size.

One event cannot stop a rebuild: a batch that fails is applied again event by event, each in a
savepoint, and an event a projection cannot apply is left out and recorded in projection_stalls
(partition -1: found by a rebuild), which /projections and the command show.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import sql

from infra.bus.envelope import cloud_event, published
from infra.collector import collecting_less
from infra.store.eventstore import SkillcertApplication
from projections.store import (
    DDL_LOCK,
    NUL,
    Message,
    Projection,
    create_bookkeeping,
    create_read_indexes,
    create_tables,
    outdated,
    without_nul,
)

log = logging.getLogger("skillcert.rebuild")
T = TypeVar("T")
Versions = dict[str, dict[str, int]]  # projection -> aggregate -> the last version of it applied

BATCH = 5_000  # events read, decoded and applied together
CHUNK = 5_000  # events applied per committed transaction of the new tables (see above)
ANALYSE_FROM = 64 * 1024  # bytes a new table holds before a rebuild first gathers its statistics
LOCK_POLL = 0.5  # seconds between tries for the rebuild's lock while another process rebuilds


def shadow_of(schema: str) -> str:
    """The schema a rebuild of `schema`'s read models builds in (PostgreSQL names end at 63 bytes)."""
    name = f"{schema}__rebuild"
    if len(name.encode()) <= 63:
        return name
    return f"{schema.encode()[:40].decode(errors='ignore')}__rebuild_{hashlib.sha1(schema.encode()).hexdigest()[:8]}"


@contextmanager
def _rebuild_lock(conn: psycopg.Connection[Any], target: str) -> Iterator[None]:
    """One rebuild of a schema's read models at a time, across processes: a second waits, then builds afresh. It
    waits by trying now and then, not in one statement: a statement waiting for the lock holds a snapshot, which kept
    vacuum from the build's garbage and every other table's for the whole rebuild."""
    while not conn.execute("SELECT pg_try_advisory_lock(hashtext('skillcert-rebuild'), hashtext(%s))",
                           (target,)).fetchone()[0]:  # fmt: skip
        conn.commit()
        time.sleep(LOCK_POLL)
    conn.commit()
    try:
        yield
    finally:
        if not conn.closed:
            conn.rollback()
            conn.execute("SELECT pg_advisory_unlock(hashtext('skillcert-rebuild'), hashtext(%s))", (target,))
            conn.commit()


def rebuild(
    conn: psycopg.Connection[Any],
    projections: list[Projection],
    app: SkillcertApplication,
    key: bytes,
    progress: Callable[[int, int], None] = lambda done, total: None,
    until: int | None = None,
) -> int:
    """Rebuild the projections of the connection's schema (its search_path) beside the live tables and
    swap them in. It commits as it goes: call it outside a transaction block. Returns the events applied.
    With `until`, only the log up to that position: the read models as they stood then."""
    conn.commit()
    target = conn.execute("SELECT current_schema()").fetchone()[0]
    path = conn.execute("SHOW search_path").fetchone()[0]
    build = _Build(conn, projections, app, key, progress, target, shadow_of(target))
    with _rebuild_lock(conn, target), collecting_less():
        try:
            head = app.recorder.max_notification_id() or 0
            if until is not None:
                head = min(head, until)
            # What the build commits is thrown away if the server crashes before the swap, so its commits need
            # not wait for the disk; the swap's does (SET LOCAL there).
            with conn.transaction():
                conn.execute("SET synchronous_commit = off")
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(build.new))
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(build.new))
                build.search_new_first(local=False)
                create_tables(conn, projections, read_indexes=False)
            applied = build.apply_log(0, head)
            conn.commit()
            with conn.transaction():  # sorted once each, with room for a province's (the default is 64 MB)
                conn.execute("SET LOCAL maintenance_work_mem = '512MB'")
                create_read_indexes(conn, projections)
                build.write_versions()
            with conn.transaction():
                applied += build.swap(head, catch_up=until is None)
            return applied
        except BaseException:
            conn.rollback()
            try:  # what it built is thrown away; a kill leaves it to the next rebuild, which drops it first
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(build.new))
                conn.commit()
            except psycopg.Error:
                conn.rollback()
            raise
        finally:
            if not conn.closed:
                conn.rollback()
                conn.execute(sql.SQL("SET search_path TO {}").format(sql.SQL(path)))
                conn.execute("RESET synchronous_commit")
                conn.commit()


@dataclass
class _Build:
    """One rebuild: its projections, where it builds (`shadow`) and for which schema (`target`), and the
    version guard, kept in memory because the log is applied in order, each event once, and written just
    before the swap."""

    conn: psycopg.Connection[Any]
    projections: list[Projection]
    app: SkillcertApplication
    key: bytes
    progress: Callable[[int, int], None]
    target: str
    shadow: str
    versions: Versions = field(default_factory=dict)
    # What set-based projections remember of what they wrote (Audit.apply_many's memo), from the empty tables
    # on; None once a batch was applied event by event, which they cannot follow.
    memos: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    analysed: dict[str, int] = field(default_factory=dict)  # new table -> its size when last analysed

    def __post_init__(self) -> None:
        self.by_context: dict[str, list[Projection]] = {}
        for p in self.projections:
            for context in p.topics:
                self.by_context.setdefault(context, []).append(p)
        self.new = sql.Identifier(self.shadow)
        for p in self.projections:
            if "memo" in inspect.signature(getattr(p, "apply_many", lambda: None)).parameters:
                self.memos[p.name] = {}

    def search_new_first(self, local: bool = True) -> None:
        """The new tables first; tables of projections not being rebuilt are read where they are."""
        self.conn.execute(sql.SQL("SET {} search_path TO {}, {}").format(
            sql.SQL("LOCAL" if local else ""), self.new, sql.Identifier(self.target)))  # fmt: skip

    def apply_log(self, after: int, head: int, chunked: bool = True, versions: Versions | None = None) -> int:
        """Apply the log after `after` up to `head`, every batch's statements in one pipeline (every apply is
        write-only), committing every CHUNK events unless told not to. The versions applied go into
        `versions` (by default the build's)."""
        conn, applied = self.conn, 0
        versions = self.versions if versions is None else versions
        # The log is read and decoded on a connection and a thread of its own, a few batches ahead: while
        # PostgreSQL applies one batch, Python decodes the next, rather than each waiting for the other.
        # Autocommit: a rebuild's hour-long read holds no snapshot that would keep vacuum from pruning.
        # A batch that fails stops the reader (closing) before its connection closes.
        with (
            psycopg.connect(self.app.database_url, autocommit=True) as reader,
            closing(_ahead(read_as_published(reader, self.app, self.key, head, set(self.by_context), after))) as log,
            conn.cursor() as cur,
        ):
            batches = iter(log)
            while (done := self._apply_chunk(cur, batches, head, CHUNK if chunked else None, versions)) is not None:
                applied += done
            if chunked:
                self._analyse_grown(cur, final=True)
        return applied

    def _apply_chunk(
        self, cur: psycopg.Cursor[Any], batches: Iterator[tuple[int, list[tuple[str, Message]]]], head: int,
        size: int | None, versions: Versions,
    ) -> int | None:  # fmt: skip
        """Apply batches until `size` events (or the log's end) in one transaction, each batch in a savepoint of
        it (_apply), gathering what statistics have grown before the commit. The events applied; None when the
        log had nothing left."""
        applied, read = 0, False
        with self.conn.transaction():
            for position, events in batches:
                read = True
                applied += _apply(self.conn, cur, events, self.by_context, versions, self.memos)
                self.progress(position, head)
                if size is not None and applied >= size:
                    self._analyse_grown(cur)
                    return applied
        return applied if read else None

    def _analyse_grown(self, cur: psycopg.Cursor[Any], final: bool = False) -> list[tuple[str, int]]:
        """Gather the statistics of every new table that has doubled in size since they were last gathered
        (`final`: grown at all, so that the live consumer's first plans after the swap see them). Returns the
        tables analysed, with their sizes.

        Until autovacuum comes by, after the swap, new tables have no statistics, and the generic plans
        PostgreSQL keeps for prepared statements are made for tables as small as they were then. Two such
        plans made rebuilds quadratic: closing a deadline by a scan of every open deadline (at a province's
        size, most of a rebuild's time), and closing a session's numbering deadline by a scan of all of them,
        planned while the certificates' deadlines (issued last of all) did not exist yet. Analysed at every
        doubling of each table's own size, a table is analysed a few dozen times at most, whatever its
        events' order; ANALYZE invalidates the plans made before."""
        rows = cur.execute(SIZES, (self.shadow,)).fetchall()
        grown = [
            (t, size, columns)
            for t, size, columns in rows
            if (size != self.analysed.get(t, 0) if final else size >= max(ANALYSE_FROM, 2 * self.analysed.get(t, 0)))
        ]
        if not grown:
            return []
        # A small sample: the plans need each key's rough number of distinct values, and the default sample
        # (30,000 rows, jsonb columns sorted for their histograms) cost more than the rebuild of 24,000
        # events. Nor the JSON columns: no statement a projection applies looks inside one, and they are
        # most of what ANALYZE reads (a registration's form). Autovacuum analyses the tables again after the
        # swap, every column, with the server's target.
        cur.execute("SET LOCAL default_statistics_target = 10")
        for table, size, columns in grown:
            cur.execute(sql.SQL("ANALYZE {} {}").format(
                sql.Identifier(self.shadow, table),
                sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Identifier, columns))) if columns else sql.SQL(""),
            ))  # fmt: skip
            self.analysed[table] = size
        return [(table, size) for table, size, _ in grown]

    def write_versions(self) -> None:
        """The versions the build applied, into the new schema's table of versions, before the swap: at a
        province's size they are millions of rows, which the swap used to copy in while the live consumer
        waited (one to three minutes at ten million events). The key is made after the rows are in."""
        versions = sql.Identifier(self.shadow, "projection_versions")
        with self.conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT projection_versions_pkey").format(versions))
            with cur.copy(sql.SQL("COPY {} (projection, aggregate_id, version) FROM STDIN").format(versions)) as copy:
                for name, of in self.versions.items():
                    for aggregate, version in of.items():
                        copy.write_row((name, aggregate, version))
            cur.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (projection, aggregate_id)").format(versions))

    def swap(self, head: int, catch_up: bool) -> int:
        """In one transaction: pause the live consumer, apply what was recorded since the rebuild read its head
        (unless it builds as of a moment), and put the new tables in the old ones' place with the versions and
        offsets that go with them. Readers wait only for the last step, the tables' exchange."""
        conn, names, live = self.conn, [p.name for p in self.projections], sql.Identifier(self.target)
        conn.execute(DDL_LOCK)
        conn.execute("SET LOCAL synchronous_commit = on")
        # Every consumer waits for this transaction: if this process's host is lost mid-swap, its locks go when the
        # server ends the transaction left idle, not hours later when TCP notices.
        conn.execute("SET LOCAL idle_in_transaction_session_timeout = '60s'")
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(live))
        create_bookkeeping(conn)
        # Every batch the consumer applies first locks its versions' rows: holding the table of versions
        # (once the batches in flight are done) pauses it, and readers never take more than a share of it.
        conn.execute(
            sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(self.target, "projection_versions"))
        )
        applied, caught = 0, {}
        now = self.app.recorder.max_notification_id() or 0
        if catch_up and now > head:  # what the consumer applied to the old tables meanwhile, and more
            self.search_new_first()
            applied = self.apply_log(head, now, chunked=False, versions=caught)
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(live))
        new_versions = sql.Identifier(self.shadow, "projection_versions")
        with conn.cursor() as cur:
            cur.executemany(
                sql.SQL("INSERT INTO {} VALUES (%s, %s, %s) ON CONFLICT (projection, aggregate_id)"
                        " DO UPDATE SET version = EXCLUDED.version").format(new_versions),
                [(name, aggregate, version) for name, of in caught.items() for aggregate, version in of.items()],
            )  # fmt: skip
            if not catch_up:  # read models as of a moment, in a schema of their own: no consumer resumes there
                cur.execute("DELETE FROM projection_offsets WHERE projection = ANY(%s)", (names,))
            others = [n for (n,) in cur.execute(PROJECTIONS_WITH_VERSIONS).fetchall() if n not in names]
            if others:  # some projections rebuilt: theirs are replaced, the others' stay
                cur.execute("DELETE FROM projection_versions WHERE projection = ANY(%s)", (names,))
                cur.execute(sql.SQL("INSERT INTO projection_versions SELECT * FROM {}").format(new_versions))
            else:  # all of them: the new table takes the old one's place, whatever its size
                cur.execute("DROP TABLE projection_versions")
                cur.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(new_versions, live))
            # All of theirs: a live stall on the old tables says nothing of the new, and if its message still fails,
            # the consumer records it again at its next try.
            cur.execute("DELETE FROM projection_stalls WHERE projection = ANY(%s)", (names,))
            cur.execute(sql.SQL("INSERT INTO projection_stalls SELECT * FROM {} ON CONFLICT DO NOTHING").format(
                sql.Identifier(self.shadow, "projection_stalls")))  # fmt: skip
            cur.executemany(
                "INSERT INTO projection_schemas VALUES (%s, %s, now())"
                " ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version, rebuilt_at = EXCLUDED.rebuilt_at",
                [(p.name, p.version) for p in self.projections],
            )
            # Everything up to where the build applied the log is applied (what it left out is recorded as a
            # stall): the lag's first look after a rebuild starts there, not at the log's beginning (consumers.lag).
            cur.executemany(
                "INSERT INTO projection_watermarks VALUES (%s, %s, now()) ON CONFLICT (projection)"
                " DO UPDATE SET position = EXCLUDED.position, rebuilt_at = EXCLUDED.rebuilt_at",
                [(p.name, now if catch_up else head) for p in self.projections],
            )
        for table in (t for p in self.projections for t in p.tables):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(self.target, table)))
            conn.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier(self.shadow, table), live))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(self.new))
        return applied


# A build's tables, their sizes and their columns that are not JSON.
SIZES = """
SELECT c.relname, pg_relation_size(c.oid),
       array(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             AND a.atttypid NOT IN ('json'::regtype, 'jsonb'::regtype) ORDER BY a.attnum)
FROM pg_class c WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'"""

# The projections the live table of versions holds, one index probe each (a loose index scan) rather than a
# scan of millions of rows.
PROJECTIONS_WITH_VERSIONS = """
WITH RECURSIVE names AS (
    (SELECT projection FROM projection_versions ORDER BY projection LIMIT 1)
    UNION ALL
    SELECT (SELECT v.projection FROM projection_versions v WHERE v.projection > names.projection
            ORDER BY v.projection LIMIT 1) FROM names WHERE names.projection IS NOT NULL
)
SELECT projection FROM names WHERE projection IS NOT NULL"""


def _ahead(batches: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The batches, produced by a thread up to `depth` ahead of the caller. An exception there is raised
    here; the thread stops when the caller does."""
    ready: queue.Queue[tuple[bool, Any]] = queue.Queue(depth)
    stop = threading.Event()

    def offer(item: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer((True, batch)):
                    return
            offer((False, None))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who raises it
            offer((False, e))

    thread = threading.Thread(target=produce, name="rebuild-reader", daemon=True)
    thread.start()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        thread.join()


def read_as_published(
    conn: psycopg.Connection[Any], app: SkillcertApplication, key: bytes, head: int, contexts: set[str], after: int = 0
) -> Iterator[tuple[int, list[tuple[str, Message]]]]:
    """The log after `after` up to `head` in batches: (the batch's last position, its events of these contexts
    as (context, event as published)). What a rebuild reads; benchmarks.projections times it alone."""
    position = after
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
    versions: Versions,
    memos: dict[str, dict[str, Any] | None],
) -> int:
    """Apply a batch in one pipeline within a savepoint; if anything in it fails, again one event at
    a time, leaving out (and recording) what a projection cannot apply. `memos`: the build's (_Build)."""
    try:
        with conn.transaction():
            # Projections own disjoint tables, so each can take the batch on its own: those that can
            # apply it set-based do, outside the pipeline (COPY cannot run in one), the rest event by event.
            whole = {p.name: p for ps in by_context.values() for p in ps if hasattr(p, "apply_many")}
            for projection in whole.values():
                mine = [m for context, m in events if context in projection.topics]
                if projection.name in memos:
                    projection.apply_many(cur, mine, memos[projection.name])
                else:
                    projection.apply_many(cur, mine)
            with conn.pipeline():
                for context, m in events:
                    for projection in by_context[context]:
                        if projection.name not in whole:
                            projection.apply(cur, m)
    except Exception:  # whatever it was, the slow path finds the event and says which
        log.warning("a rebuild batch failed; applying it event by event to find what cannot be applied")
        for name in memos:
            memos[name] = None  # what they remember was rolled back, and the event-by-event path writes around them
    else:
        # Each context's projections' versions, looked up once a batch rather than once an event.
        of = {context: [versions.setdefault(p.name, {}) for p in ps] for context, ps in by_context.items()}
        for context, m in events:
            aggregate, version = m["aggregateid"], m["aggregateversion"]
            for applied in of[context]:
                applied[aggregate] = version
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
            versions.setdefault(projection.name, {})[m["aggregateid"]] = m["aggregateversion"]
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
    every table exists. Workers starting together queue on the rebuild's lock; the first rebuilds,
    the others find nothing left to do."""
    target = conn.execute("SELECT current_schema()").fetchone()[0]
    with _rebuild_lock(conn, target):
        # What a killed rebuild left half-built holds personal data nothing else erases: gone at the next start.
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(shadow_of(target))))
        stale = outdated(conn, projections)
        conn.commit()
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
