"""The provincial centre's signing authority and the institutions' signing keys (004 §11.1(7): an
electronic certificate has the same force as the paper one).

The authority is an X.509 CA: configured (SKILLCERT_ESIGN_CA_CERT and SKILLCERT_ESIGN_CA_KEY, PEM files,
for an existing CA in production) or made once by the system for a local run. Filing an institution
certifies a key of its own (ECDSA P-256) for document signing, its subject naming the institution and
its filing prefix. Private keys, the authority's included when the system made it, are kept in the
database encrypted under the store's data key, like the installation's other secrets. A revoked key is
listed in the authority's CRL, which a verifier offline is given beside the authority's certificate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from eventsourcing.persistence import Cipher
from psycopg import sql

from domain.text import prints_nothing

AUTHORITY_NAME = "广东省职业技能鉴定指导中心 电子证书签发机构"
KEY_YEARS = 5
DDL = """
CREATE TABLE IF NOT EXISTS {authority} (
    id int PRIMARY KEY CHECK (id = 1),
    certificate_pem text NOT NULL,
    key bytea NOT NULL                  -- the PEM private key, encrypted under the store's data key
);
CREATE TABLE IF NOT EXISTS {keys} (
    serial text PRIMARY KEY,            -- hex, as the events name it
    institution_id uuid NOT NULL,
    certificate_pem text NOT NULL,
    key bytea NOT NULL,                 -- encrypted
    issued_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    reason text
);
"""


@dataclass(frozen=True)
class Issued:
    serial: str
    fingerprint: str
    certificate_pem: str
    not_after: dt.date


def x509_text(name: str) -> str:
    """The institution's name as a certificate's subject may hold it. Validators compare names after LDAP stringprep,
    which refuses a character Unicode 3.2 did not have: pyHanko found no path to the trust anchor for a signer named
    with a variation selector (葛 U+E0100) or an ideograph of extension C and later, and every electronic certificate
    of such an institution verified as not good. Selectors and joiners are left out (the base character stays);
    a later character is written as its code, U+2A700."""
    out = []
    for ch in name:
        if not prints_nothing(ch):
            out.append(f"U+{ord(ch):04X}" if unicodedata.ucd_3_2_0.category(ch) == "Cn" else ch)
    return "".join(out)


def organisation(name: str) -> str:
    """The certificate's organisation: the institution's name (x509_text), within RFC 5280's 64 characters."""
    text = x509_text(name)
    return text if len(text) <= 64 else text[:63] + "…"


def common_name(name: str) -> str:
    """The signing certificate's common name, '<institution> 电子证书签章', within X.509's 64 bytes (cryptography refuses
    more, and an institution of 16 Chinese characters or more could not be registered: its key was certified after it
    was saved). A longer name is cut, marked with …"""
    suffix, name = " 电子证书签章", x509_text(name)
    if len(f"{name}{suffix}".encode()) <= 64:
        return f"{name}{suffix}"
    while len(f"{name}…{suffix}".encode()) > 64:
        name = name[:-1]
    return f"{name}…{suffix}"


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


