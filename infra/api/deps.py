"""What every route depends on: the services, a database connection, and who is asking."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg import sql
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from domain.certificate import Certificate
from domain.errors import Forbidden, InvalidInput, NotFound
from domain.exam import ExamSession
from domain.model import Role
from domain.plan import EvaluationPlan
from domain.registration import Registration
from infra.api.problems import Unauthenticated
from infra.api.tokens import Principal, Refused
from infra.bus.privacy import ref
from infra.services.certificates import Certificates
from infra.services.exams import Exams
from infra.services.registrations import Registrations
from projections import certificates as registry
from projections.snapshots import SNAPSHOTS

STAFF = (Role.INSTITUTION_STAFF,)
CENTRE = (Role.PROVINCIAL_CENTRE,)
HR = (Role.HR_DEPARTMENT,)
OVERSIGHT = (Role.PROVINCIAL_CENTRE, Role.HR_DEPARTMENT, Role.AUDITOR)  # across institutions, read everything
READERS = (Role.INSTITUTION_STAFF, *OVERSIGHT)
EVERYONE = (*READERS, Role.CANDIDATE)

SCOPED = (("registration_id", Registration, "registration"), ("plan_id", EvaluationPlan, "plan"),
          ("exam_id", ExamSession, "exam session"))  # fmt: skip

bearer = HTTPBearer(auto_error=False, description="an API token from `skillcert tokens create`")


# Dependencies that only read the app's state are async: FastAPI runs a plain `def` in its threadpool, and
# each such hop cost a command about a tenth of a millisecond of the one core it has (benchmarks.http_commands).
async def registrations(request: Request) -> Registrations:
    return request.app.state.registrations


async def exams(request: Request) -> Exams:
    return request.app.state.exams


async def certificates(request: Request) -> Certificates:
    return request.app.state.certificates


AS_OF = "x-as-of"  # an auditor's request header naming read models rebuilt as of a moment (GET /snapshots)


def connection(request: Request) -> Iterator[Any]:
    wanted = request.headers.get(AS_OF)
    with request.app.state.pool.connection() as c:
        if not wanted:
            yield c
            return
        _enter_snapshot(request, c, wanted)
        try:
            yield c
        finally:  # pooled: the next request reads the live read models again (autocommit: it holds at once)
            c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(request.app.state.schema)))


def _enter_snapshot(request: Request, c: Any, name: str) -> None:
    """Read models as they stood at a recorded moment (`skillcert projections rebuild --as-of … --into NAME`),
    for auditors only: every query of this request reads them instead of the live ones."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send an API token: Authorization: Bearer skc_…")
    try:
        who = request.app.state.tokens.principal(c, token.strip())
    except Refused as e:
        raise Unauthenticated(str(e)) from None
    if who.role is not Role.AUDITOR:
        raise Forbidden("only auditors read the read models as of a moment (X-As-Of)")
    if len(name) > 63:  # PostgreSQL's longest name: no snapshot is named so, and the answer need not repeat it whole
        raise InvalidInput([("header.x-as-of", f"a name of {len(name):,} characters; snapshots' names are at most 63")])
    row = c.execute(sql.SQL("SELECT complete FROM {} WHERE name = %s").format(
        sql.Identifier(request.app.state.schema, SNAPSHOTS)), (name,)).fetchone() if _has_snapshots(request, c) else None  # fmt: skip
    if row is None:
        raise NotFound(f"no read models rebuilt as of a moment are named {name!r}: GET /snapshots lists them")
    if not row[0]:
        raise NotFound(f"{name!r} holds only some of the read models; rebuild them all into it to read it here")
    c.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(name)))  # the pool's connections autocommit


def _has_snapshots(request: Request, c: Any) -> bool:
    return c.execute("SELECT to_regclass(%s)", (f'"{request.app.state.schema}".{SNAPSHOTS}',)).fetchone()[0] is not None


def quick_connection(request: Request) -> Iterator[Any]:
    # For /health: a load balancer's probe wants an answer within a second, up or down.
    with request.app.state.pool.connection(timeout=1) as c:
        yield c


Conn = Annotated[Any, Depends(connection)]
QuickConn = Annotated[Any, Depends(quick_connection)]
RegSvc = Annotated[Registrations, Depends(registrations)]
ExamSvc = Annotated[Exams, Depends(exams)]
CertSvc = Annotated[Certificates, Depends(certificates)]


def principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None:
        raise Unauthenticated("send an API token: Authorization: Bearer skc_…")
    # A connection of its own, given back (its transaction ended) as soon as the token is looked up: held until
    # the response, by a command waiting for its group's commit or a report rendering 5,000 pages, it was kept
    # from every other request (py-spy showed requests waiting for the pool of eight).
    with request.app.state.pool.connection() as c:
        try:
            who = request.app.state.tokens.principal(c, credentials.credentials)
            if who.regional:  # what it reads is narrowed to the institutions filed in its region
                rows = c.execute("SELECT institution_id::text FROM catalogue_institutions WHERE city_code = %s",
                                 (who.jurisdiction,)).fetchall()  # fmt: skip
                who = dataclasses.replace(who, institutions=frozenset(r[0] for r in rows))
            return who
        except Refused as e:
            raise Unauthenticated(str(e)) from None


