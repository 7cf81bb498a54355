"""Ordinary faults, under load, against separately started processes, with no manual step after them.

Each test starts the relay, the faust worker, the API and the checkpointer as `skillcert` processes
against a PostgreSQL and a Tansu broker of its own, drives registrations (and a review of each) over
HTTP, and does what happens in a data centre: PostgreSQL killed and restarted, the broker killed and
restarted empty, the relay or the worker killed, the API killed during an import. Each ends the same
way: every command the API acknowledged is in the event store, no request was answered 500, the
processes that were not killed are the same processes, and within 60 s of the fault every read model
equals a rebuild from the event store, row for row.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from consumers.lag import lag
from consumers.rebuild import rebuild
from domain.institution import DeadlineProfile, Filing, Institution
from domain.model import Actor, Role
from domain.plan import EvaluationPlan, RegistrationCode
from infra.api.tokens import Tokens
from infra.bus.privacy import installation_key
from infra.bus.relay import status
from infra.embedded import free_port
from infra.services.base import Service
from projections import PROJECTIONS
from projections.store import connect
from tests.api import store_with_samples
from tests.builders import SCOPE, plan_details
from tests.read_models import all_rows
from tests.servers import KillableBroker, Postgres
from tests.test_large_imports import candidate_list, form

pytestmark = pytest.mark.alone  # kills and restarts servers under load and times the recovery

SYSTEM = Actor(id="tests", role=Role.SYSTEM)
CONVERGENCE = 60.0  # seconds from the fault's end to read models equal to a rebuild


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def broker() -> Iterator[KillableBroker]:
    b = KillableBroker(free_port())
    yield b
    b.stop()


@dataclass
class Stack:
    """The system as an operator runs it: one process per command, each with its own log."""

    url: str
    bootstrap: str
    logs: Path
    schema: str = field(default_factory=lambda: f"f_{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SKILLCERT_DATABASE_URL": self.url, "SKILLCERT_KAFKA_BOOTSTRAP": self.bootstrap,
                "SKILLCERT_DB_SCHEMA": self.schema, "SKILLCERT_TOPIC_PREFIX": f"{self.schema}.",
                "SKILLCERT_API_PORT": str(self.port), "SKILLCERT_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "SKILLCERT_DATA_DIR": str(self.logs / "data")}  # fmt: skip

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    COMMANDS = {"relay": ["relay", "run"], "consumers": ["consumers"], "consumers-2": ["consumers"], "api": ["api"],
                "checkpoints": ["audit", "checkpoint", "--every", "1"]}  # fmt: skip

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        p = subprocess.Popen([sys.executable, "-m", "infra.cli", *self.COMMANDS[name]], env=self.env, stdout=log,
                             stderr=subprocess.STDOUT)  # fmt: skip
        self.processes[name] = p
        return p

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def wait_for_api(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and self.processes["api"].poll() is None, self.log("api")
            time.sleep(0.1)

    def stop(self) -> None:
        for p in self.processes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes.values():
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class Load:
    """Registrations, each followed by a review, sent over HTTP at a steady rate from a thread."""

    stack: Stack
    code: str
    headers: dict[str, str]
    rate: float = 20.0
    first: int = 0
    acked: dict[str, str] = field(default_factory=dict)  # registration id -> last command acknowledged
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0
    slowest: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)

    ended: float = 0.0

    def run(self, seconds: float) -> threading.Thread:
        def drive() -> None:
            with httpx.Client(base_url=self.stack.base, headers=self.headers, timeout=10) as client:
                k, started = self.first, time.monotonic()
                while time.monotonic() - started < seconds:
                    self._one(client, k)
                    k += 1
                    time.sleep(max(0.0, started + (k - self.first) / self.rate - time.monotonic()))
            self.ended = time.monotonic()
            self.done.set()

        thread = threading.Thread(target=drive, daemon=True)
        thread.start()
        return thread

    def _one(self, client: httpx.Client, k: int) -> None:
        body = {"registration_code": self.code, "form": _json(form(k))}
        started = time.monotonic()
        try:
            r = client.post("/registrations", json=body)
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
            if r.status_code != 201:
                return
            rid = r.json()["id"]
            self.acked[rid] = "registered"
            r = client.post(f"/registrations/{rid}/review", json={"decision": "returned", "reasons": f"补材料 {k}"})
            self.statuses[r.status_code] = self.statuses.get(r.status_code, 0) + 1
            if r.status_code == 204:
                self.acked[rid] = "returned"
        except httpx.HTTPError:
            self.failures += 1
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)


def _json(model: Any) -> Any:
    import json

    return json.loads(model.model_dump_json())


@pytest.fixture
def stack(postgres: Postgres, broker: KillableBroker, tmp_path: Path) -> Iterator[Stack]:
    s = Stack(postgres.socket_url, broker.bootstrap, tmp_path)
    with psycopg.connect(s.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {s.schema}")
    store_with_samples(s.url, s.schema)
    yield s
    s.stop()


def open_plan(stack: Stack, seats: int = 3000) -> tuple[str, dict[str, str], Any]:
    svc = Service(stack.url, stack.schema)
    institution = Institution.register(SYSTEM, "深圳市技能人才评价示范中心", Filing(city_code="03", station_serial="015"),
                                       DeadlineProfile.S, SCOPE)  # fmt: skip
    staff = Actor(id="staff-li", role=Role.INSTITUTION_STAFF, institution_id=institution.id)
    later = {"registration_deadline": date(2099, 3, 1), "evaluation_start": date(2099, 4, 1),
             "evaluation_end": date(2099, 4, 1)}  # fmt: skip
    code = "F" + "".join(str(2 + (b % 8)) for b in os.urandom(7))
    plan = EvaluationPlan.publish(staff, institution.id, institution.name, plan_details("2701", seats=seats, **later),
                                  code)  # fmt: skip
    svc.save(institution, plan, RegistrationCode.issue(staff, code, plan.id))
    svc.close()
    tokens = Tokens(stack.url, stack.schema)
    tokens.create_table()
    _, token = tokens.create("staff-li", Role.INSTITUTION_STAFF, institution.id)
    return code, {"Authorization": f"Bearer {token}"}, plan.id


def start_all(stack: Stack) -> None:
    for name in ("relay", "consumers", "api", "checkpoints"):
        stack.start(name)
    stack.wait_for_api()


def converged(stack: Stack, load: Load, since: float) -> str:
    """Wait for every read model to have applied the whole store, then compare it with a rebuild
    row for row. Says how long that took after the fault ended (`since`) and after the last command."""
    app = Service(stack.url, stack.schema)
    try:
        # Every acknowledged command is in the store, at least at the version acknowledged.
        stored = app.get_many(uuid.UUID(r) for r in load.acked)
        assert len(stored) == len(load.acked), f"{len(load.acked) - len(stored)} acknowledged registrations lost"
        assert all(stored[uuid.UUID(r)].version >= (2 if s == "returned" else 1) for r, s in load.acked.items())
        deadline = since + CONVERGENCE
        with connect(stack.url, stack.schema, autocommit=True) as conn:
            while not all(r["events_behind"] == 0 and not r["stalls"] for r in lag(conn, app, PROJECTIONS)):
                assert time.monotonic() < deadline, (
                    [(r["projection"], r["events_behind"], r["stalls"], r["partitions"])
                     for r in lag(conn, app, PROJECTIONS)], status(app, stack.url, stack.schema),
                    stack.log("consumers")[-3000:], stack.log("relay")[-3000:],
                )  # fmt: skip
                time.sleep(0.5)
            took = time.monotonic() - since
            live = all_rows(conn)
        scratch = f"{stack.schema}_rebuilt"
        with psycopg.connect(stack.url, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {scratch}")
        with connect(stack.url, scratch) as conn:
            rebuild(conn, PROJECTIONS, app, installation_key(stack.url, stack.schema))
            conn.commit()
            rebuilt = all_rows(conn)
        differ = {t: (len(set(live[t]) - set(rebuilt[t])), len(set(rebuilt[t]) - set(live[t])))
                  for t in live if live[t] != rebuilt[t]}  # fmt: skip
        assert differ == {}, differ
        return f"read models equal a rebuild {took:.1f} s after the fault ended, {since + took - load.ended:.1f} s after " \
               f"the last command"  # fmt: skip
    finally:
        app.close()


def no_server_errors(load: Load) -> None:
    assert not {s for s in load.statuses if s >= 500 and s != 503}, load.statuses


def test_postgresql_killed_and_restarted_under_load(stack: Stack, postgres: Postgres) -> None:
    code, headers, _ = open_plan(stack)
    start_all(stack)
    pids = {name: p.pid for name, p in stack.processes.items()}
    load = Load(stack, code, headers)
    driver = load.run(14)
    time.sleep(4)
    postgres.kill()
    time.sleep(5)
    postgres.start()
    healed = time.monotonic()
    driver.join()
    took = converged(stack, load, healed)
    assert {name: p.pid for name, p in stack.processes.items() if p.poll() is None} == pids, "a process exited"
    no_server_errors(load)
    assert len(load.acked) > 60 and load.slowest < 15, (load.statuses, load.slowest)
    assert "PostgreSQL unavailable" in stack.log("relay")
    print(
        f"{took} (PostgreSQL came back); {load.statuses}, {load.failures} connection failures, "
        f"slowest command {load.slowest:.1f} s"
    )


def test_the_broker_killed_and_restarted_empty_under_load(stack: Stack, broker: KillableBroker) -> None:
    code, headers, _ = open_plan(stack)
    start_all(stack)
    pids = {name: p.pid for name, p in stack.processes.items()}
    load = Load(stack, code, headers)
    driver = load.run(14)
    time.sleep(3)
    # An operator republished the history a moment before (the README's remedy for a subscriber that
    # lost its copy): the old log holds every event twice, so its offsets match nothing in the new one.
    done = subprocess.run([sys.executable, "-m", "infra.cli", "relay", "republish", "--from", "0"], env=stack.env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    time.sleep(1.5)
    broker.kill()
    time.sleep(3)
    broker.restart()  # empty, and a new cluster id, as a restarted in-memory broker is
    healed = time.monotonic()
    driver.join()
    took = converged(stack, load, healed)
    assert {name: p.pid for name, p in stack.processes.items() if p.poll() is None} == pids, "a process exited"
    no_server_errors(load)
    assert load.statuses.get(201, 0) > 100, load.statuses
    assert "republishing everything from position 0" in stack.log("relay")
    assert "again from the start" in stack.log("consumers")
    print(f"{took} (the broker came back); {load.statuses}")


@pytest.mark.parametrize("victim", ["relay", "consumers"])
def test_a_process_killed_and_started_again_under_load(stack: Stack, victim: str) -> None:
    code, headers, _ = open_plan(stack)
    start_all(stack)
    load = Load(stack, code, headers)
    driver = load.run(12)
    time.sleep(4)
    stack.kill(victim)
    time.sleep(2)
    stack.start(victim)
    healed = time.monotonic()
    driver.join()
    took = converged(stack, load, healed)
    no_server_errors(load)
    assert load.statuses.get(201, 0) > 100, load.statuses
    print(f"{took} (the {victim} started again); {load.statuses}")


def reading(stack: Stack, worker: str) -> int:
    """How many partitions the worker said it reads after its last rebalance (-1: not yet said)."""
    said = re.findall(r"this worker now reads (\d+) partitions", stack.log(worker))
    return int(said[-1]) if said else -1


def test_two_workers_share_the_partitions_and_one_takes_over_when_the_other_is_killed(stack: Stack) -> None:
    code, headers, _ = open_plan(stack)
    start_all(stack)
    stack.start("consumers-2")
    load = Load(stack, code, headers)
    driver = load.run(20)
    # Both in the group, each with a share: a rebalance gave each some partitions and, between them, all.
    every = len({topic for p in PROJECTIONS for topic in p.topics}) * 3  # partitions (the default 3 per topic)
    deadline = time.monotonic() + 30
    while not (reading(stack, "consumers") > 0 and reading(stack, "consumers-2") > 0
               and reading(stack, "consumers") + reading(stack, "consumers-2") == every):  # fmt: skip
        assert time.monotonic() < deadline, (stack.log("consumers")[-2000:], stack.log("consumers-2")[-2000:])
        time.sleep(0.2)
    time.sleep(3)  # both apply for a while
    shares = reading(stack, "consumers"), reading(stack, "consumers-2")
    stack.kill("consumers")  # mid-stream: commands keep coming
    killed = time.monotonic()
    while reading(stack, "consumers-2") < every:  # the survivor takes the dead worker's partitions
        assert time.monotonic() < killed + 30, stack.log("consumers-2")[-2000:]
        time.sleep(0.2)
    took_over = time.monotonic() - killed
    driver.join()
    print(
        converged(stack, load, killed),
        f"; shares {shares}, all {every} read by the survivor {took_over:.1f} s after the kill",
    )
    no_server_errors(load)
    assert load.statuses.get(201, 0) > 150, load.statuses


def test_the_api_killed_during_an_import_stores_nothing_of_it(stack: Stack) -> None:
    code, headers, plan_id = open_plan(stack, seats=6000)
    start_all(stack)
    load = Load(stack, code, headers, rate=10, first=10_000)  # other staff keep working meanwhile
    driver = load.run(10)
    content = candidate_list(5000)
    outcome: list[Any] = []

    def upload() -> None:
        try:
            outcome.append(httpx.post(f"{stack.base}/plans/{plan_id}/registrations/import", headers=headers,
                                      files={"file": ("名单.csv", content, "text/csv")}, timeout=60))  # fmt: skip
        except httpx.HTTPError as e:
            outcome.append(e)

    uploading = threading.Thread(target=upload)
    uploading.start()
    time.sleep(1.0)  # the file is in and being read and checked; the save comes after about 3 s
    stack.kill("api")
    uploading.join()
    assert isinstance(outcome[0], httpx.HTTPError), outcome  # the client saw the connection drop
    stack.start("api")
    stack.wait_for_api()
    healed = time.monotonic()
    driver.join()
    converged(stack, load, healed)
    names = {f"考生{k}" for k in range(5000)}
    with psycopg.connect(stack.url) as conn:
        stored = {n for (n,) in conn.execute(f"SELECT name FROM {stack.schema}.candidate_registrations")}
        seats_taken = conn.execute(f"SELECT seats_taken FROM {stack.schema}.catalogue_plans WHERE plan_id = %s",
                                   (plan_id,)).fetchone()[0]  # fmt: skip
    assert not stored & names, f"{len(stored & names)} rows of the killed import were stored"
    assert seats_taken == len(stored) > 0  # what the other staff registered meanwhile, and only that
    no_server_errors(load)


def test_a_projection_that_cannot_apply_stalls_visibly_and_resumes_without_skipping(stack: Stack) -> None:
    """An operator's mistake makes the candidate record refuse new rows: the worker retries the batch,
    /projections names the event it is stuck on, and once the mistake is undone everything is applied."""
    code, headers, _ = open_plan(stack)
    start_all(stack)
    auditor = Tokens(stack.url, stack.schema).create("auditor-sun", Role.AUDITOR)[1]
    with psycopg.connect(stack.url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while not conn.execute("SELECT to_regclass(%s)", (f"{stack.schema}.candidate_registrations",)).fetchone()[0]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        conn.execute(
            f"ALTER TABLE {stack.schema}.candidate_registrations ADD CONSTRAINT mistake CHECK (false) NOT VALID"
        )
    load = Load(stack, code, headers, rate=10)
    load.run(3).join()

    def stalled() -> list[Any]:
        report = httpx.get(f"{stack.base}/projections", headers={"Authorization": f"Bearer {auditor}"}).json()
        return [r for r in report if r["status"] == "stalled"]

    def retried() -> list[Any]:
        return [s for r in stalled() if r["projection"] == "candidates" for s in r["stalls"] if s["attempts"] >= 2]

    deadline = time.monotonic() + 30
    while not (stalls := retried()):  # retried, not skipped
        assert time.monotonic() < deadline, stack.log("consumers")[-2000:]
        time.sleep(0.5)
    [stall] = stalls
    assert stall["event_type"] == "cn.skillcert.registration.submitted.v1" and "mistake" in stall["error"], stall
    with psycopg.connect(stack.url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {stack.schema}.candidate_registrations DROP CONSTRAINT mistake")
    print(converged(stack, load, time.monotonic()))
    assert not stalled()
    assert stack.processes["consumers"].poll() is None


def test_a_session_holding_the_write_lock_makes_writers_fail_clearly_not_freeze(stack: Stack) -> None:
    """Something outside skillcert (a forgotten psql) holds the event store's lock: a command answers 503
    after the lock timeout instead of waiting for ever, and /health answers throughout."""
    code, headers, _ = open_plan(stack)
    stack.start("api")
    stack.wait_for_api()
    holder = psycopg.connect(stack.url)
    holder.execute(f"LOCK TABLE {stack.schema}.skillcert_events IN EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        r = httpx.post(f"{stack.base}/registrations", headers=headers, timeout=30,
                       json={"registration_code": code, "form": _json(form(1))})  # fmt: skip
        took = time.monotonic() - started
        assert r.status_code == 503 and r.headers["retry-after"] and 9 < took < 15, (r.status_code, took, r.text)
        assert httpx.get(f"{stack.base}/health", timeout=1).status_code == 200
    finally:
        holder.close()
    r = httpx.post(f"{stack.base}/registrations", headers=headers, timeout=30,
                   json={"registration_code": code, "form": _json(form(1))})  # fmt: skip
    assert r.status_code == 201, r.text
