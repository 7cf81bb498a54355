"""Applying bus messages to read models exactly once in effect.

Each projection records, in the same transaction as its rows, the last version it applied of
each aggregate: a message Kafka redelivers, the relay published twice, or a rebuild from the event
store already applied is skipped. One aggregate's events arrive in order on one partition, so the
version alone decides. A message whose version jumps past the next one means the bus lost some:
the caller fetches the missing ones from the event store (`fill`) and they are applied first.

The Kafka offset reached per topic partition is recorded in the same transaction too, with the
name of the log it counts (the relay names a new log whenever it starts over on a new or emptied
broker). It is where a worker resumes (consumers.projector seeks there on every assignment); it
never decides whether a message applies. Offsets that counted another log are forgotten.

A projection that cannot apply a batch is stalled, not skipped: the worker retries it and records
why in `projection_stalls`, which /projections shows, until it applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import orjson
import psycopg
from psycopg import sql
from psycopg.types.json import set_json_dumps

R = TypeVar("R")


class Projection(Protocol):
    name: str
    topics: tuple[str, ...]  # topic suffixes (contexts) it reads
    tables: tuple[str, ...]  # tables it owns, dropped on rebuild
    version: int  # of its tables' shape and meaning; a change makes every worker rebuild it once

    def ddl(self) -> list[str]: ...

    # Optional: read_indexes() -> list[str], the indexes only readers use (apply never looks a row up by them).
    # A rebuild creates them once its tables are full, sorting each once rather than growing it row by row.

    def apply(self, cur: psycopg.Cursor[Any], message: dict[str, Any]) -> None: ...

    # Optional: apply_many(cur, messages) applies a run of messages as `apply` would one by one, set-based.
    # A rebuild uses it where a projection has it (consumers.rebuild).


OFFSETS_DDL = """
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint NOT NULL,
    position bigint,          -- the event store position of the message at that offset
    applied_at timestamptz,
    log_id text,              -- which log the offset counts: the relay names a new one on a new broker
    PRIMARY KEY (projection, topic, partition)
)"""

SCHEMAS_DDL = """
CREATE TABLE IF NOT EXISTS projection_schemas (
    projection text PRIMARY KEY,
    version int NOT NULL,
    rebuilt_at timestamptz NOT NULL
)"""

VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS projection_versions (
    projection text NOT NULL,
    aggregate_id uuid NOT NULL,
    version int NOT NULL,
    PRIMARY KEY (projection, aggregate_id)
)"""

# Per projection, a log position at and below which it has applied every event of its topics, as of its
# last rebuild (consumers.lag): what the lag query need not look at again. Versions only grow between
# rebuilds, so a position once found stays true until the next one.
WATERMARKS_DDL = """
CREATE TABLE IF NOT EXISTS projection_watermarks (
    projection text PRIMARY KEY,
    position bigint NOT NULL,
    rebuilt_at timestamptz NOT NULL  -- the projection's projection_schemas.rebuilt_at it holds for
)"""

STALLS_DDL = """
CREATE TABLE IF NOT EXISTS projection_stalls (
    projection text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint,
    position bigint,          -- the event store position of the first message it could not apply
    event_id text,
    event_type text,
    error text NOT NULL,
    attempts int NOT NULL,
    since timestamptz NOT NULL,
    last_attempt timestamptz NOT NULL,
    PRIMARY KEY (projection, topic, partition)
)"""

DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('skillcert-projection-ddl'))"

Message = dict[str, Any]
# (aggregate id, last version applied, version that arrived) -> the messages in between, in order.
Fill = Callable[[str, int, int], list[Message]]


def decode(raw: bytes) -> Message:
    """A bus message as projections apply it. PostgreSQL's text and jsonb cannot hold U+0000, so one
    that an older version let into the store is shown as U+FFFD rather than stopping every
    projection behind it (the API refuses it now: domain.text)."""
    message = orjson.loads(raw)
    return without_nul(message) if NUL in raw else message


