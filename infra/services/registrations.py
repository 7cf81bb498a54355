"""The registrations application service: institutions, plans, registrations, review.

Cross-aggregate rules are enforced here at write time by saving the guarding
aggregates in the same transaction as the guarded one: the plan (seats) with
the registration, the code with the plan. Deterministic ids make duplicates
collide in the event store; version conflicts on the plan are retried.
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, StoredEvent
from psycopg.errors import LockNotAvailable
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from certgen.certificate import unprintable
from domain.access import STAFF, STAFF_OR_CANDIDATE, require
from domain.certificate import Certificate, DataStatus, certificate_id
from domain.eligibility import Evidence
from domain.errors import Conflict, DomainError, InvalidInput, NotFound, StandingChanging, first_of
from domain.exam import ExamSession, Sitting, sitting_id
from domain.institution import DeadlineProfile, Filing, Institution, ScopeEntry
from domain.model import Actor, Aggregate, Role
from domain.plan import CODE_ALPHABET, EvaluationPlan, PlanDetails, RegistrationCode, code_id, normalise_code
from domain.registration import (
    Alias,
    Attachment,
    IntegrityEntry,
    IntegrityRecord,
    PlanSummary,
    Registration,
    RegistrationForm,
    integrity_key,
    registration_id,
    registration_key,
)
from infra.collector import collecting_less
from infra.services.base import MAX_RETRIES, Service, institution_lock
from infra.services.exams import scoring_lock, ticket_lock
from infra.store.groupcommit import GroupCommit

# Advisory locks of two keys are a space of their own (those of one bigint, the relay's and the DDL's,
# cannot collide with them); the first names what is locked.
PLAN_LOCKS = 0x736B706C  # "skpl"
JUDGE_WAIT_SECONDS = 30  # how long a suspension waits for the institution's acts in progress (_judge)
CONTENDED_FOR = 60.0  # seconds a plan's batches take its lock after another process changed it under one


def plan_lock(plan_id: UUID) -> tuple[int, int]:
    """The advisory lock a registration batch holds on its plan (two plans sharing one only wait on each other)."""
    return PLAN_LOCKS, int.from_bytes(plan_id.bytes[:4], "big", signed=True)


def unprintable_name(form: RegistrationForm) -> list[tuple[str, str]]:
    """The name refused at registration when the admission ticket or the certificate could not print it: accepted, the
    candidate sat, paid and passed, and then no certificate could be printed."""
    return [("name", why)] if (why := unprintable(form.name)) else []


class Decision(StrEnum):
    APPROVED = "approved"
    RETURNED = "returned"
    REJECTED = "rejected"


class Registrations(Service):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._code_plans: dict[str, tuple[UUID, UUID]] = {}  # registration code -> plan, institution
        self._registering: GroupCommit[tuple[Actor, RegistrationForm], UUID] = GroupCommit(
            self._register_batch, hold=self._holding_plan
        )
        self._contended: dict[UUID, float] = {}  # plan -> until when its batches take its lock
        self._plans: dict[UUID, EvaluationPlan] = {}  # as the last batch into each saved it (_checkout_plan)
        self._held = _Held()  # the plans whose lock this thread holds
        # A plan's events after a version, and whether another session holds its lock (_since).
        self._since_query = SQL(
            # Whether another session holds the plan's lock (or waits for it): a shared hold of it that would have
            # to wait, asked for and, granted, given back as the statement ends (autocommit). Read from pg_locks,
            # as it was, the answer cost each batch a scan of every lock in the cluster under all of the lock
            # manager's partition locks: the round trip took 0.19 ms with no locks held elsewhere, 0.55 ms with
            # 1,000 and 5.3 ms with 10,000 (a busy server's sessions hold one for every table and index they
            # touch); it takes 0.15 to 0.19 ms whatever is held (benchmarks.plan_lock_check).
            # And the institution's version, in the same round trip: a suspension (004 第十条) since the last batch
            # is seen without loading the institution for every batch.
            "SELECT h.held, h.institution, e.originator_version, e.topic, e.state FROM (SELECT NOT"
            " pg_try_advisory_xact_lock_shared(%s, %s) AS held, (SELECT max(originator_version) FROM {} WHERE"
            " originator_id = %s) AS institution) h LEFT JOIN LATERAL (SELECT originator_version,"
            " topic, state FROM {} WHERE originator_id = %s AND originator_version > %s ORDER BY originator_version)"
            " e ON true"
        ).format(*[Identifier(self.schema, self.recorder.events_table_name)] * 2)  # type: ignore[attr-defined]

    def register_institution(
        self, actor: Actor, name: str, filing: Filing, profile: DeadlineProfile, scope: list[ScopeEntry] | None = None
    ) -> UUID:
        from infra.services import ecert
        from infra.settings import get_settings

        require(actor, (Role.SYSTEM, Role.PROVINCIAL_CENTRE), "register institutions")
        institution = Institution.register(actor, name, filing, profile, scope)
        public_url = get_settings().public_url
        ecert.check_printable(institution, public_url)  # before anything is stored
        try:
            self.save(institution)
        except IntegrityError:
            stored = self.get(Institution, institution.id, "institution")
            if (stored.name, stored.profile) != (institution.name, institution.profile) or (
                stored.signing_serial and stored.sample
            ):
                raise Conflict(
                    f"an institution with filing {filing.prefix} is already registered", field="filing"
                ) from None
            institution = stored  # a registration that stopped half-way, asked again: finished now
        # Filed, it is certified a key to sign its electronic certificates with (infra.services.ecert), and its
        # certificate sample is filed (证书样本（含印章内容）备案).
        if not institution.signing_serial:
            ecert.certify(self, actor, institution.id)
        if not institution.sample:
            ecert.file_sample(self, actor, institution.id, public_url)
        return institution.id

    def amend_scope(self, actor: Actor, institution_id: UUID, scope: list[ScopeEntry], reason: str) -> None:
        self.change(Institution, institution_id, "institution", lambda i: i.amend_scope(actor, scope, reason))

    # 004 第十条: the evaluation business suspended, reinstated or withdrawn, under the institution's lock alone, so
    # that no ticket, certificate, plan or exam of the institution's straddles it (each holds it shared).
    def suspend_institution(self, actor: Actor, institution_id: UUID, reasons: str) -> None:
        self._judge(institution_id, lambda i: i.suspend(actor, reasons, self.today()))

    def reinstate_institution(self, actor: Actor, institution_id: UUID, reasons: str) -> None:
        self._judge(institution_id, lambda i: i.reinstate(actor, reasons, self.today()))

    def withdraw_institution(self, actor: Actor, institution_id: UUID, reasons: str) -> None:
        self._judge(institution_id, lambda i: i.withdraw_evaluation(actor, reasons, self.today()))

    def _judge(self, institution_id: UUID, verdict: Callable[[Institution], None]) -> None:
        self.get(Institution, institution_id, "institution")  # NotFound before any lock
        # Waiting for the acts in progress (a batch print of thousands holds the lock for seconds), longer than a
        # command waits for a lock: meanwhile the institution's new acts are refused at once (holding).
        try:
            with self.holding(institution_lock(institution_id), timeout=f"{JUDGE_WAIT_SECONDS}s"):
                self.change(Institution, institution_id, "institution", verdict)
        except LockNotAvailable:
            raise StandingChanging(f"the institution's acts in progress (an issuance, a batch print) did not end "
                                   f"within {JUDGE_WAIT_SECONDS} s; nothing was changed: try again",
                                   retry_after=JUDGE_WAIT_SECONDS) from None  # fmt: skip

    def publish_plan(self, actor: Actor, institution_id: UUID, details: PlanDetails) -> tuple[UUID, str]:
        require(actor, STAFF, "publish plans", institution_id)
        with self.evaluating(institution_id, "publish plans"):
            return self._publish_plan(actor, institution_id, details)

    def _publish_plan(self, actor: Actor, institution_id: UUID, details: PlanDetails) -> tuple[UUID, str]:
        institution: Institution = self.get(Institution, institution_id, "institution")
        EvaluationPlan.check_wording(details, institution.name)
        institution.check_scope(details.occupation, details.job, details.level)
        for _ in range(5):  # a random 8-character code collides rarely; draw again
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
            plan = EvaluationPlan.publish(actor, institution.id, institution.name, details, code)
            guard = RegistrationCode.issue(actor, code, plan.id)
            try:
                self.save(plan, guard)
                return plan.id, code
            except IntegrityError:
                if plan.id in self.repository:
                    raise Conflict(f"plan {details.plan_number} is already published", field="plan_number") from None
        raise Conflict("could not draw an unused registration code; try again")

    def plan_for_code(self, code: str) -> EvaluationPlan:
        return self.get(EvaluationPlan, self._plan_of_code(code)[0], "plan")

    def _plan_of_code(self, code: str) -> tuple[UUID, UUID]:
        """(plan, institution) of a registration code: neither ever changes, so remembered (within bounds)
        rather than loaded for every registration."""
        code = normalise_code(code)
        known = self._code_plans.get(code)
        if known is None:
            try:
                guard: RegistrationCode = self.repository.get(code_id(code))
            except AggregateNotFoundError:
                raise NotFound(f"registration code {code} does not belong to any plan",
                               field="registration_code") from None  # fmt: skip
            plan = self.get(EvaluationPlan, guard.plan_id, "plan")
            if len(self._code_plans) > 10_000:
                self._code_plans.clear()
            known = self._code_plans[code] = (plan.id, plan.institution_id)
        return known

    def register(self, actor: Actor, code: str, form: RegistrationForm) -> UUID:
        """One registration. Those arriving together for one plan are saved together (group commit,
        infra.store.groupcommit): one load and one save of the plan for the lot, each still checked on
        its own and failing alone."""
        plan_id, institution_id = self._plan_of_code(code)
        require(actor, STAFF_OR_CANDIDATE, "register candidates", institution_id)
        if problems := unprintable_name(form):
            raise InvalidInput(problems)
        return self._registering.submit(plan_id, (actor, form))

    def waiting_to_register(self, plan_id: UUID) -> int:
        """Registrations for the plan in this process not yet decided: those of the batch gathering (its
        leader's among them) or waiting for the plan's lock, which another worker or an import holds."""
        return self._registering.waiting(plan_id)

    def _already(self, plan: EvaluationPlan) -> Conflict:
        return Conflict(f"this candidate is already registered for plan {plan.details.plan_number}", field="id_number")

    def _checkout_plan(self, plan_id: UUID) -> EvaluationPlan:
        """The plan as stored, for a batch of its registrations: the one the last batch saved, brought up to
        date with the events stored since (one query, where loading it anew reads its snapshot too and
        validates it), or loaded anew. Taken out while the batch decides, so a batch that fails leaves
        nothing half-changed behind; batches on one plan in this process run one at a time (GroupCommit)."""
        plan = self._plans.pop(plan_id, None)
        if plan is None:
            plan = self.get(EvaluationPlan, plan_id, "plan")
            # By its version: loaded anew for every batch after a lost race, the institution cost two API workers
            # registering into one plan a sixth of their registrations a second (benchmarks.http_commands).
            self.check_standing(plan.institution_id, self.version_of(plan.institution_id))
            return plan
        held, institution_version, stored = self._since(plan_id, plan.version, plan.institution_id)
        self.check_standing(plan.institution_id, institution_version)
        if held and plan_id not in self._held.plans:
            # Another session holds the plan's lock: a candidate list being imported (register_many), or a
            # worker that takes it for every batch. Deciding without it, this batch could win the race for
            # the plan's next version every time, and an import, whose decision takes longer, never would.
            self._lost_race(plan_id)
            raise _TakeTheLock
        for event in stored:
            plan = self.mapper.to_domain_event(event).mutate(plan)
        return plan

    def _since(self, plan_id: UUID, version: int, institution_id: UUID) -> tuple[bool, int, list[StoredEvent]]:
        """(whether another session holds the plan's lock or waits for it, the institution's version, the plan's
        events after `version`): one round trip, the one a batch makes anyway to bring its plan up to date."""
        with self.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as cur:  # type: ignore[attr-defined]
            assert conn.autocommit  # so the shared hold the query takes ends with it
            rows = cur.execute(self._since_query, (*plan_lock(plan_id), institution_id, plan_id, version),
                               prepare=True).fetchall()  # fmt: skip
        stored = [StoredEvent(plan_id, v, topic, state) for _, _, v, topic, state in rows if v is not None]
        return bool(rows[0][0]), rows[0][1], stored

    def _keep_plan(self, plan: EvaluationPlan) -> None:
        if not plan.pending_events:  # as stored
            if len(self._plans) > 1_000:
                self._plans.clear()
            self._plans[plan.id] = plan

    def _lost_race(self, plan_id: UUID) -> None:
        """Another process changed the plan under a batch: take its lock for a while (_holding_plan)."""
        if len(self._contended) > 10_000:
            self._contended.clear()
        self._contended[plan_id] = time.monotonic() + CONTENDED_FOR

    @contextmanager
    def _holding_plan(self, plan_id: Hashable) -> Iterator[None]:
        """The plan's advisory lock, held while a batch of its registrations is gathered, decided and saved.

        One batch per plan at a time across every process, not only within this one: API workers deciding
        batches on the same plan at once all but one lose on its version and decide again (two workers
        registered no more than one did, benchmarks.http_commands). Taken before the batch is gathered, so
        what arrives while a worker waits for it joins the batch. A lock of the transaction, on a pool of
        connections of its own (a batch holding one still takes the store's connections to load and save,
        which batches waiting for a lock must not be holding): it ends with the batch, or with the session
        if the process dies. A holder stuck for longer than the store's lock timeout fails the waiting
        batch with LockNotAvailable (the API's 503, try again).

        Taken only for a plan on which this process lost a race, or found the lock held by another session
        (_checkout_plan), in the last CONTENDED_FOR seconds: a worker alone on a plan (one API worker, the
        default) pays nothing for it: taken for every batch, its round trips (each a wait for the interpreter's
        lock in a busy process) cost one worker about a tenth of its registrations a second
        (benchmarks.http_commands, medians of 5 runs)."""
        assert isinstance(plan_id, UUID)
        if time.monotonic() >= self._contended.get(plan_id, 0.0):
            yield
            return
        with self._plan_lock(plan_id):
            yield

    @contextmanager
    def _plan_lock(self, plan_id: UUID) -> Iterator[None]:
        """Hold the plan's advisory lock (see _holding_plan), waiting at most the store's lock timeout for it."""
        if plan_id in self._held.plans:
            yield
            return
        with self.holding(plan_lock(plan_id)):
            self._held.plans.add(plan_id)
            try:
                yield
            finally:
                self._held.plans.discard(plan_id)

    def _register_batch(self, plan_id: Hashable, requests: list[tuple[Actor, RegistrationForm]]) -> list[Any]:
        """One outcome per request: the registration's id, or what its caller is told."""
        assert isinstance(plan_id, UUID)
        try:
            return self._decide_batch(plan_id, requests)
        except _TakeTheLock:
            with self._plan_lock(plan_id):
                return self._decide_batch(plan_id, requests)

    def _decide_batch(self, plan_id: UUID, requests: list[tuple[Actor, RegistrationForm]]) -> list[Any]:
        if len(requests) == 1:  # alone, as if there were no batching
            return [self._outcome(self._register_alone, plan_id, *requests[0])]
        outcomes: dict[int, Any] = {}
        todo = list(range(len(requests)))
        records = self.records([form for _, form in requests])
        for _ in range(MAX_RETRIES):
            plan = self._checkout_plan(plan_id)
            made: dict[int, Registration] = {}
            refused: dict[int, Conflict] = {}
            for i in todo:
                actor, form = requests[i]
                try:
                    registration = Registration.submit(actor, plan.id, plan.institution_id, summary(plan), form,
                                                       self.id_key, record=records.get(i))  # fmt: skip
                    if registration.id in {r.id for r in made.values()}:
                        raise self._already(plan)
                    plan.take_seat(actor, registration.id, self.today())
                    made[i] = registration
                except Conflict as e:
                    refused[i] = e
                except DomainError as e:
                    outcomes[i] = e
            if made:
                try:
                    self.save(plan, *made.values())
                except IntegrityError:
                    # Another process took a place meanwhile, or one of these candidates registered before.
                    # Decided again on the plan as stored: those refused as full may fit now.
                    there = self.existing(r.id for r in made.values())
                    if not there:  # not a repeat, so the plan's version: another process changed it
                        self._lost_race(plan_id)
                    outcomes.update({i: self._already(plan) for i, r in made.items() if r.id in there})
                    todo = sorted([i for i, r in made.items() if r.id not in there] + list(refused))
                    continue
                except DomainError:
                    # Something about one of them (a file its actor may not refer to): found, told, and
                    # the rest decided again without it.
                    bad = {i: e for i, r in made.items() if (e := self._refused_files(*requests[i], r.id)) is not None}
                    if not bad:
                        raise
                    outcomes.update(bad)
                    todo = sorted([i for i in made if i not in bad] + list(refused))
                    continue
                outcomes.update({i: r.id for i, r in made.items()})
            self._keep_plan(plan)
            if refused:  # full or closed, but first of all: already registered?
                ids = {i: registration_id(plan.id, requests[i][1], self.id_key) for i in refused}
                try:
                    there = self.existing(ids.values())
                    outcomes.update({i: self._already(plan) if ids[i] in there else e for i, e in refused.items()})
                except Exception as e:  # noqa: BLE001 - theirs alone: the batch's registrations are saved, and told so
                    outcomes.update(dict.fromkeys(refused, e))
            break
        else:
            outcomes.update({i: Conflict("too many concurrent registrations; try again") for i in todo})
        return [outcomes[i] for i in range(len(requests))]

    def records(self, forms: list[RegistrationForm]) -> dict[int, IntegrityRecord]:
        """The integrity records (诚信档案) of these forms' ID numbers, by the form's index: one query for a batch,
        finding nothing for nearly every candidate."""
        keys = [integrity_key(f.id_type, f.id_number, self.id_key) for f in forms]
        found = self.get_many(keys)
        return {i: r for i, k in enumerate(keys) if isinstance(r := found.get(k), IntegrityRecord)}

    def _records_of(self, registration: Registration, form: RegistrationForm) -> list[IntegrityRecord]:
        """The integrity records an amended form is warned of: its new number's, and the number first confirmed's
        (an amendment changes a number typed wrong, not the person)."""
        first = form.model_copy(update={"id_number": registration.identity[1]})
        return list(self.records([form, first]).values())

    def _refused_files(self, actor: Actor, form: RegistrationForm, registration: UUID) -> DomainError | None:
        try:
            self.check_files(actor, registration, form)  # the registration's events were taken by the failed save
        except DomainError as e:
            return e
        return None

    @staticmethod
    def _outcome(act: Callable[..., UUID], *args: Any) -> UUID | DomainError:
        try:
            return act(*args)
        except DomainError as e:
            return e

    def _register_alone(self, plan_id: UUID, actor: Actor, form: RegistrationForm) -> UUID:
        plan = self._checkout_plan(plan_id)
        rid = registration_id(plan.id, form, self.id_key)
        already = self._already(plan)
        record = self.records([form]).get(0)
        for _ in range(MAX_RETRIES):
            registration = Registration.submit(actor, plan.id, plan.institution_id, summary(plan), form, self.id_key,
                                               record=record)  # fmt: skip
            try:
                plan.take_seat(actor, registration.id, self.today())
            except Conflict:
                if rid in self.repository:  # full or closed, but first of all: already registered
                    raise already from None
                raise
            try:
                self.save(plan, registration)
                self._keep_plan(plan)
                return registration.id
            except IntegrityError:
                # The registration's id is the candidate's in this plan: if it exists, this is a second
                # registration; otherwise another registration took a place meanwhile: look again.
                if rid in self.repository:
                    raise already from None
                self._lost_race(plan_id)
                plan = self.get(EvaluationPlan, plan.id, "plan")
        raise Conflict("too many concurrent registrations; try again")

    def register_many(
        self, actor: Actor, plan_id: UUID, rows: list[tuple[int, RegistrationForm | None, list[tuple[str, str]]]]
    ) -> list[UUID]:
        """A candidate list (row number, form or None, problems found reading it): every row is
        checked, and either all are registered in one transaction or none, with every bad row named."""
        # Thousands of registrations held at once: collected less often (infra.collector). 5,000 rows took 2.21 s
        # rather than 2.68 (medians of 3, in turn, with and without, in one process; 2026-11-28).
        with collecting_less():
            return self._register_many(actor, plan_id, rows)

    def _register_many(
        self, actor: Actor, plan_id: UUID, rows: list[tuple[int, RegistrationForm | None, list[tuple[str, str]]]]
    ) -> list[UUID]:
        plan = self.get(EvaluationPlan, plan_id, "plan")
        require(actor, STAFF, "import candidate lists", plan.institution_id)
        self.check_standing(plan.institution_id, None)
        problems = [p for _, _, found in rows for p in found]
        forms: dict[UUID, tuple[int, RegistrationForm]] = {}
        made: dict[UUID, Registration] = {}  # decided here, before the plan's lock; saved under it if nothing changed
        listed = [form for _, form, _ in rows if form is not None]
        records = {id(listed[i]): r for i, r in self.records(listed).items()}  # one query for the list
        for n, form, _ in rows:
            if form is None:
                continue
            rid = registration_id(plan.id, form, self.id_key)
            if rid in forms:
                problems.append((f"row {n}.id_number", f"{form.id_number} is also in row {forms[rid][0]}"))
                continue
            forms[rid] = (n, form)
            problems += [(f"row {n}.{f}", m) for f, m in unprintable_name(form)]
            try:
                made[rid] = Registration.submit(actor, plan.id, plan.institution_id, summary(plan), form, self.id_key,
                                                record=records.get(id(form)))  # fmt: skip
            except InvalidInput as e:
                problems += [(f"row {n}.{f}", m) for f, m in e.problems]
        taken = self.existing(forms)
        problems += [(f"row {forms[r][0]}.id_number", f"already registered for plan {plan.details.plan_number}")
                     for r in taken]  # fmt: skip
        if problems:
            raise InvalidInput(problems)

        def attempt() -> list[Aggregate]:
            fresh = self.get(EvaluationPlan, plan_id, "plan")
            # Again, as the list is saved: its decision and the wait for the plan's lock take seconds (004 第十条).
            self.check_standing(plan.institution_id, self.version_of(plan.institution_id))
            if len(forms) > fresh.seats_left:
                raise Conflict(
                    f"the list has {len(forms)} candidates but plan {fresh.details.plan_number} has "
                    f"{fresh.seats_left} places left", field="file",
                )  # fmt: skip
            late = sorted(forms[r][0] for r in self.existing(forms))
            if late:
                shown = first_of([str(n) for n in late], ", ")
                raise Conflict(f"{len(late)} rows were registered by someone else meanwhile (rows {shown}); nothing "
                               "was stored", field="file", problems=[(f"row {n}.id_number", "registered by someone "
                                                                      "else meanwhile") for n in late])  # fmt: skip
            # Those decided before the lock, the first time and if the plan's details are as they were then
            # (the registrations carry them); afresh after a failed save, which consumed their events.
            same = summary(fresh) == summary(plan)
            registrations = [(made.pop(r, None) if same else None) or
                             Registration.submit(actor, plan.id, plan.institution_id, summary(fresh), f, self.id_key,
                                                 record=records.get(id(f)))
                             for r, (_, f) in forms.items()]  # fmt: skip
            made.clear()
            for r in registrations:
                fresh.take_seat(actor, r.id, self.today())
            return [fresh, *registrations]

        # Under the plan's lock, which this process's and other processes' registration batches then wait for
        # (_checkout_plan): a list deciding for seconds lost the race for the plan's next version to every
        # single registration arriving meanwhile, and was stored only once they stopped.
        self._lost_race(plan_id)
        with self._plan_lock(plan_id):
            self.retry(attempt)
        return list(forms)

    def resubmit(self, actor: Actor, registration_id: UUID, form: RegistrationForm) -> None:
        registration: Registration = self.get(Registration, registration_id, "registration")
        require(actor, STAFF_OR_CANDIDATE, "resubmit registrations", registration.institution_id)
        self.check_standing(registration.institution_id, None)  # a registration arriving again (004 第十条)
        if problems := unprintable_name(form):
            raise InvalidInput(problems)
        registration.resubmit(actor, form, record=self.records([form]).get(0))
        self.save_once(registration)

    def review(
        self,
        actor: Actor,
        registration_id: UUID,
        decision: Decision,
        reasons: str = "",
        condition: str | None = None,
        evidence: Evidence | None = None,
    ) -> None:
        """Approval names the eligibility condition met and the evidence verified for it."""
        if decision is Decision.APPROVED and (condition is None or evidence is None):
            raise InvalidInput([("condition", "an approval names the eligibility condition met and its evidence")])

        def attempt() -> list[Aggregate]:
            registration = self.get(Registration, registration_id, "registration")
            if decision is Decision.APPROVED:
                assert condition is not None and evidence is not None
                # Not while the business is suspended (004 第十条); a return or a rejection frees the candidate.
                self.check_standing(registration.institution_id, self.version_of(registration.institution_id),
                                     "approve registrations")  # fmt: skip
                registration.approve(actor, condition, evidence, self.today(), reasons)
                return [registration]
            if decision is Decision.RETURNED:
                registration.return_for_rework(actor, reasons)
                return [registration]
            registration.reject(actor, reasons)
            # A rejected registration is not accepted: its place goes back to the plan.
            plan = self.get(EvaluationPlan, registration.plan_id, "plan")
            plan.release_seat(actor, registration.id, "registration rejected")
            return [registration, plan]

        self.retry(attempt)

    def disqualify(self, actor: Actor, registration_id: UUID, reasons: str) -> list[str]:
        """A false declaration found (001 承诺), in one transaction: the registration disqualified; if the candidate
        has a ticket, their scores for that session cancelled; if a certificate was issued, it revoked; a place
        not yet seated at an exam given back to the plan. Returns what was done, by event name.

        Under the session's scoring lock, which issuance takes too: a certificate is either issued before
        (and revoked here) or not at all, never issued on scores this cancels."""
        registration: Registration = self.get(Registration, registration_id, "registration")
        filed_in = self.get(Institution, registration.institution_id, "institution").filing.city_code
        registration.disqualify(actor, reasons, filed_in)  # who may, and whether it can be, before any lock
        done: list[str] = []

        def exam_of_ticket() -> UUID | None:
            sitting = self.get_many([sitting_id(registration_id)]).get(sitting_id(registration_id))
            return sitting.exam_id if isinstance(sitting, Sitting) else None

        def attempt(exam_id: UUID | None) -> list[Aggregate]:
            done.clear()
            registration = self.get(Registration, registration_id, "registration")
            registration.disqualify(actor, reasons, filed_in)
            cid = certificate_id(registration.id)
            certificate = self.get_many([cid]).get(cid) if exam_id is not None else None
            # The record goes under every number the person was known by here: as first confirmed, as amended,
            # and as a certificate correction made it.
            numbers = {registration.identity[1], registration.form.id_number}
            if isinstance(certificate, Certificate):
                numbers.add(certificate.holder.id_number)
            changed: list[Aggregate] = [registration, *self._entered(actor, registration, numbers)]
            if exam_id is None:  # no exam seat: the plan's place goes back, as for a rejection
                plan = self.get(EvaluationPlan, registration.plan_id, "plan")
                plan.release_seat(actor, registration.id, "registration disqualified")
                changed.append(plan)
                done.append("evaluation_plan.seat_released")
                return changed
            session = self.get(ExamSession, exam_id, "exam session")
            session.cancel_scores(actor, registration.id, reasons, isinstance(certificate, Certificate), self.today())
            changed.append(session)
            done.append("exam_session.scores_cancelled")
            # A certificate whose data was deleted is void already (000): nothing to revoke.
            if isinstance(certificate, Certificate) and certificate.data_status is not DataStatus.DELETED:
                certificate.revoke(actor, reasons, self.today())
                changed.append(certificate)
                done.append("certificate.revoked")
            return changed

        # The plan's ticket lock (no ticket is issued meanwhile) and, for a candidate with a ticket, the session's
        # scoring lock (no certificate is issued, no score recorded or review answered meanwhile), taken together
        # on one connection. Which session is known only once the ticket is read: read before the locks, and
        # again under them, in case a ticket was issued in between.
        exam_id = exam_of_ticket()
        for _ in range(MAX_RETRIES):
            with self.holding(ticket_lock(registration.plan_id), *([scoring_lock(exam_id)] if exam_id else [])):
                if (now := exam_of_ticket()) == exam_id:
                    self.retry(functools.partial(attempt, exam_id))
                    return ["registration.disqualified", *done]
            exam_id = now
        raise Conflict("too many concurrent changes; try again")

    def _entered(self, actor: Actor, registration: Registration, numbers: set[str]) -> list[IntegrityRecord]:
        """The integrity records of these ID numbers with this disqualification entered (each opened if it is the
        first)."""
        p = registration.plan
        entry = IntegrityEntry(registration_id=registration.id, institution_name=p.institution_name,
                               plan_number=p.plan_number, occupation=p.occupation, level=p.level, on=self.today())  # fmt: skip
        keys = sorted({integrity_key(registration.form.id_type, n, self.id_key) for n in numbers})
        found = self.get_many(keys)
        records = []
        for key in keys:
            record = found.get(key)
            if isinstance(record, IntegrityRecord):
                record.enter(actor, entry)
            else:
                record = IntegrityRecord.open(actor, key, entry)
            records.append(record)
        return records

    def amend(
        self, actor: Actor, registration_id: UUID, form: RegistrationForm, explanation: str, document: Attachment
    ) -> list[str]:
        """A change after confirmation. A new ID number is claimed for the plan, so the same person
        cannot also register again under it."""
        registration = self.get(Registration, registration_id, "registration")
        if form.name != registration.form.name and (problems := unprintable_name(form)):
            raise InvalidInput(problems)
        old_key = self.key_of(registration)
        changed = registration.amend(
            actor, form, explanation, document, self.today(), self._records_of(registration, form)
        )
        aggregates: list[Aggregate] = [registration]
        new_key = self.key_of(registration)
        if new_key != old_key and new_key != registration.id:
            aggregates.append(Alias.claim(actor, new_key, registration.id))
        try:
            self.save(*aggregates)
        except IntegrityError:
            if new_key != old_key and new_key in self.repository:
                raise Conflict(
                    f"ID number {form.id_number} is already registered for this plan", field="id_number"
                ) from None
            raise Conflict("changed by someone else meanwhile; reload and try again") from None
        return changed

    def key_of(self, registration: Registration) -> UUID:
        """The (plan, ID number) key a registration's current form claims."""
        form = registration.form
        return registration_key(registration.plan_id, form.id_type, form.id_number, self.id_key)

    def pay_fee(self, actor: Actor, registration_id: UUID, receipt_number: str, amount: Decimal) -> None:
        self.change(Registration, registration_id, "registration", lambda r: r.pay_fee(actor, receipt_number, amount))

    def open_training_account(self, actor: Actor, registration_id: UUID, account: str) -> None:
        self.change(Registration, registration_id, "registration", lambda r: r.open_training_account(actor, account))

    def complete_training(self, actor: Actor, registration_id: UUID, hours: Decimal, evidence: Attachment) -> None:
        self.change(
            Registration, registration_id, "registration", lambda r: r.complete_training(actor, hours, evidence)
        )


def summary(plan: EvaluationPlan) -> PlanSummary:
    """What a candidate confirms of the plan (001 step 4), kept on the registration."""
    d = plan.details
    return PlanSummary(plan_number=d.plan_number, plan_name=d.name, institution_name=plan.institution_name,
                       occupation=d.occupation, job=d.job, level=d.level)  # fmt: skip


class _TakeTheLock(Exception):
    """A batch found its plan's lock held by another session: decide it again holding the lock."""


class _Held(threading.local):
    def __init__(self) -> None:
        self.plans: set[UUID] = set()
