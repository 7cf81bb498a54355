"""What every application service shares: the clock, typed loading, retries on conflicts."""

from __future__ import annotations

import functools
import threading
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from typing import TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import resolve_topic
from psycopg import OperationalError, sql
from psycopg_pool import ConnectionPool
from pydantic import BaseModel

from domain.errors import Conflict, InvalidInput, NotFound, StandingChanging
from domain.institution import Institution
from domain.model import Actor, Aggregate, Role
from domain.registration import Attachment, AttachmentKind
from infra.store.attachments import SYSTEM, Attachments
from infra.store.eventstore import SkillcertApplication
from infra.store.recorder import LOCK_TIMEOUT, LOCK_TIMEOUT_SECONDS, FilesGone, check_idle

MAX_RETRIES = 200  # a save loses a race at most once per competing writer
# Connections for advisory locks held across a command (Service.holding), per process: one per thing locked at the
# same moment here; more would not run faster on the cores there are, and a command waiting for one answers 503
# after the lock timeout.
LOCK_CONNECTIONS = 8
A = TypeVar("A", bound=Aggregate)
INSTITUTION_LOCKS = 0x736B696E  # "skin"


def institution_lock(institution_id: UUID) -> tuple[int, int]:
    """Taken alone by whoever suspends or withdraws an institution's evaluation business (004 第十条), shared by its
    acts of evaluation that must not straddle that (tickets, certificates, plans, exams): each comes before the
    suspension or sees it. Shared, so that those acts still never wait for one another."""
    return INSTITUTION_LOCKS, int.from_bytes(institution_id.bytes[:4], "big", signed=True)


R = TypeVar("R")


def shanghai_today(tz: str = "Asia/Shanghai") -> date:
    return datetime.now(ZoneInfo(tz)).date()