NUL = b"\\u0000"  # as JSON writes it


def without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    return value


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def read_tolerantly(conn: psycopg.Connection[Any], read: Callable[[], R], older: Callable[[], R]) -> R:
    """`read` from a projection's tables as they are, or, where they lack a column or a table a newer version added (a
    worker rebuilding them after an upgrade still reads the older ones), `older`. In a savepoint, so that the failed
    statement leaves the caller's transaction as it was."""
    try:
        with conn.transaction():
            return read()
    except (psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedTable):
        return older()


def copy_rows(cur: psycopg.Cursor[Any], table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """The rows into the table's columns, one COPY (nothing when there are none): how a rebuild inserts what a batch
    creates."""
    if rows:
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def connect(database_url: str, schema: str, **kwargs: Any) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database_url, **kwargs)
    # jsonb parameters (a registration's form, a sitting's scores) written by orjson, not the standard library's
    # encoder: a rebuild spent a twentieth of its time there.
    set_json_dumps(_json_dumps, context=conn)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    if not kwargs.get("autocommit"):
        conn.commit()
    return conn


def create_bookkeeping(conn: psycopg.Connection[Any]) -> None:
    """The tables of offsets, versions, schema versions, watermarks and stalls every projection shares."""
    for ddl in (OFFSETS_DDL, VERSIONS_DDL, SCHEMAS_DDL, WATERMARKS_DDL, STALLS_DDL):
        conn.execute(ddl)
    # Offsets tables from before positions were recorded get the columns they lack, and only those: ALTER TABLE
    # locks the table whole even when it changes nothing, and a rebuild's swap (and every start of the API) does
    # this while the live consumer may be recording its offsets. A swap holding that lock then waited for the
    # consumer's batch, which waited for the lock: PostgreSQL aborted the swap, and with it the whole rebuild.
    lacking = conn.execute(
        "SELECT name, type FROM (VALUES ('position', 'bigint'), ('applied_at', 'timestamptz'), ('log_id', 'text'))"
        " AS c(name, type) WHERE NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'projection_offsets'::regclass"
        " AND attname = c.name AND NOT attisdropped)"
    ).fetchall()  # fmt: skip
    for name, type_ in lacking:
        conn.execute(sql.SQL("ALTER TABLE projection_offsets ADD COLUMN IF NOT EXISTS {} {}").format(
            sql.Identifier(name), sql.SQL(type_)))  # fmt: skip


def create_tables(conn: psycopg.Connection[Any], projections: list[Projection], read_indexes: bool = True) -> None:
    with conn.transaction():
        # Serialise concurrent start-ups: CREATE IF NOT EXISTS races on the catalog.
        conn.execute(DDL_LOCK)
        create_bookkeeping(conn)
        for p in projections:
            for statement in p.ddl():
                conn.execute(statement)
        if read_indexes:
            create_read_indexes(conn, projections)


def create_read_indexes(conn: psycopg.Connection[Any], projections: list[Projection]) -> None:
    for p in projections:
        for statement in getattr(p, "read_indexes", list)():
            conn.execute(statement)


def apply_message(
    conn: psycopg.Connection[Any],
    projection: Projection,
    topic: str,
    partition: int,
    offset: int,
    message: Message,
) -> bool:
    """Apply one message in one transaction. False when it was applied before."""
    return apply_batch(conn, [projection], topic, [(partition, offset, message)]) > 0


