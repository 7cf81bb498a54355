"""The installation's own secrets (the pseudonym key, the export signing key, the key of registration
ids): configured, or made once and kept in the database, encrypted under a data key like the events."""

from __future__ import annotations

import secrets
from typing import Any

import psycopg
from psycopg import sql

from infra.store.eventstore import serialise_ddl
from infra.store.keys import cipher_for


def installation_secret(database_url: str, schema: str, name: str, configured: str | None = None) -> bytes:
    """32 bytes: the configured hex value, else generated once and kept in the database, encrypted
    like the events (infra.store.keys): the pseudonym key beside the refs it keys would let a thief of
    the database test every possible ID number against them."""
    if configured:
        return bytes.fromhex(configured)
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        serialise_ddl(conn)
        return secret_on(conn, cipher_for(conn, database_url, schema), schema, name)


def secret_on(conn: psycopg.Connection[Any], cipher: Any, schema: str, name: str, create: bool = True) -> bytes:
    """The secret, through a connection that already holds the DDL lock; b"" when it does not exist
    and `create` is false."""
    table = sql.Identifier(schema, "installation_secrets")
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value bytea NOT NULL)").format(table))
    row = conn.execute(sql.SQL("SELECT value FROM {} WHERE name = %s").format(table), (name,)).fetchone()
    if row is None:
        if not create:
            return b""
        sealed = cipher.encrypt(secrets.token_bytes(32))
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (name, sealed))
    elif len(row[0]) == 32:  # kept in the clear by an earlier version: seal it now
        sealed = cipher.encrypt(bytes(row[0]))
        conn.execute(sql.SQL("UPDATE {} SET value = %s WHERE name = %s").format(table), (sealed, name))
    else:
        sealed = bytes(row[0])
    return cipher.decrypt(sealed)


class StoreTooOld(Exception):
    """The store was made by a version whose identifiers this one cannot keep using."""


REGISTRATION_IDS = "registration_id_key"


def registration_id_key(conn: psycopg.Connection[Any], cipher: Any, schema: str, events_table: str) -> bytes:
    """The key registration ids are derived with (domain.registration.registration_key). A store whose
    registrations were made before ids were keyed is refused: its ids, derived from ID numbers with no
    secret, let anyone holding the bus recover the numbers, and stored events cannot be renamed."""
    key = secret_on(conn, cipher, schema, REGISTRATION_IDS, create=False)
    if key:
        return key
    older = conn.execute(
        sql.SQL("SELECT 1 FROM {} WHERE topic = 'domain.registration:Registration.Submitted' LIMIT 1").format(
            sql.Identifier(schema, events_table)
        )
    ).fetchone()
    if older:
        raise StoreTooOld(
            f"the event store in schema {schema} was made before registration ids were keyed: it derived them from "
            "ID numbers with no secret, so anyone reading the bus could recover the numbers. Its events cannot be "
            "renamed (they are immutable and hash-chained). Keep it for the record (skillcert audit export), and "
            "start a new store: another SKILLCERT_DB_SCHEMA or database, or, on the embedded defaults, move "
            ".skillcert away (README: Upgrading)."
        )
    return secret_on(conn, cipher, schema, REGISTRATION_IDS)
