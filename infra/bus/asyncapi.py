"""The bus described for tools: an AsyncAPI 3.0 document generated from the same source as the
JSON Schemas (the domain models, the topic policy), committed as schemas/asyncapi.json and
checked for drift with them.

One channel per topic (its address is the default prefix's; a deployment's prefix changes only
that), one receive operation per channel (subscribers receive; only the relay sends), one message
per event type with its Kafka key, its content type and the committed schema of its payload.
Each channel states its audience and which classes of personal data it carries; each message,
which classes its fields hold.
"""

from __future__ import annotations

from typing import Any

from domain.personal import Personal
from infra.bus.envelope import TOPIC_SUFFIXES
from infra.bus.privacy import POLICY, personal_data_in
from infra.bus.schemas import PublicEvent, message_schema, public_events

VERSION = "3.0.0"
KAFKA_BINDING = "0.5.0"
CONTENT_TYPE = "application/cloudevents+json"
DEFAULT_PREFIX = "skillcert."


def _message_id(event: PublicEvent) -> str:
    # "cn.skillcert.certificate.issued.v1" -> "certificate.issued.v1": unique, and a valid component key.
    return event.type.removeprefix("cn.skillcert.")


def document() -> dict[str, Any]:
    events = public_events()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for event in events:
        schema = message_schema(event)
        classes = sorted(str(c) for c in personal_data_in(schema) if c is not Personal.NONE)
        messages[_message_id(event)] = {
            "name": event.type,
            "title": event.model.__qualname__,
            "summary": f"{event.model.__qualname__} on the {event.context} topic",
            "contentType": CONTENT_TYPE,
            "headers": {
                "type": "object",
                "properties": {"content-type": {"type": "string", "const": CONTENT_TYPE}},
            },
            "payload": {
                "schemaFormat": "application/schema+json;version=draft-2020-12",
                "schema": {"$ref": event.path},  # relative to this document: schemas/<context>/<type>.json
            },
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "format": "uuid", "description": "the aggregate id: one partition per aggregate, its events in order"},
                    "bindingVersion": KAFKA_BINDING,
                }
            },
            "x-personal": classes,
        }  # fmt: skip
    for context in TOPIC_SUFFIXES:
        policy = POLICY[context]
        mine = [e for e in events if e.context == context]
        refs = {_message_id(e): {"$ref": f"#/components/messages/{_message_id(e)}"} for e in mine}
        channels[context] = {
            "address": DEFAULT_PREFIX + context,
            "title": context,
            "description": f"Audience: {policy.audience}. {policy.why}.",
            "messages": refs,
            "bindings": {"kafka": {"topic": DEFAULT_PREFIX + context, "bindingVersion": KAFKA_BINDING}},
            "x-audience": policy.audience,
            "x-personal": sorted(str(c) for c in policy.carries),
        }
        operations[f"receive-{context}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{context}"},
            "summary": f"Subscribe to the {context} topic (one consumer group per downstream system)",
            "messages": [{"$ref": f"#/channels/{context}/messages/{m}"} for m in refs],
        }
    return {
        "asyncapi": VERSION,
        "info": {
            "title": "skillcert bus",
            "version": "1",
            "description": (
                "Events of occupational skill level certification (职业技能等级认定), published by the relay from "
                "the event store: CloudEvents 1.0 in structured JSON, keyed by aggregate id, each at least once "
                "(deduplicate by `id`). Subscribers must ignore fields they do not know. docs/bus.md is the "
                "contract in prose."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": {
            "embedded": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "the embedded broker of `skillcert up`; a production cluster is configured instead",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }
