"""A candidate list imported into a plan while candidates keep registering for the same plan through the API,
next to the same list imported into another plan with nothing else going on, in the same run.

    python -m benchmarks.import_under_load                  # embedded PostgreSQL, 1,000 rows, 2 workers, 3 runs
    python -m benchmarks.import_under_load --database-url postgresql://postgres@127.0.0.1/test --rows 5000

For each run: `skillcert api` is started as a process (SKILLCERT_API_WORKERS) on a fresh schema with two plans of
100,000 places. First the list goes into one plan alone (the baseline). Then CLIENTS clients register into the other
plan for SECONDS, as benchmarks.http_commands's clients do, and after 2 s the same list goes in there. It prints the
seconds each import took, the registrations a second and their failures while the list went in, how long the
registrations answered while it went in waited (the longest, and the 95th percentile next to the one before it was
sent), and checks that every registration answered 201 and every row of the list is stored, and nothing else.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid

import httpx
import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from benchmarks.http_commands import drive, form, p, serving
from benchmarks.servers import servers
from tests.test_large_imports import candidate_list

console = Console(width=120)
FIRST_CANDIDATE = 2_000_000  # the clients' candidates: ID numbers apart from the list's (candidate_list)


def one_run(url: str, workers: int, clients: int, seconds: float, rows: int) -> dict[str, float]:
    content = candidate_list(rows)
    with serving(url, workers, plans=("QUIET", "BUSY")) as served:

        def import_into(plan_id: uuid.UUID) -> float:
            started = time.monotonic()
            r = httpx.post(f"{served.base}/plans/{plan_id}/registrations/import", headers=served.staff, timeout=600,
                           files={"file": ("名单.csv", content, "text/csv")})  # fmt: skip
            assert r.status_code == 201 and r.json()["rows"] == rows, r.text[:500]
            return time.monotonic() - started

        alone = import_into(served.plans["QUIET"][0])
        busy_plan, code = served.plans["BUSY"]
        took: list[float] = []

        window: list[float] = []  # when the list was sent, and when it was answered
        timeline: list[tuple[float, float]] = []  # each registration: (sent, answered)

        def importer() -> None:
            time.sleep(2)
            window.append(time.monotonic())
            took.append(import_into(busy_plan))
            window.append(time.monotonic())
            took.append(window[1] - started)  # when it finished, from the load's start

        async def register(http, n):  # type: ignore[no-untyped-def]
            sent = time.monotonic()
            r = await http.post("/registrations", {"registration_code": code, "form": form(FIRST_CANDIDATE + n)})
            timeline.append((sent, time.monotonic()))
            return r

        thread = threading.Thread(target=importer)
        started = time.monotonic()
        thread.start()
        answered, _, errors, _ = asyncio.run(drive(served.base, clients, seconds, served.staff, register))
        load_ended = time.monotonic() - started
        thread.join()
        with psycopg.connect(url) as conn:
            stored = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE topic LIKE %s").format(
                sql.Identifier(served.schema, "skillcert_events")), ("%Registration.Submitted",)).fetchone()[0]  # fmt: skip
        assert errors == 0, f"{errors} registrations failed while the list went in"
        assert stored == 2 * rows + answered, f"{stored} registrations stored; {2 * rows + answered} were answered 201"
        # The registrations the list held up (answered while it went in), against those before it was sent.
        during = [b - a for a, b in timeline if window[0] < b <= window[1]]
        before = [b - a for a, b in timeline if b <= window[0]]
        return {"alone": alone, "busy": took[0], "finished_at": took[1], "load_ended": load_ended,
                "rate": answered / seconds, "longest": max(during, default=0.0),
                "p95_during": p(during, 95), "p95_before": p(before, 95)}  # fmt: skip


def main(
    database_url: str = typer.Option(None, help="a running PostgreSQL; default: an embedded one"),
    rows: int = typer.Option(1000, help="rows of the candidate list (the API takes at most 5,000)"),
    workers: int = typer.Option(2, help="API worker processes"),
    clients: int = typer.Option(16, help="clients registering meanwhile"),
    seconds: float = typer.Option(15, help="how long they register; the list goes in 2 s after they start"),
    runs: int = typer.Option(3),
) -> None:
    done = []
    with servers(database_url or "", None) as (database_url, _):
        for r in range(runs):
            done.append(one_run(database_url, workers, clients, seconds, rows))
            d = done[-1]
            console.print(f"run {r + 1}: alone {d['alone']:.2f} s; among registrations {d['busy']:.2f} s, done at "
                          f"{d['finished_at']:.1f} s of a load that ended at {d['load_ended']:.1f} s; "
                          f"{d['rate']:,.0f} registrations/s; while it went in, registrations waited at most "
                          f"{d['longest']:.2f} s (p95 {d['p95_during']:.0f} ms, before it "
                          f"{d['p95_before']:.0f} ms)")  # fmt: skip
    table = Table(
        title=f"a list of {rows:,} rows, {workers} API workers, {clients} clients registering; "
        + (f"medians of {runs} runs" if runs > 1 else "one run")
    )
    for column in ("import alone s", "import among registrations s", "ratio", "registrations/s meanwhile",
                   "longest registration while it went in s", "p95 ms then", "p95 ms before"):  # fmt: skip
        table.add_column(column, justify="right")
    alone, busy = statistics.median(d["alone"] for d in done), statistics.median(d["busy"] for d in done)
    table.add_row(
        f"{alone:.2f}",
        f"{busy:.2f}",
        f"{busy / alone:.2f}",
        f"{statistics.median(d['rate'] for d in done):,.0f}",
        f"{statistics.median(d['longest'] for d in done):.2f}",
        *(f"{statistics.median(d[k] for d in done):.0f}" for k in ("p95_during", "p95_before")),
    )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
