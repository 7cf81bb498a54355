"""Events on the bus: CloudEvents 1.0 structured JSON, one topic per context.

The envelope id is derived from aggregate id and version, so a republished event
keeps its id and consumers can deduplicate by it.
"""

from __future__ import annotations

import json
import re
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

SPEC_VERSION = "1.0"
TYPE_PREFIX = "cn.skillcert"

# Aggregate class -> context (topic suffix). Guard aggregates are internal: not published.
CONTEXTS: dict[str, str | None] = {
    "domain.institution:Institution": "registrations",
    "domain.plan:EvaluationPlan": "registrations",
    "domain.registration:Registration": "registrations",
    "domain.registration:Alias": None,
    "domain.plan:RegistrationCode": None,
    "domain.exam:ExamSession": "exams",
    "domain.exam:Sitting": "exams",
    "domain.certificate:Certificate": "certificates",
    "domain.certificate:SerialCounter": None,  # the certificate numbers travel on Certificate.Issued
    "domain.stock:BlankStock": "stock",
}
TOPIC_SUFFIXES = sorted({c for c in CONTEXTS.values() if c})


def topic_names(prefix: str) -> list[str]:
    return [prefix + s for s in TOPIC_SUFFIXES]


def split_topic(event_topic: str) -> tuple[str, str]:
    """'domain.registration:Registration.Submitted' -> ('domain.registration:Registration', 'Submitted')."""
    aggregate, _, name = event_topic.rpartition(".")
    return aggregate, name


def event_type(event_topic: str) -> str:
    aggregate, name = split_topic(event_topic)
    kind = aggregate.rpartition(":")[2]
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
    return f"{TYPE_PREFIX}.{snake}.{re.sub(r'(?<!^)(?=[A-Z])', '_', name).lower()}.v1"


def event_id(aggregate_id: UUID, version: int) -> str:
    return str(uuid5(NAMESPACE_URL, f"skillcert:event:{aggregate_id}:{version}"))


def context_of(event_topic: str) -> str | None:
    return CONTEXTS.get(split_topic(event_topic)[0])


def envelope(event_topic: str, position: int, state: dict[str, Any]) -> dict[str, Any]:
    context = context_of(event_topic)
    aggregate_id = UUID(state["originator_id"])
    version = int(state["originator_version"])
    actor = state.get("actor") or {}
    data = {k: v for k, v in state.items() if k not in ("originator_topic",)}
    return {
        "specversion": SPEC_VERSION,
        "id": event_id(aggregate_id, version),
        "source": f"/skillcert/{context}",
        "type": event_type(event_topic),
        "subject": str(aggregate_id),
        "time": state["timestamp"],
        "datacontenttype": "application/json",
        "aggregateid": str(aggregate_id),
        "aggregateversion": version,
        "position": position,
        "actorid": actor.get("id", ""),
        "actorrole": actor.get("role", ""),
        "data": data,
    }


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()