def apply_batch(
    conn: psycopg.Connection[Any],
    projections: list[Projection],
    topic: str,
    batch: list[tuple[int, int, Message]],
    fill: Fill | None = None,
    log_id: str | None = None,
    skip_offsets: frozenset[int] = frozenset(),
) -> int:
    """Apply a batch of one topic's messages, (partition, offset, message) in offset order per
    partition, to each projection, in one transaction with their versions and offsets: a
    consumer killed mid-batch has applied none of it. Returns how many applications were new."""
    names = [p.name for p in projections]
    known_versions = {p.name: p.version for p in projections}
    aggregates = list({m["aggregateid"] for _, _, m in batch})
    applied = 0
    with conn.transaction(), conn.cursor() as cur:
        # One applier per partition at a time, across workers: while a rebalance moves a partition,
        # the worker losing it may still be applying a batch the new owner also read. Waiting here,
        # the second sees the first's versions and skips what it applied (counted once, not twice).
        for partition in sorted({part for part, _, _ in batch}):
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (f"apply:{topic}", partition))
        # With the versions, in the same round trip, the read models' own versions: a worker of an older release still
        # running beside a newer one, during an upgrade, would apply its older rules to tables the newer one rebuilt.
        # Refused instead, and shown as a stall until it is upgraded.
        cur.execute(
            "WITH v AS (SELECT projection, aggregate_id::text AS aggregate, version FROM projection_versions"
            " WHERE projection = ANY(%s) AND aggregate_id = ANY(%b::uuid[]) FOR UPDATE)"
            " SELECT projection, aggregate, version FROM v"
            " UNION ALL SELECT projection, NULL, version FROM projection_schemas WHERE projection = ANY(%s)",
            (names, aggregates, names),
        )
        versions: dict[tuple[str, str], int] = {}
        built: dict[str, int] = {}
        for name, agg, v in cur.fetchall():
            if agg is None:
                built[name] = v
            else:
                versions[(name, agg)] = v
        if newer := [f"{n} is at version {v}" for n, v in built.items() if v > known_versions[n]]:
            raise NewerReadModels(f"{'; '.join(newer)}, newer than this worker knows: upgrade this worker")
        missing: dict[tuple[str, int, int], list[Message]] = {}
        if fill is not None:  # before the pipeline: filling reads
            known = dict(versions)
            for _, _, m in batch:
                agg, v = m["aggregateid"], m["aggregateversion"]
                for p in projections:
                    have = known.get((p.name, agg), 0)
                    if v > have + 1 and (agg, have, v) not in missing:
                        missing[(agg, have, v)] = fill(agg, have, v)
                    known[(p.name, agg)] = max(have, v)
        offsets: dict[tuple[str, int], tuple[int, int]] = {}
        changed: set[tuple[str, str]] = set()
        with conn.pipeline():  # every apply is write-only: its statements need not wait for each other
            for partition, offset, m in batch:
                for p in projections:
                    if partition not in skip_offsets:
                        offsets[(p.name, partition)] = (offset, m["position"])
                    key = (p.name, m["aggregateid"])
                    have = versions.get(key, 0)
                    if m["aggregateversion"] > have + 1:
                        for earlier in missing.get((m["aggregateid"], have, m["aggregateversion"]), []):
                            p.apply(cur, earlier)
                            versions[key] = earlier["aggregateversion"]
                            changed.add(key)
                    if m["aggregateversion"] <= versions.get(key, 0):
                        continue  # redelivered by Kafka, or published twice by the relay, or rebuilt
                    p.apply(cur, m)
                    versions[key] = m["aggregateversion"]
                    changed.add(key)
                    applied += 1
            cur.executemany(
                "INSERT INTO projection_versions VALUES (%s, %s, %s)"
                " ON CONFLICT (projection, aggregate_id) DO UPDATE SET version = EXCLUDED.version",
                [(name, agg, versions[(name, agg)]) for name, agg in changed],
            )
            cur.executemany(
                "INSERT INTO projection_offsets VALUES (%s, %s, %s, %s, %s, now(), %s)"
                ' ON CONFLICT (projection, topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset",'
                " position = EXCLUDED.position, applied_at = EXCLUDED.applied_at, log_id = EXCLUDED.log_id"
                # never back within one log: a worker that lost the partition may finish a stale batch
                " WHERE projection_offsets.log_id IS DISTINCT FROM EXCLUDED.log_id"
                ' OR projection_offsets."offset" < EXCLUDED."offset"',
                [(name, topic, part, off, pos, log_id) for (name, part), (off, pos) in offsets.items()],
            )
            # The stalls of this batch's partitions only: another worker may be stuck on another partition.
            cur.execute("DELETE FROM projection_stalls WHERE projection = ANY(%s) AND topic = %s AND partition = ANY(%s)",
                        (names, topic, sorted({part for part, _, _ in batch})))  # fmt: skip
    return applied


