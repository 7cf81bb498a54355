"""Transactional outbox relay: the notification log -> Kafka.

Reads events in notification order and publishes them with an idempotent producer, keyed
by aggregate id. Batches are pipelined: while one is in flight the next is read and sent,
and a batch's position is recorded only once it and every batch before it are
acknowledged. A crash republishes, never loses.

One relay is active per schema: it holds a PostgreSQL advisory lock on a session of its
own and records its position through that same session, so a relay that has lost its
lock (its session ended) can no longer record anything. A second relay waits for the lock.
New events wake the relay through the event store's NOTIFY; it does not poll.

It outlives what it depends on. PostgreSQL restarting ends its session: it connects again with
backoff, takes the lock again and resumes from its recorded position. The broker restarting
empty (Tansu keeps topics in memory) or losing its topics is noticed within seconds, by the
broker's cluster id or our topics being gone: the relay recreates the topics with the configured
partitions and republishes everything from position 0 with a new producer, by itself. Its
producer never creates topics.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from psycopg import sql

from infra.bus.envelope import HEADERS, TOPIC_SUFFIXES, message, published, topic_names
from infra.bus.kafka import MAX_MESSAGE_BYTES, ensure_topics
from infra.bus.schemas import public_events
from infra.store.eventstore import SkillcertApplication, serialise_ddl
from infra.store.recorder import DATA_DELETED

log = logging.getLogger("skillcert.relay")

MAX_IN_FLIGHT = 8  # batches sent but not yet all acknowledged
STANDBY_SAYS_EVERY = 300.0  # seconds between a standby relay's lines that it waits
BROKER_CHECK_EVERY = 2.0  # seconds between looks at the broker's identity and our topics
RECONNECT_FIRST, RECONNECT_MAX = 1.0, 10.0


class OncePer(logging.Filter):
    """Lets a message through once per `seconds`, counting what it held back: a broker away for a day made librdkafka
    log "Connection refused" some twenty times a second."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.said, self.held = seconds, {}, {}

    def filter(self, record: logging.LogRecord) -> bool:
        # librdkafka's lines name the broker and the error, then what changes from one to the next ("after 1234ms in
        # state ...", "12 identical error(s) suppressed"): without those, a line tells its kind and its broker
        key = CHANGING.sub("#", record.getMessage())
        now = time.monotonic()
        if now - self.said.get(key, -self.seconds) < self.seconds:
            self.held[key] = self.held.get(key, 0) + 1
            return False
        held = self.held.pop(key, 0)
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it in the last {self.seconds:.0f} s)"
            record.args = ()
        self.said[key] = now
        if len(self.said) > 1000:
            self.said.clear()
        return True


CHANGING = re.compile(r"\d+(?=ms\b)|(?<=after )\d+|\d+(?= identical)")
KAFKA_LOG = logging.getLogger("skillcert.relay.kafka")
KAFKA_LOG.addFilter(OncePer(60.0))
FAILURES_LOG = logging.getLogger("skillcert.relay.delivery")  # a failure that repeats: said once a minute
FAILURES_LOG.addFilter(OncePer(60.0))


class DeliveryFailed(RuntimeError):
    pass


def lock_key(schema: str) -> int:
    return zlib.crc32(f"skillcert-relay:{schema}".encode())


def ensure_position_table(conn: psycopg.Connection[Any], schema: str) -> None:
    table = sql.Identifier(schema, "relay_position")
    ready = conn.execute(
        "SELECT count(*) = 6 FROM information_schema.columns WHERE table_schema = %s AND table_name = 'relay_position'",
        (schema,),
    ).fetchone()[0]
    if ready and conn.execute(sql.SQL("SELECT 1 FROM {} WHERE name = 'relay'").format(table)).fetchone():
        return  # the usual case: take no lock, so a start never waits on a running relay's row
    with conn.transaction():
        serialise_ddl(conn)
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, position bigint NOT NULL,"
                " rewind_to bigint, published_at timestamptz)"
            ).format(table)
        )
        # Older tables lack the later columns. log_id names the log the relay is filling: a new one each
        # time it starts over on a new or emptied broker (consumers.projector reads it).
        for column in ("rewind_to bigint", "published_at timestamptz", "cluster_id text", "log_id text"):
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS " + column).format(table))
        conn.execute(
            sql.SQL("INSERT INTO {} (name, position) VALUES ('relay', 0) ON CONFLICT DO NOTHING").format(table)
        )


