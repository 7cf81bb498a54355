"""The files events refer to (diploma scans, ID card copies, signed forms, the holder's photo):
content-addressed, encrypted at rest, erasable.

An attachment is addressed by the SHA-256 of its content: the events carry that hash, never the
file. Each file is encrypted (AES-256-GCM) under a key of its own; that key is kept in the
`attachments` table wrapped by the store's current data key (infra.store.keys), so the master key
guards files as it guards events. Erasing an attachment deletes its wrapped key and its blob: the
ciphertext, wherever a backup or an object store kept it, can no longer be read. Events stay as they
are (immutable, hash-chained): they keep the hash, which reveals nothing of a scan.

Where the ciphertext lives is a `Blobs` (docs/attachments.md): `PostgresBlobs`, the default, keeps
it in the same database; `DirectoryBlobs` in a directory (a mounted volume); an object store needs
only the same three methods. The metadata, the wrapped keys and who refers to what stay in PostgreSQL.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import Cipher
from psycopg import sql

from infra.store.keys import _aes

SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The first key of a file's advisory lock (the second is from its address), held while it is kept (put) and while an
# erased file's blob is deleted: two uploads of one new file at once each wrote the blob under a key of its own, and
# an erasure could delete the blob of the same file uploaded again meanwhile. (A reference and an erasure lock the
# file's row instead: the save's statement (infra.store.recorder), erase_for.)
LOCKS = 0x736B6174  # "skat"


def lock_key(sha256: str) -> tuple[int, int]:
    return LOCKS, int.from_bytes(bytes.fromhex(sha256[:8]), "big", signed=True)


class Blobs(Protocol):
    """Where encrypted attachment content is kept, by address (the plaintext's SHA-256)."""

    def put(self, address: str, ciphertext: bytes) -> None: ...
    def get(self, address: str) -> bytes | None: ...
    def delete(self, address: str) -> None: ...


class PostgresBlobs:
    """The default: a table beside the events."""

    def __init__(self, datastore: Any, schema: str) -> None:
        self.datastore, self.table = datastore, sql.Identifier(schema, "attachment_blobs")
        with datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (sha256 text PRIMARY KEY, content bytea NOT NULL)")
                        .format(self.table))  # fmt: skip

    def put(self, address: str, ciphertext: bytes) -> None:
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (sha256) DO UPDATE SET content = "
                                "excluded.content").format(self.table), (address, ciphertext))  # fmt: skip

    def get(self, address: str) -> bytes | None:
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT content FROM {} WHERE sha256 = %s").format(self.table), (address,))
            row = cur.fetchone()
        return None if row is None else bytes(row["content"])

    def delete(self, address: str) -> None:
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE sha256 = %s").format(self.table), (address,))


