"""Attachments over HTTP: upload a file (its type sniffed from its bytes), download one within scope.

An upload answers the attachment's reference (kind-less: the same file can be an ID card copy in
one application and a correction's evidence in another); commands then refer to it by that
`sha256`, and the store refuses a reference to anything it does not hold. `?kind=photo` also checks
the holder-photo rules (infra.services.attachments), the only attachment printed.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from domain.certificate import Certificate, certificate_id
from domain.errors import Forbidden, NotFound
from domain.model import Role
from domain.registration import Registration
from infra.api.deps import CertSvc, RequestId, allow, own_institution
from infra.api.problems import PROBLEMS
from infra.api.tokens import Principal
from infra.bus.privacy import ref
from infra.services import attachments as files
from infra.services.certificates import Certificates

router = APIRouter(tags=["attachments"])
Uploader = Annotated[Principal, Depends(allow(Role.INSTITUTION_STAFF, Role.CANDIDATE))]
Reader = Annotated[Principal, Depends(allow(Role.INSTITUTION_STAFF, Role.CANDIDATE, Role.PROVINCIAL_CENTRE,
                                            Role.HR_DEPARTMENT))]  # fmt: skip
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the attachment's SHA-256, lower-case hex")]
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "application/pdf": "pdf"}


class UploadKind(StrEnum):
    DOCUMENT = "document"
    PHOTO = "photo"


class Uploaded(BaseModel):
    sha256: str
    media_type: str
    size: int
    photo: bool
    width: int | None = None
    height: int | None = None
    uploaded_at: datetime


@router.post("/attachments", status_code=201, responses=PROBLEMS, max_body_size=files.MAX_BYTES + 64 * 1024)
async def upload(
    file: UploadFile,
    who: Uploader,
    svc: CertSvc,
    kind: Annotated[UploadKind, Query(description="photo: the holder's certificate photo, checked as such")] = (
        UploadKind.DOCUMENT
    ),
    x_request_id: RequestId = None,
) -> Uploaded:
    """A scan, a signed form or the holder's photo (JPEG, PNG or PDF, judged by content): refer to it
    in commands as `{"kind": …, "file_name": …, "sha256": <answered here>}`."""
    content = await file.read(files.MAX_BYTES + 1)

    def keep() -> Uploaded:
        size = None
        if kind is UploadKind.PHOTO:
            media_type, size = files.check_photo(content)
        else:
            media_type = files.check_document(content)
        held = svc.attachments.put(content, files.digest(content), media_type, who.principal_id or who.token_id, size,
                                   who.institution_id)  # fmt: skip
        return Uploaded(sha256=held.sha256, media_type=held.media_type, size=held.size, photo=held.photo,
                        width=held.width, height=held.height, uploaded_at=held.uploaded_at)  # fmt: skip

    return await run_in_threadpool(keep)  # decoding an image is CPU work: never on the event loop


def may_read(who: Principal, svc: Certificates, key: bytes, sha256: str) -> bool:
    """Its uploaders, and a staff uploader's colleagues; otherwise through what refers to it: its
    institution's staff, the regional HR department or centre of that institution, the provincial
    centre, and the candidate whose registration or certificate it is. Never through a certificate
    whose data was deleted, nor a revoked certificate's electronic certificate."""
    me = who.principal_id or who.token_id
    for _, by, institution in svc.attachments.uploaders([sha256]):
        if by == me or (who.role is Role.INSTITUTION_STAFF and institution is not None
                        and institution == who.institution_id):  # fmt: skip
            return True
    for originator, institution in svc.attachments.referrers(sha256):
        agg = svc.repository.get(originator)
        holder = agg.holder.id_number if isinstance(agg, Certificate) else None
        if isinstance(agg, Certificate) and svc.erased_with_data(agg.id):
            continue
        if isinstance(agg, Certificate) and agg.revoked is not None and sha256 in agg.electronic_issued:
            # A revoked certificate's electronic certificate is void (001 承诺, 004 第十条): handed to no one again,
            # as its own download (electronic.pdf) refuses it. The copy already out verifies online as revoked.
            continue
        if isinstance(agg, Registration):
            holder = agg.form.id_number
            if svc.erased_with_data(certificate_id(agg.id)):
                continue
        if who.role is Role.CANDIDATE:
            if holder is not None and ref(holder, key) == who.candidate_ref:
                return True
            continue
        if who.role is Role.ASSOCIATION:
            continue
        try:
            own_institution(who, institution, "attachments")
            return True
        except Forbidden:
            continue
    return False


@router.get("/attachments/{sha256}", response_class=Response, responses=PROBLEMS | {
    200: {"content": {"image/jpeg": {}, "image/png": {}, "application/pdf": {}}, "description": "the file"}})  # fmt: skip
def download(sha256: Sha256, who: Reader, svc: CertSvc, request: Request) -> Response:
    """The file, to whoever may see it (see may_read); 404 alike for not held, erased and not yours,
    so that a hash cannot be probed. Auditors and the association read events, not scans: 403."""
    held = svc.attachments.held(sha256)
    try:
        allowed = held is not None and held.erased_at is None and may_read(who, svc, request.app.state.key, sha256)
    except Exception:  # noqa: BLE001 - whatever went wrong, the answer says no more than "not here"
        allowed = False
    content = svc.attachments.content(sha256) if allowed else None
    if held is None or content is None:  # not held, erased (also meanwhile), or not the caller's to see
        raise NotFound(f"no attachment {sha256}")
    name = f"{sha256[:16]}.{EXTENSIONS.get(held.media_type, 'bin')}"
    return Response(content, media_type=held.media_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"', "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store"})  # fmt: skip
