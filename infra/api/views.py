"""What the queries answer, as pydantic models: the read models' rows as a client sees them.

Structured details that the read models keep as JSON (a fee, a sitting, an event's data) stay
objects; their fields are those of the bus contract's schemas (`schemas/`).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    total: int
    limit: int
    offset: int
    items: list[T]


class InstitutionView(BaseModel):
    institution_id: UUID
    name: str
    filing_prefix: str = Field(description="positions 1-13 of its certificate numbers")
    city_code: str = Field(description="004 table 2: where it is filed")
    profile: str
    registered_at: datetime
    standing: Literal["active", "suspended", "withdrawn"] = Field(
        description="its evaluation business: active, suspended (暂停) or withdrawn (取消), 004 第十条"
    )
    standing_since: date | None = Field(description="the day it was last suspended, reinstated or withdrawn")


class Plan(BaseModel):
    plan_id: UUID
    institution_id: UUID
    institution_name: str
    plan_number: str
    name: str
    occupation: str
    job: str | None
    level: int
    max_registrations: int
    seats_taken: int
    seats_left: int
    evaluation_start: date
    evaluation_end: date
    registration_deadline: date
    registration_open: bool
    institution_standing: Literal["active", "suspended", "withdrawn"] = Field(
        description="the institution's evaluation business: suspended or withdrawn (004 第十条), no registration is open"
    )
    exam_location: str
    contact_name: str
    contact_phone: str
    supervising_region: str
    published_at: datetime


class ReviewDecision(BaseModel):
    decision: str
    reasons: str
    actor_id: str
    actor_role: str
    decided_at: datetime


class Registration(BaseModel):
    """The candidate record: registration, review, fee, training, exam day, scores, results, certificate."""

    registration_id: UUID
    plan_id: UUID
    institution_id: UUID
    id_type: str
    id_number: str  # masked
    name: str
    plan_number: str
    plan_name: str
    institution_name: str
    institution_standing: Literal["active", "suspended", "withdrawn"] = Field(
        "active",
        description="the institution's evaluation business (004 第十条): while suspended or withdrawn, "
        "nothing more is done on the registration there; on a candidate's own record (not in a plan's lists)",
    )
    occupation: str
    job: str | None
    level: int
    basis: str
    warnings: list[str]
    status: str
    decision_reasons: str | None
    decided_by: str | None
    decided_at: datetime | None
    condition: str | None
    fee: dict[str, Any] | None
    training: dict[str, Any] | None
    exam: dict[str, Any] | None
    scores: dict[str, Any] | None
    review: dict[str, Any] | None = Field(None, description="score reviews by subject (theory, skills, …): one each")
    passed: bool | None
    results_confirmed: bool | None
    scores_cancelled: str | None = Field(
        None,
        description="why every score of the session was cancelled (a disqualification, 001 承诺); scores and "
        "passed are then empty",
    )
    certificate: dict[str, Any] | None
    submitted_at: datetime
    updated_at: datetime
    reviews: list[ReviewDecision]


class HistoryEntry(BaseModel):
    event: str
    at: datetime
    actor_id: str
    actor_role: str
    detail: dict[str, Any]


class Certificate(BaseModel):
    """The certificate registry: status, data reporting, printing, delivery, and its history."""

    certificate_id: UUID
    number: str
    registration_id: UUID
    exam_id: UUID
    institution_id: UUID
    institution_name: str
    holder_name: str
    holder_gender: str
    id_type: str
    id_masked: str
    occupation: str
    job: str | None
    level: int
    issued_on: date
    status: str
    data_status: str
    report_attempts: int
    queryable_on: date | None
    forms_printed: int
    delivery: str | None
    handed_over_on: date | None
    proof_number: str | None
    corrected: bool
    updated_at: datetime
    history: list[HistoryEntry]


class CorrectionEntry(BaseModel):
    """The correction ledger: a certificate's one correction application and its decision."""

    certificate_id: UUID
    number: str
    institution_id: UUID
    fields: dict[str, Any]
    reasons: str
    evidence: dict[str, Any]
    applied_on: date
    applied_by: str
    checked: dict[str, Any] | None = Field(
        None,
        description="profile S: the association's check (queryable_nationally, work_order, checked_on, checked_by)",
    )
    decision: str | None = Field(
        description="pending, approved, rejected, or moot: the certificate was revoked before a decision"
    )
    decided_by: str | None
    decided_at: datetime | None
    decision_reasons: str | None
    report_due: date | None


class AuditEvent(BaseModel):
    position: int
    event_id: UUID
    type: str
    label: str = Field(description="what happened, in Chinese with `Accept-Language: zh` (domain/glossary.py)")
    aggregate_id: UUID
    aggregate_version: int
    actor_id: str
    actor_role: str
    request_id: str | None
    institution_id: UUID | None
    at: datetime
    data: dict[str, Any]


class Snapshot(BaseModel):
    name: str = Field(description="send it as the X-As-Of header to read these read models")
    position: int = Field(description="the last event log position they include")
    as_of: datetime | None = Field(description="the moment asked for, when the rebuild was given one")
    built_at: datetime
    projections: list[str]
    complete: bool = Field(description="every read model was rebuilt: only then can the API read it")


