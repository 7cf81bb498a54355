"""The plan catalogue: searchable plans with seats left (001 评价计划查询).

The registration code is not shown here: candidates get it from the institution's contact.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

from domain.institution import Filing
from projections.store import read_tolerantly as tolerantly

TYPE = "cn.skillcert."
R = TypeVar("R")


class Catalogue:
    name = "catalogue"
    topics = ("registrations",)
    tables = ("catalogue_institutions", "catalogue_plans")
    version = 3  # 2, 3: the institution's standing (004 第十条), and no registration open while it is suspended

    def ddl(self) -> list[str]:
        return [
            """CREATE TABLE IF NOT EXISTS catalogue_institutions (
                institution_id uuid PRIMARY KEY,
                name text NOT NULL,
                filing_prefix text NOT NULL,
                city_code text NOT NULL,
                profile text NOT NULL,
                registered_at timestamptz NOT NULL,
                standing text NOT NULL DEFAULT 'active',
                standing_since date,
                version int NOT NULL DEFAULT 1
            )""",
            """CREATE TABLE IF NOT EXISTS catalogue_plans (
                plan_id uuid PRIMARY KEY,
                institution_id uuid NOT NULL,
                institution_name text NOT NULL,
                plan_number text NOT NULL,
                name text NOT NULL,
                occupation text NOT NULL,
                job text,
                level int NOT NULL,
                max_registrations int NOT NULL,
                seats_taken int NOT NULL DEFAULT 0,
                evaluation_start date NOT NULL,
                evaluation_end date NOT NULL,
                registration_deadline date NOT NULL,
                exam_location text NOT NULL,
                contact_name text NOT NULL,
                contact_phone text NOT NULL,
                supervising_region text NOT NULL,
                published_at timestamptz NOT NULL,
                version int NOT NULL
            )""",
        ]

    def read_indexes(self) -> list[str]:
        return [
            "CREATE INDEX IF NOT EXISTS catalogue_plans_search ON catalogue_plans (level, evaluation_start)",
        ]

    def apply(self, cur: psycopg.Cursor[Any], m: dict[str, Any]) -> None:
        t, d, v = m["type"], m["data"], m["aggregateversion"]
        if t == TYPE + "institution.registered.v1":
            filing = Filing.model_validate(d["filing"])
            cur.execute(
                "INSERT INTO catalogue_institutions VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (d["originator_id"], d["name"], filing.prefix, filing.city_code, d["profile"], d["timestamp"]),
            )
        elif t == TYPE + "evaluation_plan.published.v1":
            p = d["details"]
            cur.execute(
                """INSERT INTO catalogue_plans VALUES
                   (%s,%s,%s,%s,%s,%s,%s,%s,%s,0,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING""",
                (
                    d["originator_id"], d["institution_id"], d["institution_name"], p["plan_number"], p["name"],
                    p["occupation"], p["job"], p["level"], p["max_registrations"], p["evaluation_start"],
                    p["evaluation_end"], p["registration_deadline"], p["exam_location"], p["contact_name"],
                    p["contact_phone"], p["supervising_region"], d["timestamp"], v,
                ),
            )  # fmt: skip
        elif t in STANDING_EVENTS:
            # Kept on the institution's row alone and joined to its plans when read: copied onto the plans, a plan
            # inserted by another worker (another partition) while this was not yet committed kept the old standing.
            cur.execute(
                "UPDATE catalogue_institutions SET standing = %s, standing_since = %s, version = %s"
                " WHERE institution_id = %s AND version < %s",
                (STANDING_EVENTS[t], d["on"], v, d["originator_id"], v),
            )
        elif t in SEAT_EVENTS:
            cur.execute(SEATS, (SEAT_EVENTS[t], v, d["originator_id"], v))

    def apply_many(self, cur: psycopg.Cursor[Any], messages: list[dict[str, Any]]) -> None:
        """What `apply` does to each message in turn, for a rebuild. A popular plan's places taken change with
        every registration, and each UPDATE of one row within a transaction makes PostgreSQL follow a longer
        chain of the row's versions (consumers.rebuild): the batch's changes to each plan are summed into one
        UPDATE, made after the batch's institutions and plans are inserted."""
        seats: dict[str, tuple[int, int]] = {}  # plan -> (places taken or given back, last version)
        with cur.connection.pipeline():
            for m in messages:
                if (delta := SEAT_EVENTS.get(m["type"])) is not None:
                    plan = m["data"]["originator_id"]
                    seats[plan] = (seats.get(plan, (0, 0))[0] + delta, m["aggregateversion"])
                else:
                    self.apply(cur, m)
            cur.executemany(SEATS, [(delta, v, plan, v) for plan, (delta, v) in seats.items()])


STANDING_EVENTS = {TYPE + "institution.suspended.v1": "suspended", TYPE + "institution.reinstated.v1": "active",
                   TYPE + "institution.evaluation_withdrawn.v1": "withdrawn"}  # fmt: skip
SEAT_EVENTS = {TYPE + "evaluation_plan.seat_taken.v1": 1, TYPE + "evaluation_plan.seat_released.v1": -1}
# The version guard skips a change applied before (a redelivery); a rebuild's sum carries its last version.
SEATS = "UPDATE catalogue_plans SET seats_taken = seats_taken + %s, version = %s WHERE plan_id = %s AND version < %s"


# A plan with its institution's standing (004 第十条), active until its institution is known to be otherwise.
PLANS = """(SELECT p.*, coalesce(i.standing, 'active') AS institution_standing
            FROM catalogue_plans p LEFT JOIN catalogue_institutions i USING (institution_id)) AS plans"""
# The tables of version 1, still read while a worker rebuilds the catalogue after an upgrade, know no standing: every
# institution active, rather than a 500 on the column they lack (read_tolerantly).
PLANS_V1 = "(SELECT p.*, 'active' AS institution_standing FROM catalogue_plans p) AS plans"
# Open for registration: before the deadline, with places left, its institution not suspended or withdrawn.
OPEN = "(registration_deadline >= %s AND seats_taken < max_registrations AND institution_standing = 'active')"
# What a plan shows besides its row (OPEN's one parameter: the day).
SHOWN = f", max_registrations - seats_taken AS seats_left, {OPEN} AS registration_open"
SORTS = {"registration_time": "published_at DESC", "exam_date": "evaluation_start ASC"}


def search_plans(
    conn: psycopg.Connection[Any],
    *,
    today: date,
    level: int | None = None,
    occupation: str | None = None,
    location: str | None = None,
    institution_id: str | None = None,
    open_only: bool | None = None,
    sort: str = "registration_time",
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    where, args = ["TRUE"], []
    if level is not None:
        where.append("level = %s")
        args.append(level)
    if occupation:
        where.append("occupation ILIKE %s")
        args.append(f"%{occupation}%")
    if location:
        where.append("exam_location ILIKE %s")
        args.append(f"%{location}%")
    if institution_id:
        where.append("institution_id = %s")
        args.append(institution_id)
    if open_only is not None:
        where.append(OPEN if open_only else f"NOT {OPEN}")
        args.append(today)
    cond = " AND ".join(where)
    return read_tolerantly(conn, lambda plans, _: _page(conn, plans, cond, args, f"{SORTS[sort]}, plan_id", limit,
                                                        offset, SHOWN, [today]))  # fmt: skip


def _page(
    conn: psycopg.Connection[Any],
    source: str,
    cond: str,
    args: list[Any],
    order: str,
    limit: int,
    offset: int,
    shown: str = "",
    shown_args: list[Any] | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """How many rows of `source` meet `cond`, and one page of them (with the columns `shown` adds)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT count(*) AS n FROM {source} WHERE {cond}", args)
        total = cur.fetchone()["n"]
        cur.execute(f"SELECT *{shown} FROM {source} WHERE {cond} ORDER BY {order} LIMIT %s OFFSET %s",
                    [*(shown_args or []), *args, limit, offset])  # fmt: skip
        return total, cur.fetchall()


def get_plan(conn: psycopg.Connection[Any], plan_id: str, today: date) -> dict[str, Any] | None:
    def read(plans: str, _: str) -> dict[str, Any] | None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"SELECT *{SHOWN} FROM {plans} WHERE plan_id = %s",
                (today, plan_id),
            )
            return cur.fetchone()

    return read_tolerantly(conn, read)


def read_tolerantly(conn: psycopg.Connection[Any], read: Callable[[str, str], R]) -> R:
    """`read` from the tables as they are (PLANS, INSTITUTIONS), or, lacking the standing's columns, from version 1's."""
    return tolerantly(conn, lambda: read(PLANS, INSTITUTIONS), lambda: read(PLANS_V1, INSTITUTIONS_V1))


INSTITUTION_COLUMNS = "institution_id, name, filing_prefix, city_code, profile, registered_at"
INSTITUTIONS = (
    f"(SELECT {INSTITUTION_COLUMNS}, standing, standing_since FROM catalogue_institutions) AS i"  # named: see PLANS_V1
)
INSTITUTIONS_V1 = (f"(SELECT {INSTITUTION_COLUMNS}, 'active' AS standing, NULL::date AS standing_since"
                   " FROM catalogue_institutions) AS i")  # fmt: skip


def standings(conn: psycopg.Connection[Any], ids: list[str]) -> dict[str, tuple[str, Any]]:
    """Each known institution's standing (004 第十条) and since when: (standing, standing_since)."""

    def read(_: str, table: str) -> dict[str, tuple[str, Any]]:
        rows = conn.execute(f"SELECT institution_id, standing, standing_since FROM {table} WHERE institution_id = "
                            "ANY(%s::uuid[])", (ids,)).fetchall()  # fmt: skip
        return {str(r[0]): (r[1], r[2]) for r in rows}

    return read_tolerantly(conn, read) if ids else {}


def institutions(
    conn: psycopg.Connection[Any], *, standing: str | None, city_code: str | None, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    where, args = ["TRUE"], []
    if standing:
        where.append("standing = %s")
        args.append(standing)
    if city_code:
        where.append("city_code = %s")
        args.append(city_code)
    cond = " AND ".join(where)
    return read_tolerantly(conn, lambda _, table: _page(conn, table, cond, args, "filing_prefix", limit, offset))
