"""Tokens that expire and rotate; a verification rate limit that a forged X-Forwarded-For cannot dodge."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
from fastapi.testclient import TestClient

from domain.errors import InvalidInput
from domain.model import Role
from infra.api import create_app
from infra.api.tokens import Tokens
from infra.embedded import free_port
from infra.services.registrations import Registrations
from tests.api import bearer


def _cli(database_url: str, schema: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_token_expires_and_is_refused_saying_so_and_rotation_gives_its_holder_a_new_one(
    database_url: str, schema: str, service: Registrations
) -> None:
    made = _cli(database_url, schema, "tokens", "create", "--role", "auditor", "--name", "auditor-sun", "--days", "30")
    assert made.returncode == 0 and "valid 30 days" in made.stderr, made.stderr
    token = made.stdout.strip()
    token_id = token.split("_")[1]
    with TestClient(create_app(database_url, schema)) as http:
        headers = {"Authorization": f"Bearer {token}"}
        assert http.get("/me", headers=headers).status_code == 200
        with psycopg.connect(database_url) as conn:  # thirty days pass
            conn.execute(f"UPDATE {schema}.api_tokens SET expires_at = now() - interval '1 minute' WHERE id = %s",
                         (token_id,))  # fmt: skip
        r = http.get("/me", headers=headers)
        assert r.status_code == 401 and "expired on" in r.json()["detail"], r.text
        assert f"skillcert tokens rotate {token_id}" in r.json()["detail"]

        rotated = _cli(database_url, schema, "tokens", "rotate", token_id)
        assert rotated.returncode == 0, rotated.stderr
        new = {"Authorization": f"Bearer {rotated.stdout.strip()}"}
        me = http.get("/me", headers=new)
        assert me.status_code == 200 and me.json()["name"] == "auditor-sun" and me.json()["role"] == "auditor"
        r = http.get("/me", headers=headers)
        assert r.status_code == 401 and "was revoked on" in r.json()["detail"], r.text
    with psycopg.connect(database_url) as conn:
        principals = conn.execute(f"SELECT DISTINCT principal_id FROM {schema}.api_tokens WHERE name = 'auditor-sun'")
        assert len(principals.fetchall()) == 1, "the holder keeps one principal id across rotations"
    listed = _cli(database_url, schema, "tokens", "list")
    assert "expires" in listed.stdout and token_id in listed.stdout


def test_a_token_name_with_control_characters_is_refused(
    database_url: str, schema: str, service: Registrations
) -> None:
    made = _cli(database_url, schema, "tokens", "create", "--role", "auditor", "--name", "auditor\u202esun")
    assert made.returncode == 2 and "bidirectional" in made.stderr, made.stderr


def test_a_candidate_token_needs_an_id_number_a_registration_could_carry(
    database_url: str, schema: str, service: Registrations
) -> None:
    """What an outsider found: a candidate token bound to "123" was made, and could never match its candidate."""
    from stdnum.cn import ric

    permanent = "94484019850612123"  # the foreigners' permanent residence ID: a resident ID's shape, another region
    permanent += ric.calc_check_digit(permanent + "0")
    for number, says in (("123", "no ID number"), ("44030519900307231X", "check digit is wrong"),
                         ("a b", "no ID number")):  # fmt: skip
        made = _cli(database_url, schema, "tokens", "create", "--role", "candidate", "--name", "c", "--id-number",
                    number)  # fmt: skip
        assert made.returncode == 2 and says in made.stderr and not made.stdout, made.stderr
    # What a reviewer then found: any all-digit number was held to the mainland card's format, refusing a passport's
    # 9 digits, a Taiwan permit's 8 and the foreigners' permanent residence ID, which registrations take.
    for i, number in enumerate(("11010519491231002x", "12345678", "123456789", permanent)):
        made = _cli(database_url, schema, "tokens", "create", "--role", "candidate", "--name", f"c{i}",
                    "--id-number", number)  # fmt: skip
        assert made.returncode == 0 and made.stdout.startswith("skc_"), (number, made.stderr)


def test_a_database_that_does_not_answer_is_a_sentence_not_a_traceback(schema: str) -> None:
    """What an outsider found: relay status, tokens list, projections lag, keys status printed 40 to 53 lines of
    traceback when PostgreSQL was down."""
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    for args in (("relay", "status"), ("tokens", "list"), ("projections", "lag"), ("keys", "status")):
        done = _cli(nowhere, schema, *args)
        assert done.returncode == 3 and "Traceback" not in done.stderr, (args, done.stderr)
        assert done.stderr.startswith("PostgreSQL unavailable:") and len(done.stderr.splitlines()) <= 2, done.stderr


def test_two_tokens_made_at_once_for_one_name_are_one_token_and_one_refusal(
    database_url: str, schema: str, service: Registrations
) -> None:
    """Names are unique among live tokens. Two creations at once each found none named so, and both made one."""
    tokens = Tokens(database_url, schema)
    tokens.create_table()
    start = threading.Barrier(2)

    def make(name: str) -> str:
        start.wait(10)
        try:
            return tokens.create(name, Role.AUDITOR)[0]
        except InvalidInput:
            return "refused"

    with ThreadPoolExecutor(2) as pool:
        outcomes = [sorted(pool.map(make, [f"auditor-{i}"] * 2)) for i in range(12)]
    assert all(o[1] == "refused" and o[0] != "refused" for o in outcomes), outcomes
    with psycopg.connect(database_url) as conn:
        live = conn.execute(f"SELECT name, count(*) FROM {schema}.api_tokens GROUP BY name HAVING count(*) > 1")
        assert live.fetchall() == []


def _verify_many(base: str, forwarded: list[str]) -> list[int]:
    number = "S000044032015262000001"  # well formed; no certificate carries it: 404 until limited
    with httpx.Client(base_url=base) as client:
        return [client.get(f"/verify/{number}", headers={"X-Forwarded-For": f}).status_code for f in forwarded]


@contextmanager
def api_process(database_url: str, schema: str, **settings: str) -> Iterator[str]:
    """`skillcert api` as deployed: uvicorn as the command starts it, not as a test would."""
    port = free_port()
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_API_PORT": str(port), **settings}  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "infra.cli", "api"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(15)


def test_x_forwarded_for_counts_only_from_a_trusted_proxy(database_url: str, schema: str, world: Any) -> None:
    bearer(database_url, schema, Role.AUDITOR, "auditor")  # the tokens table, as the API expects it
    # No trusted proxy (the default): each request names another client, and all are one client.
    with api_process(database_url, schema, SKILLCERT_VERIFY_RATE_LIMIT="3/minute") as base:
        assert _verify_many(base, [f"203.0.113.{i}" for i in range(5)]) == [404, 404, 404, 429, 429]
    # Behind a trusted proxy (here the test itself, at 127.0.0.1), the client is the address the proxy
    # appended, the rightmost one it does not trust; what the client wrote before it counts for nothing.
    with api_process(database_url, schema, SKILLCERT_VERIFY_RATE_LIMIT="3/minute",
                     SKILLCERT_TRUSTED_PROXIES="127.0.0.1") as base:  # fmt: skip
        assert _verify_many(base, [f"203.0.113.{i}" for i in range(5)]) == [404] * 5
        assert _verify_many(base, [f"198.51.100.{i}, 192.0.2.7" for i in range(5)]) == [404, 404, 404, 429, 429]


def test_the_token_command_offers_the_roles_a_token_is_made_for() -> None:
    """What an outsider found: --help offered `system`, which was then refused."""
    from infra.api.tokens import ROLES
    from infra.cli.tokens import Issued

    assert [r.value for r in Issued] == [r.value for r in Role if r in ROLES]