def allow(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting only these roles. The domain checks again; this refuses early and
    keeps read-only roles (auditors) away from every command."""
    names = ", ".join(r.value for r in roles)

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role not in roles:
            raise Forbidden(f"the {who.role.value} role cannot use this endpoint (it is for: {names})")
        return who

    return check


RequestId = Annotated[
    str | None,
    Header(max_length=100, pattern=r"^[!-~]+$", description="correlation id (visible ASCII), kept on the events"),
]


# Scope: staff see their own institution, candidates their own records.
def own_institution(who: Principal, institution_id: Any, what: str) -> None:
    if who.role is Role.INSTITUTION_STAFF and str(who.institution_id) != str(institution_id):
        raise Forbidden(f"staff see and change only their own institution's {what}")
    if who.regional and str(institution_id) not in (who.institutions or ()):
        raise Forbidden(
            f"a {who.role.value} of region {who.jurisdiction} sees only the {what} of institutions filed there"
        )


def own_record(who: Principal, row: dict[str, Any], what: str) -> None:
    """A read-model row with institution_id and id_ref: the holder's staff, the holder, or oversight."""
    own_institution(who, row["institution_id"], what)
    if who.role is Role.CANDIDATE and row.get("id_ref") != who.candidate_ref:
        raise Forbidden(f"candidates see only their own {what}")


def institution_filter(who: Principal, asked: UUID | None) -> str | list[str] | None:
    """Staff queries are narrowed to their institution, a regional HR department's (or city centre's)
    to the institutions filed in its region; asking for another is refused."""
    if who.role is Role.INSTITUTION_STAFF:
        if asked is not None and asked != who.institution_id:
            raise Forbidden("staff see only their own institution's data")
        return str(who.institution_id)
    if who.regional:
        if asked is not None:
            own_institution(who, asked, "data")
            return str(asked)
        return sorted(who.institutions or ())
    return str(asked) if asked else None


def candidate_owns(who: Principal, svc: Registrations, registration_id: UUID, key: bytes) -> None:
    """A candidate acts only on registrations under their own ID number (checked on the write side)."""
    if who.role is not Role.CANDIDATE:
        return
    try:
        registration = svc.get(Registration, registration_id, "registration")
    except NotFound:
        raise Forbidden("candidates act only on their own registrations") from None
    if ref(registration.form.id_number, key) != who.candidate_ref:
        raise Forbidden("candidates act only on their own registrations")


def certificate_id(c: Conn, certificate: str) -> UUID:
    """A certificate named by id, or by number through the registry (which follows the bus)."""
    try:
        return UUID(certificate)
    except ValueError:
        pass
    row = registry.certificate_by_number(c, certificate)
    if row is None:
        raise NotFound(f"no certificate {certificate} in the registry (yet)", field="certificate")
    return row["certificate_id"]


async def staff_scope(request: Request, who: Annotated[Principal, Depends(principal)], svc: RegSvc) -> None:
    """Staff act only on their own institution's plans, sessions, registrations, certificates and
    stock: the target named in the path is loaded from the write side and its institution compared
    before anything else happens, so another institution's staff get 403 whatever its state.

    Async, and it takes no connection of its own unless it must look something up: every command passes
    through it. As a plain function holding a pooled connection (a dependency with yield) until the
    response, it cost a registration three hand-overs to the threadpool and back, and kept a connection
    from other requests while the registration waited for its group's commit."""
    if who.role is not Role.INSTITUTION_STAFF:
        return
    params = request.path_params
    try:
        if "institution_id" in params:
            own_institution(who, UUID(params["institution_id"]), "data")
    except ValueError:
        return  # not an id: the route's own validation answers 422
    if "certificate" in params or any(name in params for name, _, _ in SCOPED):
        await run_in_threadpool(_own_targets, request, who, svc)


def _own_targets(request: Request, who: Principal, svc: Registrations) -> None:
    params = request.path_params
    try:
        for name, cls, what in SCOPED:
            if name in params:
                own_institution(who, svc.institution_of(cls, UUID(params[name]), what), f"{what}s")
        if "certificate" in params:
            with request.app.state.pool.connection() as c:
                cid = certificate_id(c, params["certificate"])
            own_institution(who, svc.institution_of(Certificate, cid, "certificate"), "certificates")
    except ValueError:
        return  # not an id: the route's own validation answers 422


class Paging(BaseModel):
    limit: int
    offset: int


async def paging(
    limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0
) -> Paging:
    return Paging(limit=limit, offset=offset)


Pages = Annotated[Paging, Depends(paging)]


def page(items: list[dict[str, Any]], p: Paging, total: int | None = None) -> dict[str, Any]:
    """A page of a query's rows. Without `total` the query returned them all (a person's records, a
    month's figures: bounded lists) and the page is cut here."""
    if total is None:
        total, items = len(items), items[p.offset : p.offset + p.limit]
    return {"total": total, "limit": p.limit, "offset": p.offset, "items": items}
