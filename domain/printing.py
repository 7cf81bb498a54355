"""A batch print from booking to PDF: the forms a batch booked, and whether its PDF was made.

A batch books its forms, and only then renders their pages; a process killed in between (SIGKILL, the OOM killer, a
lost machine) leaves forms booked that never reached a printer. The job, saved in the same transaction as the
bookings, is what lets someone else find them and give them back: a job booked and never finished, whose process is
gone, is abandoned (infra.services.printing.return_abandoned). A guard, never published: the certificates' and the
stock's own events say what happened to each form."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import event

from domain.access import STAFF, require
from domain.errors import Conflict
from domain.model import Actor, Aggregate


class PrintJob(Aggregate):
    class Booked(Aggregate.Created):
        actor: Actor
        prints: list[tuple[UUID, int]]  # (certificate, form), in the PDF's page order

    class Finished(Aggregate.Event):
        pages: int

    class Abandoned(Aggregate.Event):
        reason: str

    @event(Booked)
    def __init__(self, actor: Actor, prints: list[tuple[UUID, int]]) -> None:
        self.prints = [(c, f) for c, f in prints]
        self.finished = False
        self.abandoned: str | None = None

    @classmethod
    def book(cls, actor: Actor, id: UUID, prints: list[tuple[UUID, int]]) -> PrintJob:
        require(actor, STAFF, "print certificates")
        return cls._create(cls.Booked, id=id, actor=actor, prints=prints)

    @property
    def open(self) -> bool:
        return not self.finished and self.abandoned is None

    def finish(self, actor: Actor) -> None:
        """The PDF was made: whatever happens to it now is for staff to record (spoiled, or not made)."""
        if self.abandoned is not None:
            raise Conflict(f"the forms of this batch were given back to stock while its PDF was being made "
                           f"({self.abandoned}): print the certificates again")  # fmt: skip
        if not self.finished:
            self._finished(actor, len(self.prints))

    @event(Finished)
    def _finished(self, actor: Actor, pages: int) -> None:
        self.finished = True

    def abandon(self, actor: Actor, reason: str) -> None:
        """The process making its PDF is gone and it never finished: its forms are given back (by the caller, with
        each certificate's print not made)."""
        if not self.open:
            raise Conflict("this print job is no longer open")
        self._abandoned(actor, reason)

    @event(Abandoned)
    def _abandoned(self, actor: Actor, reason: str) -> None:
        self.abandoned = reason
