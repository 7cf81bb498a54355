"""Printing certificates on the institution's blank stock (institution staff only): PDFs out."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from certgen import documents
from certgen.certificate import Unprintable, check_glyphs
from domain.certificate import Certificate
from domain.errors import Conflict, InvalidInput, NotFound
from domain.exam import ExamSession, Sitting
from domain.institution import Institution
from domain.personal import mask_id_number as mask
from domain.plan import EvaluationPlan
from domain.registration import Registration, Status
from domain.stock import form_label
from domain.text import MULTILINE
from infra.api.commands import Body, CertificateRef, CertificatesIn, Key, StaffOrCandidate
from infra.api.deps import (
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
from infra.api.problems import Problem
from infra.api.tokens import Principal
from infra.services.certificates import Certificates
from infra.services.printing import plan_to_print, print_certificates, return_abandoned, to_print

log = logging.getLogger("skillcert.print")
SWEEP_EVERY = 20.0  # seconds between looks for print jobs whose process died (return_abandoned)


@contextmanager
def sweeping(svc: Certificates, every: float = SWEEP_EVERY) -> Iterator[None]:
    """While the API runs, give back the forms of batch prints whose process died before its PDF was made (an API
    worker or a `skillcert print` killed outright): at start, then every `every` seconds. Each API worker sweeps;
    a job is dealt with by whichever takes its lease first."""
    stop = threading.Event()

    def run() -> None:
        failing = False
        while True:
            try:
                for number, form in return_abandoned(svc):
                    log.warning("form NO. %08d (certificate %s) was booked by a print that stopped before its PDF "
                                "was made: it is back in stock, and the certificate awaits a print", form, number)  # fmt: skip
                failing = False
            except Exception as e:  # noqa: BLE001 - PostgreSQL away: said once, in a line, and tried again next time
                if not failing:
                    log.warning("could not look for abandoned print jobs (%s); trying again every %.0f s",
                                str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__, every)  # fmt: skip
                failing = True
            if stop.wait(every):
                return

    thread = threading.Thread(target=run, name="print-leases", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


router = APIRouter(tags=["printing"], dependencies=[Depends(staff_scope)])
Staff = Annotated[Principal, Depends(allow(*STAFF))]
PDF = {
    200: {"content": {"application/pdf": {}}, "description": "one A4 landscape page per certificate, in form order"},
    409: {"model": Problem, "description": "a certificate cannot be printed now (not yet queryable, already printed)"},
}


class SpoiledIn(Body):
    form_serial: int = Field(ge=1, le=99_999_999, description="the form the spoiled print is on")
    reason: str = Field(min_length=1, max_length=200, json_schema_extra=MULTILINE)


def pdf(content: bytes, name: str) -> Response:
    return Response(
        content, media_type="application/pdf", headers={"Content-Disposition": f'inline; filename="{name}"'}
    )


@router.post("/sessions/{exam_id}/certificates/print", response_class=Response, responses=PDF)
def print_session(
    exam_id: UUID, who: Staff, svc: CertSvc, request: Request, x_request_id: RequestId = None
) -> Response:
    """Every certificate of the session that awaits a print, each booked on the next blank form."""
    content = print_certificates(svc, who.actor(x_request_id), to_print(svc, exam_id), request.app.state.public_url)
    return pdf(content, f"certificates-{exam_id}.pdf")


@router.post("/plans/{plan_id}/certificates/print", response_class=Response, responses=PDF)
def print_plan(plan_id: UUID, who: Staff, svc: CertSvc, request: Request, x_request_id: RequestId = None) -> Response:
    """Every certificate of the plan that awaits a print, whichever session its holder sat, in number order."""
    content = print_certificates(
        svc, who.actor(x_request_id), plan_to_print(svc, plan_id), request.app.state.public_url
    )
    return pdf(content, f"certificates-{plan_id}.pdf")


@router.post("/certificates/print", response_class=Response, responses=PDF)
def print_named(
    body: CertificatesIn, who: Staff, svc: CertSvc, c: Conn, request: Request, x_request_id: RequestId = None
) -> Response:
    """These certificates (ids or numbers), each booked on the next blank form: a reprint after a spoiled one."""
    ids = [certificate_id(c, x) for x in body.certificates]
    content = print_certificates(svc, who.actor(x_request_id), ids, request.app.state.public_url)
    return pdf(content, "certificates.pdf")


@router.post("/certificates/{certificate}/spoiled-print", status_code=204)
def spoil_print(
    certificate: CertificateRef, body: SpoiledIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> None:
    """The print on this form came out spoiled: the form goes to the spoiled ones, the certificate awaits a print."""
    svc.spoil_print(who.actor(x_request_id), certificate_id(c, certificate), body.form_serial, body.reason)


class NotMadeIn(CertificatesIn):
    reason: str = Field(min_length=1, max_length=200, json_schema_extra=MULTILINE,
                        description="why the prints never came out, e.g. the PDF never reached the printer")  # fmt: skip


class FormReturned(BaseModel):
    certificate_number: str
    form_serial: int
    form: str = Field(description="the form's label, as printed on it")


@router.post("/certificates/print-not-made")
def print_not_made(
    body: NotMadeIn, who: Staff, svc: CertSvc, c: Conn, x_request_id: RequestId = None
) -> list[FormReturned]:
    """These certificates' prints were booked and never made (a batch print's PDF that never reached the printer):
    each form goes back to stock, blank, and each certificate awaits a print again. All or none: a certificate with
    no current print, or handed over, is a 409 naming it. A print that came out wrong is a spoiled print instead."""
    ids = [certificate_id(c, x) for x in body.certificates]
    returned = svc.print_not_made(who.actor(x_request_id), ids, body.reason)
    return [FormReturned(certificate_number=n, form_serial=f, form=form_label(f)) for n, f in returned]


# The other documents, rendered from the write side.
def _standing(cert: Certificate) -> None:
    """A proof stands in for the certificate: none of its paperwork for a certificate revoked or whose data was
    deleted."""
    if cert.revoked is not None:
        raise Conflict(f"certificate {cert.number} was revoked on {cert.revoked}; it and its proofs are void")
    if not cert.printable:
        raise Conflict(f"certificate {cert.number}'s data was deleted; it and its proofs are void")


@router.get("/certificates/{certificate}/proof.pdf", response_class=Response, responses=PDF)
def proof_pdf(certificate: CertificateRef, who: Staff, svc: CertSvc, c: Conn) -> Response:
    """The certificate proof (004 annex 4) last issued for a lost or damaged certificate."""
    cert = svc.certificate(certificate_id(c, certificate))
    if not cert.proofs:
        raise NotFound(f"no proof was issued for certificate {cert.number}")
    _standing(cert)
    number = cert.proofs[-1]
    content = documents.certificate_proof(
        institution=cert.institution_name, holder_name=cert.holder.name, id_type=cert.holder.id_type.value,
        id_number=cert.holder.id_number, occupation=cert.occupation, job=cert.job, level=cert.level,
        number=cert.number, proof_number=number, issued_on=cert.proof_dates[number],
    )  # fmt: skip
    return pdf(content, f"{number}.pdf")


@router.get("/certificates/{certificate}/proof-receipt.pdf", response_class=Response, responses=PDF)
def proof_receipt_pdf(certificate: CertificateRef, who: Staff, svc: CertSvc, c: Conn) -> Response:
    """The acceptance receipt (受理回执) of the last proof application: the holder collects the proof with it."""
    cert = svc.certificate(certificate_id(c, certificate))
    if not cert.receipts:
        raise NotFound(f"no proof application of certificate {cert.number} has a receipt")
    _standing(cert)
    receipt = cert.receipts[-1]
    kind, applied_on, due = cert.receipt_details[receipt]
    content = documents.proof_receipt(
        institution=cert.institution_name, holder_name=cert.holder.name, number=cert.number, receipt_number=receipt,
        kind=kind.value, applied_on=applied_on, due=due.due,
    )  # fmt: skip
    return pdf(content, f"{receipt}.pdf")


@router.get("/certificates/{certificate}/proof-application.pdf", response_class=Response, responses=PDF)
def proof_application_pdf(certificate: CertificateRef, who: Staff, svc: CertSvc, c: Conn) -> Response:
    """The loss or damage proof application (004 annex 3), filled in for the holder to sign."""
    cert = svc.certificate(certificate_id(c, certificate))
    _standing(cert)
    content = documents.loss_application(
        holder_name=cert.holder.name, id_number=cert.holder.id_number, occupation=cert.occupation,
        number=cert.number, level=cert.level,
    )  # fmt: skip
    return pdf(content, f"{cert.number}-application.pdf")


@router.get("/institutions/{institution_id}/stock/demand/{year}.pdf", response_class=Response, responses=PDF)
def demand_pdf(
    institution_id: UUID,
    year: Annotated[int, Path(ge=2000, le=2100)],
    who: Staff,
    svc: CertSvc,
    contact: Annotated[str, Query(min_length=1, max_length=50)],
    phone: Annotated[str, Query(min_length=1, max_length=30)],
    address: Annotated[str, Query(min_length=1, max_length=100)],
) -> Response:
    """The blank stock demand form (004 annex 1) for a year whose demand was filed."""
    stock = svc.stock(institution_id)
    if year not in stock.demands:
        raise NotFound(f"no blank stock demand was filed for {year}")
    institution = svc.get(Institution, institution_id, "institution")
    # What the request gives is the client's to correct: named, a 422 (the Unprintable handler's 409 is for stored data)
    given = [(f"query.{name}", why) for name, value in (("contact", contact), ("phone", phone), ("address", address))
             if (why := unprintable(value))]  # fmt: skip
    if given:
        raise InvalidInput(given)
    content = documents.demand_form(institution=institution.name, contact=contact, phone=phone, address=address,
                                    year=year, per_level=stock.demands[year])  # fmt: skip
    return pdf(content, f"demand-{year}.pdf")


def unprintable(value: str) -> str | None:
    try:
        check_glyphs([value], "the value")
    except Unprintable as e:
        return str(e).removeprefix("the value: ")
    return None


@router.get("/sessions/{exam_id}/tickets.pdf", response_class=Response, responses=PDF)
def tickets_pdf(exam_id: UUID, who: Staff, exams: ExamSvc) -> Response:
    """Every admission ticket of the session, one page each, in seat order."""
    session = exams.get(ExamSession, exam_id, "exam session")
    plan = exams.get(EvaluationPlan, session.plan_id, "plan")
    sittings = sorted(exams.sittings(session), key=lambda s: (s.room, s.seat))
    if not sittings:
        raise NotFound(f"session {session.session} has issued no admission tickets")
    tickets = []
    for s in sittings:
        registration = exams.get(Registration, s.registration_id, "registration")
        if registration.status is Status.DISQUALIFIED:  # the seat stays theirs, empty: no ticket to print
            continue
        tickets.append(_ticket(registration, plan, session, s))
    if not tickets:
        raise NotFound(f"session {session.session}'s tickets are all of disqualified candidates")
    return pdf(documents.admission_tickets(tickets), f"tickets-{exam_id}.pdf")


@router.get("/registrations/{registration_id}/ticket.pdf", response_class=Response, responses=PDF)
def ticket_pdf(registration_id: UUID, who: StaffOrCandidate, exams: ExamSvc, reg: RegSvc, k: Key) -> Response:
    """One candidate's admission ticket (准考证), to print at home: the candidate's own, or any of the institution's
    for its staff. 404 until the institution has issued it (tickets open one week before the exam, 000 ②)."""
    candidate_owns(who, reg, registration_id, k)
    registration = exams.get(Registration, registration_id, "registration")
    if registration.status is Status.DISQUALIFIED:
        raise Conflict("this registration was disqualified: it has no admission ticket to print")
    try:
        sitting = exams.sitting(registration_id)
    except NotFound:
        raise NotFound("no admission ticket is issued for this registration yet: the institution issues them from "
                       "one week before the exam") from None  # fmt: skip
    session = exams.get(ExamSession, sitting.exam_id, "exam session")
    plan = exams.get(EvaluationPlan, session.plan_id, "plan")
    return pdf(documents.admission_tickets([_ticket(registration, plan, session, sitting)]),
               f"ticket-{registration_id}.pdf")  # fmt: skip


def _ticket(registration: Registration, plan: EvaluationPlan, session: ExamSession, s: Sitting) -> dict[str, Any]:
    form = registration.form
    return dict(
        name=form.name, id_number_masked=mask(form.id_number), plan_name=plan.details.name,
        occupation=plan.details.occupation, level=plan.details.level, session=session.session,
        exam_date=session.exam_date, starts_at=session.starts_at, location=session.location, room=s.room,
        seat=s.seat, institution=plan.institution_name,
    )  # fmt: skip
