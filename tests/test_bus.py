"""The relay and the bus against the real broker, with real relay and subscriber processes:
killed relays, a frozen broker, two relays at once, republishing, and what kcat reads."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator, FormatChecker

from domain.model import Role
from infra.api import create_app
from infra.bus.privacy import installation_key, ref
from infra.bus.relay import Relay, ensure_position_table, lock_key, request_republish, status
from infra.bus.schemas import SCHEMA_DIR
from infra.embedded import Broker, free_port
from tests.api import bearer
from tests.builders import candidate, setup_plan, working_years_form
from tests.bus import (
    Bus,
    anything_on,
    eventually,
    everything,
    expected,
    kcat,
    log_of,
    position,
    read_topic,
    topic_size,
    world_with_personal_data,
)


@pytest.fixture
def bus(database_url, schema, bootstrap, tmp_path):
    b = Bus(database_url, schema, bootstrap, tmp_path)
    yield b
    b.stop_all()


def head(app) -> int:
    return app.recorder.max_notification_id() or 0


def subscriber(bus: Bus, store, group: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumers.subscriber", "--bootstrap", bus.bootstrap, "--topic",
         bus.topic("certificates"), "--group", group, "--store", str(store), "--idle-exit", "4", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_a_killed_relay_redelivers_and_the_subscriber_keeps_each_event_once(world, bus, tmp_path):
    app = world.registrations
    world_with_personal_data(world, 30)
    want = expected(app)
    with psycopg.connect(bus.database_url, autocommit=True) as setup:
        ensure_position_table(setup, bus.schema)

    # 1. Killed after the broker acknowledged a batch, before the position was recorded: a
    #    transaction of ours holds the position row, so the relay's update waits there.
    with psycopg.connect(bus.database_url) as holder:
        holder.execute(f'SELECT * FROM "{bus.schema}".relay_position FOR UPDATE')
        first = bus.relay(batch_size=40)
        eventually(lambda: anything_on(bus.bootstrap, bus.topic("registrations")), timeout=60)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        # PostgreSQL would notice the dead client only once the lock freed and its update
        # ran; end its sessions now, as a crashed host's sessions would end.
        holder.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'skillcert-relay'"
        )
        holder.rollback()
    delivered_unrecorded = sum(topic_size(bus.bootstrap, bus.topic(c)) for c in ("registrations", "exams"))
    assert position(app, bus.schema) == 0 and delivered_unrecorded > 0

    # 2. Killed again somewhere in the stream, mid-flight.
    second = bus.relay(batch_size=40)
    eventually(lambda: position(app, bus.schema) > 0, timeout=60, every=0.005)
    os.kill(second.pid, signal.SIGKILL)
    second.wait()

    # 3. A third relay finishes the job.
    bus.relay(batch_size=40)
    eventually(lambda: position(app, bus.schema) == head(app), timeout=60)

    messages = everything(bus)
    ids = Counter(m["id"] for m in messages)
    assert set(ids) == set(want)  # every event at least once
    assert sum(ids.values()) > len(want)  # and some twice: the kills really left work undone
    assert all({m["type"] for m in messages if m["id"] == i} == {want[i][1]} for i in list(ids)[:50])

    # The reference subscriber ends with each certificate event exactly once.
    store = tmp_path / "received.sqlite"
    run = subscriber(bus, store, "subsidy-system")
    assert run.returncode == 0, run.stderr
    db = sqlite3.connect(store)
    stored = Counter(i for (i,) in db.execute("SELECT id FROM events"))
    certificate_events = {i for i, (context, _) in want.items() if context == "certificates"}
    assert set(stored) == certificate_events and set(stored.values()) == {1}
    on_topic = topic_size(bus.bootstrap, bus.topic("certificates"))
    assert db.execute("SELECT value FROM stats WHERE name = 'duplicates'").fetchone()[0] == on_topic - len(stored)
    # Per certificate, the versions are stored in order and without a hole.
    for (subject,) in db.execute("SELECT DISTINCT subject FROM events"):
        versions = [v for (v,) in db.execute("SELECT version FROM events WHERE subject = ? ORDER BY rowid", (subject,))]
        assert versions == list(range(1, len(versions) + 1))
    # Started again, it has nothing new: its offsets were committed after storing.
    again = subscriber(bus, store, "subsidy-system")
    assert "stored 0 new events" in again.stdout


@pytest.fixture
def frozen_bus(database_url, schema, tmp_path):
    """A broker of our own (freezing the shared one would stall other tests), and a bus on it."""
    broker = Broker(free_port())
    b = Bus(database_url, schema, broker.bootstrap, tmp_path)
    b.broker = broker  # type: ignore[attr-defined]
    yield b
    if broker.process.poll() is None:
        os.kill(broker.process.pid, signal.SIGCONT)
    b.stop_all()
    broker.stop()


def test_commands_succeed_while_the_broker_is_frozen_and_the_relay_catches_up(service, frozen_bus):
    bus, schema, broker = frozen_bus, frozen_bus.schema, frozen_bus.broker
    _, _, code = setup_plan(service, seats=100)
    bus.relay(batch_size=50)
    eventually(lambda: position(service, schema) == head(service), timeout=60)
    before = head(service)

    os.kill(broker.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    for i in range(1, 41):  # commands keep arriving; none of them needs the broker
        service.register(candidate(i), code, working_years_form(i))
    took = time.monotonic() - started
    assert head(service) >= before + 80  # a registration and its seat each
    time.sleep(3)
    frozen = status(service, bus.database_url, schema)
    assert frozen["active"] and frozen["lag_events"] == head(service) - before
    assert frozen["lag_seconds"] is not None and frozen["lag_seconds"] >= 3

    os.kill(broker.process.pid, signal.SIGCONT)
    eventually(lambda: position(service, schema) == head(service), timeout=120)
    assert status(service, bus.database_url, schema)["lag_events"] == 0
    ids = Counter(m["id"] for m in everything(bus))
    assert set(ids) == set(expected(service))
    print(f"40 registrations in {took:.2f} s with the broker frozen")


def test_messages_that_time_out_while_the_broker_is_away_are_sent_again(service, frozen_bus):
    """The broker stays frozen past the producer's message timeout: the batch fails, the
    relay records nothing for it, and sends it again once the broker is back."""
    bus, schema, broker = frozen_bus, frozen_bus.schema, frozen_bus.broker
    _, _, code = setup_plan(service, seats=100)
    relay = bus.relay(batch_size=50, SKILLCERT_RELAY_MESSAGE_TIMEOUT_MS="2000")
    eventually(lambda: position(service, schema) == head(service), timeout=60)
    before = head(service)
    os.kill(broker.process.pid, signal.SIGSTOP)
    for i in range(1, 21):
        service.register(candidate(i), code, working_years_form(i))
    eventually(lambda: "delivery failed" in log_of(relay), timeout=60)
    assert position(service, schema) == before  # nothing recorded for what failed
    os.kill(broker.process.pid, signal.SIGCONT)
    eventually(lambda: position(service, schema) == head(service), timeout=120)
    ids = Counter(m["id"] for m in everything(bus))
    assert set(ids) == set(expected(service))
    assert relay.poll() is None  # it recovered by itself


def test_a_message_the_bus_refuses_holds_the_relay_back_without_stopping_it(service, bus):
    """An outside review stored an event too large for the producer (since refused at write time, MAX_EVENT_BYTES):
    the relay exited on it, `skillcert up` started it again five times and then stopped everything, the API with it,
    and every later start did the same. A message the bus refuses is now a delivery that failed: said (once a
    minute), tried again less and less often, and the relay stays up; with the limit raised, it goes."""
    _, _, code = setup_plan(service, seats=100)
    service.register(candidate(1), code, working_years_form(1))
    relay = bus.relay(SKILLCERT_KAFKA_CLIENT_CONFIG=json.dumps({"message.max.bytes": "1500"}))
    eventually(lambda: "delivery failed" in log_of(relay), timeout=60)
    assert re.search(
        r"position \d+ \(cn\.skillcert\.[a-z_.]+\.v1, [\d,]+ bytes\): .*Message size too large", log_of(relay)
    ), log_of(relay)  # which event, how large, and why
    time.sleep(4)
    assert relay.poll() is None and position(service, bus.schema) < head(service)  # waiting, not gone
    assert log_of(relay).count("delivery failed") <= 2  # not a line a second
    relay.send_signal(signal.SIGTERM)
    relay.wait(15)
    bus.relay()
    eventually(lambda: position(service, bus.schema) == head(service), timeout=60)


def test_two_relays_started_together_never_both_publish(service, bus):
    _, _, code = setup_plan(service, seats=100)
    for i in range(1, 31):
        service.register(candidate(i), code, working_years_form(i))
    relays = [bus.relay(batch_size=20), bus.relay(batch_size=20)]
    eventually(lambda: position(service, bus.schema) == head(service), timeout=60)
    time.sleep(1.5)  # give a second publisher, if there were one, time to show itself
    want = expected(service)
    ids = Counter(m["id"] for m in everything(bus))
    assert set(ids) == set(want) and sum(ids.values()) == len(want)
    active = [r for r in relays if "relay active" in log_of(r)]
    waiting = [r for r in relays if "another relay is active" in log_of(r)]
    assert len(active) == 1 and waiting == [r for r in relays if r is not active[0]]

    # The active one dies; the one waiting takes over from the recorded position.
    os.kill(active[0].pid, signal.SIGKILL)
    active[0].wait()
    for i in range(31, 41):
        service.register(candidate(i), code, working_years_form(i))
    eventually(lambda: position(service, bus.schema) == head(service), timeout=60)
    assert "relay active from position" in log_of(waiting[0])
    ids = Counter(m["id"] for m in everything(bus))
    assert set(ids) == set(expected(service)) and sum(ids.values()) == len(ids)


def test_republishing_history_for_a_wiped_broker_or_a_new_subscriber(service, bus):
    _, _, code = setup_plan(service, seats=100)
    for i in range(1, 11):
        service.register(candidate(i), code, working_years_form(i))
    relay = bus.relay()
    eventually(lambda: position(service, bus.schema) == head(service), timeout=60)
    published = topic_size(bus.bootstrap, bus.topic("registrations"))
    top = head(service)

    ahead = bus.cli("relay", "republish", "--from", str(top + 10))
    assert ahead.returncode == 2 and "would skip events" in ahead.stdout
    again = bus.cli("relay", "republish", "--from", "0")
    assert again.returncode == 0 and f"the running relay republishes positions 1..{top}" in again.stdout
    eventually(lambda: topic_size(bus.bootstrap, bus.topic("registrations")) == 2 * published, timeout=60, every=0.5)
    eventually(lambda: position(service, bus.schema) == top, timeout=30)

    relay.send_signal(signal.SIGTERM)
    relay.wait(15)
    later = bus.cli("relay", "republish", "--from", str(top - 5))
    assert later.returncode == 0 and "the next relay to start" in later.stdout
    shown = json.loads(bus.cli("relay", "status", "--json").stdout)
    assert (shown["active"], shown["position"], shown["lag_events"]) == (False, top - 5, 5)
    with TestClient(create_app(bus.database_url, bus.schema)) as http:
        http.headers.update(bearer(bus.database_url, bus.schema, Role.AUDITOR, "auditor-sun"))
        assert http.get("/bus/relay").json()["lag_events"] == 5


def test_a_certificate_whose_data_was_deleted_is_not_published_again_with_its_holder(world, bus):
    """Before, a republish (for a wiped broker, a subscriber bootstrapping) sent a certificate's events again as they
    were published then, its holder's name and ID number included, after the holder had given the certificate up and
    its data was deleted (000 二4); every subscriber had to erase them a second time, and one that bootstrapped from
    the republish received them for the first time. Now only what came after the deletion is sent again; a relay
    catching up on a deletion it had not reached yet sends none of the certificate's earlier events either."""
    from domain.registration import AttachmentKind
    from tests.builders import attachment
    from tests.lifecycle import ASSOCIATION, queryable_certificates, staff

    certs = world.certificates
    iid, cids = queryable_certificates(world, 3)
    kept, deleted, late = (str(c) for c in cids)

    def delete(cid) -> None:  # type: ignore[no-untyped-def]
        certs.record_holder_commitment(staff(iid), cid, attachment(AttachmentKind.HOLDER_COMMITMENT))
        certs.check_deletion(ASSOCIATION, cid, queryable_nationally=True)
        certs.delete_data(staff(iid), cid, "持证人放弃证书相关待遇")

    def published() -> dict[str, list[str]]:
        by_subject: dict[str, list[str]] = {}
        for m in read_topic(bus.bootstrap, bus.topic("certificates")):
            value = json.loads(m.value())
            by_subject.setdefault(value["subject"], []).append(value["type"].split(".")[3])
        return by_subject

    def naming_holders() -> int:
        names = {certs.certificate(c).holder.name for c in cids[1:]}
        return sum(1 for m in read_topic(bus.bootstrap, bus.topic("certificates"))
                   if any(n in m.value().decode() for n in names))  # fmt: skip

    delete(cids[2])  # before the relay reached any of its events
    relay = bus.relay()
    eventually(lambda: position(certs, bus.schema) == head(certs), timeout=60)
    before = published()
    assert "issued" in before[kept] and "issued" in before[deleted] and before[late] == ["data_deleted"]
    named = naming_holders()
    assert named > 0  # the deleted one's, published before its deletion
    relay.send_signal(signal.SIGTERM)
    relay.wait(15)
    delete(cids[1])  # the relay, catching up, sends the deletion and none of what led to it
    bus.relay()
    eventually(lambda: position(certs, bus.schema) == head(certs), timeout=60)
    assert published()[deleted] == [*before[deleted], "data_deleted"]

    assert bus.cli("relay", "republish", "--from", "0").returncode == 0
    eventually(lambda: len(published()[kept]) == 2 * len(before[kept]), timeout=60, every=0.5)
    eventually(lambda: position(certs, bus.schema) == head(certs), timeout=30)
    after = published()
    assert after[kept] == before[kept] * 2  # everything else, again
    assert after[deleted] == [*before[deleted], "data_deleted", "data_deleted"]
    assert after[late] == ["data_deleted", "data_deleted"]
    assert naming_holders() == named  # nothing sent since names a holder whose data was deleted


