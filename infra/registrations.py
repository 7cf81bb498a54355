"""The registrations application service: institutions, plans, registrations, review.

Cross-aggregate rules are enforced here at write time by saving the guarding
aggregates in the same transaction as the guarded one: the plan (seats) with
the registration, the code with the plan. Deterministic ids make duplicates
collide in the event store; version conflicts on the plan are retried.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError

from domain.errors import Conflict, Forbidden, NotFound
from domain.institution import DeadlineProfile, Filing, Institution
from domain.model import Actor, Aggregate, Role
from domain.plan import CODE_ALPHABET, EvaluationPlan, PlanDetails, RegistrationCode, code_id, normalise_code
from domain.registration import PlanSummary, Registration, RegistrationForm, registration_id
from infra.eventstore import SkillcertApplication

MAX_RETRIES = 200  # a save loses a race at most once per competing writer


class Decision(StrEnum):
    APPROVED = "approved"
    RETURNED = "returned"
    REJECTED = "rejected"


def shanghai_today(tz: str = "Asia/Shanghai") -> date:
    return datetime.now(ZoneInfo(tz)).date()


class Registrations(SkillcertApplication):
    def __init__(self, database_url: str, schema: str = "public", today: Callable[[], date] = shanghai_today) -> None:
        super().__init__(database_url, schema)
        self.today = today

    def _get(self, cls: type[Aggregate], id: UUID, what: str) -> Any:
        try:
            agg = self.repository.get(id)
        except AggregateNotFoundError:
            raise NotFound(f"no {what} with id {id}") from None
        if not isinstance(agg, cls):
            raise NotFound(f"no {what} with id {id}")
        return agg

    def register_institution(self, actor: Actor, name: str, filing: Filing, profile: DeadlineProfile) -> UUID:
        _require(actor, (Role.SYSTEM, Role.PROVINCIAL_CENTRE), "register institutions")
        institution = Institution.register(actor, name, filing, profile)
        try:
            self.save(institution)
        except IntegrityError:
            raise Conflict(
                f"an institution with filing {filing.prefix} is already registered", field="filing"
            ) from None
        return institution.id

    def publish_plan(self, actor: Actor, institution_id: UUID, details: PlanDetails) -> tuple[UUID, str]:
        _require(actor, (Role.INSTITUTION_STAFF, Role.SYSTEM), "publish plans", institution_id)
        institution: Institution = self._get(Institution, institution_id, "institution")
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
        code = normalise_code(code)
        try:
            guard: RegistrationCode = self.repository.get(code_id(code))
        except AggregateNotFoundError:
            raise NotFound(f"registration code {code} does not belong to any plan", field="registration_code") from None
        return self._get(EvaluationPlan, guard.plan_id, "plan")

    def register(self, actor: Actor, code: str, form: RegistrationForm) -> UUID:
        plan = self.plan_for_code(code)
        _require(
            actor, (Role.CANDIDATE, Role.INSTITUTION_STAFF, Role.SYSTEM), "register candidates", plan.institution_id
        )
        rid = registration_id(plan.id, form)
        for _ in range(MAX_RETRIES):
            if rid in self.repository:
                raise Conflict(
                    f"this candidate is already registered for plan {plan.details.plan_number}", field="id_number"
                )
            summary = PlanSummary(
                plan_number=plan.details.plan_number,
                plan_name=plan.details.name,
                institution_name=plan.institution_name,
                occupation=plan.details.occupation,
                job=plan.details.job,
                level=plan.details.level,
            )
            registration = Registration.submit(actor, plan.id, plan.institution_id, summary, form)
            plan.take_seat(actor, registration.id, self.today())
            try:
                self.save(plan, registration)
                return registration.id
            except IntegrityError:
                plan = self._get(EvaluationPlan, plan.id, "plan")  # lost a race: look again
        raise Conflict("too many concurrent registrations; try again")

    def resubmit(self, actor: Actor, registration_id: UUID, form: RegistrationForm) -> None:
        registration: Registration = self._get(Registration, registration_id, "registration")
        _require(
            actor,
            (Role.CANDIDATE, Role.INSTITUTION_STAFF, Role.SYSTEM),
            "resubmit registrations",
            registration.institution_id,
        )
        registration.resubmit(actor, form)
        self._save_once(registration)

    def review(self, actor: Actor, registration_id: UUID, decision: Decision, reasons: str = "") -> None:
        for _ in range(MAX_RETRIES):
            registration: Registration = self._get(Registration, registration_id, "registration")
            if decision is Decision.APPROVED:
                registration.approve(actor, reasons)
                changed: list[Aggregate] = [registration]
            elif decision is Decision.RETURNED:
                registration.return_for_rework(actor, reasons)
                changed = [registration]
            else:
                registration.reject(actor, reasons)
                # A rejected registration is not accepted: its place goes back to the plan.
                plan: EvaluationPlan = self._get(EvaluationPlan, registration.plan_id, "plan")
                plan.release_seat(actor, registration.id, "registration rejected")
                changed = [registration, plan]
            try:
                self.save(*changed)
                return
            except IntegrityError:
                continue
        raise Conflict("too many concurrent changes; try again")

    def _save_once(self, *aggregates: Aggregate) -> None:
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise Conflict("changed by someone else meanwhile; reload and try again") from None


def _require(actor: Actor, roles: tuple[Role, ...], what: str, institution_id: UUID | None = None) -> None:
    if actor.role not in roles:
        raise Forbidden(f"a {actor.role.value} cannot {what}")
    if actor.role is Role.INSTITUTION_STAFF and institution_id is not None and actor.institution_id != institution_id:
        raise Forbidden(f"staff may {what} only for their own institution")
