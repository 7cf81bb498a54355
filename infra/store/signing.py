"""The installation's signing key (Ed25519): it signs checkpoints of the hash chain and audit exports.

The private key is an installation secret (configured as SKILLCERT_SIGNING_KEY, or made once and kept
in the database encrypted under a data key). Its public half is kept in the clear beside it, in
`installation_public_keys`, so that whoever verifies without the master key can find it; auditors
should still pin the key they were given (`skillcert audit public-key`), since whoever can write to
the database could write another there.
"""

from __future__ import annotations

from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg import sql

from infra.store.secrets import installation_secret

NAME = "signing_key"


class SigningKey:
    def __init__(self, seed: bytes) -> None:
        self.private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_hex = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()

    def sign(self, data: bytes) -> tuple[str, str]:
        """(signature, public key), both hex: what a checkpoint records."""
        return self.private.sign(data).hex(), self.public_hex


def installation_signing_key(database_url: str, schema: str, configured: str | None = None) -> SigningKey:
    key = SigningKey(installation_secret(database_url, schema, NAME, configured))
    with psycopg.connect(database_url, autocommit=True) as conn:
        table = sql.Identifier(schema, "installation_public_keys")
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, public_key text NOT NULL)")
                     .format(table))  # fmt: skip
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (name) DO UPDATE SET public_key ="
                             " EXCLUDED.public_key").format(table), (NAME, key.public_hex))  # fmt: skip
    return key


def published_public_key(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """The public key the store names, readable by anyone who can read the store; None if it names none."""
    found = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".installation_public_keys',)).fetchone()[0]
    if found is None:
        return None
    row = conn.execute(sql.SQL("SELECT public_key FROM {} WHERE name = %s").format(
        sql.Identifier(schema, "installation_public_keys")), (NAME,)).fetchone()  # fmt: skip
    return row[0] if row else None


def signed_by(public_hex: str, data: bytes, signature_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(bytes.fromhex(signature_hex), data)
        return True
    except (InvalidSignature, ValueError):
        return False
