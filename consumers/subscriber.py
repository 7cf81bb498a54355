"""Reference subscriber for downstream systems: copy it and replace `handle`.

Consumes the certificates topic with confluent-kafka, parses each message with the
cloudevents SDK (Kafka binding, structured mode), and stores every event once in a local
SQLite file, deduplicating by event id: skillcert's relay delivers at least once, and a
republish sends history again with the same ids. Offsets are committed only after the
batch is stored, so a crash re-reads rather than loses.

    python -m consumers.subscriber --bootstrap kafka:9092 --group my-system --store received.sqlite

Rules for subscribers (the contract, README "Bus contract"):
- deduplicate by `id`; one aggregate's events arrive in order (`aggregateversion`);
- ignore fields and event types you do not know; a breaking change comes as a new `type`
  version (…v2), never as a changed v1;
- `data.holder.id_number` is {"masked", "ref"}: the number itself is never on the bus.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from cloudevents.core.bindings.kafka import KafkaMessage, from_structured
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import Consumer, KafkaException

FORMAT = JSONFormat()
DEFAULT_STORE = Path("received.sqlite")
SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id text PRIMARY KEY,          -- CloudEvents id: the deduplication key
    type text NOT NULL,
    subject text NOT NULL,        -- the certificate's aggregate id
    version integer NOT NULL,
    position integer NOT NULL,    -- skillcert's global order
    time text NOT NULL,
    data text NOT NULL,
    received_at real NOT NULL
);
CREATE TABLE IF NOT EXISTS stats (name text PRIMARY KEY, value integer NOT NULL);
"""


def open_store(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA)
    return db


def handle(db: sqlite3.Connection, event: Any) -> bool:
    """Store one event unless it is already stored. True when it was new."""
    cur = db.execute(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (
            event.get_id(),
            event.get_type(),
            event.get_subject(),
            int(event.get_extension("aggregateversion")),
            int(event.get_extension("position")),
            event.get_time().isoformat(),
            json.dumps(event.get_data(), ensure_ascii=False),
            time.time(),
        ),
    )
    return cur.rowcount == 1


def main(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")] = "127.0.0.1:9092",
    topic: Annotated[str, typer.Option(help="the certificates topic")] = "skillcert.certificates",
    group: Annotated[str, typer.Option(help="consumer group: one per downstream system")] = "reference-subscriber",
    store: Annotated[Path, typer.Option(help="SQLite file to keep received events in")] = DEFAULT_STORE,
    idle_exit: Annotated[float, typer.Option(help="stop after this many quiet seconds (0: run until stopped)")] = 0,
    quiet: Annotated[bool, typer.Option(help="do not print each new event")] = False,
    config: Annotated[
        list[str] | None,
        typer.Option(
            "-X",
            "--config",
            help="a librdkafka setting, KEY=VALUE, as kcat takes it: security.protocol=SASL_SSL,"
            " sasl.mechanism=SCRAM-SHA-512, sasl.username=…, ssl.ca.location=…; repeatable",
        ),
    ] = None,
) -> None:
    settings = {}
    for item in config or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="-X")
        settings[name.strip()] = value
    db = open_store(store)
    consumer = Consumer(
        {
            **settings,  # security first; what the subscriber itself relies on below wins
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",  # a new system starts from the beginning
            "enable.auto.commit": False,  # commit after storing, never before
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    running = True

    def stop(*_: Any) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    last_message = time.monotonic()
    new = duplicates = 0
    try:
        while running:
            messages = consumer.consume(num_messages=500, timeout=0.5)
            if not messages:
                if idle_exit and time.monotonic() - last_message > idle_exit:
                    break
                continue
            last_message = time.monotonic()
            with db:  # one SQLite transaction per batch
                for m in messages:
                    if m.error():
                        raise KafkaException(m.error())
                    headers = {k: v for k, v in (m.headers() or [])}
                    event = from_structured(KafkaMessage(headers=headers, key=m.key(), value=m.value()), FORMAT)
                    if handle(db, event):
                        new += 1
                        if not quiet:
                            data = event.get_data() or {}
                            print(event.get_type(), data.get("number", ""), event.get_subject(), flush=True)
                    else:
                        duplicates += 1
                db.execute(
                    "INSERT INTO stats VALUES ('duplicates', ?) ON CONFLICT (name) DO UPDATE SET value = value + ?",
                    (duplicates, duplicates),
                )
                duplicates = 0
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
        db.close()
    print(f"stored {new} new events", flush=True)


if __name__ == "__main__":
    typer.run(main)
