"""Tamper evidence: every stored event is chained to its predecessor by SHA-256, along the
notification log and along its own aggregate.

A trigger computes both links in the same transaction as the insert (the library's insert holds
an exclusive lock on the events table, so positions are chained in order), into `event_chain`.
`verify` walks the whole history, recomputes every link and reports the first broken one: a
changed event, a deleted one, one moved to another position, one inserted behind the trigger's
back. Rewriting the chain table as well is what checkpoints published on the bus catch.

A link is SHA-256(previous hash || position || aggregate id || version || topic || state), the
numbers big-endian, the topic length-prefixed; the first previous hash is empty.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import IntegrityError
from psycopg import sql

from domain.audit import Checkpoint
from domain.model import Actor

DDL = """
CREATE TABLE IF NOT EXISTS {schema}.event_chain (
    position bigint PRIMARY KEY,
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    log_hash bytea NOT NULL,
    aggregate_hash bytea NOT NULL,
    UNIQUE (originator_id, originator_version)
);
CREATE OR REPLACE FUNCTION {schema}.skillcert_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous bytea;
    own bytea;
    link bytea;
BEGIN
    SELECT log_hash INTO previous FROM {schema}.event_chain ORDER BY position DESC LIMIT 1;
    SELECT aggregate_hash INTO own FROM {schema}.event_chain
        WHERE originator_id = NEW.originator_id AND originator_version = NEW.originator_version - 1;
    link := int8send(NEW.notification_id) || uuid_send(NEW.originator_id) || int8send(NEW.originator_version)
        || int4send(octet_length(NEW.topic)) || convert_to(NEW.topic, 'UTF8') || NEW.state;
    INSERT INTO {schema}.event_chain VALUES (NEW.notification_id, NEW.originator_id, NEW.originator_version,
        sha256(coalesce(previous, ''::bytea) || link), sha256(coalesce(own, ''::bytea) || link));
    RETURN NEW;
END $$;
CREATE OR REPLACE TRIGGER skillcert_chain BEFORE INSERT ON {schema}.{events}
    FOR EACH ROW EXECUTE FUNCTION {schema}.skillcert_chain();