class Erased:
    """The certificates whose data was deleted, each with the position of its deletion: their events before it are
    not published (again). A republish, or a relay catching up, sent them as they were published then, the holder's
    name and ID number included, after the holder had given the certificate up (000 二4); subscribers that had them
    erase them on the deletion, which is published. Read from the store's index of deletions (infra.store.recorder),
    every deletion stored so far, at each batch: a deletion later in the log hides what came before it."""

    def __init__(self, schema: str, events_table: str) -> None:
        self.at: dict[str, int] = {}
        self.seen = 0
        self.query = sql.SQL("SELECT notification_id, originator_id FROM {} WHERE topic = %s AND notification_id > %s"
                             " ORDER BY notification_id").format(sql.Identifier(schema, events_table))  # fmt: skip

    def learn(self, conn: psycopg.Connection[Any]) -> None:
        for position, certificate in conn.execute(self.query, (DATA_DELETED, self.seen), prepare=True):
            self.at[str(certificate)] = position
            self.seen = position

    def hides(self, aggregate_id: str, position: int) -> bool:
        return position < self.at.get(aggregate_id, 0)


@dataclass
class _Batch:
    last: int  # notification id of its last event
    pending: int = 0
    errors: list[str] = field(default_factory=list)


class Relay:
    def __init__(
        self,
        app: SkillcertApplication,
        database_url: str,
        schema: str,
        bootstrap: str,
        topic_prefix: str,
        pseudonym_key: bytes,
        batch_size: int = 2000,
        message_timeout_ms: int = 300_000,
        topics: dict[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.database_url = database_url
        self.schema = schema
        self.bootstrap = bootstrap
        self.topic_prefix = topic_prefix
        self.key = pseudonym_key
        self.batch_size = batch_size
        self.message_timeout_ms = message_timeout_ms
        self.topics = topics or {"partitions": 3}  # ensure_topics' arguments (kafka.topics_from)
        self.client = dict(self.topics.get("config") or {})
        self.names = topic_names(topic_prefix)
        self.cluster_id: str | None = None  # of the broker it publishes to, once seen
        self.table = sql.Identifier(schema, "relay_position")
        self.producer = self._producer()
        self.erased = Erased(schema, app.recorder.events_table_name)  # type: ignore[attr-defined]
        for event in public_events():
            published(event.topic)  # build every redaction plan now, not while publishing
        with psycopg.connect(database_url, autocommit=True) as conn:
            ensure_position_table(conn, schema)

    def _producer(self) -> Producer:
        return Producer(
            {
                "message.max.bytes": MAX_MESSAGE_BYTES + 64 * 1024,  # a message and its batch's framing
                **self.client,
                "logger": KAFKA_LOG,  # not librdkafka's own lines on stderr: ours, each said once a minute at most
                "bootstrap.servers": self.bootstrap,
                "allow.auto.create.topics": False,  # only ensure_topics creates them, as configured
                "enable.idempotence": True,  # with acks=all: no duplicates or reordering from retries
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": self.message_timeout_ms,  # then the batch fails and is sent again
                "client.id": "skillcert-relay",
            }
        )

    def _send(self, conn: psycopg.Connection[Any], after: int) -> _Batch | None:
        """Produce the batch after `after`; None when there is nothing new."""
        # The notification log read directly: the writers' table lock makes ids commit in order.
        rows = self.app.stored_rows(conn, after, self.batch_size)
        if not rows:
            return None
        batch = _Batch(last=rows[-1][0])
        self.erased.learn(conn)
        erased = self.erased.hides if self.erased.at else None

        def delivered(err: KafkaError | None, msg: Any) -> None:
            batch.pending -= 1
            if err is not None:
                batch.errors.append(f"{msg.topic()}: {err}")

        decode = self.app.mapper.decode_bytes
        for notification_id, topic, state in rows:
            if published(topic) is None:
                continue  # an internal guard aggregate: read, never decoded
            data = decode(state)
            if erased is not None and erased(data["originator_id"], notification_id):
                continue  # a certificate whose data was deleted later in the log
            context, key, value = message(topic, notification_id, data, self.key)
            while True:
                try:
                    self.producer.produce(
                        self.topic_prefix + context, key=key, value=value, headers=HEADERS, on_delivery=delivered
                    )
                    break
                except BufferError:  # local queue full: serve callbacks, then retry
                    self.producer.poll(0.1)
                except KafkaException as e:  # refused before sending (too large for this producer): as a delivery
                    # that failed, sent again after a pause, said once a minute; the relay itself stays up.
                    batch.errors.append(f"position {notification_id} ({published(topic).type}, {len(value):,} bytes): "
                                        f"{e.args[0].str()}")  # fmt: skip
                    return batch
            batch.pending += 1
        self.producer.poll(0)
        return batch

    def run(self, stop: threading.Event) -> None:
        """Publish until stopped, through PostgreSQL and broker restarts."""
        wait = RECONNECT_FIRST
        while not stop.is_set():
            try:
                self._run(stop)
                return
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                log.warning("PostgreSQL unavailable (%s); connecting again in %.0f s", reason, wait)
                stop.wait(wait)
                wait = min(wait * 2, RECONNECT_MAX)

    def _run(self, stop: threading.Event) -> None:
        with psycopg.connect(self.database_url, autocommit=True, application_name="skillcert-relay") as conn:
            said = 0.0
            while not conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(self.schema),)).fetchone()[0]:
                if time.monotonic() - said > STANDBY_SAYS_EVERY:  # a standby waits for days: not a line a second
                    log.info("another relay is active; waiting (standing by; said again every %.0f s)",
                             STANDBY_SAYS_EVERY)  # fmt: skip
                    said = time.monotonic()
                if stop.wait(1.0):
                    return
            ensure_position_table(conn, self.schema)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.app.recorder.channel_name)))
            self._check_broker(conn)
            row = conn.execute(sql.SQL("SELECT position FROM {} WHERE name = 'relay'").format(self.table)).fetchone()
            position = int(row[0])
            reached = self._warm_metadata(stop)
            log.info("relay active from position %d%s", position,
                     "" if reached else "; the broker does not answer yet: publishing waits for it")  # fmt: skip
            try:
                self._loop(conn, position, stop)
            finally:
                if not conn.broken:
                    self.producer.flush(5)

    def _check_broker(self, conn: psycopg.Connection[Any]) -> bool:
        """Is the broker the one we have been publishing to, with our topics? If it is new (another
        cluster id) or has lost our topics, name a new log, make the topics and ask for everything to
        be published again. True when a republish was asked for. A broker that does not answer is
        left to librdkafka, which keeps trying."""
        try:
            metadata = self.producer.list_topics(timeout=2)
        except KafkaException:
            return False
        recorded, position = conn.execute(
            sql.SQL("SELECT cluster_id, position FROM {} WHERE name = 'relay'").format(self.table)
        ).fetchone()
        known = self.cluster_id or recorded
        missing = [n for n in self.names if n not in metadata.topics or metadata.topics[n].error is not None]
        replaced = known is not None and metadata.cluster_id != known
        # Recorded with the next position, not now: a start takes no row lock a running relay might hold.
        self.cluster_id = metadata.cluster_id
        if not missing and not replaced:
            return False
        if position == 0 and not replaced:  # a first start: nothing was published, nothing to publish again
            ensure_topics(self.bootstrap, self.names, **self.topics)
            return False
        # The new log is named before any topic exists to carry it: a consumer that reads anything
        # from it finds the new name already recorded, and knows its offsets counted another log.
        log_id = uuid.uuid4().hex
        with conn.transaction():
            (position,) = conn.execute(
                sql.SQL("SELECT position FROM {} WHERE name = 'relay' FOR UPDATE").format(self.table)
            ).fetchone()
            conn.execute(sql.SQL("UPDATE {} SET position = 0, rewind_to = NULL, cluster_id = %s, log_id = %s"
                                 " WHERE name = 'relay'").format(self.table), (metadata.cluster_id, log_id))  # fmt: skip
        created = ensure_topics(self.bootstrap, self.names, **self.topics)
        log.warning(
            "the broker %s (cluster %s%s); topics created: %s; republishing everything from position 0 (was %d)",
            "is a new one" if replaced else "has lost our topics", metadata.cluster_id,
            f", was {known}" if replaced else "", ", ".join(created) or "none", position,
        )  # fmt: skip
        return True

    def _loop(self, conn: psycopg.Connection[Any], position: int, stop: threading.Event) -> None:
        sent = position  # last notification id produced
        failures = 0  # deliveries failed in a row
        in_flight: deque[_Batch] = deque()
        last_report = last_rewind_check = last_broker_check = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - last_broker_check > BROKER_CHECK_EVERY:
                last_broker_check = time.monotonic()
                if self._check_broker(conn):
                    # What is in flight went to a broker that has forgotten it: drop it, and start a
                    # producer of its own for the new broker (the old one's sequence numbers mean nothing there).
                    self.producer.purge()
                    self.producer.flush(0)
                    self.producer = self._producer()
                    self._warm_metadata()
                    in_flight.clear()
                    position = sent = 0
                    continue
            # Checked when idle and at most once a second when busy: a query per batch adds up.
            rewind = None
            if not in_flight or time.monotonic() - last_rewind_check > 1:
                rewind, last_rewind_check = self._rewind_requested(conn), time.monotonic()
            if rewind is not None:
                self._drain(in_flight, stop)
                position = sent = rewind
                self._rewound(conn, rewind)
                log.warning("republishing from position %d", rewind)
            room = len(in_flight) < MAX_IN_FLIGHT
            batch = self._send(conn, sent) if room else None
            caught_up = room and batch is None  # looked, and the store has nothing newer
            if batch is not None:
                if not in_flight:
                    last_report = time.monotonic()  # waiting for acknowledgements starts now
                in_flight.append(batch)
                sent = batch.last
            # Record what is acknowledged, in order.
            self.producer.poll(0 if batch is not None else 0.05)
            confirmed = position
            while in_flight and in_flight[0].pending == 0:
                done = in_flight.popleft()
                if done.errors:
                    failures += 1
                    FAILURES_LOG.error(
                        "delivery failed, republishing from %d: %s", confirmed, "; ".join(done.errors[:3])
                    )
                    self._drain(in_flight, stop)
                    # A new producer (new producer id): after expired messages the idempotent
                    # producer bumps its epoch, which Tansu answers with PRODUCER_FENCED for
                    # ever; a fatal error likewise leaves only a new producer usable.
                    self.producer.purge()
                    self.producer = self._producer()
                    self._warm_metadata()
                    sent = confirmed
                    stop.wait(min(2.0 ** (failures - 1), 30.0))  # the same failure again and again: less often
                    break
                failures = 0
                confirmed = done.last
            if confirmed != position:
                position = confirmed
                last_report = time.monotonic()  # acknowledgements arrive: not slow
                conn.execute(
                    sql.SQL(
                        "UPDATE {} SET position = %s, published_at = now(), cluster_id = %s,"
                        " log_id = coalesce(log_id, %s) WHERE name = 'relay'"
                    ).format(self.table),
                    (position, self.cluster_id, uuid.uuid4().hex),
                )
            if caught_up and not in_flight:
                for _ in conn.notifies(timeout=1.0, stop_after=1):
                    pass  # the event store committed something: look again
            elif batch is None and len(self.producer) and time.monotonic() - last_report > 10:
                # Ten seconds without one acknowledgement, not merely messages in flight.
                log.warning("broker slow or unreachable; %d messages await acknowledgement", len(self.producer))
                last_report = time.monotonic()

    def _warm_metadata(self, stop: threading.Event | None = None) -> bool:
        """Whether the broker answered. librdkafka fetches an unknown topic's metadata lazily, holding the first
        messages for it about half a second; fetch it before publishing. A second at a time, for at most 10, looking
        at `stop` between: with the broker away, four topics of 10 s each kept Ctrl-C waiting 40 s."""
        deadline = time.monotonic() + 10
        for context in TOPIC_SUFFIXES:
            while True:
                try:
                    self.producer.list_topics(self.topic_prefix + context, timeout=1)
                    break
                except KafkaException as e:  # the broker may still be away; publishing will retry
                    if (stop is not None and stop.is_set()) or time.monotonic() > deadline:
                        log.warning("no metadata for %s yet: %s", context, e)
                        return False
        return True

    def _drain(self, in_flight: deque[_Batch], stop: threading.Event) -> None:
        """Wait until nothing is in flight (acknowledged or failed)."""
        while len(self.producer) and not stop.is_set():
            self.producer.flush(1.0)
        in_flight.clear()

    def _rewound(self, conn: psycopg.Connection[Any], to: int) -> None:
        """The position moved back to `to`, the request answered unless another came meanwhile (while in-flight
        messages drained, which can take minutes): that one stays, for the next look."""
        conn.execute(
            sql.SQL("UPDATE {} SET position = %s, rewind_to = CASE WHEN rewind_to = %s THEN NULL ELSE rewind_to END"
                    " WHERE name = 'relay'").format(self.table),
            (to, to),
        )  # fmt: skip

    def _rewind_requested(self, conn: psycopg.Connection[Any]) -> int | None:
        row = conn.execute(sql.SQL("SELECT rewind_to FROM {} WHERE name = 'relay'").format(self.table)).fetchone()
        return None if row is None or row[0] is None else int(row[0])