class Service(SkillcertApplication):
    def __init__(self, database_url: str, schema: str = "public", today: Callable[[], date] = shanghai_today) -> None:
        super().__init__(database_url, schema)
        self.today = today
        self.attachments = Attachments(self.recorder.datastore, schema, self.mapper.cipher, self.holding)  # type: ignore[attr-defined]
        self._lock_pool: ConnectionPool | None = None
        self._lock_pool_made = threading.Lock()
        self._institutions: dict[UUID, Institution] = {}  # as last loaded, for their standing (check_standing)

    def _lock_connections(self) -> ConnectionPool:
        """Connections for advisory locks, made on first use (most processes never take one). Not the store's:
        a command holding a lock still takes the store's connections to load and save, which commands waiting
        for the lock must not be holding."""
        with self._lock_pool_made:
            if self._lock_pool is None:
                self._lock_pool = ConnectionPool(
                    self.database_url, min_size=1, max_size=LOCK_CONNECTIONS, timeout=LOCK_TIMEOUT_SECONDS,
                    kwargs={"autocommit": True, "application_name": "skillcert-locks"}, check=check_idle, open=True,
                )  # fmt: skip
            return self._lock_pool

    @contextmanager
    def holding(
        self, *keys: tuple[int, int], shared: Iterable[tuple[int, int]] = (), timeout: str = LOCK_TIMEOUT
    ) -> Iterator[None]:
        """Hold advisory locks, each of two keys (the first names what is locked), while the block runs, across
        every process, waiting at most the store's lock timeout for them (then psycopg's LockNotAvailable: the
        API's 503, try again). Locks of a transaction on a connection of its own: they end with the block, or
        with the session if the process dies. Several are taken in their order, the same in every process, so
        that two holders of some of the same never wait for each other.

        Those in `shared` (an institution's, institution_lock) are held shared, and never waited for: held alone by
        another, or asked for alone by another (a suspension waiting for the acts in progress), StandingChanging at
        once. Waiting, each act would hold one of the pool's few connections, and starve every other institution's
        acts in the process until the suspension was granted or timed out."""
        done = False
        alone = sorted(set(keys))
        tried = sorted(set(shared) - set(alone))
        try:
            with self._lock_connections().connection() as conn, conn.transaction(force_rollback=True):
                # The timeout first (the subquery); the shared locks tried, and only if all were granted, the others
                # waited for in order. In one statement, a refused try did not stop it waiting for the others.
                if tried:
                    (granted,) = conn.execute(
                        "SELECT bool_and(pg_try_advisory_xact_lock_shared(k.a, k.b)) FROM (SELECT"
                        " set_config('lock_timeout', %s, true)) t, unnest(%s::int[], %s::int[]) AS k(a, b)",
                        (timeout, [a for a, _ in tried], [b for _, b in tried]),
                    ).fetchone()
                    if not granted:
                        raise StandingChanging("the provincial centre is changing this institution's standing "
                                               "(004 第十条) this moment; try again shortly")  # fmt: skip
                if alone:
                    conn.execute("SELECT pg_advisory_xact_lock(k.a, k.b) FROM (SELECT set_config('lock_timeout', %s,"
                                 " true)) t, unnest(%s::int[], %s::int[]) WITH ORDINALITY AS k(a, b, i) ORDER BY k.i",
                                 (timeout, [a for a, _ in alone], [b for _, b in alone]))  # fmt: skip
                yield
                done = True
        except OperationalError:
            if not done:
                raise
            # The block is done; only giving the lock back failed (the session was lost, which gave it back).

    @contextmanager
    def evaluating(self, institution_id: UUID, what: str, *keys: tuple[int, int]) -> Iterator[None]:
        """While an act of the institution's evaluation business is decided and saved: its lock held shared (with
        the act's own `keys`, alone), and the act refused if the business is suspended or withdrawn (004 第十条). A
        suspension waits for the act, or the act sees it."""
        with self.holding(*keys, shared=[institution_lock(institution_id)]):
            self.check_standing(institution_id, self.version_of(institution_id), what)
            yield

    def version_of(self, aggregate_id: UUID) -> int | None:
        """Its latest version: one lookup in the events' index, where loading it reads and decodes them all."""
        table = sql.Identifier(self.schema, self.recorder.events_table_name)  # type: ignore[attr-defined]
        with self.recorder.datastore.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(sql.SQL("SELECT max(originator_version) AS v FROM {} WHERE originator_id = %s").format(table),
                        (aggregate_id,))  # fmt: skip
            return cur.fetchone()["v"]

    def check_standing(self, institution_id: UUID, version: int | None, what: str = "take registrations") -> None:
        """Refuse `what` while the institution's evaluation business is suspended or withdrawn (004 第十条): the
        institution as last loaded if still at `version` (None: not known, load it), else loaded again."""
        known = self._institutions.get(institution_id)
        if known is None or version is None or known.version != version:
            known = self.get(Institution, institution_id, "institution")
            if len(self._institutions) > 1_000:
                self._institutions.clear()
            self._institutions[institution_id] = known
        known.check_active(what)

    def close(self) -> None:
        if self._lock_pool is not None:
            self._lock_pool.close()
        super().close()

    def save(self, *objs, **kwargs):  # type: ignore[no-untyped-def,override]
        """Events refer only to files the store holds and the event's actor may refer to (a photo only
        to one that passed the photo rules); each reference is recorded, as who may read the file, in the
        events' own statement."""
        wanted = self._references(objs)
        if not wanted:
            return super().save(*objs, **kwargs)
        self._check_references(wanted)
        try:
            return super().save(*objs, references=[(a.sha256, agg_id, institution)
                                                    for a, _, agg_id, institution in wanted], **kwargs)  # fmt: skip
        except FilesGone as e:  # erased since the check (with a certificate's data); nothing was stored
            raise InvalidInput(
                list(dict.fromkeys(_not_held(a) for a, *_ in wanted if a.sha256 in e.addresses))
            ) from None

    def check_files(self, actor: Actor, originator: UUID, *values: object) -> None:
        """What save checks of the files these values hold (a form) that `actor` refers to in an event of the aggregate
        `originator`, without an event: which of a batch's registrations a save refused for a file refers to it."""
        found: list[Attachment] = []
        _attachments_in(list(values), found)
        wanted = [(a, actor, originator, None) for a in found]
        if wanted:
            self._check_references(wanted)

    @staticmethod
    def _references(objs: Iterable[Aggregate]) -> list[tuple[Attachment, Actor, UUID, UUID | None]]:
        wanted: list[tuple[Attachment, Actor, UUID, UUID | None]] = []
        for agg in objs:
            for e in getattr(agg, "pending_events", ()):
                found: list[Attachment] = []
                _attachments_in(e, found)
                wanted += [(a, e.actor, agg.id, getattr(agg, "institution_id", None)) for a in found]
        return wanted

    def _check_references(self, wanted: list[tuple[Attachment, Actor, UUID, UUID | None]]) -> None:
        """A file may be referred to by its uploader, by a colleague of a staff uploader, by anyone acting
        on a record that already refers to it (or, for staff, on any record of their institution that
        does), and by the system; a sample file the installation put there, by anyone. Otherwise it is
        answered as if it were not held: a hash seen on the bus gives no one a file."""
        facts = self.attachments.facts(sorted({a.sha256 for a, *_ in wanted}), list({agg for _, _, agg, _ in wanted}),
                                       list({actor.institution_id for _, actor, *_ in wanted if actor.institution_id}))  # fmt: skip
        uploads = {sha: f[1] for sha, f in facts.items()}
        refs = {sha: f[2] for sha, f in facts.items()}

        def may_refer(a: Attachment, actor: Actor, agg_id: UUID) -> bool:
            if actor.role is Role.SYSTEM:
                return True
            staff = actor.role is Role.INSTITUTION_STAFF and actor.institution_id is not None
            for by, institution in uploads.get(a.sha256, ()):
                if by == actor.id or by.startswith(SYSTEM) or (staff and institution == actor.institution_id):
                    return True
            return any(o == agg_id or (staff and i == actor.institution_id) for o, i in refs.get(a.sha256, ()))

        problems = []
        for a, actor, agg_id, _ in wanted:
            if a.sha256 not in facts or not may_refer(a, actor, agg_id):
                problems.append(_not_held(a))
            elif a.kind is AttachmentKind.PHOTO and not facts[a.sha256][0]:
                problems.append(
                    ("photo", f"{a.file_name!r} was not uploaded as a photo (POST /attachments?kind=photo)")
                )
        if problems:
            raise InvalidInput(list(dict.fromkeys(problems)))

    def get(self, cls: type[A], id: UUID, what: str) -> A:
        try:
            agg = self.repository.get(id)
        except AggregateNotFoundError:
            raise NotFound(f"no {what} with id {id}") from None
        if not isinstance(agg, cls):
            raise NotFound(f"no {what} with id {id}")
        return agg

    def institution_of(self, cls: type[Aggregate], id: UUID, what: str) -> UUID | None:
        """The institution an aggregate belongs to, from its first event alone: what a check of who may act
        on it needs, without loading and validating its whole history (the command loads it anyway). Only a
        creation sets an aggregate's institution. NotFound, as `get` answers, for none or another kind."""
        first = self.recorder.select_events(id, limit=1)
        created = self.mapper.decode_bytes(first[0].state) if first else {}  # type: ignore[attr-defined]
        # The class the aggregate is made as, as loading it would resolve it.
        if "originator_topic" not in created or not issubclass(resolve_topic(created["originator_topic"]), cls):
            raise NotFound(f"no {what} with id {id}")
        return UUID(created["institution_id"]) if created.get("institution_id") else None

    def save_once(self, *aggregates: Aggregate) -> None:
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise Conflict("changed by someone else meanwhile; reload and try again") from None

    def change(self, cls: type[A], id: UUID, what: str, act: Callable[[A], R]) -> R:
        """Load one aggregate, apply a command to it, save it; a concurrent change is a Conflict."""
        aggregate = self.get(cls, id, what)
        result = act(aggregate)
        self.save_once(aggregate)
        return result

    def retry(self, attempt: Callable[[], Sequence[Aggregate]]) -> None:
        """Load, decide and save until no concurrent writer got there first. `attempt` reloads
        everything it changes, so a rule checked in it is checked against the latest state."""
        for _ in range(MAX_RETRIES):
            changed = attempt()
            try:
                self.save(*changed)
                return
            except IntegrityError:
                continue
        raise Conflict("too many concurrent changes; try again")

    def plan_holders(self, plan_id: UUID) -> set[UUID]:
        """The registrations holding a place in a plan, from its events: a batch's question (tickets,
        prints), so the plan's state need not carry them (domain.plan.EvaluationPlan.taken)."""
        from domain.plan import EvaluationPlan

        return EvaluationPlan.holders(self.events.get(plan_id))

    def existing(self, ids: Iterable[UUID]) -> set[UUID]:
        """Which of these aggregates exist, in one query instead of one per id (one statement on an
        autocommit connection, as the library reads an aggregate's events: no BEGIN and ROLLBACK around it)."""
        table = sql.Identifier(self.schema, self.recorder.events_table_name)  # type: ignore[attr-defined]
        query = sql.SQL("SELECT originator_id FROM {} WHERE originator_version = 1 AND originator_id = ANY(%b)")
        with self.recorder.datastore.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(query.format(table), (list(ids),))
            return {row["originator_id"] for row in cur.fetchall()}

    def get_many(self, ids: Iterable[UUID]) -> dict[UUID, Aggregate]:
        """The aggregates that exist among these ids, from one query for all their events rather than
        one per aggregate: a score book or a session of 5,000 candidates loads in one round trip."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        table = sql.Identifier(self.schema, self.recorder.events_table_name)  # type: ignore[attr-defined]
        query = sql.SQL("SELECT originator_id, originator_version, topic, state FROM {} WHERE originator_id = ANY(%s)"
                        " ORDER BY originator_id, originator_version").format(table)  # fmt: skip
        with self.recorder.datastore.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(query, (wanted,))
            rows = cur.fetchall()
        found: dict[UUID, Aggregate] = {}
        for row in rows:
            stored = StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
            event = self.mapper.to_domain_event(stored)
            found[row["originator_id"]] = event.mutate(found.get(row["originator_id"]))
        return found

    def get_all(self, cls: type[A], ids: Iterable[UUID], what: str) -> list[A]:
        """Every one of these aggregates, in the order asked; NotFound names the first missing."""
        wanted = list(ids)
        found = self.get_many(wanted)
        for i in wanted:
            if not isinstance(found.get(i), cls):
                raise NotFound(f"no {what} with id {i}")
        return [found[i] for i in wanted]  # type: ignore[misc]


def _attachments_in(value: object, found: list[Attachment]) -> None:
    """Every Attachment inside an event, however deep (a form's list, an optional copy)."""
    if isinstance(value, Attachment):
        found.append(value)
    elif isinstance(value, BaseModel) and _may_hold(type(value)):
        for name in type(value).model_fields:
            _attachments_in(getattr(value, name), found)
    elif isinstance(value, list | tuple):
        for item in value:
            _attachments_in(item, found)


@functools.cache
def _may_hold(cls: type[BaseModel]) -> bool:
    """Whether a model's fields can hold an Attachment: most events cannot, and are not walked."""

    def walk(t: object, seen: frozenset[object]) -> bool:
        if t is Attachment:
            return True
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t in seen:
                return False
            return any(walk(f.annotation, seen | {t}) for f in t.model_fields.values())
        return any(walk(a, seen) for a in typing.get_args(t))

    return walk(cls, frozenset())


def _not_held(a: Attachment) -> tuple[str, str]:
    return ("attachments", f"{a.kind.value} {a.file_name!r} ({a.sha256[:12]}…) is not held by the store, or not the "
            "actor's to refer to: upload it first (POST /attachments)")  # fmt: skip
