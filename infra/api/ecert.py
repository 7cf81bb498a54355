"""Electronic certificates over HTTP: staff issue them, holders and staff download them, anyone checks a
file against the authority, online (is it still the certificate's current file?) or offline with the
trust material served here."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from domain.certificate import Certificate
from domain.errors import InvalidInput, NotFound
from domain.institution import Institution
from domain.model import Role
from infra.api.commands import CertificateRef
from infra.api.deps import CertSvc, Conn, RequestId, allow, certificate_id, own_institution
from infra.api.problems import PROBLEMS
from infra.api.tokens import Principal
from infra.api.verify import rate_limited
from infra.bus.privacy import ref
from infra.services import attachments as files
from infra.services import ecert
from infra.services.credentials import Credentials
from projections import certificates as registry

router = APIRouter(tags=["electronic certificates"])
Staff = Annotated[Principal, Depends(allow(Role.INSTITUTION_STAFF))]
StaffOrHolder = Annotated[Principal, Depends(allow(Role.INSTITUTION_STAFF, Role.CANDIDATE))]
PDF = PROBLEMS | {200: {"content": {"application/pdf": {}}, "description": "the signed PDF"},
                  201: {"content": {"application/pdf": {}}, "description": "the signed PDF"}}  # fmt: skip
MAX_PDF = 5 * 1024 * 1024


def _pdf(content: bytes, name: str, status: int = 200) -> Response:
    return Response(content, status_code=status, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


@router.post("/certificates/{certificate}/electronic", status_code=201, response_class=Response, responses=PDF)
def issue(certificate: CertificateRef, who: Staff, svc: CertSvc, c: Conn, request: Request,
          x_request_id: RequestId = None) -> Response:  # fmt: skip
    """The electronic certificate (004 §11.1(7)): the certificate's page marked 电子证书, signed by the
    institution (PAdES). Issued again after a correction; the earlier file is superseded."""
    cid = certificate_id(c, certificate)
    own_institution(who, svc.certificate(cid).institution_id, "certificates")
    content = ecert.issue_electronic(svc, who.actor(x_request_id), cid, request.app.state.public_url)
    return _pdf(content, f"{svc.certificate(cid).number}.pdf", 201)


@router.get("/certificates/{certificate}/electronic.pdf", response_class=Response, responses=PDF)
def download(certificate: CertificateRef, who: StaffOrHolder, svc: CertSvc, c: Conn, request: Request) -> Response:
    """The current electronic certificate: to its institution's staff and to its holder."""
    cert: Certificate = svc.certificate(certificate_id(c, certificate))
    if who.role is Role.CANDIDATE:
        if ref(cert.holder.id_number, request.app.state.key) != who.candidate_ref:
            raise NotFound(f"no electronic certificate {certificate} of yours")
    else:
        own_institution(who, cert.institution_id, "certificates")
    if cert.revoked is not None:
        raise NotFound(f"certificate {cert.number} was revoked on {cert.revoked}: its electronic certificate is void")
    content = svc.attachments.content(cert.electronic.sha256) if cert.electronic else None
    if content is None:
        raise NotFound(f"certificate {cert.number} has no current electronic certificate (staff issue one)")
    return _pdf(content, f"{cert.number}.pdf")


class PdfCheck(BaseModel):
    signature: Literal["good", "not_good", "unsigned"]
    signed_by: str | None
    signed_at: datetime | None
    problems: list[str]
    number: str | None
    status: Literal["current", "superseded", "data_deleted", "revoked", "not_issued", "unknown"] = Field(
        description="current: the certificate's electronic certificate now; superseded: one issued before a "
        "correction or a key's revocation; data_deleted; revoked: the certificate was revoked (its holder "
        "disqualified, 001 承诺, or declared void with its institution's others, 004 第十条); not_issued: no file the certificate was ever issued as; "
        "unknown: the file names no certificate the registry holds"
    )


@router.post("/verify/pdf", dependencies=[Depends(rate_limited)], responses=PROBLEMS)
async def verify_pdf(file: UploadFile, svc: CertSvc, c: Conn) -> PdfCheck:
    """Is this electronic certificate genuine, and does the certificate still stand behind it? No token;
    nothing personal beyond what the file itself shows."""
    content = await file.read(MAX_PDF + 1)
    if len(content) > MAX_PDF:
        raise InvalidInput([("file", f"larger than {MAX_PDF:,} bytes: not an electronic certificate")])
    if files.sniff(content) != "application/pdf":  # sniff names an empty or unknown file itself
        raise InvalidInput([("file", "not a PDF file (judged by its content)")])

    def check() -> PdfCheck:
        authority = ecert.authority(svc)
        checked = ecert.verify(content, authority.certificate_pem.encode(), authority.crl())
        if not checked.readable:
            raise InvalidInput([("file", checked.problems[0])])
        status: Literal["current", "superseded", "data_deleted", "revoked", "not_issued", "unknown"] = "unknown"
        row = registry.certificate_by_number(c, checked.number) if checked.number else None
        if row is not None:
            cert: Certificate = svc.certificate(row["certificate_id"])
            sha = files.digest(content)
            if cert.data_status.value == "deleted":
                status = "data_deleted"
            elif cert.revoked is not None:
                status = "revoked"
            elif cert.electronic is not None and cert.electronic.sha256 == sha:
                status = "current"
            elif sha in cert.electronic_issued:
                status = "superseded"
            else:
                status = "not_issued"
        return PdfCheck(signature="unsigned" if not checked.signed else "good" if checked.good else "not_good",
                        signed_by=checked.signer, signed_at=checked.signed_at, problems=checked.problems,
                        number=checked.number, status=status)  # fmt: skip

    return await run_in_threadpool(check)


