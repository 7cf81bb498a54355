"""What a registration batch pays to learn whether another session holds its plan's lock, as the server's other
sessions hold more locks.

    python -m benchmarks.plan_lock_check                  # embedded PostgreSQL
    python -m benchmarks.plan_lock_check --database-url postgresql://postgres@127.0.0.1/test

Every batch brings its plan up to date in one round trip that also asks whether another session holds the plan's
lock (infra.services.registrations, Registrations._since): a list being imported holds it. That round trip is
timed (median of --calls) while another session holds 0, 1,000 and 10,000 advisory locks, as a busy server's
sessions hold one for every table and index they touch. The baseline, in the same run, is the question as it was
asked before: the same round trip reading pg_locks, which lists every lock in the cluster.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import date

import psycopg
import typer
from psycopg import sql
from psycopg.rows import tuple_row
from rich.console import Console
from rich.table import Table

from benchmarks.servers import servers
from infra.services.registrations import Registrations, plan_lock

console = Console(width=120)

# The round trip as it was before (the lock looked for in pg_locks), for the baseline.
BEFORE = """
SELECT h.held, e.originator_version, e.topic, e.state FROM (SELECT EXISTS (SELECT 1 FROM pg_locks
WHERE locktype = 'advisory' AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2
AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
AND granted AND pid <> pg_backend_pid()) AS held) h LEFT JOIN LATERAL (SELECT originator_version,
topic, state FROM {} WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version) e ON true"""


def median_ms(call, calls: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(
    database_url: str = typer.Option("", help="PostgreSQL to use; empty starts an embedded one"),
    calls: int = typer.Option(500, help="round trips timed at each number of locks"),
) -> None:
    with servers(database_url, None) as (url, _):
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        svc = Registrations(url, schema, today=lambda: date(2026, 3, 2))
        from tests.builders import setup_plan

        _, pid, _ = setup_plan(svc)
        version = svc.repository.get(pid).version
        before = sql.SQL(BEFORE).format(sql.Identifier(schema, svc.recorder.events_table_name))
        key, sub = (k & 0xFFFFFFFF for k in plan_lock(pid))  # pg_locks shows the keys as unsigned oids

        def asked_before() -> None:
            with svc.recorder.datastore.get_connection() as c, c.cursor(row_factory=tuple_row) as cur:
                cur.execute(before, (key, sub, pid, version), prepare=True).fetchall()

        table = Table(title=f"a registration batch's round trip to its plan, median of {calls} (ms)")
        for col in ("locks held elsewhere", "pg_locks (before)", "asked of the lock (now)", "before / now"):
            table.add_column(col, justify="right")
        try:
            with psycopg.connect(url, autocommit=True) as other:
                for held in (0, 1_000, 10_000):
                    other.execute("SELECT pg_advisory_unlock_all()")
                    other.execute("SELECT count(pg_advisory_lock(1, g)) FROM generate_series(1, %s) g", (held,))
                    old = median_ms(asked_before, calls)
                    now = median_ms(lambda: svc._since(pid, version), calls)
                    table.add_row(f"{held:,}", f"{old:.3f}", f"{now:.3f}", f"{old / now:.1f}")
        finally:
            svc.close()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        console.print(table)


if __name__ == "__main__":
    typer.run(main)
