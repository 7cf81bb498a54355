"""Read models rebuilt as of a moment, in a schema of their own (`skillcert projections rebuild --as-of
… --into NAME`): recorded in the live schema with the moment and the log position they stand at, so that
an auditor can list them and read them through the API (header `X-As-Of: NAME`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

SNAPSHOTS = "read_model_snapshots"
DDL = """CREATE TABLE IF NOT EXISTS {} (
    name text PRIMARY KEY,          -- the schema the read models were rebuilt into
    position bigint NOT NULL,       -- the last log position they include
    as_of timestamptz,              -- the moment asked for (--as-of), when one was
    built_at timestamptz NOT NULL DEFAULT now(),
    projections text[] NOT NULL,
    complete boolean NOT NULL       -- every projection was rebuilt into it
)"""


def record(conn: psycopg.Connection[Any], live_schema: str, name: str, position: int, as_of: datetime | None,
           projections: list[str], complete: bool) -> None:  # fmt: skip
    table = sql.Identifier(live_schema, SNAPSHOTS)
    conn.execute(sql.SQL(DDL).format(table))
    conn.execute(
        sql.SQL("INSERT INTO {} (name, position, as_of, projections, complete) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET position = excluded.position, as_of = excluded.as_of, "
                "built_at = now(), projections = excluded.projections, complete = excluded.complete").format(table),
        (name, position, as_of, projections, complete),
    )  # fmt: skip


def listed(conn: psycopg.Connection[Any], live_schema: str) -> list[dict[str, Any]]:
    if conn.execute("SELECT to_regclass(%s)", (f'"{live_schema}".{SNAPSHOTS}',)).fetchone()[0] is None:  # type: ignore[index]
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY position, name").format(sql.Identifier(live_schema, SNAPSHOTS)))
        return cur.fetchall()
