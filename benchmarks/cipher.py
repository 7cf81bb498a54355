"""What encryption at rest costs: storing and reading back events through the mapper with the store's
cipher (AES-256-GCM under a data key), next to the same mapper without it, in the same run.

    python -m benchmarks.cipher                    # embedded PostgreSQL, 3 runs
    python -m benchmarks.cipher --database-url postgresql://postgres@127.0.0.1/test

The events are the demo scenario's (registrations with their forms, plans, sessions, scores,
certificates), decoded once; each run encodes every one to its stored form and decodes it back
(what a save and a read or the relay do per event), `rounds` times over.
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
from infra.store.eventstore import PydanticMapper

console = Console()


def round_trips(mapper: PydanticMapper, events: list, rounds: int) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        for e in events:
            mapper.decode_bytes(mapper.to_stored_event(e).state)
    return time.perf_counter() - started


def main(
    database_url: str = typer.Option("", help="PostgreSQL to use; empty starts an embedded one"),
    rounds: int = typer.Option(50, help="passes over the demo events per run"),
    runs: int = typer.Option(3),
) -> None:
    server = None
    if not database_url:
        from infra.embedded import start_postgres

        server, database_url = start_postgres(Path(tempfile.mkdtemp(prefix="skillcert-bench-")))
    schema = f"bench_cipher_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    svc = Registrations(database_url, schema)
    try:
        demo.load(svc, shanghai_today(), database_url, schema, installation_key(database_url, schema))
        events = [svc.mapper.to_domain_event(n) for n in svc.recorder.select_notifications(start=1, limit=100_000)]
        encrypted, plain = svc.mapper, PydanticMapper(transcoder=svc.mapper.transcoder)
        n = len(events) * rounds
        round_trips(encrypted, events, 1), round_trips(plain, events, 1)  # warm up
        rows = []
        for run in range(1, runs + 1):
            rows.append((run, n / round_trips(encrypted, events, rounds), n / round_trips(plain, events, rounds)))
        out = Table("run", "events", "encrypted (events/s)", "plain (events/s)", "ratio")
        for run, ours, floor in rows:
            out.add_row(str(run), f"{n:,}", f"{ours:,.0f}", f"{floor:,.0f}", f"{ours / floor:.2f}")
        med, med_floor = statistics.median(r[1] for r in rows), statistics.median(r[2] for r in rows)
        out.add_row("median", "", f"{med:,.0f}", f"{med_floor:,.0f}", f"{med / med_floor:.2f}")
        console.print(f"{len(events)} demo events, mean stored size {sum(len(encrypted.to_stored_event(e).state) for e in events) / len(events):,.0f} B encrypted, "
                      f"{sum(len(plain.to_stored_event(e).state) for e in events) / len(events):,.0f} B plain")  # fmt: skip
        console.print(out)
    finally:
        svc.close()
        with psycopg.connect(database_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    typer.run(main)
