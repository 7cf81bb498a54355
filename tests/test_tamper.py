"""Tamper evidence as an auditor uses it: a read-only database role, no encryption key, the checkpoints a
subscriber kept from the audit topic. History cut short is caught, with or without the checkpoint
the store held; a checkpoint the installation did not sign is caught; a position no transaction kept
is explained as such; a deleted event is named as deleted even when its chain record went with it.
The export refuses a store that does not verify, and says which event it cannot read."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import psycopg
import pytest
from psycopg import sql

from domain.audit import Checkpoint, signed_bytes
from domain.errors import Conflict
from domain.model import Actor, Role
from infra.services.registrations import Decision
from infra.store.chain import record_checkpoint, verify
from infra.store.signing import SigningKey, installation_signing_key
from tests.builders import candidate, setup_plan, staff_of, working_years_form

SYSTEM = Actor(id="skillcert-audit", role=Role.SYSTEM)
EVENTS = "skillcert_events"


@pytest.fixture
def store(service: Any, schema: str) -> Any:
    iid, _, code = setup_plan(service)
    rids = [service.register(candidate(i), code, working_years_form(i)) for i in range(1, 6)]
    for rid in rids[:3]:
        service.review(staff_of(iid), rid, Decision.RETURNED, "补充材料")
    service.iid, service.code = iid, code
    return service


def sign(service: Any, schema: str) -> Any:
    return installation_signing_key(service.database_url, schema).sign


def head(conn: Any, schema: str) -> int:
    return conn.execute(
        sql.SQL("SELECT max(notification_id) FROM {}").format(sql.Identifier(schema, EVENTS))
    ).fetchone()[0]


def cut_after(conn: Any, schema: str, position: int, keep: int | None = None) -> None:
    """Delete every event after `position`, with its chain record, as a careful forger would."""
    for table, column in ((EVENTS, "notification_id"), ("event_chain", "position")):
        conn.execute(sql.SQL("DELETE FROM {} WHERE {} > %s AND {} IS DISTINCT FROM %s").format(
            sql.Identifier(schema, table), sql.Identifier(column), sql.Identifier(column)), (position, keep))  # fmt: skip
    conn.commit()


def test_history_cut_short_is_caught_by_a_checkpoint_beyond_its_end(store, database_url, schema) -> None:
    first = record_checkpoint(store, SYSTEM, sign(store, schema))
    for i in range(6, 9):
        store.register(candidate(i), store.code, working_years_form(i))
    second = record_checkpoint(store, SYSTEM, sign(store, schema))
    with psycopg.connect(database_url) as conn:
        assert verify(conn, schema, EVENTS).intact
        at = head(conn, schema)  # the second checkpoint's own position
        # The forger cuts the newest events but misses the checkpoint recorded in the store after them.
        cut_after(conn, schema, first.position + 1, keep=at)
        v = verify(conn, schema, EVENTS)
        assert not v.intact and f"positions {first.position + 2}–{at - 1} was deleted" in v.problem, v.problem
        # The forger deletes that checkpoint too: the store alone shows nothing more...
        cut_after(conn, schema, first.position + 1)
        assert verify(conn, schema, EVENTS).intact
        # ...but the checkpoint a subscriber kept from the audit topic does.
        held = {second.position: bytes.fromhex(second.log_hash)}
        v = verify(conn, schema, EVENTS, against=held)
        assert not v.intact and "history truncated after position" in v.problem and "held outside" in v.problem
        assert [c.describe() for c in v.checkpoints][-1] == f"position {second.position} (held outside the store)"


def test_a_checkpoint_the_installation_did_not_sign_is_caught(store, database_url, schema) -> None:
    record_checkpoint(store, SYSTEM, sign(store, schema))
    store.register(candidate(9), store.code, working_years_form(9))
    with psycopg.connect(database_url) as conn:
        position = head(conn, schema)
        log_hash = conn.execute(f'SELECT encode(log_hash, \'hex\') FROM "{schema}".event_chain WHERE position = %s',
                                (position,)).fetchone()[0]  # fmt: skip
    # A forger with write access records a checkpoint of their own, through the event store's trigger.
    unsigned = Checkpoint.record(SYSTEM, position, log_hash, 99, lambda data: ("", ""))
    store.save(unsigned)
    with psycopg.connect(database_url) as conn:
        v = verify(conn, schema, EVENTS)
        assert not v.intact and "is not signed" in v.problem and v.broken_at == head(conn, schema), v.problem
    # Signed, but by a key of their own.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{schema}".{EVENTS} WHERE notification_id = %s', (head(conn, schema),))
        conn.execute(f'DELETE FROM "{schema}".event_chain WHERE position > %s', (head(conn, schema),))
    store.save(_forged(position, log_hash, SigningKey(os.urandom(32))))
    with psycopg.connect(database_url) as conn:
        v = verify(conn, schema, EVENTS)
        assert not v.intact and "not signed by the installation's key" in v.problem, v.problem
        # An auditor who pinned the real key sees the same.
        real = installation_signing_key(database_url, schema).public_hex
        assert "not signed by the installation's key" in verify(conn, schema, EVENTS, public_key=real).problem


def _forged(position: int, log_hash: str, key: SigningKey) -> Checkpoint:
    c = Checkpoint.record(SYSTEM, position, log_hash, 99, key.sign)
    assert c.signature and key.sign(signed_bytes(position, log_hash, 99))[1] == c.public_key
    return c


def test_unused_positions_are_explained_and_a_deletion_with_its_chain_record_is_named(store, database_url,
                                                                                     schema) -> None:  # fmt: skip
    with pytest.raises(Conflict):  # a save that loses: its transaction took a position and kept none
        store.register(candidate(1), store.code, working_years_form(1))
    store.register(candidate(10), store.code, working_years_form(10))
    with psycopg.connect(database_url) as conn:
        v = verify(conn, schema, EVENTS)
        assert v.intact, v.problem
        events = conn.execute(f'SELECT count(*) FROM "{schema}".{EVENTS}').fetchone()[0]
        assert v.events == events
        assert v.unused or v.head_position == events  # the lost save used positions only if it reached the insert
        # Now an event is deleted together with its chain record.
        victim = conn.execute(f'SELECT notification_id FROM "{schema}".{EVENTS} ORDER BY notification_id OFFSET 7 '
                              "LIMIT 1").fetchone()[0]  # fmt: skip
        conn.execute(f'DELETE FROM "{schema}".{EVENTS} WHERE notification_id = %s', (victim,))
        conn.execute(f'DELETE FROM "{schema}".event_chain WHERE position = %s', (victim,))
        conn.commit()
        v = verify(conn, schema, EVENTS)
        assert not v.intact and f"positions {victim}–{victim}" in v.problem and "deleted together with its chain" \
            in v.problem, v.problem  # fmt: skip


@pytest.fixture
def read_only_url(store: Any, database_url: str, schema: str) -> Any:
    """A role that may read the store's tables and nothing else, as an auditor would be given."""
    record_checkpoint(store, SYSTEM, sign(store, schema))  # every table exists before the grant
    role = f"auditor_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(sql.Identifier(schema),
                                                                                    sql.Identifier(role)))  # fmt: skip
    yield database_url.replace("postgresql://postgres:@", f"postgresql://{role}:@").replace(
        "postgresql://postgres@", f"postgresql://{role}@")  # fmt: skip
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_verify_runs_as_a_read_only_role_with_no_key_and_says_intact_broken_or_unable(store, schema, database_url,
                                                                                        read_only_url) -> None:  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLCERT_")}  # no master key at all
    env.update(SKILLCERT_DATABASE_URL=read_only_url, SKILLCERT_DB_SCHEMA=schema, COLUMNS="200")

    def cli(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "infra.cli", "audit", "verify", *args], env={**env, **more},
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    ok = cli()
    assert ok.returncode == 0 and "intact:" in ok.stdout and "compared with the checkpoint" in ok.stdout, (
        ok.stdout + ok.stderr
    )
    with psycopg.connect(database_url, autocommit=True) as conn:
        victim = conn.execute(f'SELECT min(notification_id) + 3 FROM "{schema}".{EVENTS}').fetchone()[0]
        conn.execute(f'DELETE FROM "{schema}".{EVENTS} WHERE notification_id = %s', (victim,))
    broken = cli()
    assert broken.returncode == 1 and f"broken at position {victim}" in broken.stdout, broken.stdout + broken.stderr
    unable = cli(SKILLCERT_DB_SCHEMA="no_such_schema")
    assert unable.returncode == 2 and "could not verify" in unable.stderr and "Traceback" not in unable.stderr
    assert len(unable.stderr.strip().splitlines()) == 1, unable.stderr
    refused = cli(SKILLCERT_DATABASE_URL=read_only_url.replace("/postgres?", "/no_such_db?"))
    assert refused.returncode == 2 and "could not verify" in refused.stderr, refused.stderr


