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
    CanSnapshotAggregate,
    datetime_now_with_tzinfo,
)
from eventsourcing.utils import get_topic, resolve_topic
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


class Snapshot(DomainEvent, CanSnapshotAggregate[UUID]):
    """An aggregate's state at a version, for an aggregate whose history grows without bound (a plan
    taking 100,000 seats): loading it reads the latest snapshot and only the events after it. The
    aggregate says what its state is (snapshot_state, a JSON-able dict) and how to restore it
    (restore_state), so the snapshot is as small as that state and never a copy of its history."""

    topic: str
    state: dict[str, Any]

    @classmethod
    def take(cls, aggregate: Any) -> Snapshot:
        return cls(originator_id=aggregate.id, originator_version=aggregate.version, topic=get_topic(type(aggregate)),
                   state=aggregate.snapshot_state())  # fmt: skip

    def mutate(self, _: None) -> Any:
        cls = resolve_topic(self.topic)
        aggregate = object.__new__(cls)
        aggregate.__dict__.update(cls.restore_state(self.state))
        aggregate.__dict__.update(_id=self.originator_id, _version=self.originator_version, _pending_events=[],
                                  _created_on=self.timestamp, _modified_on=self.timestamp)  # fmt: skip
        return aggregate
