"""faust-streaming worker that keeps the read models current.

One agent per topic; each batch of messages is applied to every projection reading that topic in
one PostgreSQL transaction together with their versions and offsets (projections.store), so faust's
at-least-once delivery has an exactly-once effect.

What keeps it right when things go wrong:
- PostgreSQL's offsets are the only truth of where to resume: on every assignment the worker seeks
  each partition there. Kafka's own committed offsets are never used. Each offset is recorded with
  the name of the log it counts; the relay names a new log, before creating its topics, whenever it
  starts over on a new or emptied broker. Offsets of another log are forgotten and the partitions
  read from offset 0, at assignment and also mid-stream: the first batch that arrives after the
  relay named a new log makes the worker read the topic again from the start (it may have been
  reset into the new log without telling faust, which then drops what lies below its old offset).
  The version guards make the replay a no-op.
- A batch that cannot be applied (PostgreSQL away, a bug) is retried with backoff, never skipped;
  the stall and its cause are recorded where /projections shows them, and the connection is made
  again when it was lost. The agent does not move past the batch until it is applied.
- A message whose version jumps (the bus lost some) is preceded by the missing events, read from
  the event store.
- The worker never creates topics, not even by asking for their metadata: a topic a consumer's
  request made the broker create would have the broker's partition count, and would hide that the
  broker lost its topics. The relay creates them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import aiokafka
import aiokafka.client
import aiokafka.protocol.metadata
import faust
import faust.transport.drivers.aiokafka as faust_aiokafka
import psycopg
from faust.types import TP
from psycopg import sql

from consumers.rebuild import bring_up_to_date
from infra.bus.envelope import message as bus_message
from infra.bus.envelope import published
from infra.bus.privacy import installation_key
from infra.bus.relay import current_log
from infra.settings import Settings
from infra.store.eventstore import SkillcertApplication
from projections import PROJECTIONS
from projections.store import (
    Message,
    Projection,
    apply_batch,
    connect,
    decode,
    offsets_from_another_log,
    record_stall,
    resume_at,
)

log = logging.getLogger("skillcert.consumers")
BATCH, BATCH_WAIT = 500, 0.02
FETCH_WAIT_MS = 100
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between attempts at a batch that failed
# Attempts at a whole batch that lost a deadlock before it is taken apart. Batches of two topics, or of two partitions
# of one, take some rows in their messages' order (a session's count of certificates, a month's statistics): two
# meeting them in opposite orders deadlock, and PostgreSQL aborts one. Taken apart, its 500 messages were applied in
# 500 transactions, silently.
WHOLE_AGAIN = 3
LOST_A_RACE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)


class _Consumer(aiokafka.AIOKafkaConsumer):
    """faust asks the broker to hold an empty fetch for 1.5 s; a broker that holds it whole
    even when data arrives (Tansu does) then delays a quiet topic's next event by as much."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "fetch_max_wait_ms": FETCH_WAIT_MS})


class _NoAutoCreate(aiokafka.protocol.metadata.MetadataRequest):
    """aiokafka asks for topic metadata allowing the broker to create missing topics; never here."""

    def __init__(self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = None) -> None:
        super().__init__(topics, allow_auto_topic_creation=False)


faust_aiokafka.aiokafka.AIOKafkaConsumer = _Consumer  # type: ignore[misc]
aiokafka.client.MetadataRequest = _NoAutoCreate  # type: ignore[misc]