def test_a_republish_asked_while_the_running_relay_takes_up_another_is_not_lost(service, database_url, schema,
                                                                                bootstrap):  # fmt: skip
    """What an outsider found: the relay took a request up, drained what was in flight (minutes, when the broker is
    slow), then cleared the request, and with it one an operator made meanwhile, who had been told it would run. And
    a second request replaced a first not yet taken up even where the first went further back."""
    relay = Relay(service, database_url, schema, bootstrap, "unused.", bytes(32))
    with psycopg.connect(database_url, autocommit=True) as running:
        running.execute("SELECT pg_advisory_lock(%s)", (lock_key(schema),))  # as the running relay holds it
        running.execute(f"UPDATE \"{schema}\".relay_position SET position = 200 WHERE name = 'relay'")
        assert "running relay republishes positions 101.." in request_republish(service, database_url, schema, 100)
        assert relay._rewind_requested(running) == 100  # taken up: the relay drains, then rewinds
        request_republish(service, database_url, schema, 50)  # meanwhile
        assert "positions 51.." in request_republish(service, database_url, schema, 150)  # the further back stays
        relay._rewound(running, 100)
        assert relay._rewind_requested(running) == 50  # not lost: the next look takes it up
        relay._rewound(running, 50)
        assert relay._rewind_requested(running) is None
    relay.producer.flush(0)


