"""What loading an institution's blank stock costs as its forms get used: every print loads it.

    python -m benchmarks.stock_size --database-url postgresql://postgres@127.0.0.1/test [--used 20000]

Builds a stock of 30,000 received forms (or the number to use, if more) and uses them 1,000 at a time
(untimed), every 500th spoiled rather than printed, timing the median of 3 loads at 0 (the baseline), 1,000,
5,000 and the given number used. The stock loads from a snapshot and the events since; the forms used are
ranges of serials in it (domain.ranges), so the snapshot grows with the spoiled forms, not the used ones.
"""

from __future__ import annotations

import statistics
import time
import uuid
from datetime import date

import psycopg
import typer

from domain.model import Actor, Role
from domain.stock import BlankStock, stock_id
from infra.services.certificates import Certificates


def main(database_url: str = typer.Option(..., help="a running PostgreSQL"), used: int = 20_000) -> None:
    schema = "bench_stock_" + uuid.uuid4().hex[:6]
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    svc = Certificates(database_url, schema, today=lambda: date(2026, 7, 2))
    try:
        iid = uuid.uuid4()
        staff = Actor(id="staff-bench", role=Role.INSTITUTION_STAFF, institution_id=iid)
        stock = BlankStock.open(staff, iid)
        stock.receive(staff, 1, max(30_000, used), "SH-1")
        svc.save(stock)
        done, baseline = 0, None
        for target in sorted({0, 1_000, 5_000, used}):
            stock = svc.get(BlankStock, stock_id(iid), "stock")
            while done < target:
                for _ in range(min(1000, target - done)):
                    done += 1
                    if done % 500:
                        stock.use(staff, uuid.uuid4(), f"N{done}", done)
                    else:  # a misfeed now and then: the used forms are runs, not one run
                        stock.spoil(staff, done, "卡纸")
                svc.save(stock)
            times = []
            for _ in range(3):
                started = time.perf_counter()
                svc.get(BlankStock, stock_id(iid), "stock")
                times.append(time.perf_counter() - started)
            ms = statistics.median(times) * 1000
            baseline = baseline or ms
            print(f"{target:>7,} forms used: one load {ms:8.1f} ms  ({ms / baseline:,.2f}x the empty stock's)")
    finally:
        svc.close()
        with psycopg.connect(database_url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


if __name__ == "__main__":
    typer.run(main)
