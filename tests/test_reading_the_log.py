"""Reading the notification log from start to end (the relay, a rebuild) costs its length, not its length
squared, on a store nobody has analysed: autovacuum off, as on the machine these tests run on, or not yet
come by after a bulk load."""

from __future__ import annotations

import psycopg
from psycopg import sql

from infra.store.eventstore import SkillcertApplication

EVENTS = 20_000
BATCH = 100


def index_entries_read(conn: psycopg.Connection, schema: str, index: str) -> int:
    conn.execute("SELECT pg_stat_clear_snapshot()")
    return conn.execute(
        "SELECT idx_tup_read FROM pg_stat_user_indexes WHERE schemaname = %s AND indexrelname = %s", (schema, index)
    ).fetchone()[0]


def test_a_batch_read_from_an_unanalysed_log_reads_that_batch_not_everything_after_it(database_url, schema):
    app = SkillcertApplication(database_url, schema)
    table = app.recorder.events_table_name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {} (originator_id, originator_version, topic, state)"
                    " SELECT gen_random_uuid(), 1, 'x', '\\x00' FROM generate_series(1, %s)").format(
                sql.Identifier(schema, table)), (EVENTS,))  # fmt: skip
        never_analysed = conn.execute("SELECT reltuples < 0 FROM pg_class WHERE oid = %s::regclass",
                                      (f'"{schema}"."{table}"',)).fetchone()[0]  # fmt: skip
        assert never_analysed
        index = f"{table}_notification_id_idx"
        before = index_entries_read(conn, schema, index)
        with psycopg.connect(database_url, autocommit=True) as reader:
            position, read = 0, 0
            for _ in range(5):
                rows = app.stored_rows(reader, position, BATCH)
                assert [r[0] for r in rows] == list(range(position + 1, position + BATCH + 1))
                position, read = rows[-1][0], read + len(rows)
            reader.execute("SELECT pg_stat_force_next_flush()")
            reader.execute("SELECT 1")  # the statement whose end reports the session's counts
        after = index_entries_read(conn, schema, index)
    # By the index, in order: each batch reads its own entries (and one past). Gathering every id after the
    # position and sorting them for the limit read 20,000 + 19,900 + ... entries: 99,000.
    assert read == 5 * BATCH
    assert after - before <= 2 * read, f"{after - before} index entries read for {read} events"
    app.close()
