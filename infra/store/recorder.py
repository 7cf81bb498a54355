"""How a save reaches PostgreSQL: one statement, one round trip, the table lock held only server-side.

The library's recorder sends BEGIN, SET LOCAL lock_timeout, LOCK TABLE, NOTIFY and the INSERT in
psycopg's pipeline mode and then calls `pipeline.sync()`. psycopg 3.3's sync sends what the
socket takes and then waits for results without flushing the rest (psycopg/_pipeline_base.py,
`_sync_gen`: after `pipeline_communicate` breaks on `flush() == 1` with no commands left, it
fetches with `flush=False`). A save bigger than the socket's send buffer (about 400 KB on a unix
socket, far more over TCP) thus stopped half-sent: the server, holding the table lock it had
already taken, waited on the client (`ClientRead`) and the client on the server, for ever, and
every other writer in every process queued behind the lock.

Here the whole save is one call of a server-side function, in autocommit: the lock is taken
after the server has received the complete message, and released when the statement commits,
so no session holds the write lock while waiting on its client. No pipeline is involved.

The same statement records the files the events refer to (who may read each: infra.store.attachments),
each file locked shared, before the table's lock: a reference exists exactly when its event does, and a
file erased since the command checked it refuses the save (FilesGone) with nothing stored. Recorded in a
statement of its own before the save, it cost every registration batch a round trip and a commit of its
own inside the plan's lock, and a save that then failed left its references behind.

The lock itself stays: notification ids must commit in the order they are issued, or a reader of
the log (the relay) could pass over an id whose transaction commits later. What it costs is paid once
for many saves: saves that arrive while another is being written go together into the next statement
(group commit, infra.store.groupcommit), each still checked against its aggregates' versions.
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg
from eventsourcing.persistence import IntegrityError, PersistenceError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresFactory
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Identifier, Literal
from psycopg_pool import ConnectionPool

from domain.certificate import Certificate
from infra.store.attachments import FILES_TABLE, REFS_TABLE
from infra.store.groupcommit import GroupCommit

FUNCTION = "skillcert_append"
FILES_GONE = "SKG01"  # the SQLSTATE of a save refused because a file its events refer to was erased meanwhile
Reference = tuple[str, Any, Any]  # (a file's address, the aggregate whose event refers to it, its institution)


class Save(NamedTuple):
    """One save's events, and the files they refer to."""

    events: list[StoredEvent]
    references: list[Reference]


class FilesGone(Exception):
    """A save's events refer to files erased since it checked them: nothing of it was stored."""

    def __init__(self, addresses: list[str]) -> None:
        super().__init__(f"files no longer held: {', '.join(addresses)}")
        self.addresses = addresses


DATA_DELETED = get_topic(Certificate.DataDeleted)

# A writer that cannot get the table lock within this fails with a clear error (answered 503, try
# again) instead of queueing behind a stuck session for ever.
LOCK_TIMEOUT_SECONDS = 10
LOCK_TIMEOUT = f"{LOCK_TIMEOUT_SECONDS}s"


