"""Tamper evidence: rows edited, deleted and reordered directly in PostgreSQL are each caught, at
the position where the history stops being the one that was written."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from infra.services.registrations import Decision
from infra.store import chain
from infra.store.chain import SLICE, install, verify
from tests.builders import candidate, setup_plan, staff_of, working_years_form
from tests.test_bus import bus  # noqa: F401, F811 (fixture)


@pytest.fixture
def history(service, database_url, schema):
    iid, _, code = setup_plan(service)
    rids = [service.register(candidate(i), code, working_years_form(i)) for i in range(1, 6)]
    for rid in rids[:3]:
        service.review(staff_of(iid), rid, Decision.RETURNED, "补充材料")
    conn = psycopg.connect(database_url)
    table = sql.Identifier(schema, service.recorder.events_table_name)
    yield conn, table, service.recorder.events_table_name
    conn.close()


@pytest.fixture(params=[10_000, 3], ids=["in one range", "in ranges of 3"])
def walked(request, monkeypatch):
    """The walk reads the log a range of positions at a time: a break is found wherever the ranges fall."""
    monkeypatch.setattr(chain, "WALK_RANGE", request.param)


def positions(conn, table) -> list[tuple[int, object, int]]:
    return conn.execute(sql.SQL("SELECT notification_id, originator_id, originator_version FROM {} "
                                "ORDER BY notification_id").format(table)).fetchall()  # fmt: skip


def test_an_untouched_history_verifies_and_every_write_is_chained(history, schema, service, walked):
    conn, table, name = history
    verdict = verify(conn, schema, name)
    assert (
        verdict.intact and verdict.events == len(positions(conn, table)) == 18
    )  # 5 registrations, 3 returns, the institution, its signing key and its sample


def test_events_saved_together_chain_to_each_other_and_to_what_came_before(history, schema, service):
    """The trigger runs once per statement: versions 1-3 of one aggregate in one save, then version 4
    alone, then two aggregates interleaved in one save; verify recomputes every link in Python."""
    conn, table, name = history
    a, b = uuid.uuid4(), uuid.uuid4()
    many = [(uuid.uuid4(), 1) for _ in range(2 * SLICE + 40)]  # one statement, written in three slices
    many[5], many[SLICE + 7], many[-3] = (b, 3), (b, 4), (b, 5)  # one aggregate across the slices
    saves = [[(a, 1), (a, 2), (a, 3)], [(a, 4)], [(b, 1), (a, 5), (b, 2), (a, 6)], many]
    for save in saves:
        service.recorder.insert_events(
            [StoredEvent(o, v, "domain.audit:Probe.Stored", f"{o}/{v}".encode()) for o, v in save]
        )
    verdict = verify(conn, schema, name)
    assert verdict.intact and verdict.events == 18 + 8 + 2 * SLICE + 40, verdict


def test_a_store_chained_per_row_takes_the_per_statement_trigger_and_keeps_one_chain(history, schema, service):
    """A store made before the chain was computed per statement has a row trigger of the same name;
    opening it installs the new one, chains what the old one missed, and the chain stays whole."""
    conn, table, name = history
    events = service.recorder.events_table_name
    conn.execute(sql.SQL("DROP TRIGGER skillcert_chain ON {}").format(table))
    conn.execute(sql.SQL("CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$")
                 .format(sql.Identifier(schema, "old_chain")))  # fmt: skip
    conn.execute(sql.SQL("CREATE TRIGGER skillcert_chain BEFORE INSERT ON {} FOR EACH ROW EXECUTE FUNCTION {}()")
                 .format(table, sql.Identifier(schema, "old_chain")))  # fmt: skip
    conn.commit()
    a = uuid.uuid4()
    probe = "domain.audit:Probe.Stored"
    service.recorder.insert_events([StoredEvent(a, v, probe, b"%d" % v) for v in (1, 2)])  # chained by no one
    assert not verify(conn, schema, name).intact
    with psycopg.connect(conn.info.dsn, autocommit=True) as other:
        install(other, schema, events)
    (tgtype,) = conn.execute("SELECT t.tgtype FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                             "JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE t.tgname = 'skillcert_chain' AND n.nspname = %s", (schema,)).fetchone()  # fmt: skip
    assert tgtype & 1 == 0  # a statement trigger now
    service.recorder.insert_events([StoredEvent(a, v, probe, b"%d" % v) for v in (3, 4)])
    verdict = verify(conn, schema, name)
    assert verdict.intact and verdict.events == len(positions(conn, table)), verdict


def first_review(conn, table, service) -> int:
    """The position of the first review that returned a registration with "补充材料"."""
    rows = conn.execute(sql.SQL("SELECT notification_id, state FROM {} ORDER BY notification_id").format(table))
    return next(n for n, state in rows if "补充材料" in str(service.mapper.decode_bytes(bytes(state))))


def edit_review(conn, table, service, n: int) -> None:
    """An insider with the encryption key rewrites a review's reasons in place, straight in the
    database: the new state decrypts and reads as a valid event."""
    import orjson

    (state,) = conn.execute(sql.SQL("SELECT state FROM {} WHERE notification_id = %s").format(table), (n,)).fetchone()
    forged = orjson.dumps(service.mapper.decode_bytes(bytes(state))).replace("补充材料".encode(), "材料齐全".encode())
    conn.execute(sql.SQL("UPDATE {} SET state = %s WHERE notification_id = %s").format(table),
                 (service.mapper.cipher.encrypt(forged), n))  # fmt: skip


def test_an_edited_event_is_caught_at_its_position(history, schema, service, walked):
    conn, table, name = history
    n = first_review(conn, table, service)
    edit_review(conn, table, service, n)
    conn.commit()
    (state,) = conn.execute(sql.SQL("SELECT state FROM {} WHERE notification_id = %s").format(table), (n,)).fetchone()
    assert service.mapper.decode_bytes(bytes(state))["reasons"] == "材料齐全"  # a well-formed event under the key
    verdict = verify(conn, schema, name)
    assert verdict.broken_at == n and "content was changed" in verdict.problem, verdict


def test_a_deleted_event_is_caught_at_its_position(history, schema, service, walked):
    conn, table, name = history
    n = positions(conn, table)[9][0]
    conn.execute(sql.SQL("DELETE FROM {} WHERE notification_id = %s").format(table), (n,))
    conn.commit()
    verdict = verify(conn, schema, name)
    assert verdict.broken_at == n and "deleted" in verdict.problem, verdict


def test_reordered_events_are_caught_at_the_first_moved_position(history, schema, service, walked):
    conn, table, name = history
    rows = positions(conn, table)
    a, b = rows[4][0], rows[7][0]
    for frm, to in ((a, -1), (b, a), (-1, b)):  # swap two events' places in the log
        conn.execute(sql.SQL("UPDATE {} SET notification_id = %s WHERE notification_id = %s").format(table), (to, frm))
    conn.commit()
    verdict = verify(conn, schema, name)
    assert verdict.broken_at == a and "moved or renumbered" in verdict.problem, verdict


def test_a_live_store_verifies_intact_while_commands_and_the_relay_go_on(history, schema, service, monkeypatch):
    """What an outsider found: verify read the relay's position after its walk. On a live store the relay had nearly
    always published something newer by then, and the history was reported truncated when nothing was wrong."""
    from infra.bus.relay import ensure_position_table

    conn, table, name = history
    ensure_position_table(conn, schema)
    relay = sql.SQL("UPDATE {} SET position = (SELECT max(notification_id) FROM {}) WHERE name = 'relay'").format(
        sql.Identifier(schema, "relay_position"), table)  # fmt: skip
    conn.execute(relay)
    conn.commit()
    walking = chain._walked

    def meanwhile(*args):  # type: ignore[no-untyped-def]
        for i, row in enumerate(walking(*args)):
            if i == 0:  # a command is saved and published while the walk goes on
                o = uuid.uuid4()
                service.recorder.insert_events([StoredEvent(o, 1, "domain.audit:Probe.Stored", b"meanwhile")])
                with psycopg.connect(conn.info.dsn) as other:
                    other.execute(relay)
            yield row

    monkeypatch.setattr(chain, "_walked", meanwhile)
    verdict = verify(conn, schema, name)
    assert verdict.intact and verdict.events == 18, verdict
    assert verify(conn, schema, name).events == 19  # the next walk reads it


def test_the_verify_command_reports_the_first_broken_link(history, schema, database_url):
    conn, table, _ = history
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema}
    cli = [sys.executable, "-m", "infra.cli", "audit", "verify"]
    ok = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "intact: 18 events" in ok.stdout, ok.stdout + ok.stderr
    n = positions(conn, table)[2][0]
    conn.execute(sql.SQL("DELETE FROM {} WHERE notification_id = %s").format(table), (n,))
    conn.commit()
    bad = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and f"broken at position {n}" in bad.stdout, bad.stdout + bad.stderr


def rewrite_consistently(conn, table, schema: str, service, edited: int) -> None:
    """What a careful forger would do: change an event, then recompute every chain link after it."""
    import hashlib

    from infra.store.chain import link

    edit_review(conn, table, service, edited)
    chain = sql.Identifier(schema, "event_chain")
    rows = conn.execute(sql.SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
                                "ORDER BY notification_id").format(table)).fetchall()  # fmt: skip
    previous, own = b"", {}
    for n, oid, v, topic, state in rows:
        piece = link(n, oid, v, topic, bytes(state))
        previous = hashlib.sha256(previous + piece).digest()
        own[oid] = hashlib.sha256(own.get(oid, b"") + piece).digest()
        conn.execute(sql.SQL("UPDATE {} SET log_hash = %s, aggregate_hash = %s WHERE position = %s").format(chain),
                     (previous, own[oid], n))  # fmt: skip
    conn.commit()


def test_a_consistent_rewrite_is_caught_by_the_checkpoints_held_in_and_outside_the_store(service, history, schema):
    from domain.model import Actor, Role
    from infra.bus.envelope import published
    from infra.store.chain import CHECKPOINT_TOPIC, record_checkpoint
    from infra.store.signing import installation_signing_key

    conn, table, name = history
    system = Actor(id="skillcert-audit", role=Role.SYSTEM)
    sign = installation_signing_key(service.database_url, schema).sign
    checkpoint = record_checkpoint(service, system, sign)
    assert checkpoint is not None and record_checkpoint(service, system, sign) is None  # nothing new since
    assert published(CHECKPOINT_TOPIC).context == "audit"  # the relay puts it on the audit topic
    head = verify(conn, schema, name)
    assert head.intact and head.events == 19

    n = first_review(conn, table, service)
    rewrite_consistently(conn, table, schema, service, n)
    caught = verify(conn, schema, name)
    assert caught.broken_at == checkpoint.position and "rewritten" in caught.problem, caught

    # The forger also deletes the checkpoint from the store: the copy held downstream still shows it.
    conn.execute(sql.SQL("DELETE FROM {} WHERE topic = %s").format(table), (CHECKPOINT_TOPIC,))
    conn.execute(sql.SQL("DELETE FROM {} WHERE position > %s").format(sql.Identifier(schema, "event_chain")),
                 (checkpoint.position,))  # fmt: skip
    conn.commit()
    assert verify(conn, schema, name).intact  # internally consistent now
    held = {checkpoint.position: bytes.fromhex(checkpoint.log_hash)}
    assert verify(conn, schema, name, against=held).broken_at == checkpoint.position


def test_periodic_checkpoints_travel_the_bus_and_their_holder_catches_what_the_store_hides(
    service,
    history,
    schema,
    bus,  # noqa: F811 (the fixture)
):
    """The checkpoint process and the relay as real processes; a subscriber holds what the audit topic carried."""
    import json

    from infra.store.chain import CHECKPOINT_TOPIC
    from tests.bus import eventually, read_topic

    conn, table, name = history
    bus.relay(batch_size=50)
    bus.start("audit", "checkpoint", "--every", "0.5")

    def held() -> list[dict]:
        got = [json.loads(m.value())["data"] for m in read_topic(bus.bootstrap, bus.topic("audit"), quiet=0.5)]
        return sorted(got, key=lambda c: c["position"])  # one checkpoint aggregate each: any partition

    first = eventually(held)[0]
    assert (first["position"], first["events"]) == (18, 18)  # the history so far
    from domain.institution import DeadlineProfile, Filing
    from tests.builders import ADMIN

    filing = Filing(city_code="03", station_serial="016")  # more is written: the next checkpoint covers it
    service.register_institution(ADMIN, "广州市技能人才评价中心", filing, DeadlineProfile.S)
    later = eventually(lambda: [c for c in held() if c["position"] > 18])[0]
    assert later["events"] > 18
    bus.stop_all()

    # A forger edits a review, deletes every checkpoint from the store and rechains what is left.
    conn.execute(sql.SQL("DELETE FROM {} WHERE topic = %s").format(table), (CHECKPOINT_TOPIC,))
    conn.execute(sql.SQL("DELETE FROM {} c WHERE NOT EXISTS (SELECT 1 FROM {} e WHERE e.notification_id = c.position)")
                 .format(sql.Identifier(schema, "event_chain"), table))  # fmt: skip
    rewrite_consistently(conn, table, schema, service, first_review(conn, table, service))
    # The relay's position still says more was published than the store now holds.
    assert "truncated" in verify(conn, schema, name).problem
    head = conn.execute(sql.SQL("SELECT max(notification_id) FROM {}").format(table)).fetchone()[0]
    conn.execute(f'UPDATE "{schema}".relay_position SET position = %s', (head,))  # the forger covers that too
    conn.commit()
    assert verify(conn, schema, name).intact  # the store alone shows nothing
    for c in (first, later):  # each checkpoint the subscriber holds shows it
        caught = bus.cli("audit", "verify", "--against", f"{c['position']}:{c['log_hash']}")
        assert caught.returncode == 1 and f"broken at position {c['position']}" in caught.stdout, caught.stdout


def test_history_cut_short_is_caught_with_the_checkpoint_a_subscriber_read_off_the_audit_topic(
    service,
    history,
    schema,
    bus,  # noqa: F811 (the fixture)
):
    import json

    from domain.institution import DeadlineProfile, Filing
    from tests.builders import ADMIN
    from tests.bus import eventually, read_topic

    conn, table, name = history
    bus.relay(batch_size=50)
    bus.start("audit", "checkpoint", "--every", "0.5")

    def held() -> list[dict]:
        got = [json.loads(m.value())["data"] for m in read_topic(bus.bootstrap, bus.topic("audit"), quiet=0.5)]
        return sorted(got, key=lambda c: c["position"])

    eventually(held)  # the first checkpoint, of the history so far (18 events)
    service.register_institution(ADMIN, "广州市技能人才评价中心", Filing(city_code="01", station_serial="009"),
                                 DeadlineProfile.S)  # fmt: skip
    newest = eventually(lambda: [c for c in held() if c["position"] > 17])[-1]
    bus.stop_all()
    # A forger deletes the newest events, the checkpoints among them, and winds the relay's position back.
    keep = 16
    for t, column in ((table, "notification_id"), (sql.Identifier(schema, "event_chain"), "position")):
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} > %s").format(t, sql.Identifier(column)), (keep,))
    conn.execute(f'UPDATE "{schema}".relay_position SET position = %s', (keep,))
    conn.commit()
    alone = bus.cli("audit", "verify")
    assert alone.returncode == 0, alone.stdout + alone.stderr  # the store alone cannot tell
    caught = bus.cli("audit", "verify", "--against", f"{newest['position']}:{newest['log_hash']}")
    assert caught.returncode == 1 and f"history truncated after position {keep}" in caught.stdout, caught.stdout
