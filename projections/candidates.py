"""The candidate's registration record (001 报名记录查看): status, review decisions and reasons."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

TYPE = "cn.skillcert.registration."
DECISIONS = {TYPE + "approved.v1": "approved", TYPE + "returned.v1": "returned", TYPE + "rejected.v1": "rejected"}


class Candidates:
    name = "candidates"
    topics = ("registrations",)
    tables = ("candidate_registrations", "candidate_reviews")

    def ddl(self) -> list[str]:
        return [
            # Tables from before the bus stopped carrying ID numbers (id_number column): they
            # cannot be filled any more; drop them and their offsets so they are built afresh.
            """DO $$ BEGIN
                IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                           AND table_name = 'candidate_registrations' AND column_name = 'id_number') THEN
                    DROP TABLE candidate_registrations, candidate_reviews;
                    DELETE FROM projection_offsets WHERE projection = 'candidates';
                END IF;
            END $$""",
            """CREATE TABLE IF NOT EXISTS candidate_registrations (
                registration_id uuid PRIMARY KEY,
                plan_id uuid NOT NULL,
                institution_id uuid NOT NULL,
                id_type text NOT NULL,
                id_masked text NOT NULL,
                id_ref text NOT NULL,  -- the bus never carries ID numbers (infra.privacy)
                name text NOT NULL,
                plan_number text NOT NULL,
                plan_name text NOT NULL,
                institution_name text NOT NULL,
                occupation text NOT NULL,
                job text,
                level int NOT NULL,
                basis text NOT NULL,
                form jsonb NOT NULL,
                warnings jsonb NOT NULL,
                status text NOT NULL,
                decision_reasons text NOT NULL DEFAULT '',
                decided_by text,
                decided_at timestamptz,
                submitted_at timestamptz NOT NULL,
                updated_at timestamptz NOT NULL,
                version int NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS candidate_registrations_holder ON candidate_registrations (id_ref)",
            "CREATE INDEX IF NOT EXISTS candidate_registrations_plan ON candidate_registrations (plan_id)",
            """CREATE TABLE IF NOT EXISTS candidate_reviews (
                registration_id uuid NOT NULL,
                version int NOT NULL,
                decision text NOT NULL,
                reasons text NOT NULL,
                actor_id text NOT NULL,
                actor_role text NOT NULL,
                decided_at timestamptz NOT NULL,
                PRIMARY KEY (registration_id, version)
            )""",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        t, d, v = m["type"], m["data"], m["aggregateversion"]
        if t == TYPE + "submitted.v1":
            f, p = d["form"], d["plan"]
            cur.execute(
                """INSERT INTO candidate_registrations VALUES
                   (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,'submitted','',NULL,NULL,%s,%s,%s)
                   ON CONFLICT DO NOTHING""",
                (
                    d["originator_id"], d["plan_id"], d["institution_id"], f["id_type"], f["id_number"]["masked"],
                    f["id_number"]["ref"], f["name"],
                    p["plan_number"], p["plan_name"], p["institution_name"], p["occupation"], p["job"], p["level"],
                    f["basis"], Jsonb(f), Jsonb(d["warnings"]), d["timestamp"], d["timestamp"], v,
                ),
            )  # fmt: skip
        elif t == TYPE + "resubmitted.v1":
            f = d["form"]
            cur.execute(
                """UPDATE candidate_registrations SET name = %s, basis = %s, form = %s, warnings = %s,
                   status = 'submitted', decision_reasons = '', updated_at = %s, version = %s
                   WHERE registration_id = %s AND version < %s""",
                (f["name"], f["basis"], Jsonb(f), Jsonb(d["warnings"]), d["timestamp"], v, d["originator_id"], v),
            )
        elif t in DECISIONS:
            cur.execute(
                """UPDATE candidate_registrations SET status = %s, decision_reasons = %s, decided_by = %s,
                   decided_at = %s, updated_at = %s, version = %s WHERE registration_id = %s AND version < %s""",
                (DECISIONS[t], d["reasons"], m["actorid"], d["timestamp"], d["timestamp"], v, d["originator_id"], v),
            )
            cur.execute(
                "INSERT INTO candidate_reviews VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (d["originator_id"], v, DECISIONS[t], d["reasons"], m["actorid"], m["actorrole"], d["timestamp"]),
            )


COLUMNS = """registration_id, plan_id, institution_id, id_type, id_masked AS id_number, name, plan_number, plan_name,
    institution_name, occupation, job, level, basis, warnings, status, decision_reasons, decided_by, decided_at,
    submitted_at, updated_at, version"""


def _with_reviews(cur: psycopg.Cursor[Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for row in rows:
        cur.execute(
            "SELECT decision, reasons, actor_id, actor_role, decided_at FROM candidate_reviews"
            " WHERE registration_id = %s ORDER BY version",
            (row["registration_id"],),
        )
        row["reviews"] = cur.fetchall()
    return rows


def get_registration(conn: psycopg.Connection[Any], registration_id: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {COLUMNS} FROM candidate_registrations WHERE registration_id = %s", (registration_id,))
        rows = _with_reviews(cur, cur.fetchall())
    return rows[0] if rows else None


def registrations_of(conn: psycopg.Connection[Any], id_ref: str) -> list[dict[str, Any]]:
    """By the holder's ID-number ref (infra.privacy.ref of the number)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {COLUMNS} FROM candidate_registrations WHERE id_ref = %s ORDER BY submitted_at DESC", (id_ref,)
        )
        return _with_reviews(cur, cur.fetchall())


def registrations_for_plan(
    conn: psycopg.Connection[Any], plan_id: str, status: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    cond, args = "plan_id = %s", [plan_id]
    if status:
        cond += " AND status = %s"
        args.append(status)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT count(*) AS n FROM candidate_registrations WHERE {cond}", args)
        total = cur.fetchone()["n"]
        cur.execute(
            f"SELECT {COLUMNS} FROM candidate_registrations WHERE {cond} ORDER BY submitted_at, registration_id"
            " LIMIT %s OFFSET %s",
            [*args, limit, offset],
        )
        return total, _with_reviews(cur, cur.fetchall())
