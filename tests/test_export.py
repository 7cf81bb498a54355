"""The signed audit export, verified offline; each kind of tampering is caught."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.services.base import shanghai_today
from infra.store.export import export, public_key_hex, verify_package
from projections.audit import trail
from tests.lifecycle import queryable_certificates, staff
from tests.test_read_models import apply_live, bus_messages, conn  # noqa: F401 (fixture)

SEED = bytes(range(32))


@pytest.fixture
def package(world, conn, schema):  # noqa: F811
    iid, _ = queryable_certificates(world, 4)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    today = shanghai_today()  # the export's days are Shanghai's: after 16:00 UTC it is already tomorrow
    svc = world.registrations
    made = export(conn, schema, svc.recorder.events_table_name, svc.mapper.decode_bytes, SEED, iid, date(2026, 1, 1),
                  today)  # fmt: skip
    total, _ = trail(conn, institution_id=str(iid), limit=1)
    return made, total, iid


def repack(package: bytes, **files: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as z, zipfile.ZipFile(out, "w") as w:
        for name in z.namelist():
            w.writestr(name, files.get(name.replace(".", "_"), z.read(name)))
    return out.getvalue()


def test_an_export_verifies_offline_with_the_pinned_key_and_holds_the_institutions_events(package):
    made, total, iid = package
    check = verify_package(made, public_key_hex(SEED))
    assert check.ok and check.events == total > 40, check
    with zipfile.ZipFile(io.BytesIO(made)) as z:
        manifest = json.loads(z.read("manifest.json"))
        lines = [json.loads(line) for line in z.read("events.jsonl").decode().splitlines()]
    first = lines[0]
    assert (manifest["institution_id"], manifest["events"]) == (str(iid), total)
    # Readable for the auditor; the chain covers the state as stored, which is ciphertext.
    numbers = {e["event"]["form"]["id_number"] for e in lines if "form" in e["event"]}
    assert numbers and all(len(n) == 18 for n in numbers)
    assert not any(n.encode() in base64.b64decode(e["stored"]) for e in lines for n in numbers)
    assert first["prev_log_hash"] == "" or len(first["prev_log_hash"]) == 64


def test_each_kind_of_tampering_is_caught(package):
    made, _, _ = package
    key = public_key_hex(SEED)
    with zipfile.ZipFile(io.BytesIO(made)) as z:
        body, manifest = z.read("events.jsonl"), json.loads(z.read("manifest.json"))
    lines = body.decode().splitlines()
    edited = json.loads(lines[3])
    stored = bytearray(base64.b64decode(edited["stored"]))
    stored[-1] ^= 1  # one bit of the stored ciphertext
    edited["stored"] = base64.b64encode(stored).decode()
    forged_body = ("\n".join([*lines[:3], json.dumps(edited, ensure_ascii=False), *lines[4:]]) + "\n").encode()

    # An edited line: the signed digest no longer matches, and the check names the line.
    check = verify_package(repack(made, events_jsonl=forged_body), key)
    assert not check.ok and check.problem == "line 4 of events.jsonl is not the line the manifest signed"
    # A line taken out: the first line that differs is named.
    shorter = ("\n".join([*lines[:2], *lines[3:]]) + "\n").encode()
    assert verify_package(repack(made, events_jsonl=shorter), key).problem.startswith("line 3 ")
    # The forger fixes the digest too: the signature no longer verifies.
    import hashlib

    manifest["events_sha256"] = hashlib.sha256(forged_body).hexdigest()
    new_manifest = json.dumps(manifest).encode()
    check = verify_package(repack(made, events_jsonl=forged_body, manifest_json=new_manifest), key)
    assert not check.ok and "signature" in check.problem
    # And signs with a key of their own: under the pinned key it fails; under theirs the chain does.
    attacker = Ed25519PrivateKey.generate()
    resigned = repack(made, events_jsonl=forged_body, manifest_json=new_manifest,
                      manifest_sig=attacker.sign(new_manifest).hex().encode())  # fmt: skip
    assert "signature" in verify_package(resigned, key).problem
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    theirs = attacker.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    check = verify_package(resigned, theirs)
    assert not check.ok and check.problem.startswith("line 4 ") and "not what the log chained" in check.problem


def test_the_cli_exports_and_verifies_offline(package, world, database_url, schema, tmp_path):
    _, total, iid = package
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema}
    cli = [sys.executable, "-m", "infra.cli", "audit"]
    key = subprocess.run([*cli, "public-key"], env=env, capture_output=True, text=True, timeout=60).stdout.strip()
    out = tmp_path / "export.zip"
    done = subprocess.run([*cli, "export", "--institution", str(iid), "--from", "2026-01-01", "--to",
                           shanghai_today().isoformat(), "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0 and "complete through log position" in done.stdout, done.stdout + done.stderr
    offline = {k: v for k, v in os.environ.items() if not k.startswith("SKILLCERT_")}  # no database at all
    ok = subprocess.run([*cli, "verify-export", str(out), "--public-key", key], env=offline, capture_output=True,
                        text=True, timeout=60)  # fmt: skip
    assert ok.returncode == 0 and f"verified: {total} events" in ok.stdout, ok.stdout + ok.stderr
    wrong = subprocess.run([*cli, "verify-export", str(out), "--public-key", public_key_hex(SEED)], env=offline,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert wrong.returncode == 1 and "signature" in wrong.stdout
    # What an outsider found: a mistyped institution gave a signed package of nothing, with no word of it.
    nobody = tmp_path / "nobody.zip"
    refused = subprocess.run([*cli, "export", "--institution", "00000000-0000-0000-0000-000000000000", "--from",
                              "2026-01-01", "--to", "2026-12-31", "--out", str(nobody)], env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 2 and "no institution 00000000-0000-0000-0000-000000000000" in refused.stderr
    assert not nobody.exists()
    empty = subprocess.run([*cli, "export", "--institution", str(iid), "--from", "2020-01-01", "--to", "2020-01-31",
                            "--out", str(nobody)], env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert empty.returncode == 0 and "the package holds no events" in empty.stderr, empty.stdout + empty.stderr


def test_an_export_holds_only_what_its_walk_verified_and_what_the_trail_has_whole(world, conn, schema, monkeypatch):  # noqa: F811
    """What an outsider found: the export verified the chain up to a head, then chose its events in a later
    statement, which also took events committed meanwhile: signed lines no check had covered. And it chose them
    through the audit trail, filled from the bus a partition at a time, which can hold a later event before an
    earlier one: that one was left out with nothing to show it. The package now stops at the lower of the two and
    says where (complete_through)."""
    import infra.store.export as exporting

    iid, cids = queryable_certificates(world, 3)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    svc = world.registrations
    table, today = svc.recorder.events_table_name, shanghai_today()
    checked = exporting.verify

    def then_more(*args, **kwargs):  # type: ignore[no-untyped-def]
        verdict = checked(*args, **kwargs)
        world.certificates.receive_forms(staff(iid), iid, 1, 5, "SH-9")  # committed after the walk
        apply_live(conn, bus_messages(world.registrations))  # and in the trail already
        conn.commit()
        return verdict

    monkeypatch.setattr(exporting, "verify", then_more)
    head = svc.recorder.max_notification_id()
    made = export(conn, schema, table, svc.mapper.decode_bytes, SEED, iid, date(2026, 1, 1), today)
    with zipfile.ZipFile(io.BytesIO(made)) as z:
        manifest = json.loads(z.read("manifest.json"))
        positions = [json.loads(line)["position"] for line in z.read("events.jsonl").decode().splitlines()]
    assert manifest["complete_through"] == manifest["chain_head"]["position"] == head and max(positions) <= head
    monkeypatch.setattr(exporting, "verify", checked)
    partial = export(conn, schema, table, svc.mapper.decode_bytes, SEED, iid, date(2026, 1, 1), today,
                     trail_through=positions[5])  # fmt: skip
    with zipfile.ZipFile(io.BytesIO(partial)) as z:
        manifest = json.loads(z.read("manifest.json"))
        kept = [json.loads(line)["position"] for line in z.read("events.jsonl").decode().splitlines()]
    assert manifest["complete_through"] == positions[5] and kept == positions[:6]
    assert verify_package(partial, public_key_hex(SEED)).ok
