"""Public certificate verification: the page a certificate's QR code opens. No token, rate limited.

Shows what the certificate itself shows (holder, occupation, job, level, institution, issue date)
and its status today; the ID number only masked. A certificate whose data was deleted shows its
number and that it is no longer valid, nothing personal.
"""

from __future__ import annotations

import ipaddress
import time
from datetime import date
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from limits import parse, storage, strategies
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from domain import certnumber
from domain.errors import DomainError, InvalidInput, NotFound
from domain.levels import Level
from infra.api.deps import Conn
from infra.api.problems import Problem, TooManyRequests
from projections import certificates as registry

router = APIRouter(tags=["public verification"])
templates = Jinja2Templates(directory=FilePath(__file__).parent / "templates")

LABELS = {
    "valid": "有效 / Valid",
    "corrected": "有效（已更正）/ Valid (corrected)",
    "revoked": "无效（已注销）/ Not valid (revoked)",
}


class Verification(BaseModel):
    number: str
    status: Literal["valid", "corrected", "revoked"]
    status_label: str
    holder_name: str | None
    id_number: str | None  # masked
    occupation: str | None
    job: str | None  # "--" when the occupation has no job, as printed
    level: str | None  # as printed: 二级/技师
    institution: str | None
    issued_on: date | None
    loss_proof_issued: bool
    # Since when the data shown here is queryable on the national platform; None while it is not (yet): a corrected
    # certificate's data is reported again, and until it is queryable again the platform shows the data before.
    nationally_queryable_since: date | None
    correction_pending_national: bool = False
    # Why a certificate is not valid: its data deleted at the holder's wish (000), or the certificate revoked, its
    # holder's declaration found false (001 承诺) or its institution's certificates declared void (004 第十条). None
    # while it is valid.
    void_because: Literal["data_deleted", "revoked"] | None = None


def verification(row: dict[str, Any]) -> Verification:
    if row["status"] in ("data_deleted", "revoked"):  # revoked: 注销证书数据检索 (001 承诺)
        return Verification(
            number=row["number"], status="revoked", status_label=LABELS["revoked"], holder_name=None, id_number=None,
            occupation=None, job=None, level=None, institution=None, issued_on=None, loss_proof_issued=False,
            nationally_queryable_since=None, void_because=row["status"],
        )  # fmt: skip
    status = "corrected" if row["corrected"] else "valid"
    queryable = row["data_status"] == "queryable"
    return Verification(
        number=row["number"], status=status, status_label=LABELS[status], holder_name=row["holder_name"],
        id_number=row["id_masked"], occupation=row["occupation"], job=row["job"] or "--",
        level=Level(row["level"]).title, institution=row["institution_name"], issued_on=row["issued_on"],
        loss_proof_issued=row["proof_number"] is not None,
        nationally_queryable_since=row["queryable_on"] if queryable else None,
        correction_pending_national=bool(row["corrected"]) and not queryable,
    )  # fmt: skip


def client_address(request: Request) -> str:
    """Who is asking: the peer's address, unless the peer is a proxy we were told to trust; then the
    address that proxy says it forwarded for (X-Forwarded-For, read from the right, skipping our own
    proxies). Anyone can write the header, so from anyone else it means nothing."""
    peer = request.client.host if request.client else "unknown"
    trusted = request.app.state.trusted_proxies
    if not trusted or not _within(peer, trusted):
        return peer
    forwarded = [a.strip() for h in request.headers.getlist("x-forwarded-for") for a in h.split(",") if a.strip()]
    for address in reversed(forwarded):
        if not _within(address, trusted):
            return address
    return forwarded[0] if forwarded else peer


