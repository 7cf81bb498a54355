"""Kafka plumbing shared by the relay, the consumers, the subscriber and the tests.

Only the relay creates topics, with the configured partitions and replication; no client of ours
lets a request create one by asking about it. A topic the broker made on its own would have the
broker's defaults and would hide that the broker had lost its topics.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from infra.settings import Settings

log = logging.getLogger("skillcert.bus")


def client_config(s: Settings) -> dict[str, Any]:
    """Settings every librdkafka client of ours gets on top of its own: security.protocol, sasl.*,
    ssl.* (SKILLCERT_KAFKA_CLIENT_CONFIG)."""
    return dict(s.kafka_client_config)


def faust_credentials(s: Settings) -> Any:
    """The same security settings in the form faust (aiokafka) takes; None for a plaintext broker."""
    config = client_config(s)
    protocol = str(config.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    import ssl

    from faust.auth import SASLCredentials, SSLCredentials

    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=config.get("ssl.ca.location"))
        if config.get("ssl.certificate.location"):
            context.load_cert_chain(config["ssl.certificate.location"], config.get("ssl.key.location"),
                                    config.get("ssl.key.password"))  # fmt: skip
        if str(config.get("enable.ssl.certificate.verification", "true")).lower() == "false":
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if protocol.startswith("SASL"):
        return SASLCredentials(
            username=config.get("sasl.username"), password=config.get("sasl.password"),
            mechanism=config.get("sasl.mechanism", "PLAIN"), ssl_context=context,
        )  # fmt: skip
    return SSLCredentials(context)


# The largest message the bus carries: an event of at most infra.store.eventstore.MAX_EVENT_BYTES, published. Kafka's
# own default is 1 MB; the topics are made to take this, the relay's producer to send it, the worker to fetch it.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def ensure_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    replication: int = 1,
    min_insync_replicas: int | None = None,
    config: dict[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet and grow those with fewer partitions than asked
    (never shrink: Kafka cannot); returns those it created."""
    admin = AdminClient({**(config or {}), "bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics
    settings = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    if min_insync_replicas:
        settings["min.insync.replicas"] = str(min_insync_replicas)
    missing = [NewTopic(n, partitions, replication, config=settings) for n in names if n not in existing]
    # More partitions let more workers share a topic. An aggregate's key may then hash to another
    # partition than its earlier events: its next event can be read before them, and the workers
    # fill the gap from the event store (projections.store.apply_batch), so nothing is applied twice.
    grow = [NewPartitions(n, partitions) for n in names if n in existing and len(existing[n].partitions) < partitions]
    for name, future in admin.create_partitions(grow).items() if grow else []:
        try:
            future.result(timeout=10)
            log.warning("topic %s grown to %d partitions", name, partitions)
        except KafkaException as e:  # Tansu cannot; the topic works as it is, with fewer workers busy
            log.warning("could not grow topic %s to %d partitions, it keeps %d: %s", name, partitions,
                        len(existing[name].partitions), e.args[0].str())  # fmt: skip
    created = []
    if not missing:
        return created
    for name, future in admin.create_topics(missing).items():
        try:
            future.result(timeout=10)
            created.append(name)
        except KafkaException as e:
            if e.args[0].code() != e.args[0].TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"could not create topic {name}: {e}") from e
    return created


def topics_from(s: Settings) -> dict[str, Any]:
    """ensure_topics' arguments from the settings."""
    return {
        "partitions": s.topic_partitions,
        "replication": s.kafka_replication_factor,
        "min_insync_replicas": s.kafka_min_insync_replicas,
        "config": client_config(s),
    }
