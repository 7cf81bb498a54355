"""The thin HTTP API: commands into the application service, queries over read models.

Until API tokens exist (issue 6), the actor is taken from the X-Actor-* headers.
Errors are RFC 9457 problem+json naming the field or rule at fault.
"""

from collections.abc import Iterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from domain.deadlines import Step
from domain.eligibility import Evidence
from domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from domain.institution import DeadlineProfile, Filing
from domain.model import Actor, Role
from domain.plan import PlanDetails
from domain.registration import RegistrationForm
from infra import relay
from infra.privacy import installation_key, ref
from infra.registrations import Decision, Registrations
from infra.service import shanghai_today
from projections import PROJECTIONS, candidates, catalogue, deadlines, statistics, stock
from projections import certificates as registry
from projections.audit import trail as audit_trail
from projections.lag import lag
from projections.store import create_tables

STATUS = {InvalidInput: 422, NotFound: 404, Conflict: 409, Forbidden: 403}


def problem(
    status: int, title: str, detail: str, rule: str, errors: list[dict[str, str]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"type": f"urn:skillcert:problem:{rule}", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


class InstitutionIn(BaseModel):
    name: str
    filing: Filing
    profile: DeadlineProfile


class Created(BaseModel):
    id: UUID


class PlanCreated(BaseModel):
    id: UUID
    registration_code: str


class RegistrationIn(BaseModel):
    registration_code: str = Field(description="the 8-character code from the institution's contact")
    form: RegistrationForm


class ReviewIn(BaseModel):
    decision: Decision
    reasons: str = ""
    condition: str | None = Field(None, description="approvals: the eligibility condition met, e.g. 2.1")
    evidence: Evidence | None = Field(None, description="approvals: what the reviewer verified")


class Page(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[dict[str, Any]]


def create_app(
    database_url: str, schema: str = "public", tz: str = "Asia/Shanghai", pseudonym_key: str | None = None
) -> FastAPI:
    state: dict[str, Any] = {}

    def configure(conn: Any) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        conn.commit()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        state["service"] = Registrations(database_url, schema, today=lambda: shanghai_today(tz))
        state["pool"] = ConnectionPool(database_url, min_size=1, max_size=8, configure=configure, open=True)
        state["key"] = installation_key(database_url, schema, pseudonym_key)
        with state["pool"].connection() as c:  # the read models' bookkeeping, for /projections
            create_tables(c, [])
        yield
        state["pool"].close()
        state["service"].close()

    app = FastAPI(
        title="skillcert",
        summary="Occupational skill level certification (职业技能等级认定): commands and read models",
        lifespan=lifespan,
    )

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, e: DomainError) -> JSONResponse:
        status = next((s for cls, s in STATUS.items() if isinstance(e, cls)), 400)
        errors = [{"field": f, "message": m} for f, m in getattr(e, "problems", [])]
        if not errors and e.field:
            errors = [{"field": e.field, "message": e.message}]
        return problem(status, type(e).__name__, e.message, e.rule, errors)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"] if p not in ("body",)), "message": err["msg"]}
            for err in e.errors()
        ]
        detail = "; ".join(f"{x['field']}: {x['message']}" for x in errors)
        return problem(422, "InvalidInput", detail, "invalid-input", errors)

    def actor(
        x_actor_id: Annotated[str, Header(description="who acts (until API tokens exist)")],
        x_actor_role: Annotated[Role, Header()],
        x_institution_id: Annotated[UUID | None, Header()] = None,
        x_request_id: Annotated[str | None, Header()] = None,
    ) -> Actor:
        extra = {"request_id": x_request_id} if x_request_id else {}
        return Actor(id=x_actor_id, role=x_actor_role, institution_id=x_institution_id, **extra)

    def service() -> Registrations:
        return state["service"]

    def conn() -> Iterator[Any]:
        with state["pool"].connection() as c:
            yield c

    Act = Annotated[Actor, Depends(actor)]
    Svc = Annotated[Registrations, Depends(service)]
    Conn = Annotated[Any, Depends(conn)]

    @app.post("/institutions", status_code=201, tags=["commands"])
    def register_institution(body: InstitutionIn, who: Act, svc: Svc) -> Created:
        return Created(id=svc.register_institution(who, body.name, body.filing, body.profile))

    @app.post("/institutions/{institution_id}/plans", status_code=201, tags=["commands"])
    def publish_plan(institution_id: UUID, body: PlanDetails, who: Act, svc: Svc) -> PlanCreated:
        plan_id, code = svc.publish_plan(who, institution_id, body)
        return PlanCreated(id=plan_id, registration_code=code)

    @app.post("/registrations", status_code=201, tags=["commands"])
    def register(body: RegistrationIn, who: Act, svc: Svc) -> Created:
        return Created(id=svc.register(who, body.registration_code, body.form))

    @app.post("/registrations/{registration_id}/resubmission", status_code=204, tags=["commands"])
    def resubmit(registration_id: UUID, body: RegistrationForm, who: Act, svc: Svc) -> None:
        svc.resubmit(who, registration_id, body)

    @app.post("/registrations/{registration_id}/review", status_code=204, tags=["commands"])
    def review(registration_id: UUID, body: ReviewIn, who: Act, svc: Svc) -> None:
        svc.review(who, registration_id, body.decision, body.reasons, body.condition, body.evidence)

    @app.get("/plans", tags=["queries"])
    def search_plans(
        c: Conn,
        level: Annotated[int | None, Query(ge=1, le=5)] = None,
        occupation: str | None = None,
        location: str | None = None,
        institution_id: UUID | None = None,
        registration_open: bool | None = None,
        sort: Literal["registration_time", "exam_date"] = "registration_time",
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Page:
        total, items = catalogue.search_plans(
            c, today=shanghai_today(tz), level=level, occupation=occupation, location=location,
            institution_id=str(institution_id) if institution_id else None, open_only=registration_open,
            sort=sort, limit=limit, offset=offset,
        )  # fmt: skip
        return Page(total=total, limit=limit, offset=offset, items=items)

    @app.get("/plans/{plan_id}", tags=["queries"])
    def get_plan(plan_id: UUID, c: Conn) -> dict[str, Any]:
        row = catalogue.get_plan(c, str(plan_id), shanghai_today(tz))
        if row is None:
            raise NotFound(f"no plan {plan_id} in the catalogue (yet)")
        return row

    @app.get("/plans/{plan_id}/registrations", tags=["queries"])
    def plan_registrations(
        plan_id: UUID,
        c: Conn,
        status: Literal["submitted", "approved", "returned", "rejected"] | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> Page:
        total, items = candidates.registrations_for_plan(c, str(plan_id), status, limit, offset)
        return Page(total=total, limit=limit, offset=offset, items=items)

    @app.get("/registrations/{registration_id}", tags=["queries"])
    def get_registration(registration_id: UUID, c: Conn) -> dict[str, Any]:
        row = candidates.get_registration(c, str(registration_id))
        if row is None:
            raise NotFound(f"no registration {registration_id} in the read model (yet)")
        return row

    @app.get("/candidates/{id_number}/registrations", tags=["queries"])
    def candidate_registrations(id_number: str, c: Conn) -> list[dict[str, Any]]:
        return candidates.registrations_of(c, ref(id_number, state["key"]))

    @app.get("/certificates/{number}", tags=["queries"])
    def certificate(number: str, c: Conn) -> dict[str, Any]:
        """The certificate registry by certificate number, with its history of corrections and proofs."""
        row = registry.certificate_by_number(c, number)
        if row is None:
            raise NotFound(f"no certificate {number} in the registry (yet)")
        return row

    @app.get("/certificates", tags=["queries"])
    def certificates(
        c: Conn,
        holder_id_number: str | None = None,
        name: str | None = None,
        institution_id: UUID | None = None,
    ) -> list[dict[str, Any]]:
        """By the holder's ID number, or by name and institution."""
        if holder_id_number:
            return registry.certificates_of(c, ref(holder_id_number, state["key"]))
        if name and institution_id:
            return registry.certificates_named(c, name, str(institution_id))
        raise InvalidInput([("holder_id_number", "give an ID number, or a name and an institution_id")])

    @app.get("/certificates/{number}/correction", tags=["queries"])
    def certificate_correction(number: str, c: Conn) -> dict[str, Any]:
        """The correction ledger: the certificate's one correction application and its decision."""
        entry = registry.correction_of(c, number=number)
        if entry is None:
            raise NotFound(f"no correction application for certificate {number}")
        return entry

    @app.get("/audit", tags=["queries"])
    def audit(
        c: Conn,
        aggregate_id: UUID | None = None,
        actor_id: str | None = None,
        institution_id: UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: Annotated[int, Query(ge=0, description="position of the last event of the previous page")] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        """The audit trail: events by aggregate, actor or institution in a time range, in store order."""
        total, items = audit_trail(
            c, aggregate_id=str(aggregate_id) if aggregate_id else None, actor_id=actor_id,
            institution_id=str(institution_id) if institution_id else None, since=since, until=until,
            after=after, limit=limit,
        )  # fmt: skip
        return {"total": total, "after": after, "limit": limit, "items": items,
                "next_after": items[-1]["position"] if len(items) == limit else None}  # fmt: skip

    @app.get("/deadlines", tags=["queries"])
    def open_deadlines(
        c: Conn,
        institution_id: UUID | None = None,
        step: Step | None = None,
        overdue: Annotated[bool, Query(description="only what is past due today")] = False,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Open deadlines, soonest first, with days left in the step's unit (negative: overdue)."""
        total, items = deadlines.open_deadlines(
            c, shanghai_today(tz), institution_id=str(institution_id) if institution_id else None,
            step=step, overdue=overdue, limit=limit, offset=offset,
        )  # fmt: skip
        return {"total": total, "limit": limit, "offset": offset, "items": items}

    @app.get("/deadlines/overdue", tags=["queries"])
    def overdue_deadlines(c: Conn) -> list[dict[str, Any]]:
        """Per institution: open deadlines and how many are overdue today, by step."""
        return deadlines.overdue_by_institution(c, shanghai_today(tz))

    @app.get("/institutions/{institution_id}/stock", tags=["queries"])
    def stock_ledger(institution_id: UUID, c: Conn) -> dict[str, Any]:
        """The blank stock books: received, in stock, used, spoiled, destroyed, demand, stocktakes."""
        books = stock.ledger(c, str(institution_id))
        if books is None:
            raise NotFound(f"no blank stock for institution {institution_id}")
        return books

    @app.get("/institutions/{institution_id}/stock/forms/{serial}", tags=["queries"])
    def stock_form(institution_id: UUID, serial: Annotated[int, Path(ge=1, le=99_999_999)], c: Conn) -> dict[str, Any]:
        """What became of one blank form: the certificate it printed, or why it was spoiled."""
        row = stock.form(c, str(institution_id), serial)
        if row is None:
            raise NotFound(f"form {serial} of institution {institution_id} was neither used nor spoiled")
        return row

    @app.get("/statistics/issued", tags=["queries"])
    def issued_statistics(
        c: Conn,
        institution_id: UUID | None = None,
        occupation: str | None = None,
        level: Annotated[int | None, Query(ge=1, le=5)] = None,
        year: Annotated[int | None, Query(ge=2000, le=2100)] = None,
    ) -> list[dict[str, Any]]:
        """Certificates issued per institution, occupation, level and month."""
        return statistics.issued(
            c, institution_id=str(institution_id) if institution_id else None, occupation=occupation, level=level,
            year=year,
        )  # fmt: skip

    @app.get("/statistics/pass-rates", tags=["queries"])
    def pass_rates(
        c: Conn, institution_id: UUID | None = None, include_unconfirmed: bool = False
    ) -> list[dict[str, Any]]:
        """Pass rates per plan among those who sat, from the results the sessions reported."""
        return statistics.pass_rates(
            c, institution_id=str(institution_id) if institution_id else None, confirmed_only=not include_unconfirmed
        )

    @app.get("/projections", tags=["operations"])
    def projection_lag(c: Conn, svc: Svc) -> list[dict[str, Any]]:
        """Each read model's lag behind the event store (events and seconds) and its Kafka offsets."""
        return lag(c, svc, PROJECTIONS)

    @app.get("/health", tags=["operations"])
    def health(c: Conn) -> dict[str, Any]:
        c.execute("SELECT 1")
        return {"status": "ok", "today": date.isoformat(shanghai_today(tz))}

    @app.get("/bus/relay", tags=["operations"])
    def relay_lag(svc: Svc) -> dict[str, Any]:
        """The outbox relay: position, the event store's head, lag in events and seconds."""
        return relay.status(svc, database_url, schema)

    return app