def record_stall(
    conn: psycopg.Connection[Any], projections: list[Projection], topic: str, partition: int, offset: int,
    message: Message | None, error: str,
) -> None:  # fmt: skip
    """What a projection could not apply, and why: /projections shows it until a retry applies it."""
    m = message or {}
    with conn.transaction():
        conn.cursor().executemany(
            """INSERT INTO projection_stalls VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, now(), now())
               ON CONFLICT (projection, topic, partition) DO UPDATE SET attempts = projection_stalls.attempts + 1,
               last_attempt = now(), error = EXCLUDED.error""",
            [(p.name, topic, partition, offset, m.get("position"), m.get("id"), m.get("type"), error[:2000])
             for p in projections],
        )  # fmt: skip


def resume_at(
    conn: psycopg.Connection[Any], projections: list[Projection], topic: str, log_id: str | None
) -> dict[int, int]:
    """Per partition of the topic, the earliest offset any of these projections reached in the log
    named `log_id`: a worker resumes after it. Offsets that counted another log are forgotten; a
    partition without an offset of this log for every projection is absent (read it from the start)."""
    if offsets_from_another_log(conn, projections, topic, log_id):
        return {}
    names = [p.name for p in projections]
    rows = conn.execute(
        'SELECT partition, projection, "offset" FROM projection_offsets WHERE projection = ANY(%s) AND topic = %s',
        (names, topic),
    ).fetchall()
    reached: dict[int, dict[str, int]] = {}
    for partition, name, offset in rows:
        reached.setdefault(partition, {})[name] = offset
    return {part: min(by.values()) for part, by in reached.items() if set(by) == set(names)}


def offsets_from_another_log(
    conn: psycopg.Connection[Any], projections: list[Projection], topic: str, log_id: str | None
) -> bool:
    """Did these projections record offsets of this topic in a log other than `log_id`? Then that log
    is gone (a new or emptied broker): forget them, and say so."""
    names = [p.name for p in projections]
    labels = {row[0] for row in conn.execute(
        "SELECT DISTINCT log_id FROM projection_offsets WHERE projection = ANY(%s) AND topic = %s", (names, topic)
    )}  # fmt: skip
    if not labels or labels == {log_id}:
        return False
    conn.execute("DELETE FROM projection_offsets WHERE projection = ANY(%s) AND topic = %s", (names, topic))
    return True


def outdated(conn: psycopg.Connection[Any], projections: list[Projection]) -> list[Projection]:
    """Projections whose tables were never built at their current version: new ones, and
    ones whose shape or meaning changed. They need a rebuild from the event store, since the
    bus's consumer group has moved past the history they lack."""
    with conn.transaction():
        conn.execute(DDL_LOCK)  # beside an API starting up and making its tables (create_tables)
        conn.execute(SCHEMAS_DDL)
    built = dict(conn.execute("SELECT projection, version FROM projection_schemas").fetchall())
    newer = [f"{p.name} (built at version {built[p.name]}, this worker knows {p.version})"
             for p in projections if built.get(p.name, 0) > p.version]  # fmt: skip
    if newer:
        # A worker of an older release, started beside newer ones during an upgrade: rebuilding back to its
        # version, and a newer worker's start rebuilding forward again, would go on for ever.
        raise NewerReadModels(f"read models built by a newer release: {', '.join(newer)}; upgrade this worker")
    return [p for p in projections if built.get(p.name) != p.version]


class NewerReadModels(RuntimeError):
    """Read models built by a newer release than this process's: it must not apply its older rules to them."""
