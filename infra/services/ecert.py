"""Electronic certificates (004 §11.1(7)): the certificate's page as a PDF marked 电子证书, signed by the
institution with a PAdES signature (pyHanko) that embeds its certificate and the authority's; verified
offline against the authority's certificate and its CRL, with no database.

The signed file is kept like an attachment (content-addressed, encrypted, erased with the data) and
named on the certificate by an event; a correction or a data deletion supersedes it, so a file that
verifies may still be one the certificate no longer stands behind: the online check says which.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certgen.certificate import CertificatePage, Unprintable, preflight, render
from domain.certificate import Certificate
from domain.errors import Conflict, InvalidInput
from domain.institution import Institution
from domain.model import Actor, Role
from domain.registration import Attachment, AttachmentKind
from infra.services import attachments as files
from infra.store.esign import Authority

SIGNED_BY_SYSTEM = "system:ecert"
# Institutions filed before electronic certificates existed are certified when they first issue one.
AUTHORITY = Actor(id="system:esign", role=Role.SYSTEM)


def authority(svc: Any) -> Authority:
    """The store's signing authority, made or loaded once per service."""
    if getattr(svc, "_esign", None) is None:
        from infra.settings import get_settings

        s = get_settings()
        svc._esign = Authority(svc.recorder.datastore, svc.schema, svc.mapper.cipher, s.esign_ca_cert, s.esign_ca_key)
    return svc._esign  # type: ignore[no-any-return]


def certify(svc: Any, actor: Actor, institution_id: UUID) -> str:
    """A new signing key for the institution, certified by the authority and recorded as an event."""
    institution: Institution = svc.get(Institution, institution_id, "institution")
    from infra.settings import get_settings

    crl_url = get_settings().public_url.rstrip("/") + "/esign/crl"
    issued = authority(svc).issue(institution.id, institution.filing.prefix, institution.name, crl_url)
    institution.record_signing_certificate(actor, issued.serial, issued.fingerprint, issued.certificate_pem,
                                           issued.not_after)  # fmt: skip
    try:
        svc.save_once(institution)
    except Conflict:
        # Another request changed the institution meanwhile (certified a key of its own, at the same moment): this
        # key is recorded nowhere a revocation could name it, so it is revoked now rather than left valid.
        authority(svc).revoke(issued.serial, "not recorded: the institution changed while the key was certified")
        raise
    return issued.serial


def sample_page(institution: Institution, public_url: str) -> CertificatePage:
    """The institution's certificate sample: its name and seal on the page, a sample holder."""
    from datetime import date

    from domain.levels import Level

    number = f"{institution.filing.prefix}000000000"
    return CertificatePage(number=number, institution=institution.name, issued_on=date.today(), holder_name="样本",
                           id_type="居民身份证", id_number="000000000000000000", occupation="（职业名称）", job=None,
                           level=Level.FIVE, form_serial=0, verify_url=f"{public_url.rstrip('/')}/verify/{number}")  # fmt: skip


def check_printable(institution: Institution, public_url: str) -> None:
    """Before an institution is stored: its name must print, in the body, under the seal and on it, or none of its
    certificates could (a character no installed face has, extension G's 𰀀). A 422 naming the field."""
    try:
        preflight([sample_page(institution, public_url)])
    except Unprintable as e:
        raise InvalidInput([("name", f"cannot be printed on a certificate: {str(e).partition(': ')[2]}")]) from None


def file_sample(svc: Any, actor: Actor, institution_id: UUID, public_url: str) -> str:
    """Render the institution's certificate sample and file it: kept like an attachment, recorded by its hash with
    the seal's lettering."""
    from certgen.seal import BOTTOM

    institution: Institution = svc.get(Institution, institution_id, "institution")
    pdf = render([sample_page(institution, public_url)])
    sha = files.digest(pdf)
    svc.attachments.put(pdf, sha, "application/pdf", SIGNED_BY_SYSTEM)
    institution.file_sample(actor, sha, f"{institution.name} {BOTTOM}")
    svc.save_once(institution)
    return sha


def revoke(svc: Any, actor: Actor, institution_id: UUID, serial: str, reason: str) -> str:
    """Revoke a signing key (an event, and the authority's CRL) and certify a new one."""
    institution: Institution = svc.get(Institution, institution_id, "institution")
    institution.revoke_signing_certificate(actor, serial, reason)
    svc.save_once(institution)
    authority(svc).revoke(serial, reason)
    return certify(svc, actor, institution_id)


