"""Applying bus messages to read models exactly once in effect.

Each projection records, in the same transaction as its rows, the Kafka offset it
applied per topic partition (a redelivered message is skipped) and the last version
it applied of each aggregate (a message the relay published twice, or one a rebuild
from the event store already applied, is skipped). One aggregate's events arrive in
order, so the version alone decides.
"""

from __future__ import annotations

from typing import Any, Protocol

import psycopg
from psycopg import sql


class Projection(Protocol):
    name: str
    topics: tuple[str, ...]  # topic suffixes (contexts) it reads
    tables: tuple[str, ...]  # tables it owns, dropped on rebuild
    version: int  # of its tables' shape and meaning; a change makes every worker rebuild it once

    def ddl(self) -> list[str]: ...

    def apply(self, cur: psycopg.Cursor[Any], message: dict[str, Any]) -> None: ...


OFFSETS_DDL = """
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint NOT NULL,
    position bigint,          -- the event store position of the message at that offset
    applied_at timestamptz,
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


DDL_LOCK = "SELECT pg_advisory_xact_lock(hashtext('skillcert-projection-ddl'))"


def connect(database_url: str, schema: str, **kwargs: Any) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database_url, **kwargs)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    if not kwargs.get("autocommit"):
        conn.commit()
    return conn


def create_tables(conn: psycopg.Connection[Any], projections: list[Projection]) -> None:
    with conn.transaction():
        # Serialise concurrent start-ups: CREATE IF NOT EXISTS races on the catalog.
        conn.execute(DDL_LOCK)
        for ddl in (OFFSETS_DDL, VERSIONS_DDL, SCHEMAS_DDL):
            conn.execute(ddl)
        # Offsets tables from before positions were recorded.
        conn.execute("ALTER TABLE projection_offsets ADD COLUMN IF NOT EXISTS position bigint")
        conn.execute("ALTER TABLE projection_offsets ADD COLUMN IF NOT EXISTS applied_at timestamptz")
        for p in projections:
            for statement in p.ddl():
                conn.execute(statement)


def apply_message(
    conn: psycopg.Connection[Any],
    projection: Projection,
    topic: str,
    partition: int,
    offset: int,
    message: dict[str, Any],
) -> bool:
    """Apply one message in one transaction. False when it was applied before."""
    return apply_batch(conn, [projection], topic, [(partition, offset, message)]) > 0


def apply_batch(
    conn: psycopg.Connection[Any],
    projections: list[Projection],
    topic: str,
    batch: list[tuple[int, int, dict[str, Any]]],
) -> int:
    """Apply a batch of one topic's messages, (partition, offset, message) in offset order per
    partition, to each projection, in one transaction with their offsets and versions: a
    consumer killed mid-batch has applied none of it. Returns how many applications were new."""
    names = [p.name for p in projections]
    aggregates = list({m["aggregateid"] for _, _, m in batch})
    applied = 0
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            'SELECT projection, partition, "offset" FROM projection_offsets'
            " WHERE projection = ANY(%s) AND topic = %s FOR UPDATE",
            (names, topic),
        )
        done = {(name, part): off for name, part, off in cur.fetchall()}
        cur.execute(
            "SELECT projection, aggregate_id::text, version FROM projection_versions"
            " WHERE projection = ANY(%s) AND aggregate_id = ANY(%s::uuid[]) FOR UPDATE",
            (names, aggregates),
        )
        versions = {(name, agg): v for name, agg, v in cur.fetchall()}
        offsets: dict[tuple[str, int], tuple[int, int]] = {}
        changed: set[tuple[str, str]] = set()
        with conn.pipeline():  # every apply is write-only: its statements need not wait for each other
            for partition, offset, m in batch:
                for p in projections:
                    offsets[(p.name, partition)] = (offset, m["position"])
                    key = (p.name, m["aggregateid"])
                    if offset <= done.get((p.name, partition), -1) or m["aggregateversion"] <= versions.get(key, 0):
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
                "INSERT INTO projection_offsets VALUES (%s, %s, %s, %s, %s, now())"
                ' ON CONFLICT (projection, topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset",'
                " position = EXCLUDED.position, applied_at = EXCLUDED.applied_at"
                ' WHERE projection_offsets."offset" < EXCLUDED."offset"',
                [(name, topic, part, off, pos) for (name, part), (off, pos) in offsets.items()],
            )
    return applied


def outdated(conn: psycopg.Connection[Any], projections: list[Projection]) -> list[Projection]:
    """Projections whose tables were never built at their current version: new ones, and
    ones whose shape or meaning changed. They need a rebuild from the event store, since the
    bus's consumer group has moved past the history they lack."""
    conn.execute(SCHEMAS_DDL)
    built = dict(conn.execute("SELECT projection, version FROM projection_schemas").fetchall())
    return [p for p in projections if built.get(p.name) != p.version]
