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

    def ddl(self) -> list[str]: ...

    def apply(self, cur: psycopg.Cursor[Any], message: dict[str, Any]) -> None: ...


OFFSETS_DDL = """
CREATE TABLE IF NOT EXISTS projection_offsets (
    projection text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    "offset" bigint NOT NULL,
    PRIMARY KEY (projection, topic, partition)
)"""

VERSIONS_DDL = """
CREATE TABLE IF NOT EXISTS projection_versions (
    projection text NOT NULL,
    aggregate_id uuid NOT NULL,
    version int NOT NULL,
    PRIMARY KEY (projection, aggregate_id)
)"""


def connect(database_url: str, schema: str, **kwargs: Any) -> psycopg.Connection[Any]:
    conn = psycopg.connect(database_url, **kwargs)
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    if not kwargs.get("autocommit"):
        conn.commit()
    return conn


def create_tables(conn: psycopg.Connection[Any], projections: list[Projection]) -> None:
    with conn.transaction():
        # Serialise concurrent start-ups: CREATE IF NOT EXISTS races on the catalog.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('skillcert-projection-ddl'))")
        conn.execute(OFFSETS_DDL)
        conn.execute(VERSIONS_DDL)
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
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            'SELECT "offset" FROM projection_offsets WHERE projection = %s AND topic = %s AND partition = %s FOR UPDATE',
            (projection.name, topic, partition),
        )
        row = cur.fetchone()
        if row is not None and offset <= row[0]:
            return False
        apply_once(cur, projection, message)
        cur.execute(
            "INSERT INTO projection_offsets VALUES (%s, %s, %s, %s) "
            'ON CONFLICT (projection, topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset"',
            (projection.name, topic, partition, offset),
        )
        return True


def apply_once(cur: psycopg.Cursor[Any], projection: Projection, message: dict[str, Any]) -> bool:
    """Apply a message unless this projection already has its aggregate at that version."""
    cur.execute(
        "SELECT version FROM projection_versions WHERE projection = %s AND aggregate_id = %s FOR UPDATE",
        (projection.name, message["aggregateid"]),
    )
    row = cur.fetchone()
    if row is not None and message["aggregateversion"] <= row[0]:
        return False
    projection.apply(cur, message)
    cur.execute(
        "INSERT INTO projection_versions VALUES (%s, %s, %s)"
        " ON CONFLICT (projection, aggregate_id) DO UPDATE SET version = EXCLUDED.version",
        (projection.name, message["aggregateid"], message["aggregateversion"]),
    )
    return True
