"""Base classes: pydantic domain events on mutable aggregates.

Follows the eventsourcing library's aggregate8 example (pydantic events, verb
methods decorated with @event), which the 9.5 wheel does not ship. Every event
carries the actor who caused it; its timestamp says when.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.domain import (
    BaseAggregate,
    CanInitAggregate,
    CanMutateAggregate,
    datetime_now_with_tzinfo,
)
from pydantic import BaseModel, ConfigDict, Field


class Immutable(BaseModel):
    # Serialised events always carry every field, defaults included: the schema says so.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_serialization_defaults_required=True)


class Role(StrEnum):
    SYSTEM = "system"
    INSTITUTION_STAFF = "institution_staff"
    PROVINCIAL_CENTRE = "provincial_centre"
    HR_DEPARTMENT = "hr_department"  # where the institution is filed; approves corrections (profile T)
    ASSOCIATION = "association"  # 协会: checks a profile S correction against the national network (000 二3)
    AUDITOR = "auditor"
    CANDIDATE = "candidate"


class Actor(Immutable):
    """Who caused an event: the audit trail is the event stream itself."""

    id: str = Field(min_length=1, max_length=100)
    role: Role
    institution_id: UUID | None = None
    jurisdiction: str | None = Field(
        None,
        pattern=r"^\d{2}$",
        description="the filing region an HR department or skills centre acts for (004 table 2)",
    )
    request_id: str = Field(default_factory=lambda: uuid4().hex, max_length=100)


class DomainEvent(Immutable):
    originator_id: UUID
    originator_version: int
    timestamp: datetime = Field(default_factory=datetime_now_with_tzinfo)


class Aggregate(BaseAggregate[UUID]):
    """Aggregates take the actor on every command; it goes on every event."""

    @staticmethod
    def create_id(*_: Any, **__: Any) -> UUID:
        return uuid4()

    class Event(DomainEvent, CanMutateAggregate[UUID]):
        actor: Actor

    class Created(Event, CanInitAggregate[UUID]):
        originator_topic: str
