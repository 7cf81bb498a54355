"""Electronic certificates (004 §11.1(7)): signed by the institution with a key the provincial authority
certified, verified offline with no database, by our CLI and by pyHanko's own validator; tampering,
another key's signature and a revoked key are each caught; online, a superseded file is told apart."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import algos, cms
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient

from domain.certificate import Correction, certificate_id
from domain.institution import Institution
from domain.model import Role
from domain.registration import AttachmentKind
from infra.api import create_app
from infra.services import ecert, samples
from tests.api import bearer
from tests.lifecycle import approve_correction, collect, queryable_certificates, staff
from tests.test_read_models import KEY, apply_live, bus_messages, conn  # noqa: F401

PUBLIC = "https://verify.example.cn"


def offline(tmp: Path, pdf: bytes, trust: Path, crl: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`skillcert verify-pdf` with no database configured: only the file and the trust material."""
    (tmp / "c.pdf").write_bytes(pdf)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLCERT_")}
    args = [sys.executable, "-m", "infra.cli", "verify-pdf", str(tmp / "c.pdf"), "--trust", str(trust), "--json"]
    return subprocess.run([*args, *(["--crl", str(crl)] if crl else [])], env=env, capture_output=True, text=True,
                          timeout=60, cwd=tmp)  # fmt: skip


@pytest.fixture
def issued(world, database_url, schema, tmp_path):
    iid, cids = queryable_certificates(world, 2)
    app = create_app(database_url, schema, pseudonym_key=KEY.hex(), public_url=PUBLIC, today=world.clock)
    with TestClient(app) as http:
        token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
        r = http.post(f"/certificates/{cids[0]}/electronic", headers=token)
        assert r.status_code == 201 and r.headers["content-type"] == "application/pdf", r.text
        (tmp_path / "authority.pem").write_bytes(http.get("/esign/authority.pem").content)
        (tmp_path / "crl.der").write_bytes(http.get("/esign/crl").content)
        yield iid, cids, r.content, http, token