class Resume:
    """Where each assigned partition resumes: after the offset PostgreSQL recorded in the log the
    relay is filling; from the start when there is none."""

    def __init__(self, database_url: str, schema: str, by_topic: dict[str, list[Projection]]) -> None:
        self.database_url, self.schema, self.by_topic = database_url, schema, by_topic

    def offsets(self, assigned: set[TP]) -> dict[TP, int]:
        """PostgreSQL down during a rebalance (restarting, say) is waited out, a line each time: the worker
        cannot seek anywhere else, and crashing would only start the rebalance over."""
        wait = 1.0
        while True:
            try:
                return self._offsets(assigned)
            except psycopg.OperationalError as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                log.warning("PostgreSQL unavailable while resuming partitions (%s); trying again in %.0f s", reason,
                            wait)  # fmt: skip
                time.sleep(wait)
                wait = min(wait * 2, 10.0)

    def _offsets(self, assigned: set[TP]) -> dict[TP, int]:
        with connect(self.database_url, self.schema, autocommit=True) as conn:
            log_id = current_log(conn, self.schema)
            offsets = {tp: 0 for tp in assigned}
            for topic in {tp.topic for tp in assigned}:
                with conn.transaction():
                    if offsets_from_another_log(conn, self.by_topic.get(topic, []), topic, log_id):
                        log.warning("%s: the relay has started a new log since these offsets were recorded (a new or "
                                    "emptied broker); reading it again from the start", topic)  # fmt: skip
                    reached = resume_at(conn, self.by_topic.get(topic, []), topic, log_id)
                for tp in assigned:
                    if tp.topic == topic and tp.partition in reached:
                        offsets[tp] = reached[tp.partition] + 1
        return offsets


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    resume: Resume  # set by build_app

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Called by faust after every rebalance: seek to PostgreSQL's offsets, not Kafka's."""
        consumer = self._ensure_consumer()
        assigned = {TP(tp.topic, tp.partition) for tp in consumer.assignment()}
        # Once per rebalance, so an operator running several workers sees who reads what.
        by_topic: dict[str, list[int]] = {}
        for tp in sorted(assigned):
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        log.warning("this worker now reads %d partitions: %s", len(assigned),
                    "; ".join(f"{t} {','.join(map(str, ps))}" for t, ps in by_topic.items()) or "none")  # fmt: skip
        offsets = await asyncio.to_thread(self.resume.offsets, assigned)

        def seek() -> None:
            for tp, offset in offsets.items():
                consumer.seek(aiokafka.TopicPartition(tp.topic, tp.partition), offset)

        await self.call_thread(seek)
        return offsets


class _FaustConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


faust_aiokafka.Transport.Consumer = _FaustConsumer  # type: ignore[misc]


class Applier:
    """One agent's connection to PostgreSQL and its patience: a batch is applied, however many
    attempts it takes, or the worker is stopping."""

    def __init__(self, database_url: str, schema: str, topic: str, projections: list[Projection],
                 store: SkillcertApplication, key: bytes, stopping: threading.Event) -> None:  # fmt: skip
        self.database_url, self.schema, self.topic, self.projections = database_url, schema, topic, projections
        self.store, self.key, self.stopping = store, key, stopping
        self.conn: psycopg.Connection[Any] | None = None
        self.events = sql.Identifier(schema, store.recorder.events_table_name)  # type: ignore[attr-defined]
        self.log_query = sql.SQL("SELECT log_id FROM {} WHERE name = 'relay'").format(
            sql.Identifier(schema, "relay_position"))  # fmt: skip
        # After the relay started a new log: the partitions read from its offset 0 since. Until a
        # partition has been, its offsets are not recorded (a message still buffered from the old log
        # must not be taken for a place in the new one).
        self.restarted: set[int] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self.conn is None or self.conn.closed or self.conn.broken:
            if self.conn is not None:
                self.conn.close()
            self.conn = connect(self.database_url, self.schema)
        return self.conn

    def apply(self, batch: list[tuple[int, int, Message]]) -> bool:
        """Apply the batch, however many attempts it takes (or until the worker stops). When it fails, the
        messages before the one at fault are applied one by one and that one is retried with backoff,
        recorded as the projection's stall. True when the relay has started a new log since this topic's
        offsets were recorded: the caller reads the topic again from the start."""
        wait, attempts, changed, pending, again = RETRY_FIRST, 0, False, batch, 0
        while True:
            try:
                changed |= self._apply(pending)
                if attempts:
                    log.warning("%s: applied after %d failed attempts", self.topic, attempts)
                return changed
            except LOST_A_RACE as e:
                error = e
                if again < WHOLE_AGAIN:  # lost to another transaction, not a message at fault: whole again
                    again += 1
                    log.warning("%s: a batch of %d lost a deadlock to another worker's; applying it again (%d)",
                                self.topic, len(pending), again)  # fmt: skip
                    self.stopping.wait(random.uniform(0, 0.05 * again))  # apart, so as not to meet again
                    continue
            except Exception as e:  # anything: the batch is retried, never skipped
                error = e
            for i, one in enumerate(pending):  # which message is at fault? apply those before it
                try:
                    changed |= self._apply([one])
                except Exception as e:
                    error, pending = e, pending[i:]
                    break
            else:
                return changed  # it was not a message: applied one by one after all
            attempts += 1
            partition, offset, first = pending[0]
            why = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            log.error("%s: cannot apply %s at position %s (attempt %d): %s; retrying in %.1f s", self.topic,
                      first.get("type"), first.get("position"), attempts, why, wait)  # fmt: skip
            self._record(partition, offset, first, why)
            if self.stopping.wait(wait):
                return changed  # stopping: the rest is not applied, so the next start resumes before it
            wait = min(wait * 2, RETRY_MAX)

    def _apply(self, batch: list[tuple[int, int, Message]]) -> bool:
        conn = self._connection()
        with conn.transaction():
            row = conn.execute(self.log_query).fetchone()
            log_id = row[0] if row else None
            changed = offsets_from_another_log(conn, self.projections, self.topic, log_id)
        if changed:
            self.restarted = set()
        skip: frozenset[int] = frozenset()
        if self.restarted is not None:
            self.restarted |= {p for p, offset, _ in batch if offset == 0}
            skip = frozenset(p for p, _, _ in batch if p not in self.restarted)
        apply_batch(conn, self.projections, self.topic, batch, fill=self.fill, log_id=log_id, skip_offsets=skip)
        return changed

    def _record(self, partition: int, offset: int, first: Message, why: str) -> None:
        try:
            conn = self._connection()
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()
            record_stall(conn, self.projections, self.topic, partition, offset, first, why)
        except psycopg.Error:
            if self.conn is not None:
                self.conn.close()  # PostgreSQL is away: the next attempt reconnects
            self.conn = None

    def fill(self, aggregate_id: str, after: int, before: int) -> list[Message]:
        """The events of one aggregate between two versions, as the bus would carry them, from the store."""
        query = sql.SQL("SELECT notification_id, topic, state FROM {} WHERE originator_id = %s"
                        " AND originator_version > %s AND originator_version < %s ORDER BY originator_version")  # fmt: skip
        with connect(self.database_url, self.schema, autocommit=True) as conn:
            rows = conn.execute(query.format(self.events), (aggregate_id, after, before)).fetchall()
        log.warning("%s: versions %d..%d of %s never arrived on the bus; applying them from the event store",
                    self.topic, after + 1, before - 1, aggregate_id)  # fmt: skip
        decode_state = self.store.mapper.decode_bytes  # type: ignore[attr-defined]
        return [decode(bus_message(topic, n, decode_state(bytes(state)), self.key)[2])
                for n, topic, state in rows if published(topic) is not None]  # fmt: skip


def build_app(settings: Settings, database_url: str, bootstrap: str, stopping: threading.Event) -> faust.App:
    from infra.bus.kafka import MAX_MESSAGE_BYTES, faust_credentials

    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{settings.topic_prefix}projections",
        broker=f"kafka://{bootstrap}",
        broker_credentials=faust_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        datadir=str(settings.data_dir / "faust"),  # not the working directory
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # the relay creates the topics
        topic_disable_leader=True,  # no leader-only work here; its topic would be one more to create
        consumer_auto_offset_reset="earliest",
        consumer_max_fetch_size=MAX_MESSAGE_BYTES,  # a partition's fetch holds at least the largest message
        consumer_metadata_max_age_ms=5000,  # notice new or recreated topics within seconds
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
    )
    # New or changed projections are rebuilt from the event store before consuming: the
    # group's committed offsets are past the history they lack.
    store = SkillcertApplication(database_url, settings.db_schema)
    key = installation_key(database_url, settings.db_schema, settings.pseudonym_key)
    with connect(database_url, settings.db_schema) as setup:
        rebuilt = bring_up_to_date(setup, PROJECTIONS, store, key)
    if rebuilt:
        log.warning("rebuilt from the event store: %s", ", ".join(rebuilt))

    by_topic: dict[str, list[Projection]] = {}
    for p in PROJECTIONS:
        for suffix in p.topics:
            by_topic.setdefault(settings.topic_prefix + suffix, []).append(p)
    with connect(database_url, settings.db_schema, autocommit=True) as conn:
        current_log(conn, settings.db_schema)  # the relay's table, which the appliers read, exists
    _ConsumerThread.resume = Resume(database_url, settings.db_schema, by_topic)
    for topic_name, projections in by_topic.items():
        applier = Applier(database_url, settings.db_schema, topic_name, projections, store, key, stopping)
        _add_agent(app, topic_name, applier)
    return app


def _add_agent(app: faust.App, topic_name: str, applier: Applier) -> None:
    topic = app.topic(topic_name, internal=False)

    async def project(stream: Any) -> None:
        # Batches of up to BATCH messages, or whatever came within BATCH_WAIT: one transaction
        # each, so a busy topic costs one commit per batch rather than one per message.
        async for events in stream.take_events(BATCH, within=BATCH_WAIT):
            batch = [(e.message.tp.partition, e.message.offset, decode(e.value)) for e in events]
            # psycopg is synchronous; one agent applies one batch at a time, in order.
            try:
                changed = await asyncio.to_thread(applier.apply, batch)
            except asyncio.CancelledError:  # the worker is stopping: let a batch being retried go
                applier.stopping.set()
                raise
            if changed:
                mine = [tp for tp in app.consumer.assignment() if tp.topic == topic_name]
                log.warning("%s: the relay has started a new log (a new or emptied broker); reading partitions %s "
                            "again from the start", topic_name, sorted(tp.partition for tp in mine))  # fmt: skip
                for tp in mine:
                    await app.consumer.seek(tp, 0)

    app.agent(topic, name=f"project-{topic_name}")(project)


class Throttle(logging.Filter):
    """One line per kind of complaint per interval. While the broker is away, aiokafka says "Unable
    connect to node" ten times a second; an operator needs to read that once, with a count."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self.seen: dict[tuple[str, object], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("skillcert"):
            return True  # ours are already paced
        key = (record.name, record.msg)
        now = time.monotonic()
        last, hidden = self.seen.get(key, (0.0, 0))
        if now - last < self.every:
            self.seen[key] = (last, hidden + 1)
            return False
        self.seen[key] = (now, 0)
        if hidden:
            record.msg = f"{record.msg} ({hidden} more like this in the last {self.every:.0f} s)"
        return True


def run_worker(settings: Settings, database_url: str, bootstrap: str) -> None:
    app = build_app(settings, database_url, bootstrap, threading.Event())
    throttle = Throttle()

    @app.task
    async def pace_logs() -> None:  # once the worker has set up its log handlers
        for handler in logging.root.handlers:
            handler.addFilter(throttle)

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    if not sys.stdout.isatty():  # its spinner's cursor codes and backspaces went into `up`'s log (an outside review)
        worker.spinner = None
    worker.execute_from_commandline()
