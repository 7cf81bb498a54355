"""Errors as RFC 9457 problem+json, each naming the field or rule at fault."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from eventsourcing.persistence import OperationalError as StoreOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from certgen.certificate import Unprintable
from domain.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, StandingChanging
from infra.store.keys import KeyProblem

log = logging.getLogger("skillcert.api")
STATUS = {InvalidInput: 422, NotFound: 404, Conflict: 409, Forbidden: 403}
MEDIA_TYPE = "application/problem+json"


class Unauthenticated(DomainError):
    rule = "unauthenticated"


class TooManyRequests(DomainError):
    rule = "rate-limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details; `errors` lists every field at fault, so a form is fixed in one go."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


# Documented on every operation: the error answers any of them may give.
PROBLEMS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": why, "content": {MEDIA_TYPE: {}}}
    for status, why in (
        (401, "no token, or an unknown, revoked or expired one"),
        (403, "outside the token's role or scope"),
        (422, "bad input: `errors` names each field at fault"),
        (
            503,
            "the database is unavailable or busy for a moment, or this server runs on a master key rotated since it "
            "started: try again after Retry-After seconds",
        ),
    )
}


def problem_body(
    status: int, title: str, detail: str, rule: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": f"urn:skillcert:problem:{rule}", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return body


def problem(
    status: int, title: str, detail: str, rule: str, errors: list[dict[str, str]] | None = None, **headers: str
) -> JSONResponse:
    body = problem_body(status, title, detail, rule, errors)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers or None)


UNAVAILABLE = (psycopg.OperationalError, PoolTimeout, StoreOperationalError)  # lock timeouts are OperationalErrors


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, e: DomainError) -> JSONResponse:
        if isinstance(e, Unauthenticated):
            return problem(401, "Unauthenticated", e.message, e.rule, **{"WWW-Authenticate": "Bearer"})
        if isinstance(e, TooManyRequests):
            return problem(429, "TooManyRequests", e.message, e.rule, **{"Retry-After": str(e.retry_after)})
        if isinstance(e, StandingChanging):
            return problem(503, "StandingChanging", e.message, e.rule, **{"Retry-After": str(e.retry_after)})
        status = next((s for cls, s in STATUS.items() if isinstance(e, cls)), 400)
        errors = [{"field": f, "message": m} for f, m in getattr(e, "problems", [])]
        if not errors and e.field:
            errors = [{"field": e.field, "message": e.message}]
        return problem(status, type(e).__name__, e.message, e.rule, errors)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in err["loc"] if p not in ("body",)) or "body",
             "message": "a JSON body is required" if err["loc"] == ("body",) and err["type"] == "missing"
             else err["msg"]}
            for err in e.errors()
        ]  # fmt: skip
        detail = "; ".join(f"{x['field']}: {x['message']}" for x in errors)
        return problem(422, "InvalidInput", detail, "invalid-input", errors)

    async def unavailable(_: Request, e: Exception) -> JSONResponse:
        # PostgreSQL restarting, a connection lost, the write lock not granted within lock_timeout:
        # none is the client's fault, and trying again shortly works. Not a 500.
        log.warning("database unavailable: %s: %s", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return problem(503, "ServiceUnavailable", "the database is unavailable or busy for a moment; try again",
                       "unavailable", **{"Retry-After": "2"})  # fmt: skip

    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, unavailable)

    @app.exception_handler(Unprintable)
    async def unprintable(_: Request, e: Unprintable) -> JSONResponse:
        # Stored text (a candidate's name) holding a character no installed face can print: the document is refused
        # rather than printed with a blank, naming whose it is. Installing a face that covers it lets it print.
        return problem(409, "Unprintable", f"{e}: it cannot be printed with the fonts installed here; a face covering "
                       "it must be installed (see certgen/fonts.py)", "unprintable")  # fmt: skip

    @app.exception_handler(KeyProblem)
    async def rotated(_: Request, e: KeyProblem) -> JSONResponse:
        # A worker started before a master key rotation meets a record another worker, already restarted, wrote under
        # the new data key (README, "Rotating the master key"). Its operator must restart it; another worker may
        # answer meanwhile. The log names the key it needs; the client learns only that it was not their fault.
        log.error("this process cannot read the store with its master key: %s", e)
        return problem(503, "ServiceUnavailable", "this server cannot read part of the store with its master key, "
                       "which was rotated since it started; its operator must restart it", "key-rotated",
                       **{"Retry-After": "30"})  # fmt: skip

    @app.exception_handler(Exception)
    async def server_error(_: Request, e: Exception) -> JSONResponse:
        # Starlette re-raises it afterwards, so the server logs the traceback; the client learns only
        # that the fault was not theirs.
        return problem(
            500, "ServerError", f"the server failed handling the request ({type(e).__name__})", "server-error"
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        if e.status_code == 400:  # a body that does not parse: bad input like any other, named
            message = "the body does not parse as the declared content type (JSON, or multipart for uploads)"
            # FastAPI words its failures alike; what the multipart parser said (too many parts, a missing boundary,
            # ...), as Starlette passes it on, is worth passing on too.
            said = e.__cause__.message if isinstance(e.__cause__, MultiPartException) else str(e.detail or "")
            if said and said != "There was an error parsing the body":
                message += f": {said}"
            return problem(422, "InvalidInput", f"body: {message}", "invalid-input", [{"field": "body",
                                                                                       "message": message}])  # fmt: skip
        # Unknown paths, wrong methods: the same problem+json shape as everything else.
        rule = {404: "not-found", 405: "method-not-allowed"}.get(e.status_code, "http-error")
        detail = (
            f"{e.detail}: {request.method} {request.url.path} (see /docs)" if e.status_code in (404, 405) else e.detail
        )
        return problem(e.status_code, rule.replace("-", " ").capitalize(), str(detail), rule, **(e.headers or {}))


ERRORS = {
    401: "no token, or an unknown, revoked or expired one",
    403: "outside the token's role or scope",
    404: "what the path or the body names does not exist (or is not the caller's to see)",
    409: "the current state forbids the command: the detail says what it waits for",
    413: "the body is larger than this route takes",
    422: "bad input: `errors` names each field at fault",
    429: "too many requests from this address: try again after Retry-After seconds",
    503: "the database is unavailable or busy for a moment: try again after Retry-After seconds",
}


def document(app: FastAPI) -> None:
    """Every operation's error answers in its OpenAPI: each status it can give, as application/problem+json
    (FastAPI documents its own 422 as application/json, and none of the others)."""
    built = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = built()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        ref = {"$ref": "#/components/schemas/Problem"}
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                wanted = {404, 422, 503}
                if operation.get("security"):
                    wanted |= {401, 403}
                if method in ("post", "put", "patch", "delete"):
                    wanted |= {409, 413}
                if path.startswith("/verify/"):
                    wanted.add(429)
                responses = operation.setdefault("responses", {})
                for code, response in responses.items():
                    if code.isdigit() and int(code) >= 400:
                        response["content"] = {MEDIA_TYPE: {"schema": ref}}
                for code in sorted(wanted):
                    responses.setdefault(
                        str(code), {"description": ERRORS[code], "content": {MEDIA_TYPE: {"schema": ref}}}
                    )
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
