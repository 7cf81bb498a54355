"""The event store: eventsourcing on PostgreSQL with pydantic events.

Every application service shares one events table (name "skillcert"), so the
notification log is one total order across all contexts.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any, ClassVar, cast

import orjson
import psycopg
from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from pydantic import BaseModel

from domain.certificate import SerialCounter
from domain.errors import Conflict
from domain.exam import ExamSession
from domain.model import Aggregate, Snapshot
from domain.plan import EvaluationPlan
from domain.stock import BlankStock

log = logging.getLogger("skillcert.store")
SNAPSHOT_EVERY = 50  # events between snapshots of an aggregate that grows without bound
# The most an event may hold, as stored JSON: published with its ID numbers pseudonymised, it stays under the bus's
# message limit (infra.bus.kafka.MAX_MESSAGE_BYTES); the results of a session of 10,000 candidates take about 2.7 MB
# (3.7 published), so a session of more than about 15,000 cannot report its results in one.
# Before, an event too large for the bus stopped the relay at it, and `skillcert up` with it (an outside review).
MAX_EVENT_BYTES = 4 * 1024 * 1024

# Stored in the clear: they hold no personal data, and whoever verifies the chain (an auditor with a
# read-only role and no key) must read them.
CLEAR = frozenset({"domain.audit:Checkpoint.Recorded"})


class PydanticMapper(Mapper):
    """Stores an event as its JSON-mode dump; rebuilds it through pydantic validation."""

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        # Plain JSON (mode="json" leaves nothing for the transcoder's type hooks); orjson is
        # several times faster than the transcoder's json module, and the relay reads every event.
        data = orjson.dumps(cast(BaseModel, domain_event).model_dump(mode="json"))
        topic = get_topic(type(domain_event))
        if len(data) > MAX_EVENT_BYTES and not isinstance(domain_event, Snapshot):
            raise Conflict(f"this would record an event ({topic.rpartition(':')[2]}) of {len(data):,} bytes, more than "
                           f"the {MAX_EVENT_BYTES:,} an event may hold: the bus carries each event as one message "
                           "(docs/bus.md); split what it records", field="body")  # fmt: skip
        if self.compressor:
            data = self.compressor.compress(data)
        if self.cipher and topic not in CLEAR:
            data = self.cipher.encrypt(data)
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=topic,
            state=data,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        # Validated from the JSON itself, not from a dict parsed first: pydantic-core builds the event
        # without the intermediate objects. Loading an exam session of 200 sittings took 0.91 of the time
        # (medians, 2026-11-26); a registration, the same. tests/test_mapper.py holds the two ways equal.
        return resolve_topic(stored_event.topic).model_validate_json(self.plaintext(stored_event.state))

    def decode_state(self, stored_event: StoredEvent) -> dict[str, Any]:
        return self.decode_bytes(stored_event.state)

    def decode_bytes(self, data: bytes) -> dict[str, Any]:
        """A stored event's state as a dict, without building the event."""
        return orjson.loads(self.plaintext(data))

    def plaintext(self, data: bytes) -> bytes:
        """A stored event's state as the JSON it was written as."""
        if self.cipher:
            data = self.cipher.decrypt(data)
        if self.compressor:
            data = self.compressor.decompress(data)
        return data


def eventstore_env(database_url: str, schema: str) -> dict[str, str]:
    """eventsourcing's POSTGRES_* settings from a libpq URL (TCP or socket directory)."""
    info = conninfo_to_dict(database_url)
    return {
        "PERSISTENCE_MODULE": "infra.store.recorder:Factory",  # one-statement saves (see there)
        "MAPPER_TOPIC": get_topic(PydanticMapper),
        "POSTGRES_DBNAME": str(info.get("dbname") or "postgres"),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or "5432"),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": "2",
        "POSTGRES_MAX_OVERFLOW": "30",
        "POSTGRES_CONNECT_TIMEOUT": "10",
        # A session idle inside a transaction for this long (a client that stopped mid-way) is ended
        # by the server, releasing whatever it held. (Dead pooled connections: recorder.check_idle.)
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
    }


