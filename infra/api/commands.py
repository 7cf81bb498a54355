"""Every command of the lifecycle, from registering an institution to deleting a certificate's data.

The actor on each event is the token's holder. Roles are checked here and again in the domain;
staff scope (their own institution) is the domain's rule, candidate scope (their own
registrations) is checked here against the write side.
"""

from __future__ import annotations

from datetime import date, time
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from domain.certificate import Correction, Delivery, IdDocument, LossKind
from domain.eligibility import Evidence
from domain.errors import Forbidden, InvalidInput, NotFound
from domain.exam import ReviewOutcome, Room, Subject
from domain.institution import DeadlineProfile, Filing, ScopeEntry
from domain.levels import Level
from domain.model import Role
from domain.personal import Personal, personal
from domain.plan import EvaluationPlan, PlanDetails
from domain.registration import Attachment, RegistrationForm
from domain.text import MULTILINE
from infra.api.deps import (
    CENTRE,
    HR,
    STAFF,
    CertSvc,
    Conn,
    ExamSvc,
    RegSvc,
    RequestId,
    allow,
    candidate_owns,
    certificate_id,
    staff_scope,
)
from infra.api.tokens import Principal
from infra.bus.privacy import ref
from infra.services.registrations import Decision

router = APIRouter(tags=["commands"], dependencies=[Depends(staff_scope)])

Staff = Annotated[Principal, Depends(allow(*STAFF))]
Centre = Annotated[Principal, Depends(allow(*CENTRE))]
Hr = Annotated[Principal, Depends(allow(*HR))]
# Who decides a correction: the HR department (profile T) or the skills centre (profile S); the domain
# checks which, and the region.
Decider = Annotated[Principal, Depends(allow(Role.HR_DEPARTMENT, Role.PROVINCIAL_CENTRE))]
Association = Annotated[Principal, Depends(allow(Role.ASSOCIATION))]
StaffOrCandidate = Annotated[Principal, Depends(allow(Role.INSTITUTION_STAFF, Role.CANDIDATE))]
StaffOrCentre = Annotated[Principal, Depends(allow(Role.INSTITUTION_STAFF, Role.PROVINCIAL_CENTRE))]


class Body(BaseModel):
    # A field the API does not know is an error, not silently dropped: e.g. an "actor" in a body.
    model_config = ConfigDict(extra="forbid")


class Created(BaseModel):
    id: UUID


class PlanCreated(BaseModel):
    id: UUID
    registration_code: str


class InstitutionIn(Body):
    name: str = Field(min_length=1, max_length=100)
    filing: Filing
    profile: DeadlineProfile
    scope: list[ScopeEntry] = Field(min_length=1, max_length=500, description="the evaluation scope filed (004 §8)")


class ScopeIn(Body):
    scope: list[ScopeEntry] = Field(min_length=1, max_length=500, description="the whole scope as filed from now on")
    reason: str = Field(min_length=1, max_length=200, description="why: the filing notice", json_schema_extra=MULTILINE)


class RegistrationIn(Body):
    registration_code: str = Field(max_length=20, description="the 8-character code from the institution's contact")
    form: RegistrationForm


class ReviewIn(Body):
    decision: Decision
    reasons: str = Field("", max_length=500, json_schema_extra=MULTILINE)
    condition: str | None = Field(None, max_length=10, description="approvals: the eligibility condition met, e.g. 2.1")
    evidence: Evidence | None = Field(None, description="approvals: what the reviewer verified")


class AmendmentIn(Body):
    form: RegistrationForm
    explanation: str = Field(min_length=1, max_length=500, json_schema_extra=MULTILINE)
    document: Attachment


class Changed(BaseModel):
    changed: list[str]


class InvalidationIn(Body):
    certificates: list[str] = Field(min_length=1, max_length=5000, description="certificate ids or numbers")
    reasons: str = Field(min_length=1, max_length=400, json_schema_extra=MULTILINE)


