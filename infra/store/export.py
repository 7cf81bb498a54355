"""The audit export: a signed, self-contained package of an institution's events in a period, that
an auditor verifies offline with nothing but the installation's public key.

The package is a zip of `events.jsonl` (one stored event a line: position, aggregate, version,
topic, the event as readable JSON ("event"), the state as stored, encrypted, in base64 ("stored":
what the hash chains cover), and its links in both chains with their predecessors),
`manifest.json` (what was exported, the file's SHA-256 and each line's, the chain head recomputed at
export) and `manifest.sig` (Ed25519 over the manifest's exact bytes, hex). Nothing is exported from a
store whose chain does not verify: the export would sign a forgery. Each line proves itself: its log
hash is SHA-256(predecessor's log hash || link) and its aggregate hash the same along its
aggregate, so no line's stored state can be changed, and the signature covers every line, the
readable event included, through the digest. The readable events carry personal data decrypted:
the package is more sensitive than the store, and goes only to the auditor who asked for it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg import sql

from infra.store.chain import link, verify
from infra.store.signing import SigningKey

FORMAT = "skillcert-audit-export/3"


def public_key_hex(seed: bytes) -> str:
    return SigningKey(seed).public_hex


class NotExported(Exception):
    """The store's history does not verify, or an event cannot be read: nothing is exported."""

    def __init__(self, message: str, broken: bool) -> None:
        super().__init__(message)
        self.broken = broken  # the chain is broken (exit 1), not merely unreadable (exit 2)


def export(
    conn: psycopg.Connection[Any], schema: str, events_table: str, decode: Callable[[bytes], dict[str, Any]],
    seed: bytes, institution_id: UUID, start: date, end: date, tz: str = "Asia/Shanghai",
    trail_through: int | None = None,
) -> bytes:  # fmt: skip
    """The package for one institution's events recorded from `start` to `end` (inclusive, Shanghai
    days). Events are chosen through the audit trail read model, read from the store and decrypted
    with `decode` (the mapper's). `trail_through`: the position at and below which the audit trail has
    applied every event (consumers.lag's applied_through), measured before this is called.

    The package holds the events up to the lower of that position and the head its own verification walked, and
    says so in the manifest (`complete_through`). Beyond the head, an event was never checked; beyond what the
    trail has applied, the trail (filled from the bus, each partition on its own) may hold a later event without
    an earlier one, and a package would leave that one out with nothing to show it."""
    from zoneinfo import ZoneInfo

    if conn.execute("SELECT to_regclass(%s)", (f'"{schema}".audit_events',)).fetchone()[0] is None:
        raise NotExported("the audit trail read model, which chooses the events, is not built yet: start the "
                          "consumers, or run skillcert projections rebuild audit_trail", False)  # fmt: skip
    verdict = verify(conn, schema, events_table, public_key=SigningKey(seed).public_hex)
    if not verdict.intact:
        raise NotExported(f"the history is broken at position {verdict.broken_at}: {verdict.problem}", True)
    since = datetime.combine(start, datetime.min.time(), ZoneInfo(tz))
    until = datetime.combine(end + timedelta(days=1), datetime.min.time(), ZoneInfo(tz))
    query = sql.SQL("""
        WITH links AS (
            SELECT position, log_hash, aggregate_hash,
                   lag(log_hash) OVER (ORDER BY position) AS prev_log_hash,
                   lag(aggregate_hash) OVER (PARTITION BY originator_id ORDER BY originator_version) AS prev_aggregate_hash
            FROM {chain})
        SELECT e.notification_id, e.originator_id, e.originator_version, e.topic, e.state,
               l.prev_log_hash, l.log_hash, l.prev_aggregate_hash, l.aggregate_hash
        FROM {trail} a JOIN {events} e ON e.notification_id = a.position JOIN links l ON l.position = a.position
        WHERE a.institution_id = %s AND a.at >= %s AND a.at < %s AND a.position <= %s ORDER BY a.position""").format(
        chain=sql.Identifier(schema, "event_chain"), trail=sql.Identifier(schema, "audit_events"),
        events=sql.Identifier(schema, events_table),
    )  # fmt: skip
    through = verdict.head_position if trail_through is None else min(verdict.head_position, trail_through)
    lines = []
    for n, oid, version, topic, state, prev_log, log_hash, prev_agg, agg_hash in conn.execute(
        query, (institution_id, since, until, through)
    ):
        try:
            event = decode(bytes(state))
        except Exception as e:  # a data key this installation cannot open, or a state that is not an event
            raise NotExported(f"the event at position {n} cannot be read: {e}", False) from None
        lines.append(json.dumps({
            "position": n, "originator_id": str(oid), "originator_version": version, "topic": topic,
            "event": event, "stored": base64.b64encode(state).decode(), "prev_log_hash": bytes(prev_log or b"").hex(),
            "log_hash": bytes(log_hash).hex(), "prev_aggregate_hash": bytes(prev_agg or b"").hex(),
            "aggregate_hash": bytes(agg_hash).hex(),
        }, ensure_ascii=False))  # fmt: skip
    body = ("\n".join(lines) + "\n").encode() if lines else b""
    manifest = json.dumps({
        "format": FORMAT, "institution_id": str(institution_id), "from": start.isoformat(), "to": end.isoformat(),
        "timezone": tz, "events": len(lines), "events_sha256": hashlib.sha256(body).hexdigest(),
        "lines_sha256": [hashlib.sha256(line.encode()).hexdigest() for line in lines],
        "chain_head": {"position": verdict.head_position, "log_hash": verdict.head.hex(), "events": verdict.events},
        "complete_through": through,
        "generated_at": datetime.now(UTC).isoformat(), "public_key": public_key_hex(seed),
    }, ensure_ascii=False, indent=2).encode()  # fmt: skip
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(manifest)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("events.jsonl", body)
        z.writestr("manifest.json", manifest)
        z.writestr("manifest.sig", signature.hex())
    return out.getvalue()


