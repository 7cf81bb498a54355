"""The certificate as a W3C Verifiable Credential 2.0 (Open Badges 3.0 vocabulary where it fits), signed
by the institution's signing key with a Data Integrity proof (cryptosuite ecdsa-jcs-2019: the key is
ECDSA P-256), with a Bitstring Status List entry the system publishes and sets on correction and data
deletion. Everything a verifier needs is served without a token: the key (Multikey) and the status
list (itself a signed credential); docs/credentials.md says how to verify with no code of ours.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from psycopg import sql

from domain.certificate import Certificate, DataStatus
from domain.errors import Conflict
from domain.institution import Institution
from domain.personal import mask_id_number
from infra.store.eventstore import serialise_ddl

CONTEXTS = ["https://www.w3.org/ns/credentials/v2", "https://purl.imsglobal.org/spec/ob/v3p0/context-3.0.3.json"]
STATUS_BITS = 131_072  # the spec's minimum list size: 16 KB, so an index says little about issuance order
ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
P256_MULTICODEC = b"\x80\x24"  # varint of 0x1200, p256-pub
# A place in the status list per certificate and holder's data: a credential states the data as it was when issued,
# and one issued after a correction takes a place of its own, so the place of the one before stays revoked. (One
# place per certificate, rewritten with the corrected data, had cleared the old credential's revocation.)
DDL = """CREATE TABLE IF NOT EXISTS {table} (
    institution_id uuid NOT NULL,
    status_index integer NOT NULL,
    certificate_id uuid NOT NULL,
    holder_digest text NOT NULL,    -- the holder's data the credential states: a correction makes it stale
    issued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (institution_id, status_index)
);
CREATE UNIQUE INDEX IF NOT EXISTS credential_status_stated ON {table} (certificate_id, holder_digest)"""
# Tables made before kept a certificate to one place; dropped only where it is there (ALTER TABLE would otherwise
# lock the table on every start for nothing).
OLD_CONSTRAINT = "credential_status_certificate_id_key"


def jcs(value: Any) -> bytes:
    """RFC 8785 for the JSON the credentials hold (strings, integers, booleans, arrays, objects)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def base58(data: bytes) -> str:
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = ALPHABET[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def multikey(cert: x509.Certificate) -> str:
    point = cert.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    return "z" + base58(P256_MULTICODEC + point)


def sign(document: dict[str, Any], key: ec.EllipticCurvePrivateKey, method: str, created: datetime) -> dict[str, Any]:
    """A DataIntegrityProof, cryptosuite ecdsa-jcs-2019, over `document` (without a proof)."""
    proof = {"type": "DataIntegrityProof", "cryptosuite": "ecdsa-jcs-2019", "created": created.isoformat(),
             "verificationMethod": method, "proofPurpose": "assertionMethod", "@context": document["@context"]}  # fmt: skip
    data = hashlib.sha256(jcs(proof)).digest() + hashlib.sha256(jcs(document)).digest()
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    proof["proofValue"] = "z" + base58(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    del proof["@context"]
    return {**document, "proof": proof}


def _holder_digest(c: Certificate) -> str:
    return hashlib.sha256(c.holder.model_dump_json().encode()).hexdigest()


class Credentials:
    def __init__(self, svc: Any, public_url: str) -> None:
        from infra.services import ecert

        self.svc, self.base = svc, public_url.rstrip("/")
        self.authority = ecert.authority(svc)
        self.table = sql.Identifier(svc.schema, "credential_status")
        with svc.recorder.datastore.transaction(commit=True) as cur:
            serialise_ddl(cur)  # processes starting together
            cur.execute(sql.SQL(DDL).format(table=self.table))
            cur.execute("SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n"
                        " ON n.oid = t.relnamespace WHERE n.nspname = %s AND t.relname = 'credential_status'"
                        " AND c.conname = %s", (svc.schema, OLD_CONSTRAINT))  # fmt: skip
            if cur.fetchone():
                cur.execute(
                    sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(self.table, sql.Identifier(OLD_CONSTRAINT))
                )

    def key_url(self, serial: str) -> str:
        return f"{self.base}/esign/keys/{serial}"

    def status_url(self, institution_id: UUID) -> str:
        return f"{self.base}/esign/status/{institution_id}"

    def _index(self, c: Certificate) -> int:
        """The place in its institution's status list of a credential stating the certificate's holder as they are
        now: assigned once for that data, kept; corrected data gets a new place (see DDL)."""
        digest = _holder_digest(c)
        with self.svc.recorder.datastore.transaction(commit=True) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"credential-status:{c.institution_id}",))
            cur.execute(sql.SQL("SELECT status_index FROM {} WHERE certificate_id = %s AND holder_digest = %s")
                        .format(self.table), (c.id, digest))  # fmt: skip
            row = cur.fetchone()
            if row is not None:
                return int(row["status_index"])
            cur.execute(sql.SQL("SELECT coalesce(max(status_index) + 1, 0) AS next FROM {} WHERE institution_id = %s")
                        .format(self.table), (c.institution_id,))  # fmt: skip
            index = int(cur.fetchone()["next"])
            if index >= STATUS_BITS:
                raise RuntimeError("the institution's status list is full")
            cur.execute(sql.SQL("INSERT INTO {} (institution_id, status_index, certificate_id, holder_digest) "
                                "VALUES (%s, %s, %s, %s)").format(self.table),
                        (c.institution_id, index, c.id, digest))  # fmt: skip
            return index

    def issue(self, certificate_id: UUID) -> dict[str, Any]:
        """The signed credential of a certificate whose data is queryable nationally (who may have it is
        the caller's to decide: its institution's staff and its holder)."""
        c: Certificate = self.svc.certificate(certificate_id)
        institution: Institution = self.svc.get(Institution, c.institution_id, "institution")
        if c.revoked is not None:
            raise Conflict(f"certificate {c.number} was revoked on {c.revoked}: no credential")
        institution.check_active("sign credentials")  # 004 第十条; nothing is saved that a suspension could straddle
        if c.data_status is not DataStatus.QUERYABLE:
            raise Conflict(f"certificate {c.number}'s data is not queryable nationally now: no credential")
        serial = institution.signing_serial
        if serial is None:
            from infra.services import ecert

            serial = ecert.certify(self.svc, ecert.AUTHORITY, c.institution_id)
        key, _ = self.authority.signing_key(serial)
        index = self._index(c)
        document = {
            "@context": CONTEXTS,
            "id": f"{self.base}/verify/{c.number}",
            "type": ["VerifiableCredential", "OpenBadgeCredential"],
            "name": "职业技能等级证书",
            "issuer": {
                "id": f"{self.base}/esign/institutions/{c.institution_id}",
                "type": ["Profile"],
                "name": c.institution_name,
            },  # fmt: skip
            "validFrom": f"{c.issued_on.isoformat()}T00:00:00+08:00",
            "credentialSubject": {
                "type": ["AchievementSubject"],
                "name": c.holder.name,
                "identifier": [
                    {
                        "type": "IdentityObject",
                        "identityType": "identifier",
                        "hashed": False,
                        "identityHash": mask_id_number(c.holder.id_number),
                    }
                ],  # fmt: skip
                "achievement": {
                    "id": f"{self.base}/verify/{c.number}#achievement",
                    "type": ["Achievement"],
                    "achievementType": "Certificate",
                    "name": f"{c.occupation}{'（' + c.job + '）' if c.job else ''} {c.level.title}",
                    "criteria": {"narrative": "通过职业技能等级认定（评价机构依备案的评价范围组织）"},
                },
                "certificateNumber": c.number,
            },
            "credentialStatus": {
                "id": f"{self.status_url(c.institution_id)}#{index}",
                "type": "BitstringStatusListEntry",
                "statusPurpose": "revocation",
                "statusListIndex": str(index),
                "statusListCredential": self.status_url(c.institution_id),
            },
        }
        return sign(document, key, f"{self.key_url(serial)}#key", datetime.now(UTC).replace(microsecond=0))

    def status_list(self, institution_id: UUID) -> dict[str, Any]:
        """The institution's status list credential: bit i set when the credential at index i no longer
        stands (the certificate's data deleted, the certificate revoked, or its holder's data corrected since)."""
        institution: Institution = self.svc.get(Institution, institution_id, "institution")
        with self.svc.recorder.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT status_index, certificate_id, holder_digest FROM {} WHERE institution_id = %s")
                        .format(self.table), (institution_id,))  # fmt: skip
            rows = cur.fetchall()
        bits = bytearray(STATUS_BITS // 8)
        found = self.svc.get_many([r["certificate_id"] for r in rows])
        for r in rows:
            c = found.get(r["certificate_id"])
            if (c is None or c.data_status is DataStatus.DELETED or c.revoked is not None
                    or _holder_digest(c) != r["holder_digest"]):  # fmt: skip
                bits[r["status_index"] // 8] |= 0x80 >> (r["status_index"] % 8)  # index 0: the first byte's top bit
        encoded = "u" + base64.urlsafe_b64encode(gzip.compress(bytes(bits), mtime=0)).decode().rstrip("=")
        serial = institution.signing_serial
        if serial is None:
            raise LookupError(f"{institution.name} has no signing key")
        key, _ = self.authority.signing_key(serial)
        now = datetime.now(UTC).replace(microsecond=0)
        document = {
            "@context": [CONTEXTS[0]],
            "id": self.status_url(institution_id),
            "type": ["VerifiableCredential", "BitstringStatusListCredential"],
            "issuer": {"id": f"{self.base}/esign/institutions/{institution_id}", "name": institution.name},
            "validFrom": now.isoformat(),
            "credentialSubject": {
                "id": f"{self.status_url(institution_id)}#list",
                "type": "BitstringStatusList",
                "statusPurpose": "revocation",
                "encodedList": encoded,
            },  # fmt: skip
        }
        return sign(document, key, f"{self.key_url(serial)}#key", now)

    def key_document(self, serial: str) -> dict[str, Any]:
        """The verification method: the signing key as a Multikey, with the X.509 certificate beside it."""
        from domain.errors import NotFound

        with self.svc.recorder.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT certificate_pem, institution_id, revoked_at FROM {} WHERE serial = %s")
                        .format(self.authority.keys), (serial,))  # fmt: skip
            row = cur.fetchone()
        if row is None:
            raise NotFound(f"no signing key {serial}")
        cert = x509.load_pem_x509_certificate(row["certificate_pem"].encode())
        return {"@context": ["https://www.w3.org/ns/cid/v1"], "id": f"{self.key_url(serial)}#key", "type": "Multikey",
                "controller": f"{self.base}/esign/institutions/{row['institution_id']}",
                "publicKeyMultibase": multikey(cert), "revoked": row["revoked_at"].isoformat() if row["revoked_at"] else None,
                "x509CertificatePem": row["certificate_pem"]}  # fmt: skip