class Authority:
    def __init__(self, datastore: Any, schema: str, cipher: Cipher, ca_cert: Path | None = None,
                 ca_key: Path | None = None) -> None:  # fmt: skip
        self.datastore, self.cipher = datastore, cipher
        self.table, self.keys = sql.Identifier(schema, "esign_authority"), sql.Identifier(schema, "esign_keys")
        with datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL(DDL).format(authority=self.table, keys=self.keys))
        if ca_cert and ca_key:
            self.certificate = x509.load_pem_x509_certificate(ca_cert.read_bytes())
            self.key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
        else:
            self.certificate, self.key = self._made_once()

    def _made_once(self) -> tuple[x509.Certificate, Any]:
        with self.datastore.transaction(commit=True) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('skillcert-esign-authority'))")
            cur.execute(sql.SQL("SELECT certificate_pem, key FROM {} WHERE id = 1").format(self.table))
            row = cur.fetchone()
            if row is not None:
                return (x509.load_pem_x509_certificate(row["certificate_pem"].encode()),
                        serialization.load_pem_private_key(self.cipher.decrypt(bytes(row["key"])), password=None))  # fmt: skip
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, AUTHORITY_NAME),
                              x509.NameAttribute(NameOID.COMMON_NAME, "skillcert signing authority")])  # fmt: skip
            now = dt.datetime.now(dt.UTC)
            cert = (
                x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                .not_valid_after(now + dt.timedelta(days=365 * 20))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256())
            )  # fmt: skip
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())  # fmt: skip
            cur.execute(sql.SQL("INSERT INTO {} VALUES (1, %s, %s)").format(self.table),
                        (_pem(cert), self.cipher.encrypt(pem)))  # fmt: skip
            return cert, key

    @property
    def certificate_pem(self) -> str:
        return _pem(self.certificate)

    def issue(self, institution_id: UUID, prefix: str, name: str, crl_url: str | None = None) -> Issued:
        """A new signing key for the institution, certified for document signing."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation(name)),
                             x509.NameAttribute(NameOID.SERIAL_NUMBER, prefix),
                             x509.NameAttribute(NameOID.COMMON_NAME, common_name(name))])  # fmt: skip
        builder = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(self.certificate.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365 * KEY_YEARS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                                  x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.12")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )  # fmt: skip
        if crl_url:  # where an online validator (pyHanko's, Acrobat) finds the revocation list by itself
            builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(crl_url)], relative_name=None, reasons=None,
                crl_issuer=None)]), critical=False)  # fmt: skip
        cert = builder.sign(self.key, hashes.SHA256())
        serial = format(cert.serial_number, "x")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("INSERT INTO {} (serial, institution_id, certificate_pem, key) VALUES (%s, %s, %s, %s)")
                        .format(self.keys), (serial, institution_id, _pem(cert), self.cipher.encrypt(pem)))  # fmt: skip
        return Issued(serial, fingerprint(cert), _pem(cert), cert.not_valid_after_utc.date())

    def signing_key(self, serial: str) -> tuple[Any, x509.Certificate]:
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT certificate_pem, key, revoked_at FROM {} WHERE serial = %s").format(self.keys),
                        (serial,))  # fmt: skip
            row = cur.fetchone()
        if row is None or row["revoked_at"] is not None:
            raise LookupError(f"no signing key {serial} that is not revoked")
        return (serialization.load_pem_private_key(self.cipher.decrypt(bytes(row["key"])), password=None),
                x509.load_pem_x509_certificate(row["certificate_pem"].encode()))  # fmt: skip

    def revoke(self, serial: str, reason: str) -> None:
        with self.datastore.transaction(commit=True) as cur:
            cur.execute(sql.SQL("UPDATE {} SET revoked_at = now(), reason = %s WHERE serial = %s AND revoked_at IS NULL")
                        .format(self.keys), (reason, serial))  # fmt: skip

    def crl(self) -> bytes:
        """The authority's certificate revocation list (DER), listing every revoked signing key."""
        with self.datastore.transaction(commit=False) as cur:
            cur.execute(sql.SQL("SELECT serial, revoked_at, reason FROM {} WHERE revoked_at IS NOT NULL")
                        .format(self.keys))  # fmt: skip
            revoked = cur.fetchall()
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.certificate.subject).last_update(now)
                   .next_update(now + dt.timedelta(days=7)))  # fmt: skip
        for r in revoked:
            lost = any(
                w in (r["reason"] or "").lower() for w in ("compromis", "lost", "stolen", "泄露", "遗失", "被盗")
            )
            reason = x509.ReasonFlags.key_compromise if lost else x509.ReasonFlags.superseded
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(int(r["serial"], 16)).revocation_date(r["revoked_at"])
                .add_extension(x509.CRLReason(reason), critical=False).build()
            )  # fmt: skip
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
