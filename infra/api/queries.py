"""Queries over the read models, narrowed to what the asker may see.

The catalogue of plans is public (candidates browse it before they have any record). Everything
else needs a token: staff see their own institution, candidates their own records, the provincial
centre, the HR department and auditors everything.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal
from uuid import UUID
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from consumers.lag import lag
from domain import text
from domain.deadlines import Step
from domain.errors import Forbidden, InvalidInput, NotFound
from domain.glossary import event_label, event_name
from domain.model import Role
from domain.stock import form_label
from infra.api import views as v
from infra.api.deps import (
    EVERYONE,
    OVERSIGHT,
    READERS,
    Conn,
    Pages,
    QuickConn,
    RegSvc,
    allow,
    institution_filter,
    own_institution,
    own_record,
    page,
)
from infra.api.tokens import Principal
from infra.api.views import Page
from infra.bus import relay
from infra.bus.privacy import ref
from infra.services.sheets import write_csv
from infra.store import history
from projections import PROJECTIONS, candidates, catalogue, deadlines, statistics, stock
from projections import certificates as registry
from projections.audit import trail as audit_trail
from projections.snapshots import listed

router = APIRouter(tags=["queries"])
operations = APIRouter(tags=["operations"])

Anyone = Annotated[Principal, Depends(allow(*EVERYONE))]
# The association reads the certificates whose corrections it checks (000 二3), and nothing else.
CertificateReader = Annotated[Principal, Depends(allow(*EVERYONE, Role.ASSOCIATION))]
Reader = Annotated[Principal, Depends(allow(*READERS))]
Overseer = Annotated[Principal, Depends(allow(*OVERSIGHT))]


async def today(request: Request) -> date:
    return request.app.state.today()


Today = Annotated[date, Depends(today)]


class Me(BaseModel):
    token_id: str
    principal_id: str
    name: str
    role: Role
    institution_id: UUID | None


@router.get("/me")
def me(who: CertificateReader) -> Me:
    """Who this token acts as: its principal id is the actor its commands put on their events."""
    return Me(token_id=who.token_id, principal_id=who.principal_id, name=who.name, role=who.role,
              institution_id=who.institution_id)  # fmt: skip


Auditor = Annotated[Principal, Depends(allow(Role.AUDITOR))]


@operations.get("/principals")
def principals(
    c: Conn,
    request: Request,
    who: Auditor,
    name: Annotated[str | None, Query(max_length=100)] = None,
    role: Role | None = None,
) -> list[v.PrincipalView]:
    """For auditors: who the actors on events are. Events name a principal id, never a name."""
    return request.app.state.tokens.everyone(c, name, role.value if role else None)


@operations.get("/principals/{principal_id}")
def principal(
    principal_id: Annotated[str, Path(max_length=40)], c: Conn, request: Request, who: Auditor
) -> v.PrincipalView:
    """For auditors: one principal's name, role and scope, and the life of each of its tokens."""
    return request.app.state.tokens.who(c, principal_id)


@router.get("/institutions")
def list_institutions(
    c: Conn,
    p: Pages,
    standing: Literal["active", "suspended", "withdrawn"] | None = None,
    city_code: Annotated[str | None, Query(pattern=r"^[0-9]{2}$")] = None,
) -> Page[v.InstitutionView]:
    """The evaluation institutions filed, with whether each may evaluate (004 第十条: suspended or withdrawn, it takes
    no registration and issues no certificate). Public, as the catalogue is (no token needed)."""
    total, items = catalogue.institutions(c, standing=standing, city_code=city_code, limit=p.limit, offset=p.offset)
    return page(items, p, total)  # type: ignore[return-value]


@router.get("/plans")
def search_plans(
    c: Conn,
    day: Today,
    p: Pages,
    level: Annotated[int | None, Query(ge=1, le=5)] = None,
    occupation: Annotated[str | None, Query(max_length=50)] = None,
    location: Annotated[str | None, Query(max_length=50)] = None,
    institution_id: UUID | None = None,
    registration_open: bool | None = None,
    sort: Literal["registration_time", "exam_date"] = "registration_time",
) -> Page[v.Plan]:
    """The public catalogue of evaluation plans (no token needed)."""
    total, items = catalogue.search_plans(
        c, today=day, level=level, occupation=occupation, location=location,
        institution_id=str(institution_id) if institution_id else None, open_only=registration_open,
        sort=sort, limit=p.limit, offset=p.offset,
    )  # fmt: skip
    return page(items, p, total)  # type: ignore[return-value]


