"""Personal data at rest: every stored event's state is encrypted (AES-256-GCM), by envelope.

Events are encrypted under a data key; data keys are kept in the database, each wrapped (itself
AES-GCM encrypted) under the master key, which is never stored there: it comes from configuration
(SKILLCERT_MASTER_KEY) or, on embedded defaults, a key file beside the embedded database. A stolen
database holds only ciphertext and wrapped keys. The installation's own secrets (the pseudonym and
signing keys, infra.store.secrets) are encrypted under a data key too.

Rotating the master key rewraps the data keys, a handful of rows, and starts a new data key for
what is written next. Stored events are never re-encrypted: they are immutable and hash-chained
(infra.store.chain), so rewriting them would be indistinguishable from tampering.

Stored state: 0x01 || data key id (4 bytes, big-endian) || nonce || tag || ciphertext, the last
three as eventsourcing's AESCipher writes them. State beginning with "{" is an event written as
plain JSON before encryption was turned on; it is read as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import Cipher
from psycopg import sql

from infra.store.eventstore import serialise_ddl

VERSION = b"\x01"
PLAIN_JSON = b"{"
KEY_FILE = "master.key"


class KeyProblem(Exception):
    """The configured keys cannot open this store's data keys, or a key is malformed."""


def new_key() -> str:
    return AESCipher.create_key(32)


def parse_key(text: str, what: str = "SKILLCERT_MASTER_KEY") -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise KeyProblem(f"{what} is not base64 (make one with: skillcert keys new)") from None
    if len(key) != 32:
        raise KeyProblem(f"{what} decodes to {len(key)} bytes; an AES-256 key is 32 (skillcert keys new)")
    return key


def key_id(key: bytes) -> str:
    """Names a master key without revealing it: what the data keys table records."""
    return hashlib.sha256(b"skillcert master key id\x00" + key).hexdigest()[:16]


class _AES:
    """AES-256-GCM in eventsourcing's AESCipher layout (nonce || tag || ciphertext), keeping one AESGCM
    per key: AESCipher builds a new one, key schedule and all, for every event it reads or writes,
    which was a third of the relay's and a rebuild's cost per event. tests/test_encryption.py holds
    the two to the same bytes."""

    def __init__(self, key: bytes) -> None:
        AESCipher.check_key_size(len(key))
        self.aead = AESGCM(key)

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, plaintext, None)  # ciphertext || tag
        return nonce + sealed[-16:] + sealed[:-16]

    def decrypt(self, ciphertext: bytes) -> bytes:
        if len(ciphertext) < 28:
            raise ValueError("Damaged cipher text: shorter than a nonce and a tag")
        try:
            return self.aead.decrypt(ciphertext[:12], ciphertext[28:] + ciphertext[12:28], None)
        except InvalidTag:
            raise ValueError("Invalid cipher tag") from None


def _aes(key: bytes) -> _AES:
    return _AES(key)


