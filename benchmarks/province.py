"""A province's year: rebuilding every projection, `audit verify` and the relay republishing
everything, over a store of millions of lifecycle events, each timed next to its baseline in the
same run; and the disk the store and the read models take.

    python -m benchmarks.province --database-url postgresql://postgres@127.0.0.1/test --events 1000000
    python -m benchmarks.province                 # embedded PostgreSQL and Tansu, 10,000,000 events

The store: one cohort's whole lifecycle (benchmarks.relay.build_store: registrations, reviews, fees,
tickets, exam days, score books, results, certificates) built through the domain, then copied until
the store holds the asked number of events. Each copy is another institution: every id in every
event is mapped to a new one, consistently within the copy, and the institution's 13-character
number prefix to a new one, so certificate numbers stay unique and valid; the copies are encrypted
under the store's data key and written through the chaining trigger as any write is. The
projections cannot tell a copy from a real institution.

Timed, once each (a run at 10 million takes most of an hour here; the baselines are in the same run):
- rebuild of every projection, next to the read-only pass over the same log that reads, decodes and
  reduces each event exactly as the rebuild does (consumers.rebuild.read_as_published);
- `audit verify` (infra.store.chain.verify), next to a plain read of the same rows in the same order;
- the relay publishing everything from position 0, next to a bare producer sending the relay's exact
  messages, prepared beforehand. The bare producer holds its messages in memory, so it sends at most
  --bare-messages of them (its rate is per message).
Tansu keeps every message in memory: at 10 million events the two relay passes need about 30 GB of
broker memory, so point --bootstrap at a real Kafka for that size, pass --no-relay, or time the relay
alone (--no-rebuild --no-verify) with the bare producer held to --bare-messages.
"""

from __future__ import annotations

import re
import time
import uuid
from hashlib import sha1

import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table

from benchmarks.projections import rebuild_run
from benchmarks.relay import bare_run, build_store, drop_store, relay_run
from benchmarks.servers import servers
from benchmarks.verify import verify_run
from consumers.rebuild import failures
from domain.institution import CITY_CODES
from infra.store.eventstore import CLEAR, SkillcertApplication
from projections import PROJECTIONS
from projections.store import connect