@router.get("/plans/{plan_id}")
def get_plan(plan_id: UUID, c: Conn, day: Today) -> v.Plan:
    """One plan of the public catalogue (no token needed)."""
    row = catalogue.get_plan(c, str(plan_id), day)
    if row is None:
        raise NotFound(f"no plan {plan_id} in the catalogue (yet)")
    return row


@router.get("/plans/{plan_id}/registrations")
def plan_registrations(
    plan_id: UUID,
    c: Conn,
    day: Today,
    who: Reader,
    p: Pages,
    status: Literal["submitted", "approved", "returned", "rejected", "disqualified"] | None = None,
) -> Page[v.Registration]:
    plan = catalogue.get_plan(c, str(plan_id), day)
    if plan is None:
        raise NotFound(f"no plan {plan_id} in the catalogue (yet)")
    own_institution(who, plan["institution_id"], "registrations")
    total, items = candidates.registrations_for_plan(c, str(plan_id), status, p.limit, p.offset)
    return page(items, p, total)  # type: ignore[return-value]


SHANGHAI = ZoneInfo("Asia/Shanghai")
STATUS_LABELS = {
    "submitted": "已提交",
    "approved": "审核通过",
    "returned": "退回修改",
    "rejected": "不予受理",
    "disqualified": "取消申报资格",
}


@router.get(
    "/plans/{plan_id}/registrations.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "the plan's registrations as a spreadsheet"}},
)
def plan_registrations_csv(
    plan_id: UUID,
    c: Conn,
    day: Today,
    who: Reader,
    status: Literal["submitted", "approved", "returned", "rejected", "disqualified"] | None = None,
) -> Response:
    """The plan's registrations (报名名单) as CSV for Excel: UTF-8 with a BOM, the ID number masked.
    Cells a spreadsheet would run as a formula (=, +, -, @) are written as text."""
    plan = catalogue.get_plan(c, str(plan_id), day)
    if plan is None:
        raise NotFound(f"no plan {plan_id} in the catalogue (yet)")
    own_institution(who, plan["institution_id"], "registrations")
    _, items = candidates.registrations_for_plan(c, str(plan_id), status, 100_000, 0)
    header = ["姓名", "证件类型", "证件号码", "申报依据", "审核状态", "审核意见", "报名时间（北京时间）"]
    rows = ([r["name"], r["id_type"], r["id_number"], r["basis"], STATUS_LABELS.get(r["status"], r["status"]),
             r["decision_reasons"] or "", f"{r['submitted_at'].astimezone(SHANGHAI):%Y-%m-%d %H:%M}"]
            for r in items)  # fmt: skip
    name = f"registrations-{plan['plan_number']}.csv"
    return Response(write_csv(header, rows), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})  # fmt: skip


@router.get("/registrations/{registration_id}")
def get_registration(registration_id: UUID, c: Conn, who: Anyone) -> v.Registration:
    row = candidates.get_registration(c, str(registration_id))
    if row is None:
        raise NotFound(f"no registration {registration_id} in the read model (yet)")
    own_record(who, row, "registrations")
    return row


@router.get("/candidates/{id_number}/registrations")
def candidate_registrations(
    id_number: Annotated[str, Path(max_length=30)], c: Conn, who: Anyone, p: Pages, request: Request
) -> Page[v.Registration]:
    """A person's registrations by ID number; staff see those with their institution."""
    holder = ref(text.id_number(id_number), request.app.state.key)
    if who.role is Role.CANDIDATE and holder != who.candidate_ref:
        raise Forbidden("candidates see only their own registrations")
    rows = candidates.registrations_of(c, holder)
    if who.role is Role.INSTITUTION_STAFF:
        rows = [r for r in rows if r["institution_id"] == who.institution_id]
    if who.regional:
        rows = [r for r in rows if str(r["institution_id"]) in (who.institutions or ())]
    return page(rows, p)  # type: ignore[return-value]


@router.get("/certificates/{number}")
def certificate(number: Annotated[str, Path(max_length=40)], c: Conn, who: CertificateReader) -> v.Certificate:
    """The certificate registry by certificate number, with its history of corrections and proofs."""
    row = registry.certificate_by_number(c, number)
    if row is None:
        raise NotFound(f"no certificate {number} in the registry (yet)")
    own_record(who, row, "certificates")
    return row