@dataclass
class Check:
    ok: bool
    events: int
    problem: str | None = None


def verify_package(package: bytes, public_key: str) -> Check:
    """Offline: the signature under the pinned key, the events file's digest, and every line's links."""
    try:
        with zipfile.ZipFile(io.BytesIO(package)) as z:
            body, manifest, signature = z.read("events.jsonl"), z.read("manifest.json"), z.read("manifest.sig")
    except (zipfile.BadZipFile, KeyError) as e:
        return Check(False, 0, f"not an audit export package: {e}")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key)).verify(
            bytes.fromhex(signature.decode()), manifest
        )
    except (InvalidSignature, ValueError):
        return Check(False, 0, "the manifest's signature does not verify under the given public key")
    meta = json.loads(manifest)
    if meta.get("format") != FORMAT:
        return Check(False, 0, f"unknown format {meta.get('format')!r}")
    lines = body.decode(errors="replace").splitlines()
    if hashlib.sha256(body).hexdigest() != meta["events_sha256"]:
        signed = meta.get("lines_sha256", [])
        for i, line in enumerate(lines, 1):
            if i > len(signed) or hashlib.sha256(line.encode()).hexdigest() != signed[i - 1]:
                return Check(False, i - 1, f"line {i} of events.jsonl is not the line the manifest signed")
        return Check(False, len(lines), f"events.jsonl has {len(lines)} lines; the manifest signed {len(signed)}")
    for i, line in enumerate(lines, 1):
        e = json.loads(line)
        piece = link(e["position"], UUID(e["originator_id"]), e["originator_version"], e["topic"],
                     base64.b64decode(e["stored"]))  # fmt: skip
        if hashlib.sha256(bytes.fromhex(e["prev_log_hash"]) + piece).hexdigest() != e["log_hash"]:
            return Check(False, i, f"line {i} (position {e['position']}): the event is not what the log chained")
        if hashlib.sha256(bytes.fromhex(e["prev_aggregate_hash"]) + piece).hexdigest() != e["aggregate_hash"]:
            return Check(False, i, f"line {i} (position {e['position']}): the event breaks its aggregate's chain")
    if len(lines) != meta["events"]:
        return Check(False, len(lines), f"{len(lines)} events, the manifest says {meta['events']}")
    return Check(True, len(lines))