def serialise_ddl(conn: Any) -> None:
    """Inside a transaction: processes starting together would race on CREATE ... IF NOT EXISTS."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('skillcert-ddl'))")


class SkillcertApplication(Application):
    name = "skillcert"  # one table, one notification log for every context
    env: ClassVar[dict[str, str]] = {"IS_SNAPSHOTTING_ENABLED": "n"}
    # Aggregates whose streams grow without bound get snapshots (domain.model.Snapshot, in the table
    # skillcert_snapshots, encrypted like the events): loading one reads the latest snapshot and at most
    # this many events after it, so a registration costs the same in a plan of 10 or of 100,000.
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {
        EvaluationPlan: SNAPSHOT_EVERY,
        SerialCounter: SNAPSHOT_EVERY,
        ExamSession: SNAPSHOT_EVERY,
        BlankStock: 4 * SNAPSHOT_EVERY,  # its state grows with the forms used: fewer, larger snapshots
    }

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """The library's save, without its per-object `isinstance` checks against runtime protocols
        (DomainEventProtocol, CollectEventsProtocol), which cost about 15 µs each on Python 3.11 (cProfile
        of benchmarks.issuance, which inflates them). Only our aggregates take this way; the library's
        deprecated `notify`, a no-op nothing here overrides, is not called."""
        if not all(isinstance(o, Aggregate) for o in objs):
            return super().save(*objs, **kwargs)
        processing_event: ProcessingEvent[Any] = ProcessingEvent()
        for aggregate in objs:
            processing_event.events.extend(aggregate.collect_events())
            processing_event.aggregates[aggregate.id] = aggregate
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _take_snapshots(self, processing_event: Any) -> None:
        # After the events are saved: a snapshot that cannot be stored costs speed, never the command.
        try:
            super()._take_snapshots(processing_event)
        except Exception as e:  # noqa: BLE001
            log.warning(
                "a snapshot was not stored (%s: %s); loading replays more events until the next one",
                type(e).__name__,
                str(e).splitlines()[0] if str(e) else "",
            )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = SkillcertApplication.name  # the library would name a table after each subclass

    def __init__(self, database_url: str, schema: str = "public") -> None:
        from infra.store import chain, keys, secrets  # they use serialise_ddl from here

        # One process at a time creates the tables, installs the chain and makes the first data key:
        # processes starting together would race on CREATE ... IF NOT EXISTS.
        with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
            serialise_ddl(conn)
            super().__init__(env=eventstore_env(database_url, schema))
            self.schema = schema
            chain.install(conn, schema, self.recorder.events_table_name)  # type: ignore[attr-defined]
            self.mapper.cipher = keys.cipher_for(conn, database_url, schema)
            self.database_url = database_url
            events = self.recorder.events_table_name  # type: ignore[attr-defined]
            self.id_key = secrets.registration_id_key(conn, self.mapper.cipher, schema, events)
        self.log_query = sql.SQL(
            "SELECT notification_id, topic, state FROM {} WHERE notification_id > %s AND notification_id <= %s"
            " ORDER BY notification_id LIMIT %s"
        ).format(sql.Identifier(schema, events))

    def stored_rows(
        self, conn: psycopg.Connection[Any], after: int, limit: int, until: int | None = None
    ) -> list[tuple[int, str, bytes]]:
        """(position, event topic, stored state) of the log after `after`, up to `until`, in order.
        Read raw, with binary results: the library's Notification objects and psycopg's decoding of
        bytea as hex text cost more per event than decrypting it. Readers of the whole log (the
        relay, a rebuild) use this; decode a state with mapper.decode_bytes."""
        if conn not in _reading_the_log:
            # The log is read by its notification id's index, in order, whatever the statistics say. Without
            # them (a store nobody has analysed: autovacuum off, or not yet come by after a bulk load) the
            # planner expects a range to hold few rows, gathers all of them from the heap and sorts them for
            # the limit: each batch then reads everything after it, and reading the log costs its length
            # squared (4.0 µs a row rather than 1.4 over 101,130 events). With sorting off one plan is left.
            # Set for the session where the connection is the reader's own (autocommit, as the relay's and
            # a rebuild's are); inside a transaction, for that transaction, which a rollback would undo.
            if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
                conn.execute("SET enable_sort = off")
                _reading_the_log.add(conn)
            else:
                conn.execute("SET LOCAL enable_sort = off")
        with conn.cursor(binary=True) as cur:
            return cur.execute(self.log_query, (after, until or _LAST, limit), prepare=True).fetchall()


_LAST = 2**63 - 1  # the largest bigint: no upper bound
_reading_the_log: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()  # connections set up for it