@router.get("/certificates")
def certificates(
    c: Conn,
    who: Anyone,
    p: Pages,
    request: Request,
    holder_id_number: Annotated[str | None, Query(max_length=30)] = None,
    name: Annotated[str | None, Query(max_length=50)] = None,
    institution_id: UUID | None = None,
) -> Page[v.Certificate]:
    """By the holder's ID number, or by name and institution."""
    if holder_id_number:
        holder = ref(text.id_number(holder_id_number), request.app.state.key)
        if who.role is Role.CANDIDATE and holder != who.candidate_ref:
            raise Forbidden("candidates see only their own certificates")
        rows = registry.certificates_of(c, holder)
    elif name and institution_id:
        if who.role is Role.CANDIDATE:
            raise Forbidden("candidates look up their certificates by their own ID number")
        rows = registry.certificates_named(c, name.strip(), str(institution_id))  # as names are stored: trimmed
    else:
        raise InvalidInput([("holder_id_number", "give an ID number, or a name and an institution_id")])
    if who.role is Role.INSTITUTION_STAFF:
        rows = [r for r in rows if r["institution_id"] == who.institution_id]
    if who.regional:
        rows = [r for r in rows if str(r["institution_id"]) in (who.institutions or ())]
    return page(rows, p)  # type: ignore[return-value]


@router.get("/certificates/{number}/correction")
def certificate_correction(
    number: Annotated[str, Path(max_length=40)], c: Conn, who: CertificateReader
) -> v.CorrectionEntry:
    """The correction ledger: the certificate's one correction application and its decision."""
    row = registry.certificate_by_number(c, number)
    if row is None:
        raise NotFound(f"no certificate {number} in the registry (yet)")
    own_record(who, row, "certificates")
    entry = registry.correction_of(c, number=number)
    if entry is None:
        raise NotFound(f"no correction application for certificate {number}")
    return entry


def wants_chinese(request: Request) -> bool:
    """`Accept-Language: zh`, `zh-CN`, `zh-Hans;q=0.9, en;q=0.8`: Chinese ranks first among those named."""
    ranked = []
    for part in request.headers.get("accept-language", "").split(","):
        tag, _, q = part.strip().partition(";q=")
        try:
            ranked.append((float(q or 1), tag.strip().lower()))
        except ValueError:
            continue
    ranked.sort(key=lambda x: -x[0])
    return bool(ranked) and ranked[0][1].startswith("zh")


