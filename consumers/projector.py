"""faust-streaming worker that keeps the read models current.

One agent per topic; each batch of messages is applied to every projection reading
that topic in one PostgreSQL transaction together with the offsets and versions (see
projections.store), so faust's at-least-once delivery has an exactly-once effect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiokafka
import faust
import faust.transport.drivers.aiokafka as faust_aiokafka

from consumers.rebuild import bring_up_to_date
from infra.bus.privacy import installation_key
from infra.settings import Settings
from infra.store.eventstore import SkillcertApplication
from projections import PROJECTIONS
from projections.store import Projection, apply_batch, connect

log = logging.getLogger("skillcert.consumers")
BATCH, BATCH_WAIT = 500, 0.02
FETCH_WAIT_MS = 100


class _Consumer(aiokafka.AIOKafkaConsumer):
    """faust asks the broker to hold an empty fetch for 1.5 s; a broker that holds it whole
    even when data arrives (Tansu does) then delays a quiet topic's next event by as much."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "fetch_max_wait_ms": FETCH_WAIT_MS})


faust_aiokafka.aiokafka.AIOKafkaConsumer = _Consumer  # type: ignore[misc]


def build_app(settings: Settings, database_url: str, bootstrap: str) -> faust.App:
    app = faust.App(
        f"{settings.topic_prefix}projections",
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=False,  # the relay creates the topics
        consumer_auto_offset_reset="earliest",
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
    store.close()
    if rebuilt:
        log.warning("rebuilt from the event store: %s", ", ".join(rebuilt))

    by_topic: dict[str, list[Projection]] = {}
    for p in PROJECTIONS:
        for suffix in p.topics:
            by_topic.setdefault(settings.topic_prefix + suffix, []).append(p)

    for topic_name, projections in by_topic.items():
        _add_agent(app, topic_name, projections, database_url, settings.db_schema)
    return app


def _add_agent(app: faust.App, topic_name: str, projections: list[Projection], database_url: str, schema: str) -> None:
    topic = app.topic(topic_name, internal=False)
    conn = connect(database_url, schema)

    def apply_all(events: list[Any]) -> None:
        batch = [(e.message.tp.partition, e.message.offset, json.loads(e.value)) for e in events]
        apply_batch(conn, projections, topic_name, batch)

    async def project(stream: Any) -> None:
        # Batches of up to BATCH messages, or whatever came within BATCH_WAIT: one transaction
        # each, so a busy topic costs one commit per batch rather than one per message.
        async for events in stream.take_events(BATCH, within=BATCH_WAIT):
            # psycopg is synchronous; one agent applies one batch at a time, in order.
            await asyncio.to_thread(apply_all, events)

    app.agent(topic, name=f"project-{topic_name}")(project)


def run_worker(settings: Settings, database_url: str, bootstrap: str) -> None:
    app = build_app(settings, database_url, bootstrap)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
