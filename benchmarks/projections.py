"""Read models: rebuild speed, and end-to-end lag under a steady load.

    python -m benchmarks.projections                  # embedded PostgreSQL and Tansu
    python -m benchmarks.projections --plans 42 --runs 3 --seconds 30

Rebuild: a store holding a whole cohort's lifecycle (registrations, sittings, score books,
result reports, certificates; over 100,000 events with the defaults), built untimed. Each run
rebuilds every projection in one pass, next to two baselines over the same log in the same run:
- the read-only pass reads, decrypts, decodes and reduces each event exactly as the rebuild does
  (consumers.rebuild.read_as_published) but applies nothing;
- the raw read reads the log's rows and decrypts and decodes each state (JSON), nothing more.
Both collect garbage as the rebuild does (infra.collector.collecting_less).

A second store holds one plan and --popular registrations into it (10,000 by default): every one updates
the plan's row of places taken, which a rebuild must not make quadratic (consumers.rebuild). It is timed
the same way.

Lag: the relay and the faust worker run as their own processes, as deployed. Threads submit
registrations, approve them and record their fees at a steady total rate (default 200 commands
per second, if the machine can drive it: the rate reached is printed); each
command's lag is from its commit to the moment its registration's version is applied in the
candidate record, observed by polling every 10 ms. The baseline, in the same run, is the bus's
floor: the same number of small messages per second produced to and consumed from the broker.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
import typer
from confluent_kafka import Consumer, Producer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from benchmarks.issuance import _form
from benchmarks.relay import KEY, build_store, drop_store
from benchmarks.servers import servers
from consumers.rebuild import BATCH, read_as_published, rebuild
from domain.eligibility import Evidence
from domain.institution import DeadlineProfile, Filing
from domain.model import Actor, Role
from infra.bus.kafka import ensure_topics
from infra.collector import collecting_less
from infra.services import samples
from infra.services.registrations import Decision, Registrations
from infra.store.eventstore import SkillcertApplication
from projections import PROJECTIONS
from projections.store import connect

console = Console(width=120)


def rebuild_run(url: str, schema: str) -> tuple[int, float, float, float]:
    """(events applied, seconds to rebuild, seconds for the read-only pass, seconds to read the raw log),
    each over the whole log."""
    app = SkillcertApplication(url, schema)
    head = app.recorder.max_notification_id() or 0
    contexts = {c for p in PROJECTIONS for c in p.topics}
    with connect(url, schema) as conn:
        # The baselines collect garbage as the rebuild does (collecting_less): under Python's default the
        # read-only pass, which holds a batch's events as the rebuild does, ran at 0.78 of its speed.
        with collecting_less():
            started = time.perf_counter()
            position = 0
            while position < head and (rows := app.stored_rows(conn, position, BATCH, head)):
                for _, _, state in rows:
                    app.mapper.decode_bytes(state)
                position = rows[-1][0]
            t_raw = time.perf_counter() - started
            started = time.perf_counter()
            for _ in read_as_published(conn, app, KEY, head, contexts):
                pass
            t_read = time.perf_counter() - started
        conn.rollback()
        started = time.perf_counter()
        applied = rebuild(conn, PROJECTIONS, app, KEY)
        t_rebuild = time.perf_counter() - started
    app.close()
    return applied, t_rebuild, t_read, t_raw


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def bus_floor(bootstrap: str, rate: int, seconds: float) -> list[float]:
    """Produce `rate` small messages a second and consume them: the broker's own latency."""
    topic = f"floor-{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, [topic], 3)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
                         "session.timeout.ms": 6000, "fetch.wait.max.ms": 100})  # fmt: skip
    consumer.subscribe([topic])
    lags: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            m = consumer.poll(0.1)
            if m is not None and not m.error():
                lags.append(time.time() - float(m.value()))

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(7)  # group join
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
    producer.list_topics(topic)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        producer.produce(topic, key=uuid.uuid4().bytes, value=str(time.time()).encode())
        producer.poll(0)
        time.sleep(1 / rate)
    producer.flush()
    time.sleep(2)
    stop.set()
    reader.join()
    consumer.close()
    return lags