class MasterKeys:
    """The current master key (wraps new data keys) and, during a rotation, the previous ones."""

    def __init__(self, current: bytes, previous: list[bytes] | None = None) -> None:
        self.current_id = key_id(current)
        self.by_id = {key_id(k): _aes(k) for k in [*(previous or []), current]}

    @classmethod
    def configured(cls, key: str | None, old_keys: str | None, key_file: Path, may_create: bool) -> MasterKeys:
        previous = [parse_key(k, "SKILLCERT_OLD_MASTER_KEYS") for k in (old_keys or "").split(",") if k.strip()]
        if key:
            return cls(parse_key(key), previous)
        if key_file.exists():
            return cls(parse_key(key_file.read_text(), str(key_file)), previous)
        if not may_create:
            raise KeyProblem(
                "this store's events are encrypted and no master key is configured: set SKILLCERT_MASTER_KEY, "
                f"or run where the key file is ({key_file} was not found)"
            )
        key_file.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: a process starting alongside
        # sees no file or the whole key, and the first link wins.
        draft = key_file.with_name(f".{key_file.name}.{os.getpid()}.{threading.get_ident()}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_key() + "\n")
        try:
            os.link(draft, key_file)
        except FileExistsError:
            pass  # another process of this installation made it a moment ago
        finally:
            draft.unlink()
        return cls(parse_key(key_file.read_text(), str(key_file)), previous)

    def unwrap(self, data_key_id: int, wrapped: bytes, master_id: str) -> bytes:
        if master_id not in self.by_id:
            raise KeyProblem(
                f"data key {data_key_id} is wrapped under master key {master_id}, which is not configured "
                f"(configured: {', '.join(sorted(self.by_id))}): set SKILLCERT_MASTER_KEY to that key, or add "
                "it to SKILLCERT_OLD_MASTER_KEYS while rotating"
            )
        try:
            return self.by_id[master_id].decrypt(wrapped)
        except ValueError:
            raise KeyProblem(f"data key {data_key_id} does not open under master key {master_id}: damaged") from None

    def wrap(self, data_key: bytes) -> bytes:
        return self.by_id[self.current_id].encrypt(data_key)


DDL = """CREATE TABLE IF NOT EXISTS {} (
    id integer PRIMARY KEY,
    wrapped bytea NOT NULL,
    master_key_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""


class DataKeys(Cipher):
    """The mapper's cipher: encrypts with the newest data key, decrypts with whichever the state names.
    A data key added by another process (a rotation) is loaded when first met."""

    def __init__(self, conn: psycopg.Connection[Any], database_url: str, schema: str, master: MasterKeys) -> None:
        """`conn` holds the DDL lock (serialise_ddl) and the table exists: the first data key is made once."""
        self.database_url, self.table, self.master = database_url, sql.Identifier(schema, "data_keys"), master
        self.keys: dict[int, _AES] = {}
        self.lock = threading.Lock()
        self._load(conn)
        if not self.keys:  # a new store: its first data key
            add_data_key(conn, self.table, master)
            self._load(conn)
        self.current = max(self.keys)
        self.header = VERSION + self.current.to_bytes(4, "big")

    def _load(self, conn: psycopg.Connection[Any]) -> None:
        for id, wrapped, master_id in conn.execute(
            sql.SQL("SELECT id, wrapped, master_key_id FROM {}").format(self.table)
        ):
            self.keys[id] = _aes(self.master.unwrap(id, bytes(wrapped), master_id))

    def encrypt(self, plaintext: bytes) -> bytes:
        return self.header + self.keys[self.current].encrypt(plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        # The relay and a rebuild call this once per event: the usual case (a known key, our layout) in one
        # function and one copy of the ciphertext (AESGCM wants it followed by its tag), not two.
        if ciphertext[:1] == VERSION and len(ciphertext) >= 33:
            key = self.keys.get(int.from_bytes(ciphertext[1:5], "big"))
            if key is not None:
                try:
                    return key.aead.decrypt(ciphertext[5:17], ciphertext[33:] + ciphertext[17:33], None)
                except InvalidTag:
                    raise ValueError("Invalid cipher tag") from None
        return self._decrypt(ciphertext)

    def _decrypt(self, ciphertext: bytes) -> bytes:
        if ciphertext[:1] == PLAIN_JSON:
            return ciphertext
        if ciphertext[:1] != VERSION:
            raise ValueError(f"stored state in an unknown format (first byte {ciphertext[:1].hex()})")
        if len(ciphertext) < 5:
            raise ValueError("Damaged cipher text: shorter than its data key's id")
        id = int.from_bytes(ciphertext[1:5], "big")
        if id not in self.keys:
            with self.lock, psycopg.connect(self.database_url) as conn:
                self._load(conn)
            if id not in self.keys:
                raise ValueError(f"stored state names data key {id}, which this store does not have")
        return self.keys[id].decrypt(ciphertext[5:])


def cipher_for(conn: psycopg.Connection[Any], database_url: str, schema: str) -> DataKeys:
    """The cipher for this store, its master key from configuration (infra.settings); `conn` holds
    the DDL lock. A key file is made only for a store with no data keys yet."""
    from infra.settings import get_settings

    s = get_settings()
    table = sql.Identifier(schema, "data_keys")
    conn.execute(sql.SQL(DDL).format(table))
    fresh = conn.execute(sql.SQL("SELECT 1 FROM {}").format(table)).fetchone() is None
    master = MasterKeys.configured(s.master_key, s.old_master_keys, s.data_dir / KEY_FILE, may_create=fresh)
    return DataKeys(conn, database_url, schema, master)


def add_data_key(conn: psycopg.Connection[Any], table: sql.Identifier, master: MasterKeys) -> int:
    (last,) = conn.execute(sql.SQL("SELECT coalesce(max(id), 0) FROM {}").format(table)).fetchone()  # type: ignore[misc]
    conn.execute(
        sql.SQL("INSERT INTO {} (id, wrapped, master_key_id) VALUES (%s, %s, %s)").format(table),
        (last + 1, master.wrap(os.urandom(32)), master.current_id),
    )
    return int(last + 1)


def rotate(database_url: str, schema: str, master: MasterKeys) -> tuple[int, int]:
    """Rewrap every data key under the current master key and start a new data key, in one
    transaction. Returns (data keys rewrapped, the new data key's id). Afterwards the previous
    master key opens nothing and can be destroyed."""
    table = sql.Identifier(schema, "data_keys")
    with psycopg.connect(database_url) as conn, conn.transaction():
        serialise_ddl(conn)
        rows = conn.execute(
            sql.SQL("SELECT id, wrapped, master_key_id FROM {} ORDER BY id FOR UPDATE").format(table)
        ).fetchall()
        rewrapped = 0
        for id, wrapped, master_id in rows:
            if master_id == master.current_id:
                continue
            plain = master.unwrap(id, bytes(wrapped), master_id)
            conn.execute(
                sql.SQL("UPDATE {} SET wrapped = %s, master_key_id = %s WHERE id = %s").format(table),
                (master.wrap(plain), master.current_id, id),
            )
            rewrapped += 1
        return rewrapped, add_data_key(conn, table, master)


def status(database_url: str, schema: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, master_key_id, created_at FROM {} ORDER BY id").format(
                sql.Identifier(schema, "data_keys")
            )
        ).fetchall()
    return [{"data_key": id, "master_key_id": m, "created_at": at.isoformat()} for id, m, at in rows]