class Invalidation(BaseModel):
    revoked: list[str] = Field(description="the numbers of the certificates revoked now")
    void_already: list[str] = Field(description="numbers that were void already (revoked, or their data deleted)")


class Disqualification(BaseModel):
    events: list[str] = Field(
        description="what was recorded, in order: registration.disqualified, then "
        "exam_session.scores_cancelled and certificate.revoked, or evaluation_plan.seat_released"
    )


class FeeIn(Body):
    receipt_number: str = Field(min_length=1, max_length=50)
    amount: Decimal = Field(gt=0, le=100_000, max_digits=10, decimal_places=2)


class TrainingAccountIn(Body):
    account: str = Field(min_length=1, max_length=50)


class TrainingIn(Body):
    hours: Decimal = Field(ge=0, le=10_000, max_digits=7, decimal_places=1)
    evidence: Attachment


class SessionIn(Body):
    session: str = Field(min_length=1, max_length=20, description="the session's name within the plan, e.g. 01")
    exam_date: date
    starts_at: time
    ends_at: time
    location: str = Field(min_length=1, max_length=100)
    rooms: list[Room] = Field(min_length=1, max_length=200)


class TicketsIn(Body):
    registration_ids: list[UUID] | None = Field(
        None, max_length=5000, description="default: every approved, fee-paid registration without a ticket"
    )


class Seat(BaseModel):
    registration_id: UUID
    room: str
    seat: int


class Step(StrEnum):
    CHECK_IN = "check_in"
    IDENTITY_CHECK = "identity_check"
    SIGN_IN = "sign_in"
    START = "start"
    FINISH = "finish"
    ABSENT = "absent"


class AttendanceIn(Body):
    step: Step
    seat: int | None = Field(None, ge=1, le=500, description="sign_in: the seat the candidate sits at")
    second_identity_check: bool = Field(False, description="sign_in: the proctor checked identity again")
    reason: str = Field("", max_length=200, description="absent: why", json_schema_extra=MULTILINE)


class Absent(BaseModel):
    marked_absent: int


class ScoreBookIn(Body):
    book: dict[UUID, dict[Subject, Decimal]] = Field(description="registration id -> subject -> score", max_length=5000)


class ScoreReviewIn(Body):
    subject: Subject
    reason: str = Field(min_length=1, max_length=500, json_schema_extra=MULTILINE)


class ReviewAnswerIn(Body):
    outcome: ReviewOutcome
    subject: Subject | None = Field(
        None, description="the subject whose review this answers; may be left out while only one is open"
    )
    note: str = Field(min_length=1, max_length=500, json_schema_extra=MULTILINE)
    score: Decimal | None = Field(
        None, ge=0, le=100, max_digits=5, decimal_places=1, description="changed: the new score"
    )


class ReasonsIn(Body):
    reasons: str = Field(min_length=1, max_length=500, json_schema_extra=MULTILINE)


class IssueIn(Body):
    registration_ids: list[UUID] | None = Field(None, max_length=5000, description="default: every confirmed pass")


class IssuedCertificate(BaseModel):
    registration_id: UUID
    number: str


class CertificatesIn(Body):
    certificates: list[str] = Field(min_length=1, max_length=5000, description="certificate ids or numbers")


class PrintIn(Body):
    form_serial: int | None = Field(None, ge=1, le=99_999_999, description="default: the next blank form in stock")


class Printed(BaseModel):
    form_serial: int


class HandOverIn(Body):
    delivery: Delivery
    application_form: Attachment
    tracking_number: str | None = Field(None, max_length=50, description="mail: the parcel's tracking number")
    id_number: str | None = Field(None, min_length=5, max_length=30, json_schema_extra=personal(Personal.ID_NUMBER),
                                  description="pickup: the number on the holder's ID card presented at the counter "
                                              "(000: 凭身份证领取), checked against the holder's")  # fmt: skip


class ReceiptIn(Body):
    signed_by: str = Field(min_length=1, max_length=50)


