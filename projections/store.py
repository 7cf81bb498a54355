"""Applying bus messages to read models exactly once in effect.

Each projection records the Kafka offset it applied per topic partition in the
same transaction as its rows, so a redelivered message is skipped. A message
published twice by the relay (after a relay crash) arrives at a new offset; the
rows' aggregate version guards catch that.
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
        projection.apply(cur, message)
        cur.execute(
            "INSERT INTO projection_offsets VALUES (%s, %s, %s, %s) "
            'ON CONFLICT (projection, topic, partition) DO UPDATE SET "offset" = EXCLUDED."offset"',
            (projection.name, topic, partition, offset),
        )
        return True
