"""Events on the bus: CloudEvents 1.0, structured JSON in the Kafka binding, one topic per context.

The key is the aggregate id, so one aggregate's events stay in order. The event
id is derived from aggregate id and version, so a republished event keeps its id and
subscribers deduplicate by it. `data` is the domain event as published: personal data
reduced per infra.privacy.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from uuid import NAMESPACE_URL, UUID

import orjson
from eventsourcing.utils import resolve_topic

from infra.bus.privacy import POLICY, Plan, plan_for, redact

SPEC_VERSION = "1.0"
TYPE_PREFIX = "cn.skillcert"

# Aggregate class -> context (topic suffix). Guard aggregates are internal: not published.
CONTEXTS: dict[str, str | None] = {
    "domain.institution:Institution": "registrations",
    "domain.plan:EvaluationPlan": "registrations",
    "domain.registration:Registration": "registrations",
    "domain.registration:Alias": None,
    "domain.registration:IntegrityRecord": None,  # keyed by the ID number: never published
    "domain.plan:RegistrationCode": None,
    "domain.exam:ExamSession": "exams",
    "domain.exam:Sitting": "exams",
    "domain.certificate:Certificate": "certificates",
    "domain.certificate:SerialCounter": None,  # the certificate numbers travel on Certificate.Issued
    "domain.stock:BlankStock": "stock",
    "domain.stock:FormBlock": None,  # which institution received which serials: the receipts travel on BlankStock
    "domain.printing:PrintJob": None,  # which forms a batch booked: each form's fate travels on Certificate, BlankStock
    "domain.audit:Checkpoint": "audit",
}
TOPIC_SUFFIXES = sorted({c for c in CONTEXTS.values() if c})

# The published version of an event type, by event topic; absent means 1. Raise it when the
# published schema changes incompatibly (infra.bus.schemas refuses to overwrite such a change),
# and upcast stored events of the old shape in the mapper.
VERSIONS: dict[str, int] = {
    # v2: the witness of a destruction is no longer published: the stock topic carries no personal data.
    "domain.stock:BlankStock.FormsDestroyed": 2,
    # v2: what was found is no longer published on the wide certificates topic (`finding`, background data).
    "domain.certificate:Certificate.Revoked": 2,
}

# Published beside `data` in the envelope rather than in it.
NOT_IN_DATA = ("originator_topic",)


def topic_names(prefix: str) -> list[str]:
    return [prefix + s for s in TOPIC_SUFFIXES]


def split_topic(event_topic: str) -> tuple[str, str]:
    """'domain.registration:Registration.Submitted' -> ('domain.registration:Registration', 'Submitted')."""
    aggregate, _, name = event_topic.rpartition(".")
    return aggregate, name


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def event_type(event_topic: str) -> str:
    aggregate, name = split_topic(event_topic)
    kind = aggregate.rpartition(":")[2]
    return f"{TYPE_PREFIX}.{_snake(kind)}.{_snake(name)}.v{VERSIONS.get(event_topic, 1)}"


def event_id(aggregate_id: UUID | str, version: int) -> str:
    """uuid5(NAMESPACE_URL, "skillcert:event:<aggregate id>:<version>"), spelled out: the relay and a rebuild
    compute one per event, and the uuid module's objects cost twice what this does."""
    h = _EVENT_ID_PREFIX.copy()  # the namespace and the prefix hashed once
    h.update(f"{aggregate_id}:{version}".encode())
    x = h.hexdigest()
    # The version nibble is 5; the variant's two top bits are 10 (RFC 4122), leaving two of the hash's.
    return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"


_EVENT_ID_PREFIX = hashlib.sha1(NAMESPACE_URL.bytes + b"skillcert:event:")
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def context_of(event_topic: str) -> str | None:
    return CONTEXTS.get(split_topic(event_topic)[0])


@dataclass(frozen=True)
class Published:
    """How one kind of stored event goes on the bus."""

    context: str
    type: str
    plan: Plan
    source: str = field(init=False)  # the CloudEvent's source and dataschema, made once, not for every event
    dataschema: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", f"/skillcert/{self.context}")
        object.__setattr__(self, "dataschema", f"urn:skillcert:schema:{self.type}")


@cache
def published(event_topic: str) -> Published | None:
    """None for an internal event. Cached: the plan comes from the model's JSON Schema."""
    context = context_of(event_topic)
    if context is None:
        return None
    model = resolve_topic(event_topic)
    schema = model.model_json_schema(mode="serialization")
    return Published(context, event_type(event_topic), plan_for(schema, POLICY[context].carries))


HEADERS = [("content-type", b"application/cloudevents+json")]  # structured mode, JSON event format


def message(event_topic: str, position: int, state: dict[str, Any], key: bytes) -> tuple[str, bytes, bytes]:
    """(context, Kafka key, Kafka value) for one stored event, in the CloudEvents Kafka
    binding's structured mode: the value is the JSON event format, UTF-8; the key is the
    aggregate id (the binding's partitionkey). Built directly rather than through the SDK's
    objects, which cost more than the rest of the relay's work together; a test holds this
    to what the SDK builds and parses."""
    context, value = cloud_event(event_topic, position, state, key)
    return context, value["subject"].encode(), orjson.dumps(value)


def cloud_event(event_topic: str, position: int, state: dict[str, Any], key: bytes) -> tuple[str, dict[str, Any]]:
    """(context, the event as a dict): what `message` serialises. `state` is a stored event's state as
    decoded from JSON, so the dict holds only JSON's types and equals what a subscriber parses; a
    rebuild applies it as it is, without writing it out and parsing it back."""
    p = published(event_topic)
    if p is None:
        raise ValueError(f"{event_topic} is internal and never published")
    aggregate_id = state["originator_id"]
    version = state["originator_version"]
    actor = state.get("actor") or {}
    data = state
    if NOT_IN_DATA[0] in state:  # only creation events carry it
        data = state.copy()
        del data[NOT_IN_DATA[0]]
    if p.plan:
        data = redact(p.plan, data, key)
    return p.context, {
        "specversion": SPEC_VERSION,
        "id": event_id(aggregate_id, version),
        "source": p.source,
        "type": p.type,
        "subject": aggregate_id,
        "dataschema": p.dataschema,
        "time": state["timestamp"],  # RFC 3339, as pydantic wrote it
        "datacontenttype": "application/json",
        "aggregateid": aggregate_id,
        "aggregateversion": version,
        "position": position,
        "actorid": actor.get("id", ""),
        "actorrole": actor.get("role", ""),
        "data": data,
    }


def envelope(event_topic: str, position: int, state: dict[str, Any], key: bytes) -> dict[str, Any]:
    """The message as a subscriber parses it (for code that applies bus messages without a broker)."""
    return orjson.loads(message(event_topic, position, state, key)[2])