class Recorder(PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        schema, table = Identifier(self.datastore.schema), Identifier(self.events_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}(ids uuid[], versions bigint[], topics text[], "
                "states bytea[], ref_files text[], ref_originators uuid[], ref_institutions uuid[]) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $$ "
                "DECLARE gone text; "
                "BEGIN "
                # The files the events refer to, each locked shared until this commits (an erasure locks a file alone
                # before it looks for references: infra.store.attachments.erase_for), before the table's lock. Each
                # statement sees what committed before it began: a file erased while this waited for its lock is gone.
                "IF cardinality(ref_files) > 0 THEN "
                "PERFORM 1 FROM {schema}.{files} WHERE sha256 = ANY(ref_files) AND erased_at IS NULL "
                "ORDER BY sha256 FOR SHARE; "
                "SELECT string_agg(DISTINCT f, ',') INTO gone FROM unnest(ref_files) AS f WHERE NOT EXISTS "
                "(SELECT 1 FROM {schema}.{files} m WHERE m.sha256 = f AND m.erased_at IS NULL); "
                "IF gone IS NOT NULL THEN "
                "RAISE EXCEPTION 'files no longer held: %', gone USING ERRCODE = {files_gone}, DETAIL = gone; "
                "END IF; "
                "INSERT INTO {schema}.{refs} SELECT * FROM unnest(ref_files, ref_originators, ref_institutions) "
                "ON CONFLICT DO NOTHING; "
                "END IF; "
                "SET LOCAL lock_timeout = {lock_timeout}; "
                "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
                "NOTIFY {channel}; "
                "RETURN QUERY INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(ids, versions, topics, states) RETURNING notification_id; "
                "END $$"
            ).format(
                schema=schema,
                table=table,
                function=Identifier(FUNCTION),
                files=Identifier(FILES_TABLE),
                refs=Identifier(REFS_TABLE),
                files_gone=Literal(FILES_GONE),
                lock_timeout=Literal(LOCK_TIMEOUT),
                channel=Identifier(self.channel_name),
            )
        )
        # The deletions of certificates' data, found without reading the log (infra.bus.relay.Erased): a partial index,
        # written only for those events. Made once on a store that predates it, holding writers for that long.
        self.sql_create_statements.append(
            SQL(
                "CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (notification_id) INCLUDE (originator_id) "
                "WHERE topic = {topic}"
            ).format(
                index=Identifier(f"{self.events_table_name}_data_deleted"),
                schema=schema,
                table=table,
                topic=Literal(DATA_DELETED),
            )  # fmt: skip
        )
        # Binary parameters (%b): as text, each state is hex-escaped by a regex on the way out and parsed
        # back by the server.
        self.append_statement = SQL("SELECT * FROM {}.{}(%b, %b, %b, %b, %b::text[], %b::uuid[], %b::uuid[])").format(
            schema, Identifier(FUNCTION)
        )
        self._saves: GroupCommit[Save, list[int]] = GroupCommit(self._insert_together, most=500)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], references: Sequence[Reference] = (), **kwargs: Any
    ) -> Sequence[int] | None:
        """`references`: the files the events refer to, as (address, originator, institution), recorded in the
        events' statement (who may read each file); FilesGone, and nothing stored, if one was erased meanwhile."""
        # Not retried on a connection error, unlike the library's: the statement may have committed
        # before the connection broke, and the caller's save is what knows how to try again.
        if not stored_events:
            return []
        return self._saves.submit(None, Save(list(stored_events), list(references)))

    def _insert_together(self, _: object, saves: list[Save]) -> list[Any]:
        """Saves that arrived together, in one transaction: one table lock and one wait for the disk
        instead of one each. Each is still checked against its aggregates' versions: of two claiming
        one version, the first to arrive is stored and the other told IntegrityError, as if it had come
        second; one claiming a version already stored is found and told, and the rest are saved."""
        if len(saves) == 1:
            return [self._insert(saves[0])]
        outcomes: dict[int, Any] = {}
        claimed: set[tuple[Any, int]] = set()
        for i, save in enumerate(saves):
            keys = {(e.originator_id, e.originator_version) for e in save.events}
            if keys & claimed:
                outcomes[i] = IntegrityError("a version claimed by a save arriving at the same moment")
            else:  # only what is saved claims: a save refused here claims nothing from the ones after it
                claimed |= keys
        todo = [i for i in range(len(saves)) if i not in outcomes]
        for _ in range(3):  # each round finds what other writers stored meanwhile, or files erased meanwhile
            try:
                ids = self._insert(Save([e for i in todo for e in saves[i].events],
                                        [r for i in todo for r in saves[i].references]))  # fmt: skip
            except FilesGone as e:
                gone = set(e.addresses)
                outcomes.update({i: FilesGone(sorted(gone & {r[0] for r in saves[i].references})) for i in todo
                                 if any(r[0] in gone for r in saves[i].references)})  # fmt: skip
                todo = [i for i in todo if i not in outcomes]
                if not todo:
                    return [outcomes[i] for i in range(len(saves))]
                continue
            except IntegrityError:
                stored = self._stored([(e.originator_id, e.originator_version) for i in todo for e in saves[i].events])
                late = [i for i in todo
                        if any((e.originator_id, e.originator_version) in stored for e in saves[i].events)]  # fmt: skip
                if not late:
                    break  # not a version: each alone shows whose it is
                outcomes.update({i: IntegrityError("a version already recorded") for i in late})
                todo = [i for i in todo if i not in late]
                if not todo:
                    return [outcomes[i] for i in range(len(saves))]
                continue
            # The function returns the ids in the order of its input (INSERT ... SELECT unnest ... RETURNING).
            at = 0
            for i in todo:
                outcomes[i] = ids[at : at + len(saves[i].events)]
                at += len(saves[i].events)
            return [outcomes[i] for i in range(len(saves))]
        for i in todo:
            try:
                outcomes[i] = self._insert(saves[i])
            except Exception as e:  # this save's alone: those before it are committed, and told so
                outcomes[i] = e
        return [outcomes[i] for i in range(len(saves))]

    def _stored(self, keys: list[tuple[Any, int]]) -> set[tuple[Any, int]]:
        query = SQL("SELECT originator_id, originator_version FROM {}.{} WHERE (originator_id, originator_version)"
                    " IN (SELECT * FROM unnest(%s::uuid[], %s::bigint[]))").format(
            Identifier(self.datastore.schema), Identifier(self.events_table_name))  # fmt: skip
        with self.datastore.get_connection() as conn, conn.cursor() as cur:
            cur.execute(query, ([k[0] for k in keys], [k[1] for k in keys]))
            return {(row["originator_id"], row["originator_version"]) for row in cur.fetchall()}

    def _insert(self, save: Save) -> list[int]:
        events, references = save
        params = (
            [e.originator_id for e in events],
            [e.originator_version for e in events],
            [e.topic for e in events],
            [e.state for e in events],
            [r[0] for r in references],
            [r[1] for r in references],
            [r[2] for r in references],
        )
        try:
            with self.datastore.get_connection() as conn, conn.cursor() as cur:
                cur.execute(self.append_statement, params, prepare=True)
                return [row[FUNCTION] for row in cur.fetchall()]
        except PersistenceError as e:
            cause = e.__cause__
            if isinstance(cause, psycopg.Error) and cause.sqlstate == FILES_GONE:
                raise FilesGone((cause.diag.message_detail or "").split(",")) from None
            raise


def check_idle(conn: psycopg.Connection[Any]) -> None:
    """Hand a pooled connection out only if the server has not hung up on it. After PostgreSQL
    restarts, every idle connection in a pool is dead; handed to a request, it fails it. An idle
    autocommit connection receives nothing unless the server closes it (restart, termination), so
    a socket with something to read gets a real check, a round trip, and a quiet one costs nothing:
    the library's own pre-ping pays a round trip on every use, which doubled the cost of reading
    5,000 aggregates."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


class Factory(PostgresFactory):
    application_recorder_class = Recorder

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The library offers only its own pre-ping (POSTGRES_PRE_PING); psycopg_pool keeps the check
        # it calls on every checkout here.
        self.datastore.pool._check = check_idle
