"""An auditor's own verifier, written from docs/chain.md alone: it imports nothing of the project's chain
code (only psycopg, hashlib and cryptography), recomputes every link and the head from the stored rows,
checks a checkpoint's signature from the documented bytes, and must agree with `skillcert audit verify`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from infra.services.registrations import Decision
from tests.builders import candidate, setup_plan, staff_of, working_years_form


def independent_head(url: str, schema: str) -> tuple[int, str, int]:
    """(last position, head in hex, events) by the page's rules; asserts every stored link on the way."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state, c.log_hash,"
            f' c.aggregate_hash FROM "{schema}".skillcert_events e JOIN "{schema}".event_chain c'
            f" ON c.position = e.notification_id ORDER BY e.notification_id"
        ).fetchall()
    previous, own, last = b"", {}, 0
    for position, oid, version, topic, state, log_hash, aggregate_hash in rows:
        t = topic.encode("utf-8")
        piece = (position.to_bytes(8, "big", signed=True) + uuid.UUID(str(oid)).bytes
                 + version.to_bytes(8, "big", signed=True) + len(t).to_bytes(4, "big", signed=True) + t + bytes(state))  # fmt: skip
        previous = hashlib.sha256(previous + piece).digest()
        own[oid] = hashlib.sha256(own.get(oid, b"") + piece).digest()
        assert previous == bytes(log_hash) and own[oid] == bytes(aggregate_hash), position
        last = position
    return last, previous.hex(), len(rows)


def test_a_verifier_written_from_the_documentation_agrees_with_the_project(service, database_url, schema) -> None:
    iid, _, code = setup_plan(service)
    rids = [service.register(candidate(i), code, working_years_form(i)) for i in range(1, 4)]
    service.review(staff_of(iid), rids[0], Decision.RETURNED, "补充材料")
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema, "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-m", "infra.cli", "audit", "checkpoint"], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr

    last, head, events = independent_head(database_url, schema)
    verified = subprocess.run([sys.executable, "-m", "infra.cli", "audit", "verify"], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"intact: {events:,} events up to position {last}, head {head}" in verified.stdout, verified.stdout

    # The checkpoint, read in the clear, and its signature checked from the documented bytes and the key the
    # installation prints.
    public = subprocess.run([sys.executable, "-m", "infra.cli", "audit", "public-key"], env=env, capture_output=True,
                            text=True, timeout=60).stdout.strip()  # fmt: skip
    with psycopg.connect(database_url) as conn:
        (state,) = conn.execute(f"SELECT state FROM \"{schema}\".skillcert_events WHERE topic = %s",
                                ("domain.audit:Checkpoint.Recorded",)).fetchone()  # fmt: skip
    checkpoint = json.loads(bytes(state))
    signed = f"skillcert-checkpoint/1|{checkpoint['position']}|{checkpoint['log_hash']}|{checkpoint['events']}"
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(bytes.fromhex(checkpoint["signature"]),
                                                                    signed.encode())  # fmt: skip
    assert checkpoint["public_key"] == public
    # The checkpoint covers the head as it stood before it was stored.
    with psycopg.connect(database_url) as conn:
        before = conn.execute(f'SELECT encode(log_hash, \'hex\') FROM "{schema}".event_chain WHERE position = %s',
                              (checkpoint["position"],)).fetchone()[0]  # fmt: skip
    assert checkpoint["log_hash"] == before
