"""`skillcert audit verify` over a million stored events, timed, next to a plain read of the same
rows in the same order (the floor: what fetching the history costs before any hashing).

    python -m benchmarks.verify                    # embedded PostgreSQL, 1,000,000 events, 3 runs
    python -m benchmarks.verify --database-url postgresql://postgres@127.0.0.1/test --events 200000

The store is the demo scenario's events (a certified plan and its institution) copied under new
aggregate ids until it holds the asked number, through the chaining trigger as any write is.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from infra.bus.privacy import installation_key
from infra.services import demo
from infra.services.base import shanghai_today
from infra.services.registrations import Registrations
from infra.store.chain import verify, walk

console = Console()


def build(database_url: str, events: int) -> tuple[str, str, Registrations]:
    schema = f"bench_verify_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    svc = Registrations(database_url, schema)
    demo.load(svc, shanghai_today(), database_url, schema, installation_key(database_url, schema))
    table = svc.recorder.events_table_name
    events_table = sql.Identifier(schema, table)
    started = time.monotonic()
    with psycopg.connect(database_url) as c:
        seed = c.execute(sql.SQL("SELECT originator_id, originator_version, topic, state FROM {} ORDER BY notification_id")
                         .format(events_table)).fetchall()  # fmt: skip
        copies = -(-(events - len(seed)) // len(seed))
        with c.cursor().copy(sql.SQL("COPY {} (originator_id, originator_version, topic, state) FROM STDIN")
                             .format(events_table)) as copy:  # fmt: skip
            written = len(seed)
            for k in range(1, copies + 1):
                for oid, version, topic, state in seed:
                    if written >= events:
                        break
                    copy.write_row((uuid.uuid5(oid, str(k)), version, topic, state))
                    written += 1
        stored = c.execute(sql.SQL("SELECT count(*) FROM {}").format(events_table)).fetchone()[0]
    console.print(
        f"store: {stored:,} events ({len(seed)} demo events copied), built in {time.monotonic() - started:.0f} s"
    )
    return schema, table, svc


def plain_read(database_url: str, schema: str, table: str) -> int:
    n = 0
    with psycopg.connect(database_url) as conn, conn.transaction(), conn.cursor(name="plain") as cur:
        cur.itersize = 5000
        cur.execute(walk(schema, table))
        for _ in cur:
            n += 1
    return n


def verify_run(database_url: str, schema: str, table: str) -> tuple[int, float, int, float]:
    """(events verified, seconds, rows read plainly, seconds): `audit verify` and its floor, one after the other."""
    started = time.perf_counter()
    with psycopg.connect(database_url) as conn:
        verdict = verify(conn, schema, table)
    ours = time.perf_counter() - started
    assert verdict.intact, verdict
    started = time.perf_counter()
    read = plain_read(database_url, schema, table)
    return verdict.events, ours, read, time.perf_counter() - started


def main(
    database_url: str = typer.Option("", help="PostgreSQL to use; empty starts an embedded one"),
    events: int = typer.Option(1_000_000, help="events in the store"),
    runs: int = typer.Option(3),
) -> None:
    server = None
    if not database_url:
        from infra.embedded import start_postgres

        server, database_url = start_postgres(Path(tempfile.mkdtemp(prefix="skillcert-bench-")))
    try:
        schema, table, svc = build(database_url, events)
        rows = []
        for run in range(1, runs + 1):
            events_verified, ours, read, floor = verify_run(database_url, schema, table)
            rows.append((run, events_verified, ours, floor, read))
        out = Table("run", "events", "verify (s)", "plain read (s)", "ratio", "verify events/s")
        for run, n, ours, floor, _ in rows:
            out.add_row(str(run), f"{n:,}", f"{ours:.1f}", f"{floor:.1f}", f"{ours / floor:.2f}", f"{n / ours:,.0f}")
        med, med_floor = statistics.median(r[2] for r in rows), statistics.median(r[3] for r in rows)
        out.add_row(
            "median", "", f"{med:.1f}", f"{med_floor:.1f}", f"{med / med_floor:.2f}", f"{rows[0][1] / med:,.0f}"
        )
        console.print(out)
        svc.close()
        with psycopg.connect(database_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    typer.run(main)