class AuditPage(BaseModel):
    total: int
    after: int
    limit: int
    items: list[AuditEvent]
    next_after: int | None


class OpenDeadline(BaseModel):
    subject_id: UUID
    step: str
    institution_id: UUID
    label: str
    start: date
    due: date
    provisional: bool
    unit: str
    days_left: int
    overdue: bool


class InstitutionDeadlines(BaseModel):
    institution_id: UUID
    open: int
    overdue: int
    overdue_by_step: dict[str, int]
    institution_standing: str = Field(
        "active",
        description="active, suspended or withdrawn (004 第十条): a suspended institution may not do the acts "
        "its deadlines ask for until reinstated; they stay owed, and overdue",
    )
    standing_since: date | None = None


class LevelUse(BaseModel):
    level: int
    used: int


class Demand(BaseModel):
    year: int
    level: int
    forms: int
    filed_on: date
    late: bool = Field(description="filed after 25 January of its year (004 §2)")


class StockLedger(BaseModel):
    institution_id: UUID
    stock_id: UUID
    received: int
    used: int
    spoiled: int
    destroyed: int
    in_stock: int
    last_stocktake_period: str | None
    last_stocktake_on: date | None
    last_counted: int | None
    last_discrepancy: int | None
    updated_at: datetime
    used_per_level: list[LevelUse]
    demand: list[Demand]
    receipts: list[dict[str, Any]]
    stocktakes: list[dict[str, Any]]


class FormMovement(BaseModel):
    position: int = Field(description="the event's position in the log (GET /audit?after=… to see it)")
    event: str = Field(description="forms_received, form_used, form_returned, form_spoiled, print_spoiled, "
                                   "forms_destroyed")  # fmt: skip
    certificate_number: str | None
    reason: str | None = Field(description="why, or a receipt's delivery note")
    at: datetime


class Form(BaseModel):
    serial: int
    label: str
    status: Literal["in_stock", "used", "spoiled", "destroyed"]
    certificate_id: UUID | None
    certificate_number: str | None
    level: int | None
    reason: str | None
    at: datetime
    history: list[FormMovement] = Field(description="what happened to the form, in log order")


class Issued(BaseModel):
    institution_id: UUID
    institution_name: str
    occupation: str
    level: int
    month: str
    issued: int
    void: int | None = Field(
        description="of those issued that month, how many are void now: revoked (001 承诺, 004 第九条/第十条) or their "
        "data deleted (000). null while a worker rebuilds the statistics after an upgrade"
    )


class PassRate(BaseModel):
    plan_id: UUID
    plan_number: str
    institution_id: UUID
    occupation: str
    level: int
    sessions: int
    candidates: int
    absent: int
    sat: int
    passed: int
    disqualified: int | None = Field(
        description="of those who sat, how many had every score of the session cancelled, their declaration found "
        "false (001 承诺): counted as sat and not passed. null while a worker rebuilds the statistics after an upgrade"
    )
    pass_rate: Decimal | None


class PartitionOffset(BaseModel):
    topic: str
    partition: int
    offset: int
    position: int | None
    applied_at: datetime | None


class TokenLife(BaseModel):
    token_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class PrincipalView(BaseModel):
    """Who acts: the id events carry as their actor, and what it stands for."""

    principal_id: str
    name: str
    role: str
    institution_id: UUID | None
    created_at: datetime
    tokens: list[TokenLife] = []


class Stall(BaseModel):
    """An event a projection could not apply: the live worker retries it until it applies
    (partition >= 0); a rebuild had to leave it out (partition -1) until the next rebuild."""

    topic: str
    partition: int
    offset: int | None
    position: int | None
    event_id: str | None
    event_type: str | None
    error: str
    attempts: int
    since: datetime
    last_attempt: datetime


class ProjectionLag(BaseModel):
    projection: str
    status: Literal["current", "behind", "stalled"]
    events_behind: int
    applied_through: int  # every event at and below this log position is applied
    seconds_behind: float
    last_applied_at: datetime | None
    rebuilt_at: datetime | None
    up_to_date_version: bool
    partitions: list[PartitionOffset]
    stalls: list[Stall]


class RelayStatus(BaseModel):
    active: bool
    position: int
    head: int
    lag_events: int
    lag_seconds: float | None  # age of the oldest event the broker has not acknowledged
    oldest_unpublished_at: str | None
    last_published_at: str | None
    rewind_requested_to: int | None


class Health(BaseModel):
    status: str
    today: date


class LastEvent(BaseModel):
    type: str
    position: int
    at: datetime
    actor_id: str
    actor_role: str


class AsOf(BaseModel):
    at: datetime | None
    position: int | None


class AggregateState(BaseModel):
    """One aggregate as its events up to a moment made it (as-of replay)."""

    aggregate_id: UUID
    type: str
    version: int
    current_version: int
    as_of: AsOf
    last_event: LastEvent
    state: dict[str, Any]