@router.get("/audit")
def audit(
    c: Conn,
    who: Reader,
    request: Request,
    svc: RegSvc,
    aggregate_id: UUID | None = None,
    actor_id: Annotated[str | None, Query(max_length=100)] = None,
    institution_id: UUID | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="position of the last event of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> v.AuditPage:
    """The audit trail: events by aggregate, actor or institution in a time range, in store order.
    Staff see their own institution's."""
    total, items = audit_trail(
        c, aggregate_id=str(aggregate_id) if aggregate_id else None, actor_id=actor_id,
        institution_id=institution_filter(who, institution_id), since=since, until=until, after=after, limit=limit,
    )  # fmt: skip
    next_after = items[-1]["position"] if len(items) == limit else None
    chinese = wants_chinese(request)
    # The trail indexes the store; each event's data is read from there (infra.store.history).
    data = history.published_data(svc, c, [item["position"] for item in items], request.app.state.key)
    for item in items:
        item["data"] = data[item["position"]]
        item["label"] = (
            event_label(item["type"]) if chinese else event_name(item["type"]).replace(".", " ").replace("_", " ")
        )
    return v.AuditPage.model_validate(
        {"total": total, "after": after, "limit": limit, "items": items, "next_after": next_after}
    )


@router.get("/aggregates/{aggregate_id}")
def aggregate_as_of(
    aggregate_id: UUID,
    who: Overseer,
    svc: RegSvc,
    at: Annotated[datetime | None, Query(description="its state as of this time (with offset)")] = None,
    position: Annotated[int | None, Query(ge=1, le=2**62, description="as of this notification log position")] = None,
) -> v.AggregateState:
    """Any aggregate (registration, certificate, plan, stock, session…) as the event history stood at a
    moment: what the system knew then, and the last event it had applied, with who caused it."""
    found = history.as_of(svc, aggregate_id, at, position)
    if who.regional:  # an HR department of a region reads the aggregates of institutions filed there
        institution = found["state"].get("institution_id") or (aggregate_id if found["type"] == "Institution" else None)
        own_institution(who, institution, "aggregates")
    return found  # type: ignore[return-value]


@router.get("/deadlines")
def open_deadlines(
    c: Conn,
    who: Reader,
    day: Today,
    p: Pages,
    institution_id: UUID | None = None,
    step: Step | None = None,
    overdue: Annotated[bool, Query(description="only what is past due today")] = False,
) -> Page[v.OpenDeadline]:
    """Open deadlines, soonest first, with days left in the step's unit (negative: overdue)."""
    total, items = deadlines.open_deadlines(
        c, day, institution_id=institution_filter(who, institution_id), step=step, overdue=overdue,
        limit=p.limit, offset=p.offset,
    )  # fmt: skip
    return page(items, p, total)  # type: ignore[return-value]


@router.get("/deadlines/overdue")
def overdue_deadlines(c: Conn, who: Reader, day: Today, p: Pages) -> Page[v.InstitutionDeadlines]:
    """Per institution: open deadlines and how many are overdue today, by step."""
    rows = deadlines.overdue_by_institution(c, day)
    if who.role is Role.INSTITUTION_STAFF:
        rows = [r for r in rows if str(r["institution_id"]) == str(who.institution_id)]
    if who.regional:
        rows = [r for r in rows if str(r["institution_id"]) in (who.institutions or ())]
    # Beside what is overdue, whether the institution may act on it: a suspended one's deadlines run on (the work is
    # still owed), and the centre reading the overdue sees why they are.
    known = catalogue.standings(c, [str(r["institution_id"]) for r in rows])
    for r in rows:
        r["institution_standing"], r["standing_since"] = known.get(str(r["institution_id"]), ("active", None))
    return page(rows, p)  # type: ignore[return-value]


@router.get("/institutions/{institution_id}/stock")
def stock_ledger(institution_id: UUID, c: Conn, who: Reader) -> v.StockLedger:
    """The blank stock books: received, in stock, used, spoiled, destroyed, demand, stocktakes."""
    own_institution(who, institution_id, "blank stock")
    books = stock.ledger(c, str(institution_id))
    if books is None:
        raise NotFound(f"no blank stock for institution {institution_id}")
    return books


@router.get("/institutions/{institution_id}/stock/forms/{serial}")
def stock_form(institution_id: UUID, serial: Annotated[int, Path(ge=1, le=99_999_999)], c: Conn, who: Reader) -> v.Form:
    """What became of one blank form: the certificate it printed (used), why it was spoiled (spoiled, destroyed), or
    blank (in_stock, since its delivery)."""
    own_institution(who, institution_id, "blank stock")
    row = stock.form(c, str(institution_id), serial)
    if row is None:
        raise NotFound(f"institution {institution_id} never received form {form_label(serial)}")
    return row


@router.get("/statistics/issued")
def issued_statistics(
    c: Conn,
    who: Reader,
    p: Pages,
    institution_id: UUID | None = None,
    occupation: Annotated[str | None, Query(max_length=50)] = None,
    level: Annotated[int | None, Query(ge=1, le=5)] = None,
    year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
) -> Page[v.Issued]:
    """Certificates issued per institution, occupation, level and month."""
    rows = statistics.issued(
        c, institution_id=institution_filter(who, institution_id), occupation=occupation, level=level, year=year
    )
    return page(rows, p)  # type: ignore[return-value]


@router.get("/statistics/pass-rates")
def pass_rates(
    c: Conn, who: Reader, p: Pages, institution_id: UUID | None = None, include_unconfirmed: bool = False
) -> Page[v.PassRate]:
    """Pass rates per plan among those who sat, from the results the sessions reported."""
    rows = statistics.pass_rates(
        c, institution_id=institution_filter(who, institution_id), confirmed_only=not include_unconfirmed
    )
    return page(rows, p)  # type: ignore[return-value]


@operations.get("/projections")
def projection_lag(c: Conn, svc: RegSvc, who: Overseer) -> list[v.ProjectionLag]:
    """Each read model's lag behind the event store (events and seconds) and its Kafka offsets."""
    return lag(c, svc, PROJECTIONS)


@operations.get("/snapshots")
def snapshots(c: Conn, who: Auditor, request: Request) -> list[v.Snapshot]:
    """Read models rebuilt as of a moment (`skillcert projections rebuild --as-of … --into NAME`): the
    moment, the log position they stand at, when they were built. Send `X-As-Of: NAME` with any query
    to read them instead of the live ones."""
    return listed(c, request.app.state.schema)  # type: ignore[return-value]


@operations.get("/bus/relay")
def relay_lag(svc: RegSvc, who: Overseer, request: Request) -> v.RelayStatus:
    """The outbox relay: position, the event store's head, lag in events and seconds."""
    return relay.status(svc, request.app.state.database_url, request.app.state.schema)


@operations.get("/health")
def health(c: QuickConn, day: Today) -> v.Health:
    """No token needed."""
    c.execute("SELECT 1")
    return v.Health(status="ok", today=day)
