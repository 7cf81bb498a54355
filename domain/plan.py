"""Evaluation plans, their registration codes and their seats (001, DESIGN.md step 1)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field, ValidationInfo, field_validator

from domain import wording
from domain.errors import Conflict, InvalidInput
from domain.levels import Level
from domain.model import Actor, Aggregate, Immutable, Snapshot
from domain.personal import Personal, personal

# 8 characters from an alphabet without look-alikes (0/O, 1/I/L): it is read out over the phone.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_PATTERN = re.compile(f"^[{CODE_ALPHABET}]{{8}}$")


def normalise_code(code: str) -> str:
    code = code.strip().upper()
    if not CODE_PATTERN.match(code):
        raise InvalidInput([("registration_code", "must be the 8-character code from the institution's contact")])
    return code


class PlanDetails(Immutable):
    """Everything a candidate sees when confirming the plan (001 step 4)."""

    plan_number: str = Field(min_length=1, max_length=30, pattern=r"^[0-9A-Za-z-]+$")
    name: str = Field(
        min_length=1, max_length=100, description="评价计划名称", json_schema_extra=personal(Personal.NONE)
    )
    occupation: str = Field(min_length=1, max_length=50, description="职业名称")
    job: str | None = Field(None, max_length=50, description="工种名称; none when the occupation has none")
    level: Level
    max_registrations: int = Field(gt=0, le=100_000, description="最大允许报名人数")
    evaluation_start: date
    evaluation_end: date
    registration_deadline: date = Field(description="registrations are accepted through this day")
    exam_location: str = Field(min_length=1, max_length=100, description="考试地点")
    contact_name: str = Field(
        min_length=1,
        max_length=50,
        description="评价业务联系人, shown with the plan (001)",
        json_schema_extra=personal(Personal.BUSINESS_CONTACT),
    )
    contact_phone: str = Field(
        min_length=5,
        max_length=30,
        description="联系电话 of the institution's contact, shown with the plan (001)",
        json_schema_extra=personal(Personal.BUSINESS_CONTACT),
    )
    supervising_region: str = Field(min_length=1, max_length=50, description="业务监管地")

    # Field validators (not one for the model) so that a refusal names the field at fault.
    @field_validator("evaluation_end")
    @classmethod
    def _ends_after_start(cls, end: date, info: ValidationInfo) -> date:
        start = info.data.get("evaluation_start")
        if start is not None and end < start:
            raise ValueError(f"evaluation_end {end} is before evaluation_start {start}")
        return end

    @field_validator("registration_deadline")
    @classmethod
    def _closes_before_start(cls, deadline: date, info: ValidationInfo) -> date:
        start = info.data.get("evaluation_start")
        if start is not None and deadline > start:
            raise ValueError(f"registration_deadline {deadline} is after evaluation_start {start}")
        return deadline


def plan_id(institution_id: UUID, plan_number: str) -> UUID:
    # Deterministic: a plan number is published once per institution.
    return uuid5(NAMESPACE_URL, f"skillcert:plan:{institution_id}:{plan_number}")


class EvaluationPlan(Aggregate):
    class Published(Aggregate.Created):
        actor: Actor
        institution_id: UUID
        institution_name: str
        details: PlanDetails
        registration_code: str

    class SeatTaken(Aggregate.Event):
        registration_id: UUID

    class SeatReleased(Aggregate.Event):
        registration_id: UUID
        reason: str

    @event(Published)
    def __init__(
        self,
        actor: Actor,
        institution_id: UUID,
        institution_name: str,
        details: PlanDetails,
        registration_code: str,
    ) -> None:
        self.institution_id = institution_id
        self.institution_name = institution_name
        self.details = details
        self.registration_code = registration_code
        # How many places are taken: a count, not the set of holders, so the plan's state (and its
        # snapshot) stays the same size however many register. Who holds a place is in the events
        # (holders()); one registration per candidate per plan is the registration's own id.
        self.taken = 0

    Snapshot = Snapshot

    def snapshot_state(self) -> dict[str, Any]:
        return {"institution_id": str(self.institution_id), "institution_name": self.institution_name,
                "details": self.details.model_dump(mode="json"), "registration_code": self.registration_code,
                "taken": self.taken}  # fmt: skip

    @staticmethod
    def restore_state(state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "institution_id": UUID(state["institution_id"]),
                "details": PlanDetails.model_validate(state["details"])}  # fmt: skip

    @staticmethod
    def holders(events: Iterable[Any]) -> set[UUID]:
        """Who holds a place, from the plan's events (a session's tickets, a plan's prints need it)."""
        return set(EvaluationPlan.holders_in_order(events))

    @staticmethod
    def holders_in_order(events: Iterable[Any]) -> list[UUID]:
        """Who holds a place, in the order they took it: the order a session seats them in, and so the order their
        certificates are numbered in."""
        held: dict[UUID, None] = {}
        for e in events:
            if isinstance(e, EvaluationPlan.SeatTaken):
                held[e.registration_id] = None
            elif isinstance(e, EvaluationPlan.SeatReleased):
                held.pop(e.registration_id, None)
        return list(held)

    @classmethod
    def publish(
        cls,
        actor: Actor,
        institution_id: UUID,
        institution_name: str,
        details: PlanDetails,
        registration_code: str,
    ) -> EvaluationPlan:
        cls.check_wording(details, institution_name)
        return cls._create(
            cls.Published,
            id=plan_id(institution_id, details.plan_number),
            actor=actor,
            institution_id=institution_id,
            institution_name=institution_name,
            details=details,
            registration_code=normalise_code(registration_code),
        )

    @staticmethod
    def check_wording(details: PlanDetails, institution_name: str) -> None:
        """The occupation and job are printed on every certificate of the plan: the wording rule
        (004 §11 一(4)) applies to them where the institution writes them."""
        problems = [(field, why) for field in ("occupation", "job")
                    if (why := wording.problem(getattr(details, field) or "", institution_name))]  # fmt: skip
        if problems:
            raise InvalidInput(problems)

    @property
    def seats_left(self) -> int:
        return self.details.max_registrations - self.taken

    def take_seat(self, actor: Actor, registration_id: UUID, today: date) -> None:
        if today > self.details.registration_deadline:
            raise Conflict(
                f"registration for plan {self.details.plan_number} closed on "
                f"{self.details.registration_deadline.isoformat()}",
                field="registration_code",
            )
        if self.seats_left <= 0:
            raise Conflict(
                f"plan {self.details.plan_number} is full: all {self.details.max_registrations} places are taken",
                field="registration_code",
            )
        self._seat_taken(actor, registration_id)

    @event(SeatTaken)
    def _seat_taken(self, actor: Actor, registration_id: UUID) -> None:
        self.taken += 1

    def release_seat(self, actor: Actor, registration_id: UUID, reason: str) -> None:
        """The caller releases a registration's place once: a registration is rejected only once."""
        self._seat_released(actor, registration_id, reason)

    @event(SeatReleased)
    def _seat_released(self, actor: Actor, registration_id: UUID, reason: str) -> None:
        self.taken -= 1


def code_id(code: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"skillcert:registration-code:{code}")


class RegistrationCode(Aggregate):
    """Guards the uniqueness of a registration code and resolves it to its plan."""

    class Issued(Aggregate.Created):
        actor: Actor
        code: str
        plan_id: UUID

    @event(Issued)
    def __init__(self, actor: Actor, code: str, plan_id: UUID) -> None:
        self.code = code
        self.plan_id = plan_id

    @classmethod
    def issue(cls, actor: Actor, code: str, plan_id: UUID) -> RegistrationCode:
        code = normalise_code(code)
        return cls._create(cls.Issued, id=code_id(code), actor=actor, code=code, plan_id=plan_id)
