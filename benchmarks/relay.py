"""Relay throughput: events per second from the event store to the broker, acknowledged and
recorded, next to a bare confluent-kafka producer sending the same messages in the same run.

    python -m benchmarks.relay                  # embedded PostgreSQL and Tansu, 3 runs
    python -m benchmarks.relay --database-url postgresql://postgres@127.0.0.1/test --bootstrap host:9092

The store holds a whole cohort's lifecycle (registrations, exam sittings, score books, result
reports, certificates), built untimed. Each run publishes all of it twice to fresh topics:
- relay: the real Relay from position 0 until it has recorded the last position: reading the
  notification log, reducing personal data, CloudEvents serialisation, acknowledgement, and
  recording positions;
- bare: one idempotent producer (same settings) sending the relay's exact messages, built
  beforehand, then flush().
"""

from __future__ import annotations

import statistics
import threading
import time as clock
import uuid
from datetime import date

import psycopg
import typer
from confluent_kafka import Producer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from benchmarks.issuance import CENTRE, Clock, build_cohort
from benchmarks.servers import servers
from domain.exam import ExamSession
from infra.bus.envelope import HEADERS, message, published, topic_names
from infra.bus.kafka import ensure_topics
from infra.bus.relay import Relay
from infra.services.certificates import Certificates

console = Console(width=120)
KEY = bytes(32)


def build_store(url: str, plans: int, per_plan: int) -> tuple[str, int]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    today = Clock(date(2026, 4, 28))
    app = Certificates(url, schema, today=today)
    with console.status(f"building the lifecycle of {plans * per_plan} candidates in {schema}"):
        staff, exams = build_cohort(app, plans, per_plan)
        for exam in exams:
            session = app.get(ExamSession, exam, "exam session")
            session.confirm_results(CENTRE, today())
            app.save(session)
        today.today = date(2026, 4, 29)
        app.issue_cohort(staff, exams)
    events = app.recorder.max_notification_id() or 0
    app.close()
    return schema, events


def drop_store(url: str, schema: str) -> None:
    """A benchmark's store is thrown away once its figures are printed (kept when a run fails, to look at)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def relay_run(url: str, schema: str, bootstrap: str, prefix: str, batch: int) -> tuple[int, float]:
    app = Certificates(url, schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, "relay_position")))
    ensure_topics(bootstrap, topic_names(prefix), 3)
    relay = Relay(app, url, schema, bootstrap, prefix, KEY, batch)
    head = app.recorder.max_notification_id() or 0
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,))
    started = clock.perf_counter()
    thread.start()
    with psycopg.connect(url, autocommit=True) as conn:
        query = sql.SQL("SELECT position FROM {} WHERE name = 'relay'").format(sql.Identifier(schema, "relay_position"))
        while True:
            if conn.execute(query).fetchone()[0] == head:  # Relay() created the table, untimed
                break
            clock.sleep(0.002)
    elapsed = clock.perf_counter() - started
    stop.set()
    thread.join()
    published_count = sum(1 for n in _all(app) if published(n.topic) is not None)
    app.close()
    return published_count, elapsed


def _all(app: Certificates):  # noqa: ANN202
    start = 1
    while batch := app.recorder.select_notifications(start=start, limit=5000):
        yield from batch
        start = batch[-1].id + 1


def bare_run(url: str, schema: str, bootstrap: str, prefix: str, limit: int | None = None) -> tuple[int, float]:
    """The bare producer sends the relay's messages for the log's first `limit` published events (all)."""
    app = Certificates(url, schema)
    messages = []
    for n in _all(app):
        p = published(n.topic)
        if p is not None:
            context, key, value = message(n.topic, n.id, app.mapper.decode_state(n), KEY)
            messages.append((prefix + context, key, value, HEADERS))
            if limit is not None and len(messages) >= limit:
                break
    app.close()
    ensure_topics(bootstrap, topic_names(prefix), 3)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    for topic in topic_names(prefix):
        producer.list_topics(topic, timeout=10)  # as the relay does before publishing
    errors = []

    def delivered(err, _msg) -> None:  # noqa: ANN001
        if err is not None:
            errors.append(err)

    started = clock.perf_counter()
    for topic, key, value, headers in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush()
    elapsed = clock.perf_counter() - started
    assert not errors, errors[:3]
    return len(messages), elapsed


def main(
    database_url: str = typer.Option("", help="PostgreSQL to use; empty starts an embedded one"),
    bootstrap: str = typer.Option("", help="Kafka bootstrap servers; empty starts an embedded Tansu"),
    plans: int = typer.Option(10, help="plans of the cohort (one exam session each)"),
    per_plan: int = typer.Option(200, help="candidates per plan"),
    runs: int = typer.Option(3, help="repetitions; medians are reported"),
    batch: int = typer.Option(2000, help="relay batch size"),
) -> None:
    with servers(database_url, bootstrap) as (database_url, bootstrap):
        schema, events = build_store(database_url, plans, per_plan)
        console.print(f"store: {events} events ({schema})")
        rows = []
        for r in range(runs):
            n_relay, t_relay = relay_run(database_url, schema, bootstrap, f"r{r}.relay.", batch)
            n_bare, t_bare = bare_run(database_url, schema, bootstrap, f"r{r}.bare.")
            assert n_relay == n_bare
            rows.append((n_relay, n_relay / t_relay, n_bare / t_bare))
            console.print(f"run {r + 1}: relay {n_relay / t_relay:,.0f}/s, bare producer {n_bare / t_bare:,.0f}/s")
        table = Table(title=f"relay vs bare producer, {rows[0][0]:,} messages per run, batch {batch}")
        for col in ("run", "relay msgs/s", "bare producer msgs/s", "relay / bare"):
            table.add_column(col, justify="right")
        for i, (_, rr, br) in enumerate(rows, 1):
            table.add_row(str(i), f"{rr:,.0f}", f"{br:,.0f}", f"{rr / br:.2f}")
        table.add_row(
            "median",
            f"{statistics.median(r[1] for r in rows):,.0f}",
            f"{statistics.median(r[2] for r in rows):,.0f}",
            f"{statistics.median(r[1] / r[2] for r in rows):.2f}",
        )
        console.print(table)
        drop_store(database_url, schema)


if __name__ == "__main__":
    typer.run(main)
