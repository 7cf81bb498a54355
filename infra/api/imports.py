"""File imports: the candidate list and the score book, CSV, tab-separated text or XLSX, all rows or none.

The upload is refused while it arrives once it passes the limit (max_body_size: the declared
length is checked before a byte is read); the file is read in a child process with limits of its
own (sheets.read_isolated), and the rows are checked and saved in a worker thread: the event loop,
and with it /health and every other request, never waits on an import.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from infra.api.deps import STAFF, ExamSvc, RegSvc, RequestId, allow, staff_scope
from infra.api.problems import PROBLEMS
from infra.api.tokens import Principal
from infra.services import imports
from infra.services.sheets import MAX_BYTES, read_isolated

router = APIRouter(tags=["imports"], dependencies=[Depends(staff_scope)])
Staff = Annotated[Principal, Depends(allow(*STAFF))]
REFUSED = PROBLEMS | {422: {"description": "the file is refused whole: `errors` names every bad row"}}
UPLOAD_LIMIT = MAX_BYTES + 64 * 1024  # the file and the multipart wrapping around it


class Imported(BaseModel):
    rows: int
    registration_ids: list[UUID] = []


class ScoresImported(BaseModel):
    rows: int = Field(description="rows of the book recorded: scored and absent")
    scored: int
    absent: int = Field(description="rows of candidates marked absent (缺考), as the exam day recorded them")


@router.post("/plans/{plan_id}/registrations/import", status_code=201, responses=REFUSED,
             max_body_size=UPLOAD_LIMIT)  # fmt: skip
async def import_candidates(
    plan_id: UUID, file: UploadFile, who: Staff, svc: RegSvc, x_request_id: RequestId = None
) -> Imported:
    """The candidate list of a collective registration (集体报名), one row per candidate."""
    content = await file.read(MAX_BYTES + 1)  # enough to tell it is too big
    name = file.filename or ""
    ids = await run_in_threadpool(
        imports.import_candidates, svc, who.actor(x_request_id), plan_id, content, name, read_isolated
    )
    return Imported(rows=len(ids), registration_ids=ids)


@router.post("/sessions/{exam_id}/scores/import", status_code=201, responses=REFUSED, max_body_size=UPLOAD_LIMIT)
async def import_scores(
    exam_id: UUID, file: UploadFile, who: Staff, svc: ExamSvc, x_request_id: RequestId = None
) -> ScoresImported:
    """The session's score book (成绩册): ID number, name and a column per subject; 缺考 for the absent."""
    content = await file.read(MAX_BYTES + 1)
    name = file.filename or ""
    book = await run_in_threadpool(
        imports.import_scores, svc, who.actor(x_request_id), exam_id, content, name, read_isolated
    )
    return ScoresImported(rows=book.scored + book.absent, scored=book.scored, absent=book.absent)
