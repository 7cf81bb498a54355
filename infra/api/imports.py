"""File imports: the candidate list and the score book, CSV or XLSX, all rows or none."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, UploadFile
from pydantic import BaseModel

from infra.api.deps import STAFF, ExamSvc, RegSvc, RequestId, allow, staff_scope
from infra.api.problems import Problem
from infra.api.tokens import Principal
from infra.services import imports

router = APIRouter(tags=["imports"], dependencies=[Depends(staff_scope)])
Staff = Annotated[Principal, Depends(allow(*STAFF))]
REFUSED = {422: {"model": Problem, "description": "the file is refused whole: `errors` names every bad row"}}


class Imported(BaseModel):
    rows: int
    registration_ids: list[UUID] = []


@router.post("/plans/{plan_id}/registrations/import", status_code=201, responses=REFUSED)
async def import_candidates(
    plan_id: UUID, file: UploadFile, who: Staff, svc: RegSvc, x_request_id: RequestId = None
) -> Imported:
    """The candidate list of a collective registration (集体报名), one row per candidate."""
    content = await file.read(imports.MAX_BYTES + 1)  # enough to tell it is too big
    ids = imports.import_candidates(svc, who.actor(x_request_id), plan_id, content, file.filename or "")
    return Imported(rows=len(ids), registration_ids=ids)


@router.post("/sessions/{exam_id}/scores/import", status_code=201, responses=REFUSED)
async def import_scores(
    exam_id: UUID, file: UploadFile, who: Staff, svc: ExamSvc, x_request_id: RequestId = None
) -> Imported:
    """The session's score book (成绩册): ID number, name and a column per subject; 缺考 for the absent."""
    content = await file.read(imports.MAX_BYTES + 1)  # enough to tell it is too big
    return Imported(rows=imports.import_scores(svc, who.actor(x_request_id), exam_id, content, file.filename or ""))
