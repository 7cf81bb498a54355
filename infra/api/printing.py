"""Printing certificates on the institution's blank stock (institution staff only): PDFs out."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import Field

from certgen.printing import plan_to_print, print_certificates, to_print
from infra.api.commands import Body, CertificateRef, CertificatesIn
from infra.api.deps import STAFF, CertSvc, Conn, RequestId, allow, certificate_id, staff_scope
from infra.api.problems import Problem
from infra.tokens import Principal

router = APIRouter(tags=["printing"], dependencies=[Depends(staff_scope)])
Staff = Annotated[Principal, Depends(allow(*STAFF))]
PDF = {
    200: {"content": {"application/pdf": {}}, "description": "one A4 landscape page per certificate, in form order"},
    409: {"model": Problem, "description": "a certificate cannot be printed now (not yet queryable, already printed)"},
}


class SpoiledIn(Body):
    form_serial: int = Field(ge=1, le=99_999_999, description="the form the spoiled print is on")
    reason: str = Field(min_length=1, max_length=200)


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