def current_log(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """The name of the log the relay is filling (None before it has published anything)."""
    ensure_position_table(conn, schema)
    row = conn.execute(sql.SQL("SELECT log_id FROM {} WHERE name = 'relay'").format(sql.Identifier(schema,
                       "relay_position"))).fetchone()  # fmt: skip
    return row[0] if row else None


def status(app: SkillcertApplication, database_url: str, schema: str) -> dict[str, Any]:
    """Where the relay stands: its position, the store's head, the lag in events and seconds."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        ensure_position_table(conn, schema)
        position, rewind_to, published_at = conn.execute(
            sql.SQL("SELECT position, rewind_to, published_at FROM {} WHERE name = 'relay'").format(
                sql.Identifier(schema, "relay_position")
            )
        ).fetchone()
        active = conn.execute(
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND classid = 0 AND objid = %s"
            " AND objsubid = 1 AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (lock_key(schema),),
        ).fetchone()[0]
    head = app.recorder.max_notification_id() or 0
    oldest = app.recorder.select_notifications(start=position + 1, limit=1) if head > position else []
    waiting_since = app.mapper.decode_state(oldest[0])["timestamp"] if oldest else None
    lag_seconds = None
    if waiting_since is not None:
        lag_seconds = round((datetime.now(UTC) - datetime.fromisoformat(waiting_since)).total_seconds(), 3)
    return {
        "active": bool(active),
        "position": position,
        "head": head,
        "lag_events": head - position,
        "lag_seconds": lag_seconds,  # age of the oldest event not yet acknowledged by the broker
        "oldest_unpublished_at": waiting_since,
        "last_published_at": published_at.isoformat() if published_at else None,
        "rewind_requested_to": rewind_to,
    }


class RewindRefused(ValueError):
    pass


def request_republish(app: SkillcertApplication, database_url: str, schema: str, after: int) -> str:
    """Republish every event after position `after`. A running relay picks the request up
    between batches; otherwise the next relay to start begins there."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        ensure_position_table(conn, schema)
        table = sql.Identifier(schema, "relay_position")
        with conn.transaction():
            (position,) = conn.execute(
                sql.SQL("SELECT position FROM {} WHERE name = 'relay' FOR UPDATE").format(table)
            ).fetchone()
            if after < 0:
                raise RewindRefused(f"position must be 0 or more, not {after}")
            if after > position:
                # Moving forward would skip events the broker has never had.
                raise RewindRefused(
                    f"position {after} is ahead of the relay ({position}): that would skip events; republish goes back only"
                )
            idle = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_key(schema),)).fetchone()[0]
            if idle:  # no relay running: move the position now
                conn.execute(
                    sql.SQL("UPDATE {} SET position = %s, rewind_to = NULL WHERE name = 'relay'").format(table),
                    (after,),
                )
            else:  # the running relay's, with a request it has not taken up yet: the earlier position of the two
                (after,) = conn.execute(
                    sql.SQL("UPDATE {} SET rewind_to = least(rewind_to, %s) WHERE name = 'relay' RETURNING rewind_to")
                    .format(table), (after,),
                ).fetchone()  # fmt: skip
                conn.execute(sql.SQL("NOTIFY {}").format(sql.Identifier(app.recorder.channel_name)))
    head = app.recorder.max_notification_id() or 0
    who = "the next relay to start" if idle else "the running relay"
    return (
        f"{who} republishes positions {after + 1}..{head} ({max(head - after, 0)} stored events, internal ones skipped)"
    )