def lag_run(url: str, bootstrap: str, rate: int, seconds: float, logs: Path) -> tuple[list[float], int]:
    schema = f"lag_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    env = {**os.environ, "SKILLCERT_DATABASE_URL": url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_KAFKA_BOOTSTRAP": bootstrap, "SKILLCERT_TOPIC_PREFIX": f"{schema}.",
           "SKILLCERT_KAFKA_SESSION_TIMEOUT_MS": "6000", "SKILLCERT_PSEUDONYM_KEY": KEY.hex()}  # fmt: skip
    service = Registrations(url, schema, today=lambda: date(2026, 3, 2))
    samples.hold(service.attachments)  # the scans the forms refer to
    admin = Actor(id="bench", role=Role.SYSTEM)
    from tests.builders import SCOPE

    iid = service.register_institution(admin, "基准测试机构", Filing(city_code="03", station_serial="015"),
                                       DeadlineProfile.S, SCOPE)  # fmt: skip
    staff = Actor(id="staff-bench", role=Role.INSTITUTION_STAFF, institution_id=iid)
    from tests.builders import plan_details

    threads = 16
    codes = [service.publish_plan(staff, iid, plan_details(f"{2600 + t}", seats=100_000))[1] for t in range(threads)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "infra.cli", *cmd],
            env=env,
            stdout=(logs / f"{cmd[0]}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        for cmd in (["consumers"], ["relay", "run"])
    ]
    committed: dict[tuple[str, int], float] = {}
    seen: dict[tuple[str, int], float] = {}
    stop = threading.Event()
    try:
        with connect(url, schema, autocommit=True) as conn:
            ready = f"SELECT count(*) FROM {schema}.projection_schemas"
            while True:  # the worker has built its tables; give its consumer group time to join
                try:
                    if conn.execute(ready).fetchone()[0] == len(PROJECTIONS):
                        break
                except psycopg.errors.UndefinedTable:
                    pass
                time.sleep(0.2)
            time.sleep(8)

            def drive(t: int) -> None:
                k, interval = t * 150_000, threads / rate  # _form(k) is a valid ID number for k < 2.7 million
                next_at = time.monotonic()
                while not stop.is_set():
                    k += 1
                    who = Actor(id=f"cand-{k}", role=Role.CANDIDATE)
                    rid = service.register(who, codes[t], _form(k))
                    committed[(str(rid), 1)] = time.time()
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    service.review(staff, rid, Decision.APPROVED, condition="2.1",
                                   evidence=Evidence(years_in_occupation=8, prior_level=3, years_since_prior=5,
                                                     insured_work_unit="深圳市某某科技有限公司"))  # fmt: skip
                    committed[(str(rid), 2)] = time.time()
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))
                    service.pay_fee(staff, rid, f"R{k:010d}", Decimal("380.00"))
                    committed[(str(rid), 3)] = time.time()
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.monotonic()))

            drivers = [threading.Thread(target=drive, args=(t,)) for t in range(threads)]
            for d in drivers:
                d.start()
            end = time.monotonic() + seconds
            while time.monotonic() < end + 5:
                if time.monotonic() > end:
                    stop.set()
                now = time.time()
                rows = conn.execute(
                    "SELECT aggregate_id::text, version FROM projection_versions WHERE projection = 'candidates'"
                ).fetchall()
                for agg, version in rows:
                    for v in range(1, version + 1):
                        seen.setdefault((agg, v), now)
                time.sleep(0.01)
            for d in drivers:
                d.join()
    finally:
        for p in procs:
            p.terminate()
            p.wait(15)
        service.close()
    drop_store(url, schema)
    warm = sorted(committed.values())[len(committed) // 10]  # the first tenth is warm-up
    lags = [seen[k] - t for k, t in committed.items() if t >= warm and k in seen]
    missing = sum(1 for k, t in committed.items() if t >= warm and k not in seen)
    return lags, missing


def build_popular(url: str, registrations: int) -> tuple[str, int]:
    """A store holding one plan and `registrations` registrations into it: every one of them updates the
    plan's row of places taken, the kind of row a rebuild must not make quadratic (consumers.rebuild)."""
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    service = Registrations(url, schema, today=lambda: date(2026, 3, 2))
    samples.hold(service.attachments)
    from tests.builders import SCOPE, plan_details

    iid = service.register_institution(Actor(id="bench", role=Role.SYSTEM), "基准测试机构",
                                       Filing(city_code="03", station_serial="015"), DeadlineProfile.S, SCOPE)  # fmt: skip
    staff = Actor(id="staff-bench", role=Role.INSTITUTION_STAFF, institution_id=iid)
    _, code = service.publish_plan(staff, iid, plan_details("2600", seats=max(registrations, 1)))
    with console.status(f"registering {registrations:,} candidates into one plan in {schema}"):
        for k in range(1, registrations + 1):
            service.register(Actor(id=f"cand-{k}", role=Role.CANDIDATE), code, _form(k))
    events = service.recorder.max_notification_id() or 0
    service.close()
    return schema, events


def rebuild_runs(url: str, schema: str, events: int, runs: int, title: str) -> None:
    rows = []
    for r in range(runs):
        applied, t_rebuild, t_read, t_raw = rebuild_run(url, schema)
        rows.append((applied / t_rebuild, applied / t_read, events / t_raw, t_read / t_rebuild, t_raw / t_read))
        console.print(
            f"run {r + 1}: rebuild {applied:,} events in {t_rebuild:.2f} s; read-only pass {t_read:.2f} s;"
            f" raw read {t_raw:.2f} s"
        )
    table = Table(title=f"{title}, {applied:,} published events")
    for col in ("run", "rebuild events/s", "read-only pass events/s", "raw read rows/s",
                "rebuild / read-only", "read-only / raw"):  # fmt: skip
        table.add_column(col, justify="right")
    for i, row in enumerate(rows, 1):
        table.add_row(str(i), *(f"{x:,.0f}" for x in row[:3]), *(f"{x:.2f}" for x in row[3:]))
    table.add_row("median", *(f"{statistics.median(r[k] for r in rows):,.0f}" for k in range(3)),
                  *(f"{statistics.median(r[k] for r in rows):.2f}" for k in range(3, 5)))  # fmt: skip
    console.print(table)


def main(
    database_url: str = typer.Option("", help="PostgreSQL to use; empty starts an embedded one"),
    bootstrap: str = typer.Option("", help="Kafka bootstrap servers; empty starts an embedded Tansu"),
    plans: int = typer.Option(42, help="plans of 200 candidates in the rebuild store"),
    popular: int = typer.Option(10_000, help="registrations into one plan in a second rebuild store (0: none)"),
    runs: int = typer.Option(3, help="rebuild repetitions; medians are reported"),
    rate: int = typer.Option(200, help="commands per second in the lag run"),
    seconds: float = typer.Option(30, help="length of the lag run"),
) -> None:
    with servers(database_url, bootstrap) as (database_url, bootstrap):
        if plans:
            schema, events = build_store(database_url, plans, 200)
            console.print(f"store: {events:,} events ({schema})")
            rebuild_runs(database_url, schema, events, runs, f"rebuild of all {len(PROJECTIONS)} projections")
            drop_store(database_url, schema)
        if popular:
            schema, events = build_popular(database_url, popular)
            console.print(f"store: {events:,} events, one plan ({schema})")
            rebuild_runs(
                database_url, schema, events, runs, f"rebuild of all {len(PROJECTIONS)} projections, one popular plan"
            )
            drop_store(database_url, schema)
        if seconds:
            logs = Path(tempfile.mkdtemp(prefix="skillcert-lag-"))
            lags, missing = lag_run(database_url, bootstrap, rate, seconds, logs)
            floor = bus_floor(bootstrap, rate, seconds)
            table = Table(title=f"end-to-end lag at {rate} commands/s for {seconds:.0f} s (logs in {logs})")
            for col in ("", "samples", "p50 ms", "p95 ms", "max ms"):
                table.add_column(col, justify="right")
            for name, xs in (("command -> candidate record", lags), ("bus floor: produce -> consume", floor)):
                table.add_row(name, str(len(xs)), f"{percentile(xs, 50) * 1000:.0f}",
                              f"{percentile(xs, 95) * 1000:.0f}", f"{max(xs) * 1000:.0f}")  # fmt: skip
            console.print(table)
            achieved = (len(lags) + missing) / (seconds * 0.9)
            console.print(
                f"commands measured: {len(lags) + missing} (about {achieved:.0f}/s), never visible: {missing}"
            )
            console.print(f"p95 ratio, pipeline / bus floor: {percentile(lags, 95) / percentile(floor, 95):.1f}")


if __name__ == "__main__":
    typer.run(main)