class DirectoryBlobs:
    """A directory, e.g. a mounted volume: one file per address, written whole or not at all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, address: str) -> Path:
        if not SHA256.match(address):
            raise ValueError("not an attachment address")
        return self.root / address[:2] / address

    def put(self, address: str, ciphertext: bytes) -> None:
        path = self._path(address)
        path.parent.mkdir(exist_ok=True)
        partial = path.with_suffix(f".{secrets.token_hex(4)}.partial")
        partial.write_bytes(ciphertext)
        os.replace(partial, path)

    def get(self, address: str) -> bytes | None:
        try:
            return self._path(address).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, address: str) -> None:
        self._path(address).unlink(missing_ok=True)


@dataclass(frozen=True)
class Held:
    """What the store knows of an attachment, without its content."""

    sha256: str
    media_type: str
    size: int
    photo: bool  # passed the photo rules (infra.services.attachments.check_photo) on upload
    width: int | None
    height: int | None
    uploaded_by: str
    uploaded_at: datetime
    erased_at: datetime | None


DDL = """
CREATE TABLE IF NOT EXISTS {meta} (
    sha256 text PRIMARY KEY,
    media_type text NOT NULL,
    size integer NOT NULL,
    photo boolean NOT NULL DEFAULT false,
    width integer,
    height integer,
    wrapped_key bytea,                -- NULL once erased
    uploaded_by text NOT NULL,        -- the principal id
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    erased_at timestamptz,
    erased_because text
);
CREATE TABLE IF NOT EXISTS {refs} (
    sha256 text NOT NULL,
    originator_id uuid NOT NULL,      -- the registration or certificate whose event refers to it
    institution_id uuid,
    PRIMARY KEY (sha256, originator_id)
);
CREATE INDEX IF NOT EXISTS {refs_by_originator} ON {refs} (originator_id);
CREATE INDEX IF NOT EXISTS {refs_by_institution} ON {refs} (sha256, institution_id);
CREATE TABLE IF NOT EXISTS {uploads} (
    sha256 text NOT NULL,
    uploaded_by text NOT NULL,        -- every principal that uploaded these bytes, each may read and refer to them
    institution_id uuid,              -- a staff uploader's institution: its colleagues may too
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, uploaded_by)
);
"""
# The files' table and who refers to them: a save records its events' references in its own statement
# (infra.store.recorder), so a reference exists exactly when the event making it does.
FILES_TABLE, REFS_TABLE = "attachments", "attachment_refs"
SYSTEM = "system:"  # uploads the installation made itself (the demo's and the tests' sample files)


class Attachments:
    """Files in, files out, and the references events make to them. `cipher` is the store's data-key
    cipher (wraps each file's own key); `datastore` eventsourcing's PostgreSQL datastore."""

    def __init__(
        self, datastore: Any, schema: str, cipher: Cipher,
        hold: Callable[..., AbstractContextManager[None]], blobs: Blobs | None = None,
    ) -> None:  # fmt: skip
        """`hold(*keys)` holds advisory locks while its block runs, on a connection that is not the datastore's
        (infra.services.base.Service.holding): a file's blob is written and deleted through the datastore's."""
        self.datastore, self.cipher, self.hold = datastore, cipher, hold
        self.meta, self.refs = sql.Identifier(schema, FILES_TABLE), sql.Identifier(schema, REFS_TABLE)
        self.uploads = sql.Identifier(schema, "attachment_uploads")
        with datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL(DDL).format(meta=self.meta, refs=self.refs, uploads=self.uploads,
                                            refs_by_originator=sql.Identifier("attachment_refs_by_originator"),
                                            refs_by_institution=sql.Identifier("attachment_refs_by_institution")))  # fmt: skip
        self.blobs = blobs or PostgresBlobs(datastore, schema)

    def put(self, content: bytes, sha256: str, media_type: str, uploaded_by: str,
            photo_size: tuple[int, int] | None = None, institution_id: UUID | None = None) -> Held:  # fmt: skip
        """Keep `content` (already checked by the caller) unless it is held; an erased file uploaded
        again is kept anew, under a new key. Each uploader is recorded: the same bytes uploaded by
        two people are one stored file that both may read. Alone on the file: two uploads of one new file at once
        each wrote the blob under a key of its own, and the key kept could be the other's."""
        with self.hold(lock_key(sha256)):
            return self._put(content, sha256, media_type, uploaded_by, photo_size, institution_id)

    def _put(self, content: bytes, sha256: str, media_type: str, uploaded_by: str,
             photo_size: tuple[int, int] | None, institution_id: UUID | None) -> Held:  # fmt: skip
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("INSERT INTO {} (sha256, uploaded_by, institution_id) VALUES (%s, %s, %s) "
                                "ON CONFLICT (sha256, uploaded_by) DO UPDATE SET uploaded_at = now()")
                        .format(self.uploads), (sha256, uploaded_by, institution_id))  # fmt: skip
        held = self.held(sha256)
        if held is not None and held.erased_at is None:
            if photo_size and not held.photo:  # first uploaded as a document, now checked as a photo
                with self.datastore.transaction(commit=True) as cur:
                    cur.execute(sql.SQL("UPDATE {} SET photo = true, width = %s, height = %s WHERE sha256 = %s")
                                .format(self.meta), (*photo_size, sha256))  # fmt: skip
                return self.held(sha256)  # type: ignore[return-value]
            return held
        file_key = secrets.token_bytes(32)
        self.blobs.put(sha256, _aes(file_key).encrypt(content))
        width, height = photo_size or (None, None)
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(
                sql.SQL(
                    "INSERT INTO {} (sha256, media_type, size, photo, width, height, wrapped_key, uploaded_by) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (sha256) DO UPDATE SET "
                    "media_type = excluded.media_type, size = excluded.size, photo = excluded.photo, "
                    "width = excluded.width, height = excluded.height, wrapped_key = excluded.wrapped_key, "
                    "uploaded_by = excluded.uploaded_by, uploaded_at = now(), erased_at = NULL, erased_because = NULL"
                ).format(self.meta),
                (sha256, media_type, len(content), photo_size is not None, width, height,
                 self.cipher.encrypt(file_key), uploaded_by),
            )  # fmt: skip
        return self.held(sha256)  # type: ignore[return-value]

    def held(self, sha256: str) -> Held | None:
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(
                sql.SQL("SELECT sha256, media_type, size, photo, width, height, uploaded_by, uploaded_at, erased_at "
                        "FROM {} WHERE sha256 = %s").format(self.meta), (sha256,))  # fmt: skip
            row = cur.fetchone()
        return None if row is None else Held(**row)

    def content(self, sha256: str) -> bytes | None:
        """The plaintext, or None when not held or erased."""
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT wrapped_key FROM {} WHERE sha256 = %s AND erased_at IS NULL")
                        .format(self.meta), (sha256,))  # fmt: skip
            row = cur.fetchone()
        if row is None or row["wrapped_key"] is None:
            return None
        ciphertext = self.blobs.get(sha256)
        if ciphertext is None:
            return None
        return _aes(self.cipher.decrypt(bytes(row["wrapped_key"]))).decrypt(ciphertext)

    def facts(
        self, sha256s: list[str], originators: list[UUID], institutions: list[UUID]
    ) -> dict[str, tuple[bool, list[tuple[str, UUID | None]], list[tuple[UUID | None, UUID | None]]]]:
        """For each of these files the store holds unerased: (passed the photo rules, its uploads as
        (principal, institution), its references by these originators or from these institutions as
        (originator, institution), the latter as (None, institution)), in one round trip: every command
        that refers to files asks this before it is saved. Only the references asked about: a sample
        file every registration refers to has as many references as registrations. One statement, on an
        autocommit connection: no BEGIN and ROLLBACK around it."""
        with self.datastore.cursor() as cur:
            cur.execute(
                sql.SQL("SELECT m.sha256, m.photo, "
                        "(SELECT coalesce(json_agg(json_build_array(u.uploaded_by, u.institution_id)), '[]') "
                        " FROM {uploads} u WHERE u.sha256 = m.sha256) AS uploads, "
                        "(SELECT coalesce(json_agg(json_build_array(r.originator_id, r.institution_id)), '[]') "
                        " FROM {refs} r WHERE r.sha256 = m.sha256 AND r.originator_id = ANY(%s)) AS refs, "
                        "(SELECT coalesce(json_agg(i), '[]') FROM unnest(%s::uuid[]) AS i WHERE EXISTS "
                        " (SELECT 1 FROM {refs} r WHERE r.sha256 = m.sha256 AND r.institution_id = i)) AS institutions "
                        "FROM {meta} m WHERE m.sha256 = ANY(%s) AND m.erased_at IS NULL")
                .format(uploads=self.uploads, refs=self.refs, meta=self.meta),
                (originators, institutions, sha256s))  # fmt: skip
            rows = cur.fetchall()

        def uuid(value: str | None) -> UUID | None:
            return UUID(value) if value else None

        return {r["sha256"]: (r["photo"], [(by, uuid(i)) for by, i in r["uploads"]],
                              [(UUID(o), uuid(i)) for o, i in r["refs"]] + [(None, UUID(i)) for i in r["institutions"]])
                for r in rows}  # fmt: skip

    def uploaders(self, sha256s: list[str]) -> list[tuple[str, str, UUID | None]]:
        """(sha256, principal, institution) of every upload of these files."""
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT sha256, uploaded_by, institution_id FROM {} WHERE sha256 = ANY(%s)")
                        .format(self.uploads), (sha256s,))  # fmt: skip
            return [(r["sha256"], r["uploaded_by"], r["institution_id"]) for r in cur.fetchall()]

    def referrers(self, sha256: str) -> list[tuple[UUID, UUID | None]]:
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT originator_id, institution_id FROM {} WHERE sha256 = %s").format(self.refs),
                        (sha256,))  # fmt: skip
            return [(r["originator_id"], r["institution_id"]) for r in cur.fetchall()]

    def erase_for(self, originators: list[UUID], because: str, keep: tuple[str, ...] = ()) -> list[str]:
        """Forget these aggregates' references, but those to `keep`; erase every attachment nothing else
        refers to (its key and its blob). Idempotent. Answers the addresses erased."""
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("DELETE FROM {} WHERE originator_id = ANY(%s) AND NOT sha256 = ANY(%s) "
                                "RETURNING sha256").format(self.refs), (originators, list(keep)))  # fmt: skip
            dropped = sorted({r["sha256"] for r in cur.fetchall()})
            # Those nothing else refers to, each then locked alone: a save recording a reference to one holds it shared
            # until it commits (its statement, infra.store.recorder). The erasure's statement comes after the locks, so
            # it sees every reference recorded before them; one recorded after them finds the file erased. A file
            # others refer to (a sample every registration shows) is not locked at all.
            cur.execute(sql.SQL("SELECT sha256 FROM {meta} m WHERE sha256 = ANY(%s) AND erased_at IS NULL "
                                "AND NOT EXISTS (SELECT 1 FROM {refs} r WHERE r.sha256 = m.sha256) "
                                "ORDER BY sha256 FOR UPDATE").format(meta=self.meta, refs=self.refs), (dropped,))  # fmt: skip
            alone = [r["sha256"] for r in cur.fetchall()]
            cur.execute(
                sql.SQL("UPDATE {meta} m SET wrapped_key = NULL, erased_at = now(), erased_because = %s "
                        "WHERE sha256 = ANY(%s) AND erased_at IS NULL "
                        "AND NOT EXISTS (SELECT 1 FROM {refs} r WHERE r.sha256 = m.sha256) RETURNING sha256")
                .format(meta=self.meta, refs=self.refs), (because, alone))  # fmt: skip
            erased = sorted(r["sha256"] for r in cur.fetchall())
        if erased:
            self._drop_blobs(erased)
        return erased

    def _drop_blobs(self, erased: list[str]) -> None:
        """The blobs of files erased, each alone on its file and only if it is still erased: the same file
        uploaded again meanwhile has a new key and a new blob, which must stay."""
        with self.hold(*(lock_key(a) for a in erased)):
            with self.datastore.transaction(commit=False) as cur:
                cur.execute(sql.SQL("SELECT sha256 FROM {} WHERE sha256 = ANY(%s) AND erased_at IS NOT NULL")
                            .format(self.meta), (erased,))  # fmt: skip
                gone = [r["sha256"] for r in cur.fetchall()]
            for address in gone:
                self.blobs.delete(address)
