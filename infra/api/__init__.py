"""The thin HTTP API: commands into the application services, queries over the read models,
public certificate verification. Bearer tokens name who acts; errors are RFC 9457 problem+json."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

from fastapi import FastAPI
from psycopg import sql
from psycopg_pool import ConnectionPool

from infra.api import (
    attachments,
    commands,
    contract,
    docs,
    ecert,
    hygiene,
    imports,
    limits,
    printing,
    problems,
    queries,
    verify,
)
from infra.api.tokens import Tokens
from infra.bus.privacy import installation_key
from infra.services.base import shanghai_today
from infra.services.certificates import Certificates
from infra.services.exams import Exams
from infra.services.registrations import Registrations
from infra.store.recorder import check_idle
from projections import PROJECTIONS
from projections.store import create_tables

MAX_BODY = 4 * 1024 * 1024  # bytes: a score book of 5,000 candidates in JSON is about 600 KB
SESSION_OPTIONS = "-c statement_timeout=15s -c idle_in_transaction_session_timeout=30s"


def create_app(
    database_url: str,
    schema: str = "public",
    tz: str = "Asia/Shanghai",
    pseudonym_key: str | None = None,
    verify_rate_limit: str = "60/minute",
    today: Callable[[], date] | None = None,
    public_url: str = "http://127.0.0.1:8000",
    trusted_proxies: str | None = None,
) -> FastAPI:
    """`today` is the date in Shanghai unless a test moves it."""

    def configure(conn: Any) -> None:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))  # autocommit: it holds

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        s = app.state
        s.registrations = Registrations(database_url, schema, today=s.today)
        s.exams = Exams(database_url, schema, today=s.today)
        s.certificates = Certificates(database_url, schema, today=s.today)
        # Checked before each use: after PostgreSQL restarts, a dead connection is replaced, not handed to a
        # request. A query that runs away, or a transaction left idle, is ended by the server. Autocommit:
        # requests only read through it, each statement with its own snapshot as under READ COMMITTED in a
        # transaction, and a token's lookup is one round trip instead of BEGIN, SELECT and COMMIT.
        s.pool = ConnectionPool(database_url, min_size=1, max_size=8, configure=configure, open=True, timeout=5,
                                check=check_idle, kwargs={"options": SESSION_OPTIONS, "autocommit": True})  # fmt: skip
        s.key = installation_key(database_url, schema, pseudonym_key)
        s.tokens = Tokens(database_url, schema)
        s.tokens.create_table()
        with s.pool.connection() as c:
            # Empty read models answer "nothing yet" until the worker fills (or rebuilds) them.
            create_tables(c, PROJECTIONS)
        with printing.sweeping(s.certificates):
            yield
        s.pool.close()
        for service in (s.registrations, s.exams, s.certificates):
            service.close()

    app = limits.Outermost(
        title="skillcert",
        summary="Occupational skill level certification (职业技能等级认定): commands, read models, verification",
        lifespan=lifespan,
        max_body_size=MAX_BODY,  # the imports allow more, each on its own route
        docs_url=None,  # infra.api.docs serves them with their assets
        redoc_url=None,
    )
    app.state.database_url, app.state.schema = database_url, schema
    app.state.today = today or (lambda: shanghai_today(tz))
    app.state.public_url = public_url  # what certificates' QR codes point to
    verify.install_limiter(app, verify_rate_limit, trusted_proxies)
    problems.install(app)
    verify.install_pages(app)
    problems.document(app)
    docs.install(app)
    app.add_middleware(hygiene.TextHygiene, fields=lambda: _fields(app), routes=lambda: _paths(app))
    for router in (commands.router, attachments.router, ecert.router, imports.router, printing.router, queries.router, verify.router, queries.operations,
                   contract.router):  # fmt: skip
        app.include_router(router)
    return app


def _paths(app: FastAPI) -> list[Any]:
    if not hasattr(app.state, "paths"):
        app.state.paths = hygiene.path_patterns(app.openapi())
    return app.state.paths


def _fields(app: FastAPI) -> hygiene.Fields:
    if not hasattr(app.state, "fields"):
        app.state.fields = hygiene.body_fields(app.openapi())
    return app.state.fields


def from_settings() -> FastAPI:
    """The app as `skillcert api` configures it (infra.settings): the factory each uvicorn worker
    process calls when SKILLCERT_API_WORKERS is more than one."""
    from infra.settings import get_settings

    s = get_settings()
    assert s.database_url, "SKILLCERT_DATABASE_URL is not set"
    return create_app(s.database_url, s.db_schema, s.timezone, s.pseudonym_key, s.verify_rate_limit,
                      public_url=s.public_url, trusted_proxies=s.trusted_proxies)  # fmt: skip
