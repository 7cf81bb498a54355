"""The certificate as a Verifiable Credential, checked by a verifier that imports nothing of ours: JSON
canonicalised by hand (RFC 8785 for this JSON), the ecdsa-jcs-2019 proof, the Multikey the proof names,
and the Bitstring Status List, itself a signed credential, each fetched from the URLs the credential gives."""

from __future__ import annotations

import base64
import copy
import gzip
import hashlib
import json

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from fastapi.testclient import TestClient

from domain.certificate import Correction
from domain.model import Role
from domain.registration import AttachmentKind
from infra.api import create_app
from infra.services import samples
from tests.api import bearer
from tests.lifecycle import ASSOCIATION, CENTRE, approve_correction, collect, queryable_certificates, staff
from tests.test_read_models import KEY

PUBLIC = "https://verify.example.cn"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


# ---- the outsider's verifier: standard library and `cryptography` only --------------------------------
def canonical(value) -> bytes:  # type: ignore[no-untyped-def]
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def unbase58(text: str) -> bytes:
    n = 0
    for ch in text:
        n = n * 58 + B58.index(ch)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def proof_holds(document: dict, fetch) -> bool:  # type: ignore[no-untyped-def]
    proof = dict(document["proof"])
    assert proof["type"] == "DataIntegrityProof" and proof["cryptosuite"] == "ecdsa-jcs-2019"
    method = fetch(proof["verificationMethod"].split("#")[0])
    if method.get("revoked"):
        return False
    key_bytes = unbase58(method["publicKeyMultibase"][1:])
    assert key_bytes[:2] == b"\x80\x24"  # p256-pub
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes[2:])
    signature = unbase58(proof.pop("proofValue")[1:])
    unsigned = {k: v for k, v in document.items() if k != "proof"}
    config = {**proof, "@context": unsigned["@context"]}
    data = hashlib.sha256(canonical(config)).digest() + hashlib.sha256(canonical(unsigned)).digest()
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        return True
    except InvalidSignature:
        return False


def revoked(document: dict, fetch) -> bool:  # type: ignore[no-untyped-def]
    entry = document["credentialStatus"]
    status = fetch(entry["statusListCredential"])
    assert proof_holds(status, fetch), "the status list's own proof fails"
    encoded = status["credentialSubject"]["encodedList"]
    bits = gzip.decompress(base64.urlsafe_b64decode(encoded[1:] + "=" * (-len(encoded[1:]) % 4)))
    index = int(entry["statusListIndex"])
    return bool(bits[index // 8] & (0x80 >> (index % 8)))


# ---- the test ----------------------------------------------------------------------------------------------
def test_an_outsider_verifies_the_credential_and_its_status_through_correction_and_deletion(world, database_url,
                                                                                              schema):  # fmt: skip
    iid, cids = queryable_certificates(world, 2)
    svc = world.certificates
    app = create_app(database_url, schema, pseudonym_key=KEY.hex(), public_url=PUBLIC, today=world.clock)
    with TestClient(app) as http:

        def fetch(url: str) -> dict:
            assert url.startswith(PUBLIC), url
            r = http.get(url[len(PUBLIC) :])
            assert r.status_code == 200, (url, r.text)
            return r.json()

        holders = [svc.certificate(c).holder for c in cids]
        tokens = [bearer(database_url, schema, Role.CANDIDATE, f"h{i}", id_number=h.id_number, pseudonym_key=KEY.hex())
                  for i, h in enumerate(holders)]  # fmt: skip
        vcs = [http.get(f"/certificates/{c}/credential", headers=t).json() for c, t in zip(cids, tokens, strict=True)]
        for vc, c in zip(vcs, cids, strict=True):
            assert (
                "VerifiableCredential" in vc["type"]
                and vc["credentialSubject"]["certificateNumber"] == svc.certificate(c).number
            )
            assert proof_holds(vc, fetch) and not revoked(vc, fetch)
            assert holders[0].id_number not in json.dumps(vc, ensure_ascii=False)  # the ID number only masked
        assert vcs[0]["credentialStatus"]["statusListIndex"] != vcs[1]["credentialStatus"]["statusListIndex"]
        assert http.get(f"/certificates/{cids[0]}/credential", headers=tokens[1]).status_code == 404

        forged = copy.deepcopy(vcs[0])
        forged["credentialSubject"]["achievement"]["name"] = "人工智能训练师 一级/高级技师"
        assert not proof_holds(forged, fetch)

        # A correction makes the first credential stale; a deletion ends the second. The list says so.
        staff_token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
        svc.receive_forms(staff(iid), iid, 1, 5, "SH-1")

        svc.print(staff(iid), cids[0])
        collect(svc, iid, cids[0])
        svc.apply_for_correction(staff(iid), cids[0], Correction(name="更正名"), "录入错误",
                                 samples.attachment(AttachmentKind.CORRECTION_EVIDENCE))  # fmt: skip
        approve_correction(svc, cids[0])
        svc.record_holder_commitment(staff(iid), cids[1], samples.attachment(AttachmentKind.HOLDER_COMMITMENT))
        svc.check_deletion(ASSOCIATION, cids[1], queryable_nationally=True)
        svc.delete_data(staff(iid), cids[1], "持证人放弃证书相关待遇")
        assert revoked(vcs[0], fetch) and revoked(vcs[1], fetch)
        assert proof_holds(vcs[0], fetch)  # still a genuine signature: what changed is its status
        # Not queryable again yet after the correction: no new credential until the data is re-reported.
        assert http.get(f"/certificates/{cids[0]}/credential", headers=staff_token).status_code == 409
        # Re-reported and queryable again: a credential of the corrected data, at a place of its own in the list.
        # The first one, which states the old name, stays revoked.
        svc.report_data(staff(iid), [cids[0]])
        svc.accept_data(CENTRE, [cids[0]])
        svc.make_queryable(CENTRE, [cids[0]])
        corrected = http.get(f"/certificates/{cids[0]}/credential", headers=staff_token).json()
        assert corrected["credentialSubject"]["name"] == "更正名" and vcs[0]["credentialSubject"]["name"] != "更正名"
        assert corrected["credentialStatus"]["statusListIndex"] not in {
            vc["credentialStatus"]["statusListIndex"] for vc in vcs
        }
        assert proof_holds(corrected, fetch) and not revoked(corrected, fetch)
        assert revoked(vcs[0], fetch) and revoked(vcs[1], fetch)
        again = http.get(f"/certificates/{cids[0]}/credential", headers=staff_token).json()
        assert again["credentialStatus"] == corrected["credentialStatus"]  # asked again: the same place


def test_a_status_table_from_before_corrections_took_new_places_is_brought_up_to_date(world, database_url, schema):
    """Tables made when a certificate had one place whatever its data: the constraint that kept it to one goes."""
    import psycopg

    from infra.services.credentials import Credentials

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{schema}".credential_status (institution_id uuid NOT NULL, status_index integer'
                     " NOT NULL, certificate_id uuid NOT NULL UNIQUE, holder_digest text NOT NULL, issued_at timestamptz"
                     " NOT NULL DEFAULT now(), PRIMARY KEY (institution_id, status_index))")  # fmt: skip
        Credentials(world.certificates, PUBLIC)
        constraints = {r[0] for r in conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass", (f'"{schema}".credential_status',))}  # fmt: skip
        indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
    assert "credential_status_certificate_id_key" not in constraints and "credential_status_stated" in indexes