class ProofApplicationIn(Body):
    kind: LossKind
    application_form: Attachment
    id_number: str = Field(min_length=5, max_length=30, description="the number on the ID card presented",
                           json_schema_extra=personal(Personal.ID_NUMBER))  # fmt: skip
    id_document: IdDocument = Field(description="profile T: original_seen (004 §13); profile S: copy_received (000)")
    id_copy: Attachment | None = Field(None, description="profile S: the ID card copy handed in")


class ProofAccepted(BaseModel):
    receipt_number: str = Field(description="the 受理回执's number; GET …/proof-receipt.pdf prints it")


class ProofHandoverIn(Body):
    receipt_number: str = Field(min_length=1, max_length=40)
    id_number: str = Field(min_length=5, max_length=30, description="the number on the original ID card presented",
                           json_schema_extra=personal(Personal.ID_NUMBER))  # fmt: skip


class Proof(BaseModel):
    proof_number: str


class CorrectionIn(Body):
    correction: Correction
    reasons: str = Field(min_length=1, max_length=500, json_schema_extra=MULTILINE)
    evidence: Attachment


class DocumentIn(Body):
    document: Attachment


class DemandIn(Body):
    year: int = Field(ge=2000, le=2100)
    per_level: dict[Level, int]


class FormsIn(Body):
    first: int = Field(ge=1, le=99_999_999)
    last: int = Field(ge=1, le=99_999_999)
    delivery_note: str = Field(min_length=1, max_length=100)


class SpoiledIn(Body):
    serial: int = Field(ge=1, le=99_999_999)
    reason: str = Field(min_length=1, max_length=200, json_schema_extra=MULTILINE)


class DestroyedIn(Body):
    serials: list[int] = Field(min_length=1, max_length=10_000)
    witness: str = Field(min_length=1, max_length=50)


class StocktakeIn(Body):
    period: str = Field(max_length=10, description="the half year, e.g. 2026-H1")
    counted: int = Field(ge=0, le=99_999_999)
    note: str = Field("", max_length=200, json_schema_extra=MULTILINE)


class Discrepancy(BaseModel):
    discrepancy: int = Field(description="counted minus the books")


async def key(request: Request) -> bytes:
    return request.app.state.key


Key = Annotated[bytes, Depends(key)]
CertificateRef = Annotated[str, Path(max_length=40, description="a certificate id, or its 22-character number")]


# Institutions and plans.
@router.post("/institutions", status_code=201)
def register_institution(body: InstitutionIn, who: Centre, svc: RegSvc, x_request_id: RequestId = None) -> Created:
    return Created(
        id=svc.register_institution(who.actor(x_request_id), body.name, body.filing, body.profile, body.scope)
    )


@router.put("/institutions/{institution_id}/scope", status_code=204)
def amend_scope(institution_id: UUID, body: ScopeIn, who: Centre, svc: RegSvc, x_request_id: RequestId = None) -> None:
    """The provincial centre files the institution's evaluation scope anew (the whole of it)."""
    svc.amend_scope(who.actor(x_request_id), institution_id, body.scope, body.reason)


# 004 第十条: 弄虚作假，徇私舞弊，滥发证书的，除宣布其所发证书无效外，视情节轻重，暂停或取消评价业务.
@router.post("/institutions/{institution_id}/suspension", status_code=204)
def suspend_institution(
    institution_id: UUID, body: ReasonsIn, who: Centre, svc: RegSvc, x_request_id: RequestId = None
) -> None:
    """暂停评价业务: until reinstated, the institution publishes no plan, takes no registration, schedules no exam and
    issues no ticket and no certificate, paper or electronic. Its certificates stay valid unless declared void
    (`/invalidation`). By the provincial centre, or a city's skills centre for an institution filed in its city.
    409 when it is suspended or withdrawn already. It waits up to 30 s for the institution's acts in progress (a batch
    print, an issuance), refusing its new ones meanwhile (503); 503 with Retry-After when they did not end, nothing
    changed. The same for a reinstatement and a withdrawal."""
    svc.suspend_institution(who.actor(x_request_id), institution_id, body.reasons)


