"""Personal data at rest: the stored events are ciphertext under data keys that only the configured
master key opens; read models search ID numbers by keyed hash; rotating the master key leaves every
event readable and none rewritten."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from consumers.rebuild import rebuild
from domain.model import Role
from domain.registration import AttachmentKind
from infra.api.tokens import Tokens
from infra.bus.privacy import installation_key, ref
from infra.services import samples
from infra.settings import get_settings
from infra.store.eventstore import SkillcertApplication
from infra.store.keys import KeyProblem, MasterKeys, key_id, new_key, parse_key, rotate
from projections import PROJECTIONS
from projections.store import connect, create_tables
from tests.builders import candidate, setup_plan, working_years_form
from tests.test_read_models import certificates_in_every_state


def personal_values(app: Any, field: str, topic: str = "") -> set[str]:
    """Every value of `field` in the records of a person (those with an ID number) in the decrypted events."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == field and isinstance(v, str) and "id_number" in node:
                    found.add(v)
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for n in app.recorder.select_notifications(start=1, limit=100_000):
        if topic in n.topic:
            walk(app.mapper.decode_state(n))
    return found


def raw_rows(database_url: str, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table in the schema, as PostgreSQL returns it (bytea as bytes)."""
    with psycopg.connect(database_url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,))]  # fmt: skip
        return {
            t: conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, t))).fetchall() for t in tables
        }


def holding(rows: dict[str, list[tuple[Any, ...]]], needle: str) -> list[str]:
    """The tables where `needle` appears in any column, as text or as UTF-8 bytes."""
    raw = needle.encode()
    return [t for t, rs in rows.items() if any(
        (raw in bytes(v)) if isinstance(v, bytes | memoryview) else (needle in str(v)) for r in rs for v in r)]  # fmt: skip


def test_no_table_holds_an_id_number_in_the_clear(world, database_url, schema):
    certificates_in_every_state(world)  # issued, handed over, proved, corrected, deleted
    app = world.registrations
    key = installation_key(database_url, schema)
    with connect(database_url, schema) as conn:
        create_tables(conn, PROJECTIONS)
        assert rebuild(conn, PROJECTIONS, app, key) > 100
    number = min(personal_values(app, "id_number", "domain.certificate:"))  # a holder's
    Tokens(database_url, schema).create_table()
    Tokens(database_url, schema).create("candidate", Role.CANDIDATE, candidate_ref=ref(number, key))

    numbers = personal_values(app, "id_number")
    names, phones = personal_values(app, "name"), personal_values(app, "phone")
    assert len(numbers) >= 12 and names and phones  # the events, decrypted, do hold them
    rows = raw_rows(database_url, schema)
    assert {"skillcert_events", "event_chain", "data_keys", "installation_secrets", "api_tokens",
            "certificate_registry", "candidate_registrations"} <= set(rows)  # fmt: skip
    assert not {n: holding(rows, n) for n in numbers if holding(rows, n)}
    # The scan does read those tables: what they keep instead, the keyed hash, is found.
    assert {"certificate_registry", "candidate_registrations", "api_tokens"} <= set(holding(rows, ref(number, key)))
    # Names are shown by the read models, by design; the event store holds none, nor any phone number.
    events = {"skillcert_events": rows["skillcert_events"]}
    assert not [n for n in names | phones if holding(events, n)]
    # Nor do the installation's secrets lie beside the refs they key.
    assert not holding({"s": rows["installation_secrets"]}, key.hex()) and all(
        key not in bytes(v) for (_, v) in rows["installation_secrets"])  # fmt: skip


def test_a_copy_of_the_database_opens_under_no_other_master_key(service, database_url, schema):
    iid, _, code = setup_plan(service)
    service.register(candidate(1), code, working_years_form(1))
    stranger = MasterKeys(parse_key(new_key()))
    with psycopg.connect(database_url, autocommit=True) as conn, pytest.raises(KeyProblem) as refused:
        from infra.store.keys import DataKeys

        DataKeys(conn, database_url, schema, stranger)
    ours = key_id(parse_key(os.environ["SKILLCERT_MASTER_KEY"]))
    assert f"wrapped under master key {ours}, which is not configured" in str(refused.value)


def test_the_cli_refuses_to_start_under_the_wrong_key_and_names_it(service, database_url, schema):
    setup_plan(service)
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_MASTER_KEY": new_key()}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "infra.cli", "keys", "status"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "not configured" in done.stderr and "Traceback" not in done.stderr, done.stderr
    bad = subprocess.run([sys.executable, "-m", "infra.cli", "keys", "status"], capture_output=True, text=True,
                         env={**env, "SKILLCERT_MASTER_KEY": "c2hvcnQ="}, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "decodes to 5 bytes" in bad.stderr, bad.stderr


@pytest.fixture
def configured(monkeypatch):
    """Set the master key configuration for stores opened in this process."""

    def set_keys(current: str, old: str | None = None) -> None:
        monkeypatch.setenv("SKILLCERT_MASTER_KEY", current)
        if old is None:
            monkeypatch.delenv("SKILLCERT_OLD_MASTER_KEYS", raising=False)
        else:
            monkeypatch.setenv("SKILLCERT_OLD_MASTER_KEYS", old)
        get_settings.cache_clear()

    yield set_keys
    get_settings.cache_clear()


def test_rotating_the_master_key_rewraps_the_data_keys_and_rewrites_no_event(database_url, schema, configured, clock):
    from infra.services.registrations import Registrations

    old, new = new_key(), new_key()
    configured(old)
    before = Registrations(database_url, schema, today=clock)
    samples.hold(before.attachments)
    iid, _, code = setup_plan(before)
    rid = before.register(candidate(1), code, working_years_form(1))
    head = before.recorder.max_notification_id()
    with psycopg.connect(database_url) as conn:
        stored = conn.execute(sql.SQL("SELECT notification_id, state FROM {} ORDER BY 1").format(
            sql.Identifier(schema, before.recorder.events_table_name))).fetchall()  # fmt: skip
    before.close()

    # The new key alone cannot open the store yet: it names the key it needs.
    configured(new)
    with pytest.raises(KeyProblem, match=key_id(parse_key(old))):
        SkillcertApplication(database_url, schema)
    # With the old key beside it, the store opens; rotation rewraps under the new key.
    configured(new, old)
    during = SkillcertApplication(database_url, schema)
    rewrapped, data_key = rotate(database_url, schema, during.mapper.cipher.master)
    during.close()
    assert (rewrapped, data_key) == (1, 2)

    # Now the new key alone reads every event, and new events go under the new data key.
    configured(new)
    after = Registrations(database_url, schema, today=clock)
    assert after.repository.get(rid).form.id_number == working_years_form(1).id_number
    diploma = samples.attachment(AttachmentKind.DIPLOMA).sha256  # files: their keys sit under the data keys too
    assert after.attachments.content(diploma) == samples.document(AttachmentKind.DIPLOMA)
    after.register(candidate(2), code, working_years_form(2))
    with psycopg.connect(database_url) as conn:
        now = conn.execute(sql.SQL("SELECT notification_id, state FROM {} ORDER BY 1").format(
            sql.Identifier(schema, after.recorder.events_table_name))).fetchall()  # fmt: skip
        masters = {m for (m,) in conn.execute(sql.SQL("SELECT master_key_id FROM {}").format(
            sql.Identifier(schema, "data_keys")))}  # fmt: skip
    assert now[: len(stored)] == stored  # not one stored event rewritten: the chain still holds
    assert {bytes(s)[1:5] for _, s in now[len(stored) :]} == {(2).to_bytes(4, "big")} and now[-1][0] > head
    assert masters == {key_id(parse_key(new))}
    from infra.store.chain import verify

    with psycopg.connect(database_url) as conn:
        assert verify(conn, schema, after.recorder.events_table_name).intact
    after.close()
    # And the old key alone opens nothing any more.
    configured(old)
    with pytest.raises(KeyProblem, match="not configured"):
        SkillcertApplication(database_url, schema)


def test_a_worker_still_on_the_rotated_key_answers_503_for_what_a_restarted_one_wrote(database_url, schema,
                                                                                      configured, clock):  # fmt: skip
    """Between a rotation and the restart of every process, a worker still on the old master key cannot read an
    event a restarted one wrote under the new data key: it says so (503, try again, its log naming the key), not 500."""
    from fastapi.testclient import TestClient

    from infra.api import create_app
    from infra.services.registrations import Registrations
    from tests.api import bearer
    from tests.builders import L2_CONDITION, L2_EVIDENCE

    old, new = new_key(), new_key()
    configured(old)
    first = Registrations(database_url, schema, today=clock)
    samples.hold(first.attachments)
    iid, _, code = setup_plan(first)
    first.close()
    with TestClient(create_app(database_url, schema, today=clock)) as http:  # started before the rotation
        configured(new, old)
        during = SkillcertApplication(database_url, schema)
        rotate(database_url, schema, during.mapper.cipher.master)
        during.close()
        configured(new)
        restarted = Registrations(database_url, schema, today=clock)
        rid = restarted.register(candidate(1), code, working_years_form(1))
        restarted.close()
        body = {"decision": "approved", "reasons": "材料齐全", "condition": L2_CONDITION,
                "evidence": L2_EVIDENCE.model_dump(mode="json")}  # fmt: skip
        r = http.post(f"/registrations/{rid}/review", json=body,
                      headers=bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-1", iid))  # fmt: skip
        assert r.status_code == 503 and "rotated" in r.json()["detail"] and r.headers["Retry-After"], r.text


def test_the_rotate_command_and_a_fresh_store_making_its_key_file(database_url, schema, tmp_path, monkeypatch):
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_DATA_DIR": str(tmp_path)}  # fmt: skip
    del env["SKILLCERT_MASTER_KEY"]
    cli = [sys.executable, "-m", "infra.cli", "keys"]
    # `keys status` only looks: on no store it says so, and makes neither a store nor a key.
    nothing = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert nothing.returncode == 2 and "no event store in schema" in nothing.stderr, nothing.stderr
    assert not (tmp_path / "master.key").exists()
    # A process that runs the system makes the store, and the key file with it.
    start = "import os; from infra.store.eventstore import SkillcertApplication as A; A(os.environ['SKILLCERT_DATABASE_URL'], os.environ['SKILLCERT_DB_SCHEMA']).close()"  # noqa: E501
    made_store = subprocess.run([sys.executable, "-c", start], env=env, capture_output=True, text=True, timeout=60)
    assert made_store.returncode == 0, made_store.stderr
    first = subprocess.run([*cli, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "master.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600  # made for the new store, readable by its owner only
    made = key_file.read_text().strip()
    assert key_id(parse_key(made)) in first.stdout
    # Elsewhere, without the file or the key, the store does not open, and no new key is made.
    elsewhere = {**env, "SKILLCERT_DATA_DIR": str(tmp_path / "other")}
    lost = subprocess.run([*cli, "status"], env=elsewhere, capture_output=True, text=True, timeout=60)
    assert lost.returncode == 2 and "no master key is configured" in lost.stderr, lost.stderr
    assert not (tmp_path / "other" / "master.key").exists()

    fresh = subprocess.run([*cli, "new"], capture_output=True, text=True, timeout=60).stdout.strip()
    rotated = subprocess.run([*cli, "rotate"], env={**elsewhere, "SKILLCERT_MASTER_KEY": fresh,
                             "SKILLCERT_OLD_MASTER_KEYS": made}, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert rotated.returncode == 0 and "1 data key(s) rewrapped" in rotated.stdout, rotated.stderr
    status = subprocess.run([*cli, "status"], env={**elsewhere, "SKILLCERT_MASTER_KEY": fresh}, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert status.returncode == 0 and "data key 2" in status.stdout, status.stderr
    # What an outsider found: run again with nothing to retire, it said to destroy "the old key".
    again = subprocess.run([*cli, "rotate"], env={**elsewhere, "SKILLCERT_MASTER_KEY": fresh}, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert again.returncode == 0 and "no master key was retired" in again.stdout, again.stdout + again.stderr
    assert "destroy" not in again.stdout


def test_processes_starting_together_on_a_new_store_agree_on_one_data_key(database_url, schema):
    apps: list[SkillcertApplication] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(6)

    def start() -> None:
        gate.wait()
        try:
            apps.append(SkillcertApplication(database_url, schema))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(apps) == 6
    with psycopg.connect(database_url) as conn:
        (keys,) = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "data_keys"))
        ).fetchone()
    assert keys == 1 and {a.mapper.cipher.current for a in apps} == {1}
    sealed = apps[0].mapper.cipher.encrypt(b'{"a": 1}')
    assert all(a.mapper.cipher.decrypt(sealed) == b'{"a": 1}' for a in apps)
    for a in apps:
        a.close()


def test_events_written_before_encryption_stay_readable_as_written(service, database_url, schema):
    from infra.services import ecert

    ecert.authority(service)  # the signing keys are sealed whatever the events are
    cipher, service.mapper.cipher = service.mapper.cipher, None  # as an earlier version stored them
    iid, _, code = setup_plan(service)
    first = service.register(candidate(1), code, working_years_form(1))
    service.mapper.cipher = cipher  # from here on, sealed: the plan read in the clear, the new events not
    second = service.register(candidate(2), code, working_years_form(2))
    with psycopg.connect(database_url) as conn:
        states = [bytes(s) for (s,) in conn.execute(sql.SQL("SELECT state FROM {} ORDER BY notification_id").format(
            sql.Identifier(schema, service.recorder.events_table_name)))]  # fmt: skip
    assert states[0].startswith(b"{") and states[-1][:1] == b"\x01"
    reopened = SkillcertApplication(database_url, schema)
    for rid, serial in ((first, 1), (second, 2)):
        assert reopened.repository.get(rid).form.id_number == working_years_form(serial).id_number
    reopened.close()


def test_the_stored_layout_is_eventsourcings_aes_cipher_both_ways():
    """Events already stored were written by eventsourcing's AESCipher; ours keeps one AESGCM per key
    instead of one per event, and must read and write the same bytes: nonce, tag, ciphertext."""
    import base64

    from eventsourcing.cryptography import AESCipher
    from eventsourcing.utils import Environment

    from infra.store.keys import _aes

    key = os.urandom(32)
    theirs = AESCipher(Environment(env={"CIPHER_KEY": base64.b64encode(key).decode()}))
    ours = _aes(key)
    for plaintext in (b"", b"{}", "报名表".encode() * 500):
        assert ours.decrypt(theirs.encrypt(plaintext)) == plaintext
        assert theirs.decrypt(ours.encrypt(plaintext)) == plaintext
    sealed = bytearray(ours.encrypt(b'{"a": 1}'))
    sealed[20] ^= 1  # the tag
    with pytest.raises(ValueError, match="tag"):
        ours.decrypt(bytes(sealed))
    with pytest.raises(ValueError, match="Damaged"):
        ours.decrypt(b"short")


def test_the_stores_cipher_refuses_damaged_states_and_meets_a_key_added_elsewhere(service, database_url, schema):
    """DataKeys.decrypt opens the usual state in one step (the relay and a rebuild call it once per event); a flipped
    bit anywhere, a cut state and an unknown key are refused by name, and a data key another process added (a
    rotation) is loaded when first met."""
    from infra.store.keys import add_data_key

    cipher = service.mapper.cipher
    for plaintext in (b"", b"{}", "报名表".encode() * 500):
        sealed = cipher.encrypt(plaintext)
        assert cipher.decrypt(sealed) == plaintext
        for at in (5, 17, 33, len(sealed) - 1):  # the nonce, the tag, the ciphertext's first and last byte
            if at < len(sealed):
                damaged = bytearray(sealed)
                damaged[at] ^= 1
                with pytest.raises(ValueError, match="tag"):
                    cipher.decrypt(bytes(damaged))
    for cut in (b"\x01", sealed[:20], sealed[:32]):
        with pytest.raises(ValueError, match="Damaged"):
            cipher.decrypt(cut)
    with pytest.raises(ValueError, match="data key 999"):
        cipher.decrypt(b"\x01" + (999).to_bytes(4, "big") + bytes(40))
    with pytest.raises(ValueError, match="unknown format"):
        cipher.decrypt(b"\x07" + bytes(40))
    assert cipher.decrypt(b'{"a": 1}') == b'{"a": 1}'  # stored before encryption, read as written

    elsewhere = SkillcertApplication(database_url, schema)  # another process rotates: a new data key
    with psycopg.connect(database_url) as conn:
        add_data_key(conn, sql.Identifier(schema, "data_keys"), elsewhere.mapper.cipher.master)
    elsewhere.close()
    newer = SkillcertApplication(database_url, schema)
    sealed = newer.mapper.cipher.encrypt("王小明".encode())
    newer.close()
    assert sealed[1:5] != cipher.header[1:5] and cipher.decrypt(sealed) == "王小明".encode()