def test_the_electronic_certificate_verifies_offline_and_in_pyhankos_validator(issued, world, tmp_path):
    iid, cids, pdf, http, token = issued
    cert = world.certificates.certificate(cids[0])
    institution = world.certificates.get(Institution, iid, "institution")
    assert cert.electronic is not None and cert.electronic.kind is AttachmentKind.ELECTRONIC_CERTIFICATE
    assert institution.signing_serial is not None  # certified when it was filed, as an event
    from cryptography import x509 as x509_

    signing = x509_.load_pem_x509_certificate(
        http.get(f"/esign/keys/{institution.signing_serial}").json()["x509CertificatePem"].encode())  # fmt: skip
    # The certificate sample with its seal, filed with the institution (004 §11.1(7)), as the centre sees it.
    centre = bearer(http.app.state.database_url, http.app.state.schema, Role.PROVINCIAL_CENTRE, "centre")
    filed = http.get(f"/institutions/{iid}/sample.pdf", headers=centre)
    assert filed.status_code == 200 and filed.content.startswith(b"%PDF"), filed.text
    shown = subprocess.run(
        ["pdftotext", "-", "-"], input=filed.content, capture_output=True, check=True
    ).stdout.decode()
    assert "样本" in shown and institution.name in shown.replace("\n", "")
    points = signing.extensions.get_extension_for_class(x509_.CRLDistributionPoints).value
    assert points[0].full_name[0].value.endswith("/esign/crl")  # where online validators find revocations
    text = subprocess.run(["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
    assert "电子证书" in text and "NO. " not in text and cert.number in text

    done = offline(tmp_path, pdf, tmp_path / "authority.pem", tmp_path / "crl.der")
    assert done.returncode == 0, done.stdout + done.stderr
    said = __import__("json").loads(done.stdout)
    assert said["good"] and said["number"] == cert.number and said["signer_serial"] == institution.signing_serial
    assert "深圳市技能人才评价示范中心" in said["signer"] and said["signed_at"]

    pyhanko = shutil.which("pyhanko") or str(Path(sys.executable).parent / "pyhanko")
    validated = subprocess.run([pyhanko, "sign", "validate", "--trust", str(tmp_path / "authority.pem"),
                                "--trust-replace", "--no-revocation-check", str(tmp_path / "c.pdf")],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert validated.returncode == 0 and ":INTACT:TRUSTED" in validated.stdout, validated.stdout + validated.stderr

    # The holder downloads the same file; another candidate and another institution do not.
    holder = bearer(http.app.state.database_url, http.app.state.schema, Role.CANDIDATE, "holder",
                    id_number=cert.holder.id_number, pseudonym_key=KEY.hex())  # fmt: skip
    assert http.get(f"/certificates/{cids[0]}/electronic.pdf", headers=holder).content == pdf
    other = bearer(http.app.state.database_url, http.app.state.schema, Role.CANDIDATE, "other",
                   id_number=world.certificates.certificate(cids[1]).holder.id_number, pseudonym_key=KEY.hex())  # fmt: skip
    assert http.get(f"/certificates/{cids[0]}/electronic.pdf", headers=other).status_code == 404
    stranger = bearer(http.app.state.database_url, http.app.state.schema, Role.INSTITUTION_STAFF, "x",
                      institution_id=certificate_id(cids[1]))  # fmt: skip
    assert http.get(f"/certificates/{cids[0]}/electronic.pdf", headers=stranger).status_code == 403


def test_a_changed_byte_another_keys_signature_and_a_revoked_key_are_each_caught(issued, world, tmp_path):
    iid, cids, pdf, http, token = issued
    trust, crl = tmp_path / "authority.pem", tmp_path / "crl.der"
    # One byte of the signed content changed (inside the page's content stream, not the signature).
    altered = bytearray(pdf)
    at = pdf.index(b"stream", 2000) + 40
    altered[at] ^= 0x01
    done = offline(tmp_path, bytes(altered), trust, crl)
    assert done.returncode == 1 and "altered" in done.stdout, done.stdout

    # The same page signed by a key no authority of ours certified (a forger's own CA).
    svc = world.certificates
    forged_key = ec.generate_private_key(ec.SECP256R1())
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "深圳市技能人才评价示范中心 电子证书签章")])
    now = dt.datetime.now(dt.UTC)
    self_signed = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(forged_key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
                   .not_valid_after(now + dt.timedelta(days=30)).sign(forged_key, hashes.SHA256()))  # fmt: skip
    unsigned = pdf[: pdf.index(b"%%EOF") + 5]  # pyHanko appended its signature as an incremental update
    forged = ecert.sign(unsigned, forged_key, self_signed, self_signed, "forged")
    done = offline(tmp_path, forged, trust, crl)
    assert done.returncode == 1 and "does not chain to the trusted authority" in done.stdout, done.stdout

    # The institution's key revoked: what it signed is no longer good once verifiers have the new CRL.
    institution = svc.get(Institution, iid, "institution")
    old = institution.signing_serial
    from domain.model import Actor

    new = ecert.revoke(svc, Actor(id="centre-wang", role=Role.PROVINCIAL_CENTRE), iid, old, "密钥遗失")
    assert new != old and svc.get(Institution, iid, "institution").signing_serial == new
    (tmp_path / "crl2.der").write_bytes(http.get("/esign/crl").content)
    done = offline(tmp_path, pdf, trust, tmp_path / "crl2.der")
    assert done.returncode == 1 and f"key {old} was revoked" in done.stdout, done.stdout
    from cryptography import x509 as x509_

    revoked_entry = x509_.load_der_x509_crl((tmp_path / "crl2.der").read_bytes())[0]
    assert (
        revoked_entry.extensions.get_extension_for_class(x509_.CRLReason).value.reason
        is x509_.ReasonFlags.key_compromise
    )
    # A revocation list the authority did not sign (an empty one, under its name, by another key) is refused.
    forged_crl = (x509_.CertificateRevocationListBuilder()
                  .issuer_name(x509_.load_pem_x509_certificate(trust.read_bytes()).subject)
                  .last_update(now).next_update(now + dt.timedelta(days=1)).sign(forged_key, hashes.SHA256()))  # fmt: skip
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "forged.der").write_bytes(forged_crl.public_bytes(serialization.Encoding.DER))
    done = offline(tmp_path, pdf, trust, tmp_path / "forged.der")
    assert done.returncode == 2 and "not signed by the trusted authority" in done.stderr, done.stdout + done.stderr
    # Reissued with the new key, the certificate verifies again.
    again = http.post(f"/certificates/{cids[0]}/electronic", headers=token).content
    assert offline(tmp_path, again, trust, tmp_path / "crl2.der").returncode == 0


