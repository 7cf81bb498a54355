"""Group commit: requests that arrive together are run as one batch, each caller getting its own outcome.

Two users. Saves (infra.store.recorder): every save is a transaction that takes the event store's
table lock and waits for its commit to reach the disk, one after another; saves arriving together go
into one transaction instead. Registrations into one plan (infra.services.registrations): they all
change the plan (its count of places), so saved one by one they race for one aggregate version and all
but one lose and load again (32 clients registering at once got about 21 a second,
benchmarks.http_commands); arriving together, they are decided on one load of the plan and saved at once.
Other API workers decide batches on the same plan: a batch holds the plan's lock (`hold`), taken before
the batch is gathered, so what arrives while a worker waits for it is decided with it.

The first caller for a key becomes its leader: it takes every request waiting for that key, runs them
as one batch, hands each caller its own outcome, and goes on while more wait. Callers arriving while a
batch runs form the next one, so nobody waits for a timer: alone, a request is a batch of one.

A leader leads only until its own request is answered, then appoints the next caller waiting, so
under a steady stream no caller serves everyone else's requests for ever. The batch function
decides what each request's outcome is; a request that fails fails alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class _Slot(Generic[Req]):
    request: Req
    ready: threading.Event = field(default_factory=threading.Event)  # answered, or appointed leader
    lead: bool = False
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Queue:
    pending: list[_Slot[Any]] = field(default_factory=list)
    leading: bool = False


class GroupCommit(Generic[Req, Res]):
    def __init__(
        self,
        run: Callable[[Hashable, list[Req]], list[Res | BaseException]],
        most: int = 200,
        hold: Callable[[Hashable], AbstractContextManager[Any]] | None = None,
    ) -> None:
        """`run(key, requests)` returns one outcome per request, in order: a result, or the exception
        that request's caller is to see. `most` bounds a batch (and so one save's size). `hold(key)`, if
        given, is entered before a batch is gathered and left after it has run (a lock other processes
        take too): what arrives while the leader waits for it joins the batch, and if it cannot be
        entered, the batch fails with its error."""
        self._run, self._most, self._hold = run, most, hold
        self._lock = threading.Lock()
        self._queues: dict[Hashable, _Queue] = {}

    def submit(self, key: Hashable, request: Req) -> Res:
        slot: _Slot[Req] = _Slot(request)
        with self._lock:
            queue = self._queues.setdefault(key, _Queue())
            queue.pending.append(slot)
            if not queue.leading:
                queue.leading = slot.lead = True
        if not slot.lead:
            try:
                slot.ready.wait()
            except BaseException:  # interrupted (Ctrl-C in a command-line process): leave no one waiting on it
                self._leave(key, queue, slot)
                raise
        if not slot.done:  # appointed leader
            self._lead(key, queue, slot)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[no-any-return]

    def _leave(self, key: Hashable, queue: _Queue, slot: _Slot[Any]) -> None:
        """A caller gone while it waited: out of the queue if no batch took it yet, and if it was appointed
        leader meanwhile, the lead handed on. Left in the queue, it was appointed and never led, and every later
        caller for the key waited for ever (for the store's saves, every save of the process)."""
        with self._lock:
            if slot in queue.pending:
                queue.pending.remove(slot)
        if slot.lead and not slot.done:
            self._hand_over(key, queue)

    def waiting(self, key: Hashable) -> int:
        """Requests for `key` not yet taken into a batch."""
        with self._lock:
            queue = self._queues.get(key)
            return len(queue.pending) if queue is not None else 0

    def _take(self, queue: _Queue) -> list[_Slot[Any]]:
        """The next batch: what waits, up to `most`."""
        with self._lock:
            batch, queue.pending = queue.pending[: self._most], queue.pending[self._most :]
        return batch

    def _lead(self, key: Hashable, queue: _Queue, mine: _Slot[Req]) -> None:
        batch: list[_Slot[Any]] = []
        try:
            while not mine.done:
                batch, outcomes = [], None
                try:
                    with self._hold(key) if self._hold is not None else nullcontext():
                        batch = self._take(queue)
                        try:
                            outcomes = self._run(key, [s.request for s in batch])
                        except BaseException as e:  # the whole batch: PostgreSQL away, a bug; every caller sees it
                            outcomes = [e] * len(batch)
                except BaseException as e:  # the hold could not be taken: the batch it would have held fails
                    if not batch:
                        batch = self._take(queue)
                    if outcomes is None:
                        outcomes = [e] * len(batch)
                if len(outcomes) != len(batch):  # a bug in `run`: told, not left waiting
                    outcomes = [RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")] * len(batch)
                for slot, outcome in zip(batch, outcomes, strict=True):
                    self._answer(slot, outcome, mine)
        finally:
            # Whatever stopped this leader, nobody it took is left waiting, and the key is led on.
            for slot in batch:
                if not slot.done:
                    self._answer(slot, RuntimeError("the batch's leader stopped before answering"), mine)
            self._hand_over(key, queue)

    @staticmethod
    def _answer(slot: _Slot[Any], outcome: Any, mine: _Slot[Any]) -> None:
        if isinstance(outcome, BaseException):
            # An interruption (KeyboardInterrupt, SystemExit) is the leader's own: the others are told it stopped.
            slot.error = outcome if slot is mine or isinstance(outcome, Exception) else RuntimeError(
                f"the batch's leader was interrupted ({type(outcome).__name__})")  # fmt: skip
        else:
            slot.result = outcome
        slot.done = True
        if slot is not mine:
            slot.ready.set()

    def _hand_over(self, key: Hashable, queue: _Queue) -> None:
        """The next caller waiting leads, and this one answers its own client; with none, the key is free."""
        with self._lock:
            if queue.pending:
                queue.pending[0].lead = True
                queue.pending[0].ready.set()
            else:
                queue.leading = False
                if self._queues.get(key) is queue:
                    del self._queues[key]
