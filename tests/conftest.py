"""Real servers for the tests: PostgreSQL and a Kafka-protocol broker, no stand-ins.

PostgreSQL: SKILLCERT_TEST_DATABASE_URL if set, else an embedded PostgreSQL 18
started for the session. Broker: SKILLCERT_TEST_KAFKA_BOOTSTRAP if set, else a
Tansu process on a free port. Each test gets its own schema and topic prefix.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import date

import psycopg
import pytest
from psycopg import sql

from infra.embedded import Broker, free_port, start_postgres
from infra.services import samples
from infra.services.certificates import Certificates
from infra.services.exams import Exams
from infra.services.registrations import Registrations
from tests.lifecycle import World

# The master key that encrypts stored events (infra.store.keys), for every store and CLI the tests start.
os.environ.setdefault("SKILLCERT_MASTER_KEY", "c2tpbGxjZXJ0IHRlc3RzJyBtYXN0ZXIga2V5IDMyYmI=")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("SKILLCERT_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server, url = start_postgres(tmp_path_factory.mktemp("pg"))
    # The tests' own server does not wait for the disk at each commit: a tenth of the time of tests that commit
    # often (tests/test_certificates.py and test_exams.py: 35.8 and 40.0 s against 39.7 and 46.6 s). What is
    # committed is still written before the commit returns, so killing PostgreSQL (tests/test_faults.py) loses
    # nothing; only the machine crashing would. The servers the product starts keep fsync on.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("SELECT pg_reload_conf()")
    yield url
    server.cleanup()


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    external = os.environ.get("SKILLCERT_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = Broker(free_port())
    yield broker.bootstrap
    broker.stop()


@pytest.fixture
def schema(database_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


class Clock:
    """The date the service believes it is in Shanghai; tests move it."""

    def __init__(self, today: date) -> None:
        self.today = today

    def __call__(self) -> date:
        return self.today


@pytest.fixture
def clock() -> Clock:
    return Clock(date(2026, 3, 2))


@pytest.fixture
def service(database_url: str, schema: str, clock: Clock) -> Iterator[Registrations]:
    svc = Registrations(database_url, schema, today=clock)
    samples.hold(svc.attachments)  # what tests.builders.attachment refers to
    yield svc
    svc.close()


@pytest.fixture
def world(database_url: str, schema: str, clock: Clock, service: Registrations) -> Iterator[World]:
    exams = Exams(database_url, schema, today=clock)
    certificates = Certificates(database_url, schema, today=clock)
    yield World(service, exams, certificates, clock)
    exams.close()
    certificates.close()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """pytest-xdist hands out tests by node id: of several tests sharing one (schemathesis names every
    operation's test alike), a worker would run one and the rest would silently not run. Refuse instead."""
    shared = sorted(i for i, n in Counter(ids).items() if n > 1)
    if shared:
        raise pytest.UsageError(
            f"{len(shared)} node ids are shared by several tests, which pytest-xdist would run once each"
            f" ({shared[0]}): run them without -n, as `make test` runs the tests marked `alone`"
        )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A skipped test is a test that did not run: name every one, and the one command that runs them."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} test(s) did not run", sep="=", yellow=True)
    missing = False
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        missing |= "not installed" in reason or "not found" in reason
        terminalreporter.write_line(f"  {report.nodeid}: {reason.removeprefix('Skipped: ')}")
    if missing:
        terminalreporter.write_line(
            "  to run them: `sudo .ci/run` installs the Debian packages they drive (kcat, chromium, poppler-utils, "
            "zbar-tools, the certificate's fonts) and runs the suite"
        )