def test_the_export_refuses_a_broken_store_and_names_an_event_it_cannot_read(store, schema, database_url,
                                                                             tmp_path) -> None:  # fmt: skip
    from consumers.rebuild import rebuild
    from infra.bus.privacy import installation_key
    from projections.audit import Audit
    from projections.store import connect

    with connect(database_url, schema) as conn:  # the audit trail chooses what an export holds
        rebuild(conn, [Audit()], store, installation_key(database_url, schema))
        conn.commit()
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema}
    cli = [sys.executable, "-m", "infra.cli", "audit", "export", "--institution", str(store.iid), "--from",
           "2026-01-01", "--to", "2099-12-31", "--out", str(tmp_path / "x.zip")]  # fmt: skip
    # An event whose ciphertext was replaced: the chain breaks there; rewritten after it, the chain holds and
    # the event cannot be read.
    with psycopg.connect(database_url) as conn:
        table = sql.Identifier(schema, EVENTS)
        n = conn.execute(f'SELECT min(notification_id) FROM "{schema}".{EVENTS} WHERE topic = %s',
                         ("domain.registration:Registration.Submitted",)).fetchone()[0]  # fmt: skip
        (state,) = conn.execute(f'SELECT state FROM "{schema}".{EVENTS} WHERE notification_id = %s', (n,)).fetchone()
        garbled = bytes(state)[:-1] + bytes([bytes(state)[-1] ^ 1])
        conn.execute(f'UPDATE "{schema}".{EVENTS} SET state = %s WHERE notification_id = %s', (garbled, n))
        conn.commit()
        done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and f"broken at position {n}" in done.stderr, done.stderr
        rewrite_consistently_raw(conn, table, schema)
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"the event at position {n} cannot be read" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x.zip").exists()


def rewrite_consistently_raw(conn: Any, table: Any, schema: str) -> None:
    """Recompute every chain link from the stored bytes, as a forger covering an edit would."""
    import hashlib

    from infra.store.chain import link

    rows = conn.execute(sql.SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
                                "ORDER BY notification_id").format(table)).fetchall()  # fmt: skip
    previous, own = b"", {}
    for n, oid, v, topic, state in rows:
        piece = link(n, oid, v, topic, bytes(state))
        previous = hashlib.sha256(previous + piece).digest()
        own[oid] = hashlib.sha256(own.get(oid, b"") + piece).digest()
        conn.execute(sql.SQL("UPDATE {} SET log_hash = %s, aggregate_hash = %s WHERE position = %s").format(
            sql.Identifier(schema, "event_chain")), (previous, own[oid], n))  # fmt: skip
    conn.commit()