def test_online_the_page_says_whether_the_file_is_still_the_certificates(issued, world, conn, tmp_path):  # noqa: F811
    iid, cids, pdf, http, token = issued
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()

    def check(content: bytes) -> dict:
        r = http.post("/verify/pdf", files={"file": ("c.pdf", content, "application/pdf")})
        assert r.status_code == 200, r.text
        return r.json()

    # Issued once: a second issue of an unchanged certificate is refused, the holder's file stays current.
    assert http.post(f"/certificates/{cids[0]}/electronic", headers=token).status_code == 409
    first = check(pdf)
    assert (first["signature"], first["status"], first["number"]) == (
        "good",
        "current",
        world.certificates.certificate(cids[0]).number,
    )
    holder = world.certificates.certificate(cids[0]).holder
    assert holder.id_number not in str(first) and holder.name not in str(first)  # nothing personal in the answer
    # A correction supersedes the file; the new one, issued after re-reporting, is current.
    svc = world.certificates
    svc.receive_forms(staff(iid), iid, 1, 5, "SH-1")
    svc.print(staff(iid), cids[0])

    collect(svc, iid, cids[0])
    svc.apply_for_correction(staff(iid), cids[0], Correction(name="更正名"), "录入错误",
                             samples.attachment(AttachmentKind.CORRECTION_EVIDENCE))  # fmt: skip
    approve_correction(svc, cids[0])
    assert check(pdf)["status"] == "superseded"
    assert http.post("/verify/pdf", files={"file": ("x.pdf", b"<html>", "application/pdf")}).status_code == 422
    unsigned = pdf[: pdf.index(b"%%EOF") + 5]
    assert check(unsigned)["signature"] == "unsigned" and check(unsigned)["status"] == "not_issued"
    altered = bytearray(pdf)
    altered[pdf.index(b"stream", 2000) + 40] ^= 1
    said = check(bytes(altered))
    assert (said["signature"], said["status"]) == ("not_good", "not_issued") and "chain" not in str(said["problems"])
    broken = http.post("/verify/pdf", files={"file": ("x.pdf", b"%PDF-1.7\n1 0 obj <<", "application/pdf")})
    assert broken.status_code == 422 and "not a readable PDF" in broken.json()["detail"]
    # What an outsider found: a signature pyHanko cannot take apart answered 500 to anyone, without a token.
    for change in (no_certificates, unknown_digest):
        said = check(with_cms(pdf, change))
        assert said["signature"] == "not_good" and "cannot be validated" in said["problems"][0], said


def with_cms(pdf: bytes, change: Callable[[cms.ContentInfo], None]) -> bytes:
    """The file with its signature's CMS changed in place: what the byte range covers stays as it was."""
    start = pdf.index(b"/Contents <") + len(b"/Contents <")
    end = pdf.index(b">", start)
    info = cms.ContentInfo.load(bytes.fromhex(pdf[start:end].decode()), strict=False)
    change(info)
    return pdf[:start] + info.dump(force=True).hex().encode().ljust(end - start, b"0") + pdf[end:]


def no_certificates(info: cms.ContentInfo) -> None:
    info["content"]["certificates"] = cms.CertificateSet([])


def unknown_digest(info: cms.ContentInfo) -> None:
    info["content"]["signer_infos"][0]["digest_algorithm"] = algos.DigestAlgorithm({"algorithm": "1.2.3.4.5"})