@router.post("/institutions/{institution_id}/reinstatement", status_code=204)
def reinstate_institution(
    institution_id: UUID, body: ReasonsIn, who: Centre, svc: RegSvc, x_request_id: RequestId = None
) -> None:
    """The suspension lifted. 409 when the institution is not suspended (a withdrawal is final)."""
    svc.reinstate_institution(who.actor(x_request_id), institution_id, body.reasons)


@router.post("/institutions/{institution_id}/withdrawal", status_code=204)
def withdraw_institution(
    institution_id: UUID, body: ReasonsIn, who: Centre, svc: RegSvc, x_request_id: RequestId = None
) -> None:
    """取消评价业务: for good, as a suspension is until lifted."""
    svc.withdraw_institution(who.actor(x_request_id), institution_id, body.reasons)


@router.post("/institutions/{institution_id}/invalidation")
def invalidate_certificates(
    institution_id: UUID, body: InvalidationIn, who: Centre, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> Invalidation:
    """宣布其所发证书无效: the certificates named, issued by this institution, are revoked (certificate.revoked), all
    or none: public verification says each is revoked, a signed credential of it is marked revoked, and none is
    printed or handed over again. The registrations and scores stay as they were: the candidates were not found
    at fault. A certificate void already is named and left as it is. By the provincial centre, or a city's skills
    centre for an institution filed in its city."""
    ids, unknown = [], []
    for n, x in enumerate(body.certificates):  # every unknown one named at once: the list is fixed in one go
        try:
            ids.append(certificate_id(c, x))
        except NotFound as e:
            unknown.append((f"certificates.{n}", e.message))
    if unknown:
        raise InvalidInput(unknown)
    return Invalidation(**svc.invalidate(who.actor(x_request_id), institution_id, ids, body.reasons, body.certificates))


@router.post("/institutions/{institution_id}/plans", status_code=201)
def publish_plan(
    institution_id: UUID, body: PlanDetails, who: Staff, svc: RegSvc, x_request_id: RequestId = None
) -> PlanCreated:
    plan_id, code = svc.publish_plan(who.actor(x_request_id), institution_id, body)
    return PlanCreated(id=plan_id, registration_code=code)


class PlanCode(BaseModel):
    plan_id: UUID
    plan_number: str
    registration_code: str


@router.get("/plans/{plan_id}/registration-code")
def plan_code(plan_id: UUID, who: Staff, svc: RegSvc) -> PlanCode:
    """The code candidates register for the plan with (001: they have it from the institution's contact), for the
    institution's staff: it was answered only once, when the plan was published."""
    plan = svc.get(EvaluationPlan, plan_id, "plan")
    return PlanCode(plan_id=plan.id, plan_number=plan.details.plan_number, registration_code=plan.registration_code)


# Registrations.
@router.post("/registrations", status_code=201)
def register(
    body: RegistrationIn, who: StaffOrCandidate, svc: RegSvc, k: Key, x_request_id: RequestId = None
) -> Created:
    """Register a candidate for the plan that the registration code names: a candidate registers themselves (the
    form's ID number must be their token's), an institution's staff register anyone for their own plans. The form
    and its attachments are checked as they arrive (422 naming each field); the application conditions are the
    review's to decide. 409 when the plan is full or closed, or the candidate is registered for it already.
    Registrations arriving together for one plan are saved together."""
    if who.role is Role.CANDIDATE and ref(body.form.id_number, k) != who.candidate_ref:
        raise Forbidden("candidates register only themselves: the form's ID number is not the token's")
    return Created(id=svc.register(who.actor(x_request_id), body.registration_code, body.form))


@router.post("/registrations/{registration_id}/resubmission", status_code=204)
def resubmit(
    registration_id: UUID, body: RegistrationForm, who: StaffOrCandidate, svc: RegSvc, k: Key,
    x_request_id: RequestId = None,
) -> None:  # fmt: skip
    candidate_owns(who, svc, registration_id, k)
    svc.resubmit(who.actor(x_request_id), registration_id, body)


@router.post("/registrations/{registration_id}/review", status_code=204)
def review(registration_id: UUID, body: ReviewIn, who: Staff, svc: RegSvc, x_request_id: RequestId = None) -> None:
    svc.review(who.actor(x_request_id), registration_id, body.decision, body.reasons, body.condition, body.evidence)


@router.post("/registrations/{registration_id}/amendment")
def amend(registration_id: UUID, body: AmendmentIn, who: Staff, svc: RegSvc, x_request_id: RequestId = None) -> Changed:
    """A change after confirmation, with a written explanation (000 ②)."""
    return Changed(
        changed=svc.amend(who.actor(x_request_id), registration_id, body.form, body.explanation, body.document)
    )


@router.post("/registrations/{registration_id}/disqualification")
def disqualify(
    registration_id: UUID, body: ReasonsIn, who: StaffOrCentre, svc: RegSvc, x_request_id: RequestId = None
) -> Disqualification:
    """The candidate's declaration was found false (001 承诺: 如有虚假，愿意接受取消申报资格、已参加考试则被取消当次考试
    所有科目成绩、已获得证书则被收回、注销证书数据检索及注销证书资格的处理). In one transaction: the registration is
    disqualified; if the candidate holds an admission ticket, every score of that session is cancelled; if a
    certificate was issued, it is revoked and its public verification says so. A registration with no ticket yet
    gives its place back to the plan. By the plan's institution or the provincial centre. 409 when the
    registration was rejected or is disqualified already."""
    return Disqualification(events=svc.disqualify(who.actor(x_request_id), registration_id, body.reasons))


@router.post("/registrations/{registration_id}/fee", status_code=204)
def pay_fee(registration_id: UUID, body: FeeIn, who: Staff, svc: RegSvc, x_request_id: RequestId = None) -> None:
    svc.pay_fee(who.actor(x_request_id), registration_id, body.receipt_number, body.amount)


@router.post("/registrations/{registration_id}/training-account", status_code=204)
def open_training_account(
    registration_id: UUID, body: TrainingAccountIn, who: Staff, svc: RegSvc, x_request_id: RequestId = None
) -> None:
    svc.open_training_account(who.actor(x_request_id), registration_id, body.account)


@router.post("/registrations/{registration_id}/training", status_code=204)
def complete_training(
    registration_id: UUID, body: TrainingIn, who: Staff, svc: RegSvc, x_request_id: RequestId = None
) -> None:
    svc.complete_training(who.actor(x_request_id), registration_id, body.hours, body.evidence)


# Exam sessions and the exam day.
@router.post("/plans/{plan_id}/sessions", status_code=201)
def schedule(plan_id: UUID, body: SessionIn, who: Staff, svc: ExamSvc, x_request_id: RequestId = None) -> Created:
    return Created(
        id=svc.schedule(
            who.actor(x_request_id), plan_id, body.session, body.exam_date, body.starts_at, body.ends_at,
            body.location, body.rooms,
        )
    )  # fmt: skip


@router.post("/sessions/{exam_id}/tickets")
def issue_tickets(
    exam_id: UUID, body: TicketsIn, who: Staff, svc: ExamSvc, x_request_id: RequestId = None
) -> list[Seat]:
    seats = svc.issue_tickets(who.actor(x_request_id), exam_id, body.registration_ids)
    return [Seat(registration_id=s.registration_id, room=s.room, seat=s.seat) for s in seats]


@router.post("/registrations/{registration_id}/attendance", status_code=204)
def attendance(
    registration_id: UUID, body: AttendanceIn, who: StaffOrCandidate, svc: ExamSvc, reg: RegSvc, k: Key,
    x_request_id: RequestId = None,
) -> None:  # fmt: skip
    """One step of the exam day for one candidate; candidates may only check in online."""
    candidate_owns(who, reg, registration_id, k)
    actor = who.actor(x_request_id)
    if body.step is Step.SIGN_IN:
        if body.seat is None:
            raise InvalidInput([("seat", "signing in names the seat")])
        svc.sign_in(actor, registration_id, body.seat, body.second_identity_check)
    elif body.step is Step.ABSENT:
        svc.mark_absent(actor, registration_id, body.reason)
    else:
        step = {Step.CHECK_IN: svc.check_in, Step.IDENTITY_CHECK: svc.check_identity, Step.START: svc.start,
                Step.FINISH: svc.finish}[body.step]  # fmt: skip
        step(actor, registration_id)


@router.post("/sessions/{exam_id}/day-closure")
def close_day(exam_id: UUID, who: Staff, svc: ExamSvc, x_request_id: RequestId = None) -> Absent:
    """Close the exam day: whoever did not start is absent."""
    return Absent(marked_absent=svc.close_day(who.actor(x_request_id), exam_id))


@router.put("/sessions/{exam_id}/scores", status_code=204)
def record_scores(exam_id: UUID, body: ScoreBookIn, who: Staff, svc: ExamSvc, x_request_id: RequestId = None) -> None:
    """The score book, all of it or none. For CSV or XLSX files: POST /sessions/{exam_id}/scores/import."""
    svc.record_scores(who.actor(x_request_id), exam_id, body.book)


@router.post("/sessions/{exam_id}/scores/publication", status_code=204)
def publish_scores(exam_id: UUID, who: Staff, svc: ExamSvc, x_request_id: RequestId = None) -> None:
    svc.publish_scores(who.actor(x_request_id), exam_id)


@router.post("/registrations/{registration_id}/score-review", status_code=204)
def request_score_review(
    registration_id: UUID, body: ScoreReviewIn, who: StaffOrCandidate, svc: ExamSvc, reg: RegSvc, k: Key,
    x_request_id: RequestId = None,
) -> None:  # fmt: skip
    candidate_owns(who, reg, registration_id, k)
    svc.request_review(who.actor(x_request_id), registration_id, body.subject, body.reason)


@router.post("/registrations/{registration_id}/score-review/answer", status_code=204)
def answer_score_review(
    registration_id: UUID, body: ReviewAnswerIn, who: Staff, svc: ExamSvc, x_request_id: RequestId = None
) -> None:
    svc.answer_review(who.actor(x_request_id), registration_id, body.outcome, body.note, body.score, body.subject)


@router.post("/sessions/{exam_id}/results/report", status_code=204)
def report_results(exam_id: UUID, who: Staff, svc: ExamSvc, x_request_id: RequestId = None) -> None:
    svc.report_results(who.actor(x_request_id), exam_id)


@router.post("/sessions/{exam_id}/results/confirmation", status_code=204)
def confirm_results(exam_id: UUID, who: Centre, svc: ExamSvc, x_request_id: RequestId = None) -> None:
    svc.confirm_results(who.actor(x_request_id), exam_id)


@router.post("/sessions/{exam_id}/results/return", status_code=204)
def return_results(exam_id: UUID, body: ReasonsIn, who: Centre, svc: ExamSvc, x_request_id: RequestId = None) -> None:
    svc.return_results(who.actor(x_request_id), exam_id, body.reasons)


# Certificates.
@router.post("/sessions/{exam_id}/certificates", status_code=201)
def issue_certificates(
    exam_id: UUID, body: IssueIn, who: Staff, svc: CertSvc, x_request_id: RequestId = None
) -> list[IssuedCertificate]:
    issued = svc.issue(who.actor(x_request_id), exam_id, body.registration_ids)
    return [IssuedCertificate(registration_id=r, number=n) for r, n in issued.items()]


@router.post("/certificates/data-report", status_code=204)
def report_data(body: CertificatesIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None) -> None:
    svc.report_data(who.actor(x_request_id), [certificate_id(c, x) for x in body.certificates])


@router.post("/certificates/data-acceptance", status_code=204)
def accept_data(body: CertificatesIn, who: Centre, svc: CertSvc, c: Conn, x_request_id: RequestId = None) -> None:
    svc.accept_data(who.actor(x_request_id), [certificate_id(c, x) for x in body.certificates])


@router.post("/certificates/queryability", status_code=204)
def make_queryable(body: CertificatesIn, who: Centre, svc: CertSvc, c: Conn, x_request_id: RequestId = None) -> None:
    """Record that the certificates are queryable on the national platform."""
    svc.make_queryable(who.actor(x_request_id), [certificate_id(c, x) for x in body.certificates])


@router.post("/certificates/{certificate}/data-return", status_code=204)
def return_data(
    certificate: CertificateRef, body: ReasonsIn, who: Centre, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    svc.return_data(who.actor(x_request_id), certificate_id(c, certificate), body.reasons)


@router.post("/certificates/{certificate}/print")
def print_certificate(
    certificate: CertificateRef, body: PrintIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> Printed:
    """Record the certificate printed on a blank form of the institution's stock."""
    return Printed(form_serial=svc.print(who.actor(x_request_id), certificate_id(c, certificate), body.form_serial))


@router.post("/certificates/{certificate}/handover", status_code=204)
def hand_over(
    certificate: CertificateRef, body: HandOverIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    svc.hand_over(
        who.actor(x_request_id), certificate_id(c, certificate), body.delivery, body.application_form,
        body.tracking_number, body.id_number,
    )  # fmt: skip


@router.post("/certificates/{certificate}/receipt", status_code=204)
def sign_receipt(
    certificate: CertificateRef, body: ReceiptIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    svc.sign_receipt(who.actor(x_request_id), certificate_id(c, certificate), body.signed_by)


@router.post("/certificates/{certificate}/proof-application", status_code=201)
def apply_for_proof(
    certificate: CertificateRef, body: ProofApplicationIn, who: Staff, svc: CertSvc, c: Conn,
    x_request_id: RequestId = None,
) -> ProofAccepted:  # fmt: skip
    """Accept a loss or damage proof application (004 annex 3) after checking the applicant's ID;
    answers the acceptance receipt's number (受理回执)."""
    receipt = svc.apply_for_proof(who.actor(x_request_id), certificate_id(c, certificate), body.kind,
                                  body.application_form, body.id_number, body.id_document, body.id_copy)  # fmt: skip
    return ProofAccepted(receipt_number=receipt)


@router.post("/certificates/{certificate}/proof-handover", status_code=201)
def hand_over_proof(
    certificate: CertificateRef, body: ProofHandoverIn, who: Staff, svc: CertSvc, c: Conn,
    x_request_id: RequestId = None,
) -> Proof:  # fmt: skip
    """The holder collects the proof with the original ID card and the acceptance receipt (004 §13 (三))."""
    cid = certificate_id(c, certificate)
    return Proof(proof_number=svc.hand_over_proof(who.actor(x_request_id), cid, body.receipt_number, body.id_number))


@router.post("/certificates/{certificate}/proof", status_code=201)
def issue_proof(
    certificate: CertificateRef, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> Proof:
    return Proof(proof_number=svc.issue_proof(who.actor(x_request_id), certificate_id(c, certificate)))


@router.post("/certificates/{certificate}/correction-application", status_code=204)
def apply_for_correction(
    certificate: CertificateRef, body: CorrectionIn, who: Staff, svc: CertSvc, c: Conn,
    x_request_id: RequestId = None,
) -> None:  # fmt: skip
    svc.apply_for_correction(
        who.actor(x_request_id), certificate_id(c, certificate), body.correction, body.reasons, body.evidence
    )


class CorrectionCheckIn(Body):
    queryable_nationally: bool = Field(description="is the certificate's data queryable on the national network?")
    work_order: str | None = Field(None, max_length=40, description="技能等级认定需求工单 number, when it is not")


@router.post("/certificates/{certificate}/correction-check", status_code=204)
def check_correction(
    certificate: CertificateRef, body: CorrectionCheckIn, who: Association, svc: CertSvc, c: Conn,
    x_request_id: RequestId = None,
) -> None:  # fmt: skip
    """Profile S (000 二3): the association checks the data against the national network first."""
    svc.check_correction(who.actor(x_request_id), certificate_id(c, certificate), body.queryable_nationally,
                         body.work_order)  # fmt: skip


@router.post("/certificates/{certificate}/correction-approval", status_code=204)
def approve_correction(
    certificate: CertificateRef, who: Decider, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    """Profile T: the HR department where the institution is filed (004 §14). Profile S: after the
    association's check, the skills centre of the institution's region (000 二3)."""
    svc.approve_correction(who.actor(x_request_id), certificate_id(c, certificate))


@router.post("/certificates/{certificate}/correction-rejection", status_code=204)
def reject_correction(
    certificate: CertificateRef, body: ReasonsIn, who: Decider, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    svc.reject_correction(who.actor(x_request_id), certificate_id(c, certificate), body.reasons)


@router.post("/certificates/{certificate}/holder-commitment", status_code=204)
def record_holder_commitment(
    certificate: CertificateRef, body: DocumentIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    svc.record_holder_commitment(who.actor(x_request_id), certificate_id(c, certificate), body.document)


class PhotoIn(Body):
    photo: Attachment = Field(description="uploaded with POST /attachments?kind=photo; kind photo")


@router.put("/certificates/{certificate}/photo", status_code=204)
def attach_photo(
    certificate: CertificateRef, body: PhotoIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    """The holder's recent colour photo on white (004 §11.2(1)), printed on the certificate; required
    before printing. A later one replaces it for the next print."""
    svc.attach_photo(who.actor(x_request_id), certificate_id(c, certificate), body.photo)


@router.post("/certificates/{certificate}/deletion-check", status_code=204)
def check_deletion(
    certificate: CertificateRef, body: CorrectionCheckIn, who: Association, svc: CertSvc, c: Conn,
    x_request_id: RequestId = None,
) -> None:  # fmt: skip
    """Profile S (000 二3): after the holder's commitment, the association checks the data against the national
    network before the institution deletes it."""
    svc.check_deletion(who.actor(x_request_id), certificate_id(c, certificate), body.queryable_nationally,
                       body.work_order)  # fmt: skip


@router.post("/certificates/{certificate}/deletion", status_code=204)
def delete_data(
    certificate: CertificateRef, body: ReasonsIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    svc.delete_data(who.actor(x_request_id), certificate_id(c, certificate), body.reasons)


# Blank stock.
@router.post("/institutions/{institution_id}/stock/demand", status_code=204)
def file_demand(institution_id: UUID, body: DemandIn, who: Staff, svc: CertSvc, x_request_id: RequestId = None) -> None:
    svc.file_demand(who.actor(x_request_id), institution_id, body.year, body.per_level)


@router.post("/institutions/{institution_id}/stock/receipts", status_code=204)
def receive_forms(
    institution_id: UUID, body: FormsIn, who: Staff, svc: CertSvc, x_request_id: RequestId = None
) -> None:
    svc.receive_forms(who.actor(x_request_id), institution_id, body.first, body.last, body.delivery_note)


@router.post("/institutions/{institution_id}/stock/spoiled", status_code=204)
def spoil_form(institution_id: UUID, body: SpoiledIn, who: Staff, svc: CertSvc, x_request_id: RequestId = None) -> None:
    svc.spoil_form(who.actor(x_request_id), institution_id, body.serial, body.reason)


@router.post("/institutions/{institution_id}/stock/destroyed", status_code=204)
def destroy_forms(
    institution_id: UUID, body: DestroyedIn, who: Staff, svc: CertSvc, x_request_id: RequestId = None
) -> None:
    svc.destroy_forms(who.actor(x_request_id), institution_id, body.serials, body.witness)


@router.post("/institutions/{institution_id}/stock/stocktakes")
def take_stock(
    institution_id: UUID, body: StocktakeIn, who: Staff, svc: CertSvc, x_request_id: RequestId = None
) -> Discrepancy:
    return Discrepancy(
        discrepancy=svc.take_stock(who.actor(x_request_id), institution_id, body.period, body.counted, body.note)
    )