def test_kcat_reads_the_certificates_topic_and_every_message_matches_its_schema(world, bus, tmp_path):
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (Debian package kcat; .ci/run installs it where it can)")
    numbers = world_with_personal_data(world, 12)
    bus.relay()
    app = world.registrations
    eventually(lambda: position(app, bus.schema) == head(app), timeout=60)
    want = expected(app)

    out = kcat(
        ["-C", "-b", bus.bootstrap, "-t", bus.topic("certificates"), "-o", "beginning", "-e", "-q", "-J"], tmp_path
    )
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == sum(1 for c, _ in want.values() if c == "certificates")
    validators: dict[str, Draft202012Validator] = {}

    def validate(message: dict) -> None:
        context = message["source"].rpartition("/")[2]
        if message["type"] not in validators:
            schema = json.loads((SCHEMA_DIR / context / f"{message['type']}.json").read_text())
            validators[message["type"]] = Draft202012Validator(schema, format_checker=FormatChecker())
        validators[message["type"]].validate(message)

    for line in lines:
        assert ["content-type", "application/cloudevents+json"] == line["headers"][:2]
        message = json.loads(line["payload"])
        assert line["key"] == message["aggregateid"]
        validate(message)
    assert {json.loads(x["payload"])["type"] for x in lines} >= {
        "cn.skillcert.certificate.issued.v1", "cn.skillcert.certificate.correction_approved.v1",
    }  # fmt: skip

    # Every message on every topic matches its schema and carries no ID or phone number.
    key = installation_key(bus.database_url, bus.schema)
    raw = [
        m.value()
        for c in ("registrations", "exams", "certificates", "stock")
        for m in read_topic(bus.bootstrap, bus.topic(c))
    ]
    assert len(raw) == len(want)
    for value in raw:
        validate(json.loads(value))
        text = value.decode()
        assert not any(n in text for n in numbers), text[:300]
    issued = [json.loads(x["payload"]) for x in lines if json.loads(x["payload"])["type"].endswith("issued.v1")]
    holder = issued[0]["data"]["holder"]["id_number"]
    assert holder["masked"].startswith("4403") and "*" in holder["masked"]
    assert holder["ref"] in {ref(n, key) for n in numbers}