def test_two_requests_for_one_electronic_certificate_at_the_same_moment_record_one(world, database_url, schema):
    """A double click, or two staff: while one request signs the file, the other has issued it. The slower one is
    refused (409) rather than recorded as a second issue that would make the first file read as superseded."""
    from domain.errors import Conflict
    from infra.services import attachments as files
    from infra.services.certificates import Certificates

    iid, cids = queryable_certificates(world, 2)
    ecert.issue_electronic(world.certificates, staff(iid), cids[0], PUBLIC)  # the institution's key is certified
    other = Certificates(database_url, schema, today=world.clock)  # another API worker
    faster: list[bytes] = []
    keep = world.certificates.attachments.put

    def keep_once_the_other_is_done(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not faster:  # this request's file is signed; the other request issues its own meanwhile
            faster.append(ecert.issue_electronic(other, staff(iid, "staff-he"), cids[1], PUBLIC))
        return keep(*args, **kwargs)

    world.certificates.attachments.put = keep_once_the_other_is_done  # type: ignore[method-assign]
    try:
        with pytest.raises(Conflict):
            ecert.issue_electronic(world.certificates, staff(iid), cids[1], PUBLIC)
    finally:
        other.close()
    c = world.certificates.certificate(cids[1])
    assert c.electronic_issued == [files.digest(faster[0])] and c.electronic.sha256 == files.digest(faster[0])


def test_a_key_certified_while_another_request_certified_one_is_revoked_not_left_valid(world, database_url, schema):
    """Two requests certify a signing key for one institution at the same moment: the institution records one;
    the other key, recorded nowhere, is revoked at the authority rather than left valid."""
    import psycopg

    from domain.errors import Conflict
    from infra.services.certificates import Certificates

    iid, _ = queryable_certificates(world, 1)

    def valid_keys() -> set[str]:
        with psycopg.connect(database_url) as c:
            return {r[0] for r in c.execute(f'SELECT serial FROM "{schema}".esign_keys WHERE institution_id = %s'
                                            " AND revoked_at IS NULL", (iid,))}  # fmt: skip

    before = valid_keys()  # the key certified when the institution was registered
    other = Certificates(database_url, schema, today=world.clock)  # another API worker
    save_once = world.certificates.save_once
    faster: list[str] = []

    def save_once_after_the_other(*aggregates):  # type: ignore[no-untyped-def]
        if not faster:
            faster.append(ecert.certify(other, ecert.AUTHORITY, iid))
        return save_once(*aggregates)

    world.certificates.save_once = save_once_after_the_other  # type: ignore[method-assign]
    try:
        with pytest.raises(Conflict):
            ecert.certify(world.certificates, ecert.AUTHORITY, iid)
    finally:
        other.close()
    recorded = world.certificates.get(Institution, iid, "institution").signing_serial
    assert recorded == faster[0] and valid_keys() == before | {recorded}


def test_online_the_file_of_a_revoked_certificate_says_revoked(issued, world, conn):  # noqa: F811
    """A holder disqualified (001 承诺): the electronic certificate they hold is no longer the certificate's, and
    the check says why rather than 'superseded'."""
    iid, cids, pdf, http, token = issued
    cert = world.certificates.certificate(cids[0])
    assert http.get(f"/attachments/{cert.electronic.sha256}", headers=token).status_code == 200
    world.registrations.disqualify(staff(iid), cert.registration_id, "学历证书系伪造")
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    said = http.post("/verify/pdf", files={"file": ("c.pdf", pdf, "application/pdf")}).json()
    assert (said["signature"], said["status"]) == ("good", "revoked")
    assert http.post(f"/certificates/{cids[0]}/electronic", headers=token).status_code == 409
    # The void file is handed out no more, by its certificate or by its hash; the holder's photo still is.
    assert http.get(f"/certificates/{cids[0]}/electronic.pdf", headers=token).status_code == 404
    assert http.get(f"/attachments/{cert.electronic.sha256}", headers=token).status_code == 404
    assert http.get(f"/attachments/{cert.photo.sha256}", headers=token).status_code == 200


def test_an_institution_named_with_characters_newer_than_unicode_3_2_signs_certificates_that_verify(
    world, database_url, schema, tmp_path, monkeypatch
):
    """What an outside review found: validators compare certificate names after LDAP stringprep, which refuses a
    character Unicode 3.2 did not have. An institution named with a variation selector (葛 U+E0100) or an ideograph of
    extension C was registered and issued electronic certificates that pyHanko found no path to trust for, and that
    /verify/pdf called not good. Its key's certificate now names it as 3.2 knows it (the later character by its code),
    and its electronic certificates verify; the whole name stays the institution's."""
    from asn1crypto import x509 as asn1_x509

    name = "葛\U000e0100\U0002a700氏（深圳）职业技能评价中心"
    register = world.registrations.register_institution
    monkeypatch.setattr(world.registrations, "register_institution",
                        lambda actor, _name, *args, **kwargs: register(actor, name, *args, **kwargs))  # fmt: skip
    iid, cids = queryable_certificates(world, 1)
    institution = world.certificates.get(Institution, iid, "institution")
    assert institution.name == name
    app = create_app(database_url, schema, pseudonym_key=KEY.hex(), public_url=PUBLIC, today=world.clock)
    with TestClient(app) as http:
        token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
        r = http.post(f"/certificates/{cids[0]}/electronic", headers=token)
        assert r.status_code == 201, r.text
        (tmp_path / "authority.pem").write_bytes(http.get("/esign/authority.pem").content)
        pem = http.get(f"/esign/keys/{institution.signing_serial}").json()["x509CertificatePem"]
        subject = asn1_x509.Certificate.load(ecert.x509.load_pem_x509_certificate(pem.encode()).public_bytes(
            ecert.serialization.Encoding.DER)).subject  # fmt: skip
        assert subject.hashable and "U+2A700氏" in subject.native["organization_name"]  # stringprep takes it
        checked = http.post("/verify/pdf", files={"file": ("c.pdf", r.content, "application/pdf")})
        assert checked.status_code == 200 and checked.json()["signature"] == "good", checked.text
    (tmp_path / "c.pdf").write_bytes(r.content)
    pyhanko = shutil.which("pyhanko") or str(Path(sys.executable).parent / "pyhanko")
    validated = subprocess.run([pyhanko, "sign", "validate", "--trust", str(tmp_path / "authority.pem"),
                                "--trust-replace", "--no-revocation-check", str(tmp_path / "c.pdf")],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert validated.returncode == 0 and ":INTACT:TRUSTED" in validated.stdout, validated.stdout + validated.stderr


def test_an_institution_whose_name_cannot_print_is_refused_before_anything_is_stored_and_a_half_way_one_is_finished(
    world,
):
    """What an outside review found: a name no installed face has (extension G) answered 409 naming a certificate
    number, after the institution had been saved and given a key but no sample, and asking again with the same
    filing answered 'already registered': the filing was burnt. Now 422 naming the name, nothing stored; and a
    registration that stopped half-way (its sample not filed) is finished when asked again."""
    from domain.errors import InvalidInput
    from domain.institution import DeadlineProfile, Filing
    from tests.builders import ADMIN, SCOPE

    reg = world.registrations
    before = reg.recorder.max_notification_id()
    with pytest.raises(InvalidInput) as refused:
        reg.register_institution(ADMIN, "\U00030000氏职业技能评价中心", Filing(city_code="03", station_serial="777"),
                                 DeadlineProfile.S, SCOPE)  # fmt: skip
    assert refused.value.problems[0][0] == "name" and "U+30000" in refused.value.problems[0][1]
    assert reg.recorder.max_notification_id() == before

    filing = Filing(city_code="03", station_serial="778")
    stopped = ecert.file_sample
    ecert.file_sample = lambda *a, **k: (_ for _ in ()).throw(OSError("the disk filled up"))
    try:
        with pytest.raises(OSError):
            reg.register_institution(ADMIN, "深圳市半途技能评价中心", filing, DeadlineProfile.S, SCOPE)
    finally:
        ecert.file_sample = stopped
    iid = reg.register_institution(ADMIN, "深圳市半途技能评价中心", filing, DeadlineProfile.S, SCOPE)
    institution = reg.get(Institution, iid, "institution")
    assert institution.sample and institution.signing_serial and len(institution.signing) == 1  # one key, not two
    from domain.errors import Conflict

    with pytest.raises(Conflict, match="already registered"):  # whole now: a second registration is refused
        reg.register_institution(ADMIN, "深圳市半途技能评价中心", filing, DeadlineProfile.S, SCOPE)
