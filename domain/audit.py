"""Checkpoints of the event history: where the hash chain stood at a position. Published on the
bus, so that a holder outside the system can later show that the history was rewritten."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field

from domain.errors import InvalidInput
from domain.model import Actor, Aggregate


def checkpoint_id(position: int) -> UUID:
    # One checkpoint per position: recording the same one twice collides in the event store.
    return uuid5(NAMESPACE_URL, f"skillcert:checkpoint:{position}")


class Checkpoint(Aggregate):
    class Recorded(Aggregate.Created):
        actor: Actor
        position: int = Field(description="the last position of the notification log it covers")
        log_hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="the log's chain head at that position")
        events: int = Field(description="events stored up to that position")

    @classmethod
    def record(cls, actor: Actor, position: int, log_hash: str, events: int) -> Checkpoint:
        if position < 1 or len(log_hash) != 64:
            raise InvalidInput([("position", "a checkpoint covers at least one chained event")])
        return cls._create(
            cls.Recorded, id=checkpoint_id(position), actor=actor, position=position, log_hash=log_hash, events=events
        )

    @event(Recorded)
    def __init__(self, actor: Actor, position: int, log_hash: str, events: int) -> None:
        self.position = position
        self.log_hash = log_hash
        self.events = events
