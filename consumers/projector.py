"""faust-streaming worker that keeps the read models current.

One agent per topic; every message is applied to each projection reading that
topic in its own PostgreSQL transaction together with the offset (see
projections.store), so faust's at-least-once delivery has an exactly-once effect.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import faust

from infra.settings import Settings
from projections import PROJECTIONS
from projections.store import Projection, apply_message, connect, create_tables

log = logging.getLogger("skillcert.consumers")


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
    setup = connect(database_url, settings.db_schema)
    create_tables(setup, PROJECTIONS)
    setup.close()

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

    def apply_all(partition: int, offset: int, message: dict[str, Any]) -> None:
        for p in projections:
            apply_message(conn, p, topic_name, partition, offset, message)

    async def project(stream: Any) -> None:
        async for event in stream.events():
            message = json.loads(event.value)
            tp = event.message.tp
            # psycopg is synchronous; one agent applies one message at a time, in order.
            await asyncio.to_thread(apply_all, tp.partition, event.message.offset, message)

    app.agent(topic, name=f"project-{topic_name}")(project)


def run_worker(settings: Settings, database_url: str, bootstrap: str) -> None:
    app = build_app(settings, database_url, bootstrap)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()