def test_commands_racing_the_relay_lose_nothing(service, bus):
    """Writers commit while the relay reads: the notification order equals commit order, so
    the relay never skips an event committed late with a lower position."""
    _, _, code = setup_plan(service, seats=200)
    bus.relay(batch_size=25)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: service.register(candidate(i), code, working_years_form(i)), range(1, 121)))
    eventually(lambda: position(service, bus.schema) == head(service), timeout=60)
    ids = Counter(m["id"] for m in everything(bus))
    assert set(ids) == set(expected(service))


def test_with_the_broker_away_the_relay_and_the_worker_wait_quietly_and_stop_at_once(database_url, schema, service):
    """What an outsider found: with no broker, `relay run` printed a thousand lines of librdkafka's in a minute, said
    it was active, and took 33 s to stop on Ctrl-C; `consumers` exited at once with a 35-line traceback. Both wait,
    saying so in a few lines, and stop within seconds."""
    from infra.embedded import free_port

    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"}  # fmt: skip
    for command, waits in ((["relay", "run"], 14), (["consumers"], 5)):
        process = subprocess.Popen([sys.executable, "-m", "infra.cli", *command], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            time.sleep(waits)
            assert process.poll() is None, process.communicate()[0]  # still waiting for the broker
            asked = time.monotonic()
            process.send_signal(signal.SIGINT)
            said, _ = process.communicate(timeout=30)
            took = time.monotonic() - asked
        finally:
            process.kill()
        lines = said.strip().splitlines()
        assert took < 5 and len(lines) <= 8 and "Traceback" not in said, (command, took, said)
        assert "does not answer" in said, said


def test_the_relays_log_filter_holds_repeats_back_but_not_another_brokers_lines():
    """A reviewer found the first version of the filter folding every digit: two brokers' failures were one kind of
    line, and the second broker was never named."""
    import logging

    from infra.bus.relay import OncePer

    once = OncePer(60.0)

    def passes(broker: int, ms: int) -> bool:
        text = f"127.0.0.1:{broker}/bootstrap: Connect to ipv4#127.0.0.1:{broker} failed: Connection refused (after {ms}ms)"
        return once.filter(logging.LogRecord("kafka", logging.ERROR, "", 0, text, None, None))

    assert [passes(1, 0), passes(1, 12), passes(2, 5), passes(2, 1034), passes(1, 7)] == [
        True,
        False,
        True,
        False,
        False,
    ]
