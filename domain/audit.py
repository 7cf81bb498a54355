"""Checkpoints of the event history: where the hash chain stood at a position, signed by the
installation. Published on the bus, so that a holder outside the system can later show that the
history was rewritten or cut short; signed, so that a checkpoint nobody at the installation made is
told from one it did."""

from __future__ import annotations

from collections.abc import Callable
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
        signature: str = Field(
            "", pattern=r"^([0-9a-f]{128})?$", description="Ed25519 over signed_bytes(), by the installation's key"
        )
        public_key: str = Field("", pattern=r"^([0-9a-f]{64})?$", description="the key that signed it (hex)")

    @classmethod
    def record(cls, actor: Actor, position: int, log_hash: str, events: int, sign: Signer) -> Checkpoint:
        if position < 1 or len(log_hash) != 64:
            raise InvalidInput([("position", "a checkpoint covers at least one chained event")])
        signature, public_key = sign(signed_bytes(position, log_hash, events))
        return cls._create(
            cls.Recorded, id=checkpoint_id(position), actor=actor, position=position, log_hash=log_hash, events=events,
            signature=signature, public_key=public_key,
        )  # fmt: skip

    @event(Recorded)
    def __init__(self, actor: Actor, position: int, log_hash: str, events: int, signature: str = "",
                 public_key: str = "") -> None:  # fmt: skip
        self.position = position
        self.log_hash = log_hash
        self.events = events
        self.signature = signature
        self.public_key = public_key


# Signs bytes; returns (signature, public key), both hex. The installation's key lives outside the domain.
Signer = Callable[[bytes], tuple[str, str]]


def signed_bytes(position: int, log_hash: str, events: int) -> bytes:
    """What a checkpoint's signature covers, as bytes anyone can rebuild: docs/chain.md."""
    return f"skillcert-checkpoint/1|{position}|{log_hash}|{events}".encode()