console = Console(width=120)
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def copy_cohort(url: str, schema: str, events: int) -> tuple[int, str]:
    """Copy the stored cohort as other institutions until the store holds `events`; returns how many
    it holds and the name of its events table."""
    app = SkillcertApplication(url, schema)
    name = app.recorder.events_table_name
    table = sql.Identifier(schema, name)
    cipher = app.mapper.cipher
    with psycopg.connect(url) as conn:
        seed = [
            (topic, version, app.mapper.plaintext(bytes(state)))
            for topic, version, state in conn.execute(
                sql.SQL("SELECT topic, originator_version, state FROM {} ORDER BY notification_id").format(table)
            )
            if topic not in CLEAR  # checkpoints of the chain, which a copy would contradict
        ]
        [prefix] = {m.group(1) for _, _, p in seed if (m := re.search(rb'"prefix":"([^"]{13})"', p))}
        written = len(seed)
        k = 0
        with conn.cursor().copy(
            sql.SQL("COPY {} (originator_id, originator_version, topic, state) FROM STDIN").format(table)
        ) as copy:
            while written < events:
                k += 1
                ids: dict[bytes, bytes] = {}

                def new_id(m: re.Match[bytes], ids: dict[bytes, bytes] = ids, k: int = k) -> bytes:
                    old = m.group(0)
                    if old not in ids:
                        h = bytearray(sha1(b"province:%d:" % k + old).digest()[:16])
                        h[6], h[8] = (h[6] & 0x0F) | 0x40, (h[8] & 0x3F) | 0x80  # a well-formed (v4-shaped) uuid
                        ids[old] = str(uuid.UUID(bytes=bytes(h))).encode()
                    return ids[old]

                other = _prefix(prefix, k)
                for topic, version, plain in seed[: events - written]:
                    state = UUID.sub(new_id, plain).replace(prefix, other)
                    originator = originator_of(state)
                    copy.write_row((originator, version, topic, cipher.encrypt(state)))
                written = min(events, written + len(seed))
        (stored,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
    app.close()
    return int(stored), name


def originator_of(state: bytes) -> str:
    m = re.search(rb'"originator_id":"([0-9a-f-]{36})"', state)
    assert m, "a stored state names its aggregate"
    return m.group(1).decode()


def _prefix(prefix: bytes, k: int) -> bytes:
    """Another institution's prefix, in the same format (domain.institution.Filing.prefix): positions 8-9
    a Guangdong city code and 11-13 a station serial, the k-th pair (k from 1) that is not the cohort's own."""
    pairs = _PAIRS
    own = pairs.index((prefix[7:9], prefix[10:13])) if (prefix[7:9], prefix[10:13]) in pairs else len(pairs)
    city, station = pairs[k - 1 if k - 1 < own else k]
    return prefix[:7] + city + prefix[9:10] + station


_PAIRS = [(city.encode(), b"%03d" % station) for station in range(1, 1000) for city in sorted(CITY_CODES)]


def sizes(url: str, schema: str) -> tuple[int, int]:
    """(bytes of the event store's tables, bytes of the read models' tables), indexes and TOAST included."""
    read_models = {t for p in PROJECTIONS for t in p.tables} | {
        "projection_offsets", "projection_versions", "projection_schemas", "projection_stalls", "projection_watermarks",
    }  # fmt: skip
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchall()
    store = sum(size for name, size in rows if name not in read_models)
    return store, sum(size for name, size in rows if name in read_models)


def main(
    database_url: str = typer.Option("", help="PostgreSQL to use; empty starts an embedded one"),
    bootstrap: str = typer.Option("", help="Kafka bootstrap servers; empty starts an embedded Tansu"),
    events: int = typer.Option(10_000_000, help="events in the store"),
    plans: int = typer.Option(10, help="plans of 200 candidates in the cohort that is copied"),
    relay: bool = typer.Option(True, help="time the relay (needs broker memory for every event twice)"),
    rebuild: bool = typer.Option(True, help="time the rebuild of every projection"),
    verify: bool = typer.Option(True, help="time `audit verify`"),
    bare_messages: int = typer.Option(1_000_000, help="messages the bare producer sends, at most"),
) -> None:
    with servers(database_url, bootstrap if relay else None) as (database_url, bootstrap):
        started = time.perf_counter()
        schema, seed = build_store(database_url, plans, 200)
        console.print(f"cohort: {seed:,} events through the domain in {time.perf_counter() - started:.0f} s ({schema})")
        started = time.perf_counter()
        stored, events_table = copy_cohort(database_url, schema, events)
        console.print(f"store: {stored:,} events, copied in {time.perf_counter() - started:.0f} s")

        table = Table(title=f"a province's year: {stored:,} stored events, one run", show_lines=False)
        for col in ("", "seconds", "events/s", "baseline", "baseline s", "baseline /s", "ratio"):
            table.add_column(col, justify="right")

        if rebuild:
            applied, t_rebuild, t_read, _ = rebuild_run(database_url, schema)
            with connect(database_url, schema) as conn:
                left_out = failures(conn, PROJECTIONS)
            assert not left_out, f"the rebuild left out {len(left_out)} events of the copies, as {left_out[0]}"
            table.add_row("rebuild, every projection", f"{t_rebuild:.1f}", f"{applied / t_rebuild:,.0f}",
                          "read-only pass", f"{t_read:.1f}", f"{applied / t_read:,.0f}", f"{t_read / t_rebuild:.2f}")  # fmt: skip
            console.print(f"rebuild {t_rebuild:.0f} s, read-only pass {t_read:.0f} s")

        if verify:
            verified, t_verify, read, t_plain = verify_run(database_url, schema, events_table)
            table.add_row("audit verify", f"{t_verify:.1f}", f"{verified / t_verify:,.0f}",
                          "plain read", f"{t_plain:.1f}", f"{read / t_plain:,.0f}", f"{t_plain / t_verify:.2f}")  # fmt: skip
            console.print(f"verify {t_verify:.0f} s, plain read {t_plain:.0f} s")

        if relay:
            n_relay, t_relay = relay_run(database_url, schema, bootstrap, "province.relay.", 2000)
            n_bare, t_bare = bare_run(database_url, schema, bootstrap, "province.bare.", bare_messages)
            table.add_row("relay, everything", f"{t_relay:.1f}", f"{n_relay / t_relay:,.0f}",
                          f"bare producer ({n_bare:,})", f"{t_bare:.1f}", f"{n_bare / t_bare:,.0f}",
                          f"{(n_relay / t_relay) / (n_bare / t_bare):.2f}")  # fmt: skip
        console.print(table)
        store, read_models = sizes(database_url, schema)
        console.print(
            f"disk: event store {store / 2**30:.2f} GiB ({store / stored:,.0f} bytes/event),"
            f" read models {read_models / 2**30:.2f} GiB ({read_models / stored:,.0f} bytes/event)"
        )
        drop_store(database_url, schema)


if __name__ == "__main__":
    typer.run(main)
