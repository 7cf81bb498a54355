"""Group commit in the event store: saves arriving together share one transaction, and one that
conflicts fails alone (infra.store.recorder, infra.store.groupcommit)."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent

from infra.store.groupcommit import GroupCommit
from infra.store.recorder import FilesGone, Save


def test_sixty_racing_saves_share_transactions_and_each_conflict_fails_alone(service, database_url, schema):
    """60 threads save at once: 50 new aggregates of three events each, and 5 pairs that both claim
    version 1 of one aggregate. Every one of the 50 is stored whole, exactly one of each pair, the
    other is told IntegrityError; each caller gets its own events' positions; and there were fewer
    transactions than saves."""
    recorder = service.recorder
    topic = "tests:Thing.Happened"

    def events(aggregate: uuid.UUID, n: int, mark: bytes) -> list[StoredEvent]:
        return [StoredEvent(originator_id=aggregate, originator_version=v, topic=topic, state=mark + bytes([v]))
                for v in range(1, n + 1)]  # fmt: skip

    alone = [events(uuid.uuid4(), 3, b"alone") for _ in range(50)]
    contested = [uuid.uuid4() for _ in range(5)]
    pairs = [events(a, 1, side) for a in contested for side in (b"left", b"right")]
    saves = alone + pairs
    barrier = threading.Barrier(len(saves))

    def save(batch: list[StoredEvent]) -> object:
        barrier.wait()
        try:
            return recorder.insert_events(batch)
        except IntegrityError as e:
            return e

    with ThreadPoolExecutor(len(saves)) as pool:
        outcomes = list(pool.map(save, saves))
    with psycopg.connect(database_url) as conn:
        rows = {n: (o, v, bytes(s)) for n, o, v, s in conn.execute(
            f'SELECT notification_id, originator_id, originator_version, state FROM "{schema}".skillcert_events'
            " WHERE topic = %s", (topic,))}  # fmt: skip
        transactions = conn.execute(f'SELECT count(DISTINCT xmin::text) FROM "{schema}".skillcert_events'
                                    " WHERE topic = %s", (topic,)).fetchone()[0]  # fmt: skip
    for batch, outcome in zip(alone, outcomes[:50], strict=True):
        assert [rows[n] for n in outcome] == [(e.originator_id, e.originator_version, e.state) for e in batch]
    for k in range(5):
        left, right = outcomes[50 + 2 * k], outcomes[51 + 2 * k]
        assert sorted(isinstance(o, IntegrityError) for o in (left, right)) == [False, True], (left, right)
        [n] = left if not isinstance(left, IntegrityError) else right
        assert rows[n][2] == (b"left\x01" if not isinstance(left, IntegrityError) else b"right\x01")
    assert len(rows) == 50 * 3 + 5
    assert transactions < 50, transactions


def test_a_leader_answers_its_own_caller_and_hands_over_under_a_steady_stream():
    """Under a stream that never pauses, every caller is answered: a leader leads only until its own
    request is done, then the next caller waiting leads."""
    seen: list[int] = []

    def run(_: object, requests: list[int]) -> list[object]:
        time.sleep(0.002)  # a save's length, so callers queue up behind it
        seen.extend(requests)
        return [ValueError(r) if r % 7 == 0 else r * 2 for r in requests]

    group: GroupCommit[int, int] = GroupCommit(run, most=5)

    def call(r: int) -> object:
        try:
            return group.submit("k", r)
        except ValueError as e:
            return e

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(call, range(400)))
    assert sorted(seen) == list(range(400))
    assert all(isinstance(o, ValueError) if r % 7 == 0 else o == r * 2 for r, o in enumerate(outcomes))


def test_what_arrives_while_the_leader_waits_for_its_hold_joins_the_batch_and_a_hold_refused_fails_only_its_batch():
    """A hold (the plan's lock, taken by other processes too) is taken before the batch is gathered: the
    callers arriving while the leader waits for it are decided with it. A hold that cannot be taken fails
    the batch it would have held with its error, and the next batch goes on."""
    gate, refuse = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    @contextlib.contextmanager
    def hold(_: object) -> Iterator[None]:
        gate.wait(10)
        if refuse.is_set():
            refuse.clear()
            raise TimeoutError("the lock was not granted")
        yield

    def run(_: object, requests: list[int]) -> list[object]:
        batches.append(list(requests))
        return [r * 10 for r in requests]

    group: GroupCommit[int, int] = GroupCommit(run, hold=hold)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(group.submit, "plan", 0)
        time.sleep(0.2)  # the leader is waiting for its hold
        rest = [pool.submit(group.submit, "plan", r) for r in range(1, 8)]
        time.sleep(0.2)
        gate.set()
        assert [f.result(10) for f in (first, *rest)] == [r * 10 for r in range(8)]
    assert batches == [list(range(8))]

    refuse.set()
    with contextlib.suppress(TimeoutError), ThreadPoolExecutor(1) as pool:
        refused = pool.submit(group.submit, "plan", 8)
        assert isinstance(refused.exception(10), TimeoutError)
    assert batches == [list(range(8))]  # nothing of it was run
    assert group.submit("plan", 9) == 90


def test_a_save_refused_in_a_group_claims_nothing_from_the_saves_after_it(service):
    """What an outsider found: of three saves arriving together, A claiming x1, B x1 and y1, C y1, B is refused
    (A came first), and C was refused too, though nothing stored claims y1."""
    x, y = uuid.uuid4(), uuid.uuid4()

    def event(aggregate: uuid.UUID) -> StoredEvent:
        return StoredEvent(originator_id=aggregate, originator_version=1, topic="tests:Thing.Happened", state=b"{}")

    a, b, c = service.recorder._insert_together(None, [Save([event(x)], []), Save([event(x), event(y)], []),
                                                      Save([event(y)], [])])  # fmt: skip
    assert isinstance(b, IntegrityError) and not isinstance(a, BaseException) and not isinstance(c, BaseException)


def test_a_save_referring_to_a_file_erased_meanwhile_fails_alone_and_records_no_reference(
    service, database_url, schema
):
    """Three saves arriving together: one refers to a held file, one to a file erased since its command checked it,
    one to none. The second is refused, naming the file, with neither its events nor its reference stored; the
    other two are stored, the first with its reference, in the same statement."""
    held, erased = (f"{c}" * 64 for c in "ab")
    for sha in (held, erased):
        service.attachments.put(b"%PDF-1.4\n%%EOF\n" + sha.encode(), sha, "application/pdf", "system:tests")
    with psycopg.connect(database_url) as conn:
        conn.execute(f'UPDATE "{schema}".attachments SET erased_at = now(), wrapped_key = NULL WHERE sha256 = %s',
                     (erased,))  # fmt: skip
    x, y, z = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def event(aggregate: uuid.UUID) -> StoredEvent:
        return StoredEvent(originator_id=aggregate, originator_version=1, topic="tests:Thing.Happened", state=b"{}")

    a, b, c = service.recorder._insert_together(None, [Save([event(x)], [(held, x, None)]),
                                                      Save([event(y)], [(held, y, None), (erased, y, None)]),
                                                      Save([event(z)], [])])  # fmt: skip
    assert isinstance(b, FilesGone) and b.addresses == [erased]
    assert isinstance(a, list) and isinstance(c, list)
    assert [len(service.recorder.select_events(agg)) for agg in (x, y, z)] == [1, 0, 1]
    assert service.attachments.referrers(held) == [(x, None)] and service.attachments.referrers(erased) == []
    with pytest.raises(FilesGone):  # alone, as a command's save goes
        service.recorder.insert_events([event(y)], references=[(erased, y, None)])


def test_saves_decided_one_by_one_each_keep_their_own_outcome(service, monkeypatch):
    """When a group's transaction fails on no version (so each save goes alone), a save failing for another reason
    (the connection lost) fails alone: those before it were committed and are told so."""
    recorder, one, two = service.recorder, uuid.uuid4(), uuid.uuid4()
    saves = [Save([StoredEvent(originator_id=a, originator_version=1, topic="tests:Thing.Happened", state=b"{}")], [])
             for a in (one, two)]  # fmt: skip
    alone = recorder._insert
    calls: list[int] = []

    def insert(save: Save) -> list[int]:
        calls.append(len(save.events))
        if len(calls) == 1:
            raise IntegrityError("not a version: a constraint of another kind")
        if save.events[0].originator_id == two:
            raise psycopg.OperationalError("the connection was lost")
        return alone(save)

    monkeypatch.setattr(recorder, "_insert", insert)
    monkeypatch.setattr(recorder, "_stored", lambda keys: set())
    first, second = recorder._insert_together(None, saves)
    assert isinstance(first, list) and isinstance(second, psycopg.OperationalError)
    assert [e.originator_id for e in service.recorder.select_events(one)] == [one]


class _Call:
    """A caller on a daemon thread of its own: a caller left waiting for ever fails the test, not hangs the suite."""

    def __init__(self, call) -> None:  # type: ignore[no-untyped-def]
        self.outcome: object = None
        self.thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self.thread.start()

    def _run(self, call) -> None:  # type: ignore[no-untyped-def]
        try:
            self.outcome = call()
        except BaseException as e:  # noqa: BLE001 - the outcome the test looks at
            self.outcome = e

    def result(self, timeout: float) -> object:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "left waiting"
        return self.outcome


def test_a_caller_interrupted_while_it_waits_leaves_no_one_waiting_behind_it():
    """What an outsider found: a caller interrupted while waiting (Ctrl-C in a command-line process) stayed in the
    queue, was appointed leader when its turn came, never led, and every later caller for the key waited for ever.
    The interruption here is a signal's, in this (the main) thread, as Ctrl-C's is."""
    started, release = threading.Event(), threading.Event()

    def run(_: object, requests: list[int]) -> list[object]:
        started.set()
        release.wait(10)
        return [r * 10 for r in requests]

    group: GroupCommit[int, int] = GroupCommit(run)

    class Interrupted(BaseException):
        pass

    def interrupt(*_: object) -> None:
        raise Interrupted

    def behind() -> int:
        while group.waiting("k") < 1:  # queues behind the caller to be interrupted
            time.sleep(0.01)
        return group.submit("k", 3)

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        leader = _Call(lambda: group.submit("k", 1))
        assert started.wait(10)  # its batch runs: the callers after it wait
        later = _Call(behind)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        with pytest.raises(Interrupted):
            group.submit("k", 2)
        release.set()
        assert leader.result(10) == 10
        assert later.result(10) == 30  # led on, not left waiting
        assert _Call(lambda: group.submit("k", 4)).result(10) == 40 and group.waiting("k") == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_batch_function_answering_wrongly_fails_its_callers_and_leaves_none_waiting():
    """A bug in the batch function (too few outcomes) escaped the leader and left the others waiting for ever."""
    started, release = threading.Event(), threading.Event()

    def run(_: object, requests: list[int]) -> list[object]:
        started.set()
        release.wait(10)
        return [requests[0]]  # one outcome, whatever the batch

    group: GroupCommit[int, int] = GroupCommit(run)
    first = _Call(lambda: group.submit("k", 1))
    assert started.wait(10)
    rest = [_Call(lambda r=r: group.submit("k", r)) for r in (2, 3)]
    while group.waiting("k") < 2:
        time.sleep(0.01)
    release.set()
    assert first.result(10) == 1
    assert all(isinstance(c.result(10), RuntimeError) for c in rest)
