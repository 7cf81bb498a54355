"""Schemathesis against the served OpenAPI schema: generated requests to every operation, with a
token of a role the operation admits, must never get a server error, and every answer's status and
content type must be the ones the schema documents for the operation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from psycopg import sql
from schemathesis.checks import content_type_conformance, status_code_conformance

from domain.institution import DeadlineProfile, Filing
from domain.model import Role
from infra.api import create_app
from infra.services.registrations import Registrations
from tests.api import bearer, serving
from tests.builders import ADMIN, SCOPE, plan_details, staff_of

# Run alone: schemathesis gives every operation's test the same node id, so pytest-xdist would run one of 95
# (tests/conftest.py refuses that).
pytestmark = pytest.mark.alone

EXAMPLES = 15  # per operation: about 1,300 requests in all

CENTRE_ONLY = ("/confirmation", "/results/return", "/data-acceptance", "/queryability", "/data-return")
HR_ONLY = ("/correction-approval", "/correction-rejection")


@pytest.fixture(scope="module")
def served(database_url: str) -> Iterator[dict[str, Any]]:
    schema = f"t_fuzz_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    # Something to find: an institution with a plan open for registration.
    svc = Registrations(database_url, schema, today=lambda: date(2026, 3, 2))
    iid = svc.register_institution(
        ADMIN, "深圳示范中心", Filing(city_code="03", station_serial="015"), DeadlineProfile.S, SCOPE
    )
    svc.publish_plan(staff_of(iid), iid, plan_details())
    svc.close()
    tokens = {
        "staff": bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid),
        "centre": bearer(database_url, schema, Role.PROVINCIAL_CENTRE, "centre-wang"),
        "hr": bearer(database_url, schema, Role.HR_DEPARTMENT, "hr-zhao"),
        "auditor": bearer(database_url, schema, Role.AUDITOR, "auditor-sun"),
    }
    app = create_app(database_url, schema, verify_rate_limit="100000/minute", today=lambda: date(2026, 3, 2))
    with serving(app) as base:
        assert httpx.get(f"{base}/openapi.json").json() == app.openapi()
        yield {"base": base, "tokens": tokens}
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# The schema the server serves at /openapi.json; building it needs no database.
schema = schemathesis.openapi.from_dict(create_app("postgresql://schema-only").openapi())


def role_for(method: str, path: str) -> str:
    if method == "GET":
        return "auditor"
    if path.endswith(CENTRE_ONLY) or path == "/institutions":
        return "centre"
    if path.endswith(HR_ONLY):
        return "hr"
    return "staff"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_generated_request_gets_a_server_error(case: Any, served: dict[str, Any]) -> None:
    response = case.call(base_url=served["base"], headers=served["tokens"][role_for(case.method, case.path)])
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        kind = response.headers.get("content-type")
        assert (kind[0] if isinstance(kind, list) else kind) == "application/problem+json", response.text
    # Every status it answered is documented for the operation, with the content type it came in.
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance])
