"""Every read route of the API over a province-sized store: median latency of each, next to GET /me
(the trivial authenticated request) in the same run.

    python -m benchmarks.reads --database-url postgresql://postgres@127.0.0.1/test --events 1000000

The store is benchmarks.province's (one cohort through the domain, copied as other institutions until
it holds --events), its read models rebuilt. A route whose cost grows with the store, a scan or every
row judged in Python, shows here long before a province's year of data reaches production: at a
million events the centre's list of open deadlines took 6.4 s while GET /me took 5 ms.
"""

from __future__ import annotations

import statistics
import time
import uuid
from typing import Any

import psycopg
import typer
from fastapi.testclient import TestClient
from psycopg import sql
from rich.console import Console
from rich.table import Table

from benchmarks.projections import KEY
from benchmarks.province import copy_cohort
from benchmarks.relay import build_store, drop_store
from consumers.rebuild import rebuild
from domain.model import Role
from infra.api import create_app
from infra.api.tokens import Tokens
from infra.store.eventstore import SkillcertApplication
from projections import PROJECTIONS
from projections.store import connect

console = Console(width=140)


def samples(url: str, schema: str) -> dict[str, Any]:
    """Ids to ask for, taken from the read models: the last certificate's, its plan's, an actor's."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        number, institution, certificate, registration = conn.execute(
            "SELECT number, institution_id, certificate_id, registration_id FROM certificate_registry"
            " ORDER BY number DESC LIMIT 1"
        ).fetchone()
        name = conn.execute("SELECT holder_name FROM certificate_registry WHERE certificate_id = %s", (certificate,))
        plan = conn.execute("SELECT plan_id FROM candidate_registrations WHERE registration_id = %s", (registration,))
        actor = conn.execute(
            "SELECT actor_id FROM audit_events WHERE institution_id = %s AND actor_role = 'institution_staff' LIMIT 1",
            (institution,),
        )
        return {"number": number, "iid": institution, "cid": certificate, "rid": registration,
                "name": name.fetchone()[0], "plan": plan.fetchone()[0], "actor": actor.fetchone()[0]}  # fmt: skip


def routes(s: dict[str, Any]) -> list[tuple[str, str]]:
    """(who asks, path): staff of the sample's institution, the provincial centre, an auditor."""
    return [
        ("staff", "/me"), ("staff", "/plans"), ("staff", "/plans?occupation=人工智能训练师&level=2"),
        ("staff", f"/plans/{s['plan']}"), ("staff", f"/plans/{s['plan']}/registrations"),
        ("staff", f"/plans/{s['plan']}/registrations.csv"), ("staff", f"/registrations/{s['rid']}"),
        ("centre", f"/certificates/{s['number']}"), ("staff", f"/certificates?name={s['name']}&institution_id={s['iid']}"),
        ("auditor", f"/audit?aggregate_id={s['cid']}"), ("auditor", f"/audit?actor_id={s['actor']}"),
        ("auditor", f"/audit?institution_id={s['iid']}"), ("auditor", "/audit"), ("auditor", f"/aggregates/{s['cid']}"),
        ("centre", "/deadlines"), ("staff", "/deadlines"), ("centre", "/deadlines?overdue=true"),
        ("centre", "/deadlines/overdue"), ("staff", f"/institutions/{s['iid']}/stock"), ("centre", "/statistics/issued"),
        ("centre", "/statistics/pass-rates"), ("auditor", "/principals"), ("centre", "/projections"),
        ("centre", "/bus/relay"), ("centre", "/health"),
    ]  # fmt: skip


def measure(url: str, schema: str, calls: int) -> list[tuple[str, str, int, float]]:
    """(who, path, status, median ms) for every route."""
    s = samples(url, schema)
    tokens = Tokens(url, schema)
    tokens.create_table()
    run = uuid.uuid4().hex[:6]
    who = {
        "staff": tokens.create(f"bench-staff-{run}", Role.INSTITUTION_STAFF, s["iid"])[1],
        "centre": tokens.create(f"bench-centre-{run}", Role.PROVINCIAL_CENTRE)[1],
        "auditor": tokens.create(f"bench-auditor-{run}", Role.AUDITOR)[1],
    }
    out = []
    with TestClient(create_app(url, schema, pseudonym_key=KEY.hex())) as http:
        for role, path in routes(s):
            headers, times, status = {"Authorization": f"Bearer {who[role]}"}, [], 0
            for _ in range(calls):
                started = time.perf_counter()
                status = http.get(path, headers=headers).status_code
                times.append((time.perf_counter() - started) * 1000)
            out.append((role, path, status, statistics.median(times)))
    return out


def main(
    database_url: str = typer.Option(..., help="PostgreSQL to use (TCP)"),
    events: int = typer.Option(1_000_000, help="events in the store"),
    calls: int = typer.Option(5, help="calls per route; the median is reported"),
    schema: str = typer.Option("", help="measure an existing store (its read models built) instead of building one"),
) -> None:
    built = not schema
    if built:
        schema, _ = build_store(database_url, 10, 200)
        stored, _ = copy_cohort(database_url, schema, events)
        app = SkillcertApplication(database_url, schema)
        with connect(database_url, schema) as conn, console.status(f"rebuilding the read models of {stored:,} events"):
            rebuild(conn, PROJECTIONS, app, KEY)
        app.close()
    with psycopg.connect(database_url) as conn:
        (stored,) = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.skillcert_events").format(sql.Identifier(schema))
        ).fetchone()
    rows = measure(database_url, schema, calls)
    baseline = next(ms for _, path, _, ms in rows if path == "/me")
    table = Table(title=f"read routes over {stored:,} stored events, median of {calls} calls each")
    for col in ("as", "route", "status", "ms", "÷ GET /me"):
        table.add_column(col, justify="left" if col in ("as", "route") else "right")
    for role, path, status, ms in rows:
        table.add_row(role, path[:80], str(status), f"{ms:,.1f}", f"{ms / baseline:,.1f}")
    console.print(table)
    if built:
        drop_store(database_url, schema)


if __name__ == "__main__":
    typer.run(main)
