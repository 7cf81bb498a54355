"""A candidate list imported into a plan while candidates keep registering for the same plan through the API,
next to the same list imported into another plan with nothing else going on, in the same run.

    python -m benchmarks.import_under_load                  # embedded PostgreSQL, 1,000 rows, 2 workers, 3 runs
    python -m benchmarks.import_under_load --database-url postgresql://postgres@127.0.0.1/test --rows 5000

For each run: `skillcert api` is started as a process (SKILLCERT_API_WORKERS) on a fresh schema with two plans of
100,000 places. First the list goes into one plan alone (the baseline). Then CLIENTS clients register into the other
plan for SECONDS, as benchmarks.http_commands's clients do, and after 2 s the same list goes in there. It prints the
seconds each import took, the registrations a second and their failures while the list went in, and checks that
every registration answered 201 and every row of the list is stored, and nothing else.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date
from pathlib import Path

import httpx
import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from benchmarks.http_commands import SYSTEM, drive, form
from domain.institution import DeadlineProfile, Filing
from domain.model import Actor, Role
from infra.embedded import free_port
from infra.services import samples
from infra.services.registrations import Registrations
from tests.api import bearer
from tests.builders import SCOPE, plan_details
from tests.test_large_imports import candidate_list

console = Console(width=120)
FIRST_CANDIDATE = 2_000_000  # the clients' candidates: ID numbers apart from the list's (candidate_list)


def one_run(url: str, workers: int, clients: int, seconds: float, rows: int) -> dict[str, float]:
    schema = f"bench_imp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    svc = Registrations(url, schema, today=lambda: date(2026, 3, 2))
    samples.hold(svc.attachments)
    iid = svc.register_institution(SYSTEM, "深圳市技能人才评价示范中心", Filing(city_code="03", station_serial="015"),
                                   DeadlineProfile.S, SCOPE)  # fmt: skip
    staff_actor = Actor(id="staff-bench", role=Role.INSTITUTION_STAFF, institution_id=iid)
    plans = [svc.publish_plan(staff_actor, iid, plan_details(n, seats=100_000, registration_deadline=date(2099, 12, 31),
                                                             evaluation_start=date(2100, 1, 10),
                                                             evaluation_end=date(2100, 1, 10)))
             for n in ("QUIET", "BUSY")]  # fmt: skip
    svc.close()
    staff = bearer(url, schema, Role.INSTITUTION_STAFF, "staff-bench", iid)
    port = free_port()
    env = {**os.environ, "SKILLCERT_DATABASE_URL": url, "SKILLCERT_DB_SCHEMA": schema, "SKILLCERT_API_PORT": str(port),
           "SKILLCERT_API_WORKERS": str(workers)}  # fmt: skip
    log = Path(tempfile.gettempdir()) / f"{schema}-api.log"  # kept when a run fails: what the API said
    api = subprocess.Popen([sys.executable, "-m", "infra.cli", "api"], env=env, stdout=log.open("wb"),
                           stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    content = candidate_list(rows)

    def import_into(plan_id: uuid.UUID) -> float:
        started = time.monotonic()
        r = httpx.post(f"{base}/plans/{plan_id}/registrations/import", headers=staff, timeout=600,
                       files={"file": ("名单.csv", content, "text/csv")})  # fmt: skip
        assert r.status_code == 201 and r.json()["rows"] == rows, r.text[:500]
        return time.monotonic() - started

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and api.poll() is None, "the API did not start"
            time.sleep(0.2)
        alone = import_into(plans[0][0])
        busy_plan, code = plans[1]
        took: list[float] = []
        load_ended = 0.0

        def importer() -> None:
            time.sleep(2)
            took.append(import_into(busy_plan))
            took.append(time.monotonic() - started)  # when it finished, from the load's start

        async def register(http, n):  # type: ignore[no-untyped-def]
            return await http.post("/registrations", {"registration_code": code, "form": form(FIRST_CANDIDATE + n)})

        thread = threading.Thread(target=importer)
        started = time.monotonic()
        thread.start()
        answered, _, errors, _ = asyncio.run(drive(base, clients, seconds, staff, register))
        load_ended = time.monotonic() - started
        thread.join()
        with psycopg.connect(url) as conn:
            stored = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE topic LIKE %s").format(
                sql.Identifier(schema, "skillcert_events")), ("%Registration.Submitted",)).fetchone()[0]  # fmt: skip
        assert errors == 0, f"{errors} registrations failed while the list went in"
        assert stored == 2 * rows + answered, f"{stored} registrations stored; {2 * rows + answered} were answered 201"
        log.unlink()
        return {"alone": alone, "busy": took[0], "finished_at": took[1], "load_ended": load_ended,
                "rate": answered / seconds}  # fmt: skip
    except BaseException:
        console.print(f"the run failed; the API's log is {log}")
        raise
    finally:
        api.terminate()
        try:
            api.wait(20)
        except subprocess.TimeoutExpired:
            api.kill()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main(
    database_url: str = typer.Option(None, help="a running PostgreSQL; default: an embedded one"),
    rows: int = typer.Option(1000, help="rows of the candidate list (the API takes at most 5,000)"),
    workers: int = typer.Option(2, help="API worker processes"),
    clients: int = typer.Option(16, help="clients registering meanwhile"),
    seconds: float = typer.Option(15, help="how long they register; the list goes in 2 s after they start"),
    runs: int = typer.Option(3),
) -> None:
    server = None
    if database_url is None:
        from infra.embedded import start_postgres

        server, database_url = start_postgres(Path(tempfile.mkdtemp(prefix="skillcert-bench-")))
    try:
        done = []
        for r in range(runs):
            done.append(one_run(database_url, workers, clients, seconds, rows))
            d = done[-1]
            console.print(f"run {r + 1}: alone {d['alone']:.2f} s; among registrations {d['busy']:.2f} s, done at "
                          f"{d['finished_at']:.1f} s of a load that ended at {d['load_ended']:.1f} s; "
                          f"{d['rate']:,.0f} registrations/s")  # fmt: skip
    finally:
        if server is not None:
            server.cleanup()
    table = Table(
        title=f"a list of {rows:,} rows, {workers} API workers, {clients} clients registering; "
        + (f"medians of {runs} runs" if runs > 1 else "one run")
    )
    for column in ("import alone s", "import among registrations s", "ratio", "registrations/s meanwhile"):
        table.add_column(column, justify="right")
    alone, busy = statistics.median(d["alone"] for d in done), statistics.median(d["busy"] for d in done)
    table.add_row(
        f"{alone:.2f}", f"{busy:.2f}", f"{busy / alone:.2f}", f"{statistics.median(d['rate'] for d in done):,.0f}"
    )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