def sign(pdf: bytes, key: Any, cert: x509.Certificate, ca: x509.Certificate, reason: str) -> bytes:
    """A PAdES signature over the whole file, embedding the signer's certificate and the authority's."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    der = serialization.Encoding.DER
    signer = signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(der)),
        signing_key=asn1_keys.PrivateKeyInfo.load(key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                                                    serialization.NoEncryption())),
        cert_registry=SimpleCertificateStore.from_certs([asn1_x509.Certificate.load(ca.public_bytes(der))]),
    )  # fmt: skip
    meta = signers.PdfSignatureMetadata(field_name="Signature1", subfilter=fields.SigSeedSubFilter.PADES,
                                        md_algorithm="sha256", reason=reason, location="广东")  # fmt: skip
    out = signers.sign_pdf(IncrementalPdfFileWriter(io.BytesIO(pdf)), meta, signer=signer)
    return out.getvalue()


def issue_electronic(svc: Any, actor: Actor, certificate_id: UUID, public_url: str) -> bytes:
    """Render, sign and record the electronic certificate; answers the signed PDF."""
    from infra.services.printing import holder_photos

    c: Certificate = svc.certificate(certificate_id)
    c_institution: Institution = svc.get(Institution, c.institution_id, "institution")
    c_institution.check_active("sign electronic certificates")  # 004 第十条; before the signing, and again after it
    serial = c_institution.signing_serial or certify(svc, AUTHORITY, c.institution_id)
    c.check_electronic_due(serial)  # before the signing, which takes a while
    photo = holder_photos(svc, [c])[c.id]
    page = dataclasses.replace(CertificatePage.of(c, 0, public_url, photo), electronic=True)
    key, cert = authority(svc).signing_key(serial)
    signed = sign(render([page]), key, cert, authority(svc).certificate, f"职业技能等级证书 {c.number}")
    sha = files.digest(signed)
    svc.attachments.put(signed, sha, "application/pdf", SIGNED_BY_SYSTEM)
    document = Attachment(kind=AttachmentKind.ELECTRONIC_CERTIFICATE, file_name=f"{c.number}.pdf", sha256=sha)
    # Recorded on the certificate the file was made from: if another request issued one, or a correction changed
    # what the file shows, meanwhile, its version has moved and this one is refused (409). Recorded on a copy
    # loaded again, two requests at once both stood, the first one's file then verifying as superseded.
    c.issue_electronic(actor, document, serial)
    # Recorded under the institution's lock, shared: a suspension saved while this signed refuses it, and none is
    # saved meanwhile. Only the recording: held through the signing, each signing took one of the pool's few lock
    # connections for as long, and the file's storing waited for another.
    with svc.evaluating(c.institution_id, "sign electronic certificates"):
        svc.save_once(c)
    return signed


class BadTrustMaterial(ValueError):
    """The trust anchor or the revocation list given to verify is not what it should be."""


@dataclass
class Checked:
    """What a verifier can say of a PDF with no database: who signed it, when, whether it is intact,
    whether the signer's key chains to the trusted authority and is not revoked."""

    signed: bool
    readable: bool = True
    intact: bool = False
    whole_file: bool = False  # nothing was added or changed after signing
    trusted: bool = False
    revoked: bool = False
    revocation_checked: bool = False
    signer: str | None = None
    signer_serial: str | None = None
    signed_at: datetime | None = None
    number: str | None = None  # the certificate number the file names (its Subject)
    problems: list[str] = field(default_factory=list)

    @property
    def good(self) -> bool:
        return self.signed and self.intact and self.whole_file and self.trusted and not self.revoked


def verify(content: bytes, trust_pem: bytes, crl_der: bytes | None = None) -> Checked:
    """Offline: the file's signature against the authority's certificate (and its CRL, when given)."""
    import logging

    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext

    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)  # its tracebacks for an untrusted chain: ours says it
    logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)
    try:
        anchor = x509.load_pem_x509_certificate(trust_pem)
    except ValueError:
        raise BadTrustMaterial("the trust anchor is not a PEM certificate") from None
    if crl_der is not None:
        try:
            revocations = x509.load_der_x509_crl(crl_der)
        except ValueError:
            raise BadTrustMaterial("the revocation list is not a DER CRL") from None
        if revocations.issuer != anchor.subject or not revocations.is_signature_valid(anchor.public_key()):
            raise BadTrustMaterial("the revocation list is not signed by the trusted authority: a forged or "
                                   "another authority's CRL")  # fmt: skip
    try:
        reader = PdfFileReader(io.BytesIO(content))
        signatures = reader.embedded_signatures
        number = str(reader.trailer["/Info"].get("/Subject") or "") or None
    except Exception as e:  # noqa: BLE001 - a file that is no PDF is simply not a signed certificate
        return Checked(False, readable=False, problems=[f"not a readable PDF ({type(e).__name__}: {e})"[:300]])
    if not signatures:
        return Checked(False, number=number, problems=["the file carries no signature"])
    root = asn1_x509.Certificate.load(anchor.public_bytes(serialization.Encoding.DER))
    context = ValidationContext(
        trust_roots=[root], crls=[asn1_crl.CertificateList.load(crl_der)] if crl_der else [], allow_fetching=False,
        revocation_mode="hard-fail" if crl_der else "soft-fail",
    )  # fmt: skip
    from pyhanko.sign.validation.status import SignatureCoverageLevel

    try:
        status = validate_pdf_signature(signatures[-1], context)
        result = Checked(
            True, intact=status.intact and status.valid, whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
            trusted=status.trusted, revocation_checked=crl_der is not None, number=number,
            signer=status.signing_cert.subject.human_friendly, signer_serial=format(status.signing_cert.serial_number, "x"),
            signed_at=status.signer_reported_dt,
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a signature pyHanko cannot even take apart (no signer's certificate, an
        # unknown digest algorithm: AttributeError, SignatureValidationError, ...) is no good signature, said so
        return Checked(
            True, number=number, problems=[f"the signature cannot be validated ({type(e).__name__}: {e})"[:300]]
        )
    if crl_der:
        revoked = {r["user_certificate"].native for r in asn1_crl.CertificateList.load(crl_der)["tbs_cert_list"]
                   ["revoked_certificates"] or []}  # fmt: skip
        result.revoked = status.signing_cert.serial_number in revoked
    if not result.intact:
        result.problems.append("the signed content was altered, or the signature does not match it")
    if not result.whole_file:
        result.problems.append("something was added or changed after signing")
    if result.intact and not result.trusted and not result.revoked:
        result.problems.append("the signer's certificate does not chain to the trusted authority")
    if result.revoked:
        result.problems.append(f"the signer's key {result.signer_serial} was revoked")
    return result
