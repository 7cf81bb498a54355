"""Transactional outbox relay: the notification log -> Kafka.

Reads events in notification order, publishes them with an idempotent producer
keyed by aggregate id, and records its position only after every message of a
batch is acknowledged. A crash republishes, never loses. One relay is active at
a time per schema: it holds a PostgreSQL advisory lock while it runs.
"""

from __future__ import annotations

import logging
import threading
import zlib

import psycopg
from confluent_kafka import Producer
from psycopg import sql

from infra.envelope import context_of, encode, envelope
from infra.eventstore import SkillcertApplication

log = logging.getLogger("skillcert.relay")


class DeliveryFailed(RuntimeError):
    pass


class Relay:
    def __init__(
        self,
        app: SkillcertApplication,
        database_url: str,
        schema: str,
        bootstrap: str,
        topic_prefix: str,
        batch_size: int = 500,
    ) -> None:
        self.app = app
        self.database_url = database_url
        self.schema = schema
        self.topic_prefix = topic_prefix
        self.batch_size = batch_size
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
            }
        )
        self.table = sql.Identifier(schema, "relay_position")
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL)").format(
                    self.table
                )
            )
            conn.execute(sql.SQL("INSERT INTO {} VALUES ('relay', 0) ON CONFLICT DO NOTHING").format(self.table))

    def position(self) -> int:
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(sql.SQL("SELECT position FROM {} WHERE name = 'relay'").format(self.table)).fetchone()
        return int(row[0]) if row else 0

    def _save_position(self, position: int) -> None:
        with psycopg.connect(self.database_url) as conn:
            conn.execute(sql.SQL("UPDATE {} SET position = %s WHERE name = 'relay'").format(self.table), (position,))

    def lag(self) -> int:
        return (self.app.recorder.max_notification_id() or 0) - self.position()

    def publish_batch(self, after: int, stop: threading.Event | None = None) -> int:
        """Publish the batch after position `after`. Returns the position it reached (saved once acknowledged)."""
        notifications = self.app.recorder.select_notifications(start=after + 1, limit=self.batch_size)
        if not notifications:
            return after
        errors: list[str] = []

        def delivered(err, msg) -> None:  # noqa: ANN001 - confluent callback
            if err is not None:
                errors.append(f"{msg.topic()}: {err}")

        for n in notifications:
            context = context_of(n.topic)
            if context is None:
                continue  # an internal guard aggregate
            state = self.app.mapper.decode_state(n)
            self.producer.produce(
                self.topic_prefix + context,
                key=str(n.originator_id).encode(),
                value=encode(envelope(n.topic, n.id, state)),
                on_delivery=delivered,
            )
            self.producer.poll(0)
        while self.producer.flush(5) > 0:
            if stop is not None and stop.is_set():
                return after  # not acknowledged: the position stays, the next relay publishes again
            log.warning("broker slow or unreachable; %d messages await acknowledgement", len(self.producer))
        if errors:
            raise DeliveryFailed("; ".join(errors[:5]))
        self._save_position(notifications[-1].id)
        return notifications[-1].id

    def run(self, stop: threading.Event, idle_sleep: float = 0.05) -> None:
        lock_key = zlib.crc32(f"skillcert-relay:{self.schema}".encode())
        with psycopg.connect(self.database_url, autocommit=True) as lock_conn:
            while not lock_conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key,)).fetchone()[0]:
                log.info("another relay is active; waiting")
                if stop.wait(1.0):
                    return
            # Holding the lock, this relay is the only writer of the position: read it once.
            position = self.position()
            log.info("relay active from position %d", position)
            while not stop.is_set():
                try:
                    reached = self.publish_batch(position, stop)
                except DeliveryFailed as e:
                    log.error("delivery failed, will retry: %s", e)
                    stop.wait(1.0)
                    continue
                if reached == position:
                    stop.wait(idle_sleep)
                position = reached
