"""The installation's own secrets (the pseudonym key, the export signing key): configured, or made once
and kept in the database, encrypted under a data key like the events."""

from __future__ import annotations

import secrets

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
    table = sql.Identifier(schema, "installation_secrets")
    with psycopg.connect(database_url, autocommit=True) as conn, conn.transaction():
        serialise_ddl(conn)
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value bytea NOT NULL)").format(table)
        )
        cipher = cipher_for(conn, database_url, schema)
        row = conn.execute(sql.SQL("SELECT value FROM {} WHERE name = %s").format(table), (name,)).fetchone()
        if row is None:
            sealed = cipher.encrypt(secrets.token_bytes(32))
            conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s)").format(table), (name, sealed))
        elif len(row[0]) == 32:  # kept in the clear by an earlier version: seal it now
            sealed = cipher.encrypt(bytes(row[0]))
            conn.execute(sql.SQL("UPDATE {} SET value = %s WHERE name = %s").format(table), (sealed, name))
        else:
            sealed = bytes(row[0])
    return cipher.decrypt(sealed)