def _within(address: str, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def trusted_networks(spec: str | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """SKILLCERT_TRUSTED_PROXIES: addresses or networks, comma-separated ("10.0.0.5, 10.1.0.0/16")."""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in (spec or "").split(",") if part.strip()]


def rate_limited(request: Request) -> None:
    state = request.app.state
    client = client_address(request)
    if not state.limiter.hit(state.verify_limit, "verify", client):
        reset = state.limiter.get_window_stats(state.verify_limit, "verify", client).reset_time
        raise TooManyRequests(
            f"too many verifications from {client}: at most {state.verify_limit}; try again shortly",
            retry_after=max(1, int(reset - time.time()) + 1),
        )


def wants_html(request: Request) -> bool:
    # Browsers (a phone scanning the QR code) ask for text/html; curl and programs get JSON.
    return "text/html" in request.headers.get("accept", "")


@router.get("/verify", response_class=HTMLResponse, responses={303: {"description": "to /verify/{number}"}})
def verify_form(request: Request, number: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """The page to type a certificate's number in, for those who hold a printed one without scanning its QR code; the
    number given goes to /verify/{number}."""
    if number is not None and number.strip():
        # Typed by a person, often on a phone: spaces and the case of the letter are how it was typed, not a different
        # number (a link or a QR code's address is taken exactly as given, /verify/{number}).
        typed = "".join(number.split()).upper()
        return RedirectResponse(f"/verify/{quote(typed, safe='')}", status_code=303)
    return templates.TemplateResponse(request, "verify.html", {"ask": True})


def page_instead(request: Request, status: int, zh: str, en: str) -> Response | None:
    """For a browser on a verification page, the page saying what went wrong, not a problem+json in English: a phone
    scanning a QR code is not a program. None for everyone else."""
    if not (request.url.path == "/verify" or request.url.path.startswith("/verify/")) or not wants_html(request):
        return None
    number = request.path_params.get("number", "")  # kept in the box: the page of a refusal is not a blank form
    return templates.TemplateResponse(request, "verify.html", {"number": number, "error": en, "error_zh": zh,
                                                               "notfound": False}, status_code=status)  # fmt: skip


def install_pages(app: Any) -> None:
    """Wraps the API's handlers of a refused verification (too many, too long, no such path) with page_instead. Call
    after infra.api.problems.install."""
    limited, invalid, http = (app.exception_handlers[k] for k in (DomainError, RequestValidationError, HTTPException))

    async def too_many(request: Request, e: TooManyRequests) -> Response:
        page = page_instead(request, 429, f"查验过于频繁，请 {e.retry_after} 秒后再试。", e.message)
        if page is not None:
            page.headers["Retry-After"] = str(e.retry_after)
        return page or await limited(request, e)

    async def not_a_number(request: Request, e: RequestValidationError) -> Response:
        return page_instead(request, 422, "这不是证书编号：证书编号共 22 位。", "not a certificate number: it has 22 "
                            "characters") or await invalid(request, e)  # fmt: skip

    async def no_such_page(request: Request, e: HTTPException) -> Response:
        if e.status_code == 404:
            page = page_instead(request, 404, "没有这个页面。请在下方输入证书编号查验。", "no such page: give the "
                                "certificate's number below")  # fmt: skip
            if page is not None:
                return page
        return await http(request, e)

    app.add_exception_handler(TooManyRequests, too_many)
    app.add_exception_handler(RequestValidationError, not_a_number)
    app.add_exception_handler(HTTPException, no_such_page)


@router.get(
    "/verify/{number}",
    dependencies=[Depends(rate_limited)],
    responses={
        200: {"content": {"text/html": {}}, "description": "JSON, or the HTML page when the client accepts text/html"},
        404: {"model": Problem, "description": "a well-formed number that no certificate carries"},
        422: {"model": Problem, "description": "not a certificate number; names the first position at fault"},
        429: {"model": Problem, "description": "too many verifications from this address"},
    },
)
def verify(number: Annotated[str, Path(max_length=64)], c: Conn, request: Request) -> Verification:
    """Is this a real certificate, and is it valid? The target of the certificate's QR code."""
    html = wants_html(request)
    # Taken exactly as given: a lower-case or padded number is not the number printed on a
    # certificate, and repairing it silently would tell a forger which mistakes pass.
    try:
        certnumber.parse(number)
        row = registry.certificate_by_number(c, number)
        if row is None:
            raise NotFound(f"no certificate carries the number {number}", field="number")
    except DomainError as e:
        if not html:
            raise
        status = 422 if isinstance(e, InvalidInput) else 404
        zh = getattr(e, "zh", None) or f"编号 {number} 未登记任何证书，请核对证书上的编号。"
        return templates.TemplateResponse(  # type: ignore[return-value]
            request, "verify.html", {"number": number, "error": e.message, "error_zh": zh, "notfound": status == 404},
            status_code=status,
        )  # fmt: skip
    result = verification(row)
    if html:
        return templates.TemplateResponse(request, "verify.html", {"number": number, "v": result})  # type: ignore[return-value]
    return result


def install_limiter(app: Any, limit: str, trusted_proxies: str | None = None) -> None:
    app.state.verify_limit = parse(limit)
    app.state.trusted_proxies = trusted_networks(trusted_proxies)
    app.state.limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