"""


def link(position: int, originator_id: UUID, version: int, topic: str, state: bytes) -> bytes:
    t = topic.encode()
    return (position.to_bytes(8, "big", signed=True) + originator_id.bytes + version.to_bytes(8, "big", signed=True)
            + len(t).to_bytes(4, "big", signed=True) + t + state)  # fmt: skip


def install(conn: psycopg.Connection[Any], schema: str, events_table: str) -> None:
    """Create the chain and its trigger once; chain the events stored before it existed. The caller
    holds the DDL lock (serialise_ddl)."""
    exists = conn.execute(
        "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE t.tgname = 'skillcert_chain' AND n.nspname = %s",
        (schema,),
    ).fetchone()
    if exists:
        return
    with conn.transaction():
        events = sql.Identifier(schema, events_table)
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(events))  # no writer while we backfill
        conn.execute(sql.SQL(DDL).format(schema=sql.Identifier(schema), events=sql.Identifier(events_table)))
        head = conn.execute(sql.SQL("SELECT max(position) FROM {}").format(sql.Identifier(schema, "event_chain")))
        after = head.fetchone()[0] or 0
        rows = conn.execute(
            sql.SQL("SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
                    "WHERE notification_id > %s ORDER BY notification_id").format(events),
            (after,),
        ).fetchall()  # fmt: skip
        if rows:
            previous, own = _heads(conn, schema, after)
            chained = []
            for n, oid, v, topic, state in rows:
                piece = link(n, oid, v, topic, state)
                previous = hashlib.sha256(previous + piece).digest()
                own[oid] = hashlib.sha256(own.get(oid, b"") + piece).digest()
                chained.append((n, oid, v, previous, own[oid]))
            with conn.cursor().copy(
                sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(schema, "event_chain"))
            ) as copy:
                for row in chained:
                    copy.write_row(row)


def _heads(conn: psycopg.Connection[Any], schema: str, position: int) -> tuple[bytes, dict[UUID, bytes]]:
    chain = sql.Identifier(schema, "event_chain")
    row = conn.execute(sql.SQL("SELECT log_hash FROM {} WHERE position = %s").format(chain), (position,)).fetchone()
    own = conn.execute(
        sql.SQL("SELECT DISTINCT ON (originator_id) originator_id, aggregate_hash FROM {} "
                "ORDER BY originator_id, originator_version DESC").format(chain)
    ).fetchall()  # fmt: skip
    return (bytes(row[0]) if row else b""), {oid: bytes(h) for oid, h in own}


@dataclass
class Verdict:
    events: int
    head: bytes
    broken_at: int | None = None
    problem: str | None = None

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def verify(
    conn: psycopg.Connection[Any],
    schema: str,
    events_table: str,
    decode: Callable[[bytes], dict[str, Any]],
    progress: Callable[[int], None] | None = None,
    against: dict[int, bytes] | None = None,
) -> Verdict:
    """Walk every stored event and chain link in log order, recomputing both chains; stop at the
    first link that does not hold, or where the log's head differs from a checkpoint: those
    recorded in the store (read with `decode`, the mapper's), and `against` (position -> head), held
    outside it, e.g. from the bus. The chain covers the state as stored, encrypted: verifying needs
    no key but the checkpoints' own."""
    heads = {**stored_checkpoints(conn, schema, events_table, decode), **(against or {})}
    previous = b""
    own: dict[UUID, tuple[int, bytes]] = {}
    count = 0
    with conn.transaction(), conn.cursor(name="skillcert_verify") as cur:
        cur.itersize = 5000
        cur.execute(walk(schema, events_table))
        for row in cur:
            count += 1
            if progress and count % 5000 == 0:
                progress(count)
            problem, previous = _check(row, previous, own)
            if not problem and row[0] in heads and heads[row[0]] != previous:
                problem = (f"the log's head here is {previous.hex()}, but the checkpoint for this position says "
                           f"{heads[row[0]].hex()}: the history up to here was rewritten")  # fmt: skip
            if problem:
                return Verdict(count, previous, row[0], problem)
    return Verdict(count, previous)


def walk(schema: str, events_table: str) -> sql.Composed:
    """Every position in log order: the stored event, if any, beside the chain's record, if any."""
    return sql.SQL(
        "SELECT coalesce(e.notification_id, c.position), e.originator_id, e.originator_version, e.topic, e.state,"
        " c.originator_id, c.originator_version, c.log_hash, c.aggregate_hash"
        " FROM {events} e FULL JOIN {chain} c ON c.position = e.notification_id"
        " ORDER BY coalesce(e.notification_id, c.position)"
    ).format(events=sql.Identifier(schema, events_table), chain=sql.Identifier(schema, "event_chain"))


def _check(row: tuple[Any, ...], previous: bytes, own: dict[UUID, tuple[int, bytes]]) -> tuple[str | None, bytes]:
    """One position: what is wrong with it, if anything, and the log's hash after it."""
    position, oid, version, topic, state, c_oid, c_version, log_hash, aggregate_hash = row
    if oid is None:
        return f"the chain records {c_oid} version {c_version} here, but no event is stored: deleted", previous
    if c_oid is None:
        return f"{oid} version {version} is stored but was never chained: inserted behind the trigger", previous
    if (oid, version) != (c_oid, c_version):
        return (f"{oid} version {version} is stored where the chain has {c_oid} version {c_version}: "
                "moved or renumbered"), previous  # fmt: skip
    last_version, last_hash = own.get(oid, (0, b""))
    if version != last_version + 1:
        return f"{oid} jumps from version {last_version} to {version}: an event is missing or moved", previous
    piece = link(position, oid, version, topic, bytes(state))
    after = hashlib.sha256(previous + piece).digest()
    if after != bytes(log_hash):
        return f"{oid} version {version} is not what was chained: its content was changed", previous
    mine = hashlib.sha256(last_hash + piece).digest()
    if mine != bytes(aggregate_hash):
        return f"{oid} version {version} breaks its aggregate's chain", previous
    own[oid] = (version, mine)
    return None, after


CHECKPOINT_TOPIC = "domain.audit:Checkpoint.Recorded"


def stored_checkpoints(
    conn: psycopg.Connection[Any], schema: str, events_table: str, decode: Callable[[bytes], dict[str, Any]]
) -> dict[int, bytes]:
    rows = conn.execute(
        sql.SQL("SELECT state FROM {} WHERE topic = %s").format(sql.Identifier(schema, events_table)),
        (CHECKPOINT_TOPIC,),
    ).fetchall()
    conn.commit()
    checkpoints = (decode(bytes(state)) for (state,) in rows)
    return {c["position"]: bytes.fromhex(c["log_hash"]) for c in checkpoints}


def record_checkpoint(app: Any, actor: Actor) -> Checkpoint | None:
    """Record where the chain stands now, as an event the relay publishes on the audit topic. None
    when nothing was stored since the last checkpoint."""
    chain = sql.Identifier(app.schema, "event_chain")
    events = sql.Identifier(app.schema, app.recorder.events_table_name)
    with app.recorder.datastore.transaction(commit=False) as cur:
        cur.execute(
            sql.SQL("SELECT c.position, c.log_hash, e.topic, (SELECT count(*) FROM {chain}) AS events FROM {chain} c "
                    "JOIN {events} e ON e.notification_id = c.position ORDER BY c.position DESC LIMIT 1")
            .format(chain=chain, events=events)
        )  # fmt: skip
        head = cur.fetchone()
    if head is None or head["topic"] == CHECKPOINT_TOPIC:
        return None  # nothing stored, or nothing since the last checkpoint
    checkpoint = Checkpoint.record(actor, head["position"], bytes(head["log_hash"]).hex(), head["events"])
    try:
        app.save(checkpoint)
    except IntegrityError:
        return None
    return checkpoint