@router.get("/esign/authority.pem", response_class=Response,
            responses={200: {"content": {"application/x-pem-file": {}}, "description": "the trust anchor"}})  # fmt: skip
def authority_pem(svc: CertSvc) -> Response:
    """The signing authority's certificate: the trust anchor `skillcert verify-pdf --trust` and any PAdES
    validator take."""
    return Response(ecert.authority(svc).certificate_pem, media_type="application/x-pem-file")


@router.get("/esign/crl", response_class=Response,
            responses={200: {"content": {"application/pkix-crl": {}}, "description": "DER"}})  # fmt: skip
def crl(svc: CertSvc) -> Response:
    """The authority's current revocation list (DER): revoked institution keys."""
    return Response(ecert.authority(svc).crl(), media_type="application/pkix-crl")


# The certificate as a Verifiable Credential (infra.services.credentials; docs/credentials.md).
VC = {"content": {"application/vc+ld+json": {}, "application/json": {}}}


def _credentials(svc: CertSvc, request: Request) -> Credentials:
    """Made once per app: it makes its table when made, which is no work for every request."""
    state = request.app.state
    if getattr(state, "credentials", None) is None:
        state.credentials = Credentials(svc, state.public_url)
    return state.credentials  # type: ignore[no-any-return]


@router.get("/certificates/{certificate}/credential", responses=PROBLEMS | {200: {"description": "the signed VC"}})
def credential(certificate: CertificateRef, who: StaffOrHolder, svc: CertSvc, c: Conn, request: Request) -> dict:  # type: ignore[type-arg]
    """The certificate as a W3C Verifiable Credential 2.0 (Open Badges 3.0), signed by the institution
    (DataIntegrityProof, ecdsa-jcs-2019) with a Bitstring Status List entry: to its staff and its holder."""
    cert: Certificate = svc.certificate(certificate_id(c, certificate))
    if who.role is Role.CANDIDATE:
        if ref(cert.holder.id_number, request.app.state.key) != who.candidate_ref:
            raise NotFound(f"no certificate {certificate} of yours")
    else:
        own_institution(who, cert.institution_id, "certificates")
    return _credentials(svc, request).issue(cert.id)


@router.get("/esign/keys/{serial}")
def signing_key(serial: Annotated[str, Path(pattern=r"^[0-9a-f]{1,40}$")], svc: CertSvc, request: Request) -> dict:  # type: ignore[type-arg]
    """An institution's signing key as a verification method (Multikey), with its X.509 certificate and,
    once revoked, when."""
    return _credentials(svc, request).key_document(serial)


@router.get("/esign/status/{institution_id}")
def status_list(institution_id: UUID, svc: CertSvc, request: Request) -> dict:  # type: ignore[type-arg]
    """The institution's Bitstring Status List credential: a set bit is a credential that no longer stands."""
    return _credentials(svc, request).status_list(institution_id)


@router.get("/esign/institutions/{institution_id}")
def issuer(institution_id: UUID, svc: CertSvc, request: Request) -> dict:  # type: ignore[type-arg]
    """The issuer profile the credentials name."""
    institution: Institution = svc.get(Institution, institution_id, "institution")
    base = request.app.state.public_url.rstrip("/")
    return {"id": f"{base}/esign/institutions/{institution_id}", "type": ["Profile"], "name": institution.name,
            "filing": institution.filing.prefix,
            "signingKeys": [f"{base}/esign/keys/{s}#key" for s, good in institution.signing.items() if good]}  # fmt: skip


@router.get("/institutions/{institution_id}/sample.pdf", response_class=Response, responses=PDF)
def sample(institution_id: UUID, who: Annotated[Principal, Depends(allow(Role.INSTITUTION_STAFF, Role.PROVINCIAL_CENTRE,
           Role.HR_DEPARTMENT, Role.AUDITOR))], svc: CertSvc) -> Response:  # fmt: skip
    """The certificate sample with its seal, as filed with the HR department (004 §11.1(7))."""
    own_institution(who, institution_id, "filings")
    institution: Institution = svc.get(Institution, institution_id, "institution")
    content = svc.attachments.content(institution.sample) if institution.sample else None
    if content is None:
        raise NotFound(f"{institution.name} has no filed certificate sample")
    return _pdf(content, f"sample-{institution.filing.prefix}.pdf")
