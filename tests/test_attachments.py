"""Attachments are files: sniffed, limited, encrypted at rest, referred to only when held, read
within scope, erased with the certificate's data; the holder's photo is checked and printed."""

from __future__ import annotations

import io
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageChops, ImageDraw, ImageStat

from domain.certificate import Correction, certificate_id
from domain.errors import Conflict, InvalidInput
from domain.model import Role
from domain.registration import Attachment, AttachmentKind
from infra.api import create_app
from infra.services import samples
from infra.services.attachments import digest
from infra.services.printing import print_certificates
from infra.store.attachments import Attachments, DirectoryBlobs
from tests.api import as_json, bearer
from tests.builders import candidate, resident_id, setup_plan, working_years_form
from tests.lifecycle import ASSOCIATION, collect, queryable_certificates, staff
from tests.test_read_models import KEY, conn  # noqa: F401  (the fixture)

PUBLIC = "https://verify.example.cn"


def jpeg(size=(354, 496), background="white", colour=(40, 80, 160), mode="RGB") -> bytes:
    image = Image.new("RGB", size, background)
    w, h = size
    ImageDraw.Draw(image).ellipse((w // 6, h // 2, 5 * w // 6, h + h // 4), fill=colour)
    image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def http(world, database_url, schema):
    app = create_app(database_url, schema, pseudonym_key=KEY.hex(), public_url=PUBLIC, today=world.clock)
    with TestClient(app) as client:
        yield client


def upload(http, token, content: bytes, name: str = "scan.pdf", kind: str | None = None):
    return http.post("/attachments" + (f"?kind={kind}" if kind else ""), headers=token,
                     files={"file": (name, content, "application/octet-stream")})  # fmt: skip


def stored_events(world) -> int:
    return world.registrations.recorder.max_notification_id() or 0


def test_uploads_are_sniffed_from_their_bytes_and_bad_files_refused_naming_the_problem(world, http, database_url,
                                                                                          schema):  # fmt: skip
    iid, _, _ = setup_plan(world.registrations)
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    pdf = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    r = upload(http, token, pdf, "looks-like.jpg")  # the name lies; the bytes decide
    assert r.status_code == 201 and r.json()["media_type"] == "application/pdf" and r.json()["sha256"] == digest(pdf)
    png = io.BytesIO()
    Image.new("RGB", (40, 40), "red").save(png, "PNG")
    assert upload(http, token, png.getvalue(), "x.pdf").json()["media_type"] == "image/png"

    refused = {
        "text": b"name,id\n\xe5\xbc\xa0\xe4\xb8\x89,1\n",
        "empty": b"",
        "truncated jpeg": jpeg()[:400],
        "cut pdf": b"%PDF-1.4\n" + b"0" * 5000,
        "html in disguise": b"<html><script>alert(1)</script>",
    }
    for what, content in refused.items():
        r = upload(http, token, content)
        assert r.status_code == 422, (what, r.text)
        assert r.json()["errors"][0]["field"] == "file", what
    # A decompression bomb: 20,000 x 20,000 pixels of one colour, a few hundred KB as PNG.
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, "PNG")
    r = upload(http, token, bomb.getvalue(), "bomb.png")
    assert r.status_code == 422 and "pixels" in r.json()["detail"], r.text
    r = upload(http, token, b"%PDF-1.4\n" + b"0" * (11 * 1024 * 1024) + b"%%EOF")
    assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"
    assert "(10,551,296 bytes)" in r.json()["detail"], r.text  # the upload route's own limit, not the app's
    assert r.json()["errors"] == [{"field": "body", "message": r.json()["detail"]}]  # as every problem names its field
    # Who may upload: staff and candidates, not an auditor.
    auditor = bearer(database_url, schema, Role.AUDITOR, "auditor-sun")
    assert upload(http, auditor, pdf).status_code == 403


def test_the_holder_photo_rules_colour_white_background_proportions_resolution(world, http, database_url, schema):
    iid, _, _ = setup_plan(world.registrations)
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    r = upload(http, token, samples.photo(1), "photo.jpg", kind="photo")
    assert r.status_code == 201 and r.json()["photo"] and (r.json()["width"], r.json()["height"]) == (354, 496)
    bad = {
        "grey-scale": (jpeg(mode="L"), "colour"),
        "blue background": (jpeg(background=(60, 120, 220), colour=(200, 40, 40)), "white"),
        "square": (jpeg(size=(413, 413)), "proportions"),
        "too small": (jpeg(size=(150, 210)), "at least 295"),
        "a PDF": (b"%PDF-1.4\n%%EOF\n", "not a PDF"),
    }
    for what, (content, says) in bad.items():
        r = upload(http, token, content, "p.jpg", kind="photo")
        assert r.status_code == 422 and says in r.json()["detail"], (what, r.text)


def test_events_refer_only_to_held_files_and_a_photo_only_to_a_checked_one(world, http, database_url, schema):
    iid, _, code = setup_plan(world.registrations)
    unknown = Attachment(kind=AttachmentKind.DIPLOMA, file_name="毕业证.pdf", sha256="ab" * 32)
    form = working_years_form(1)
    form = form.model_copy(update={"attachments": [*form.attachments[1:], unknown]})
    before = stored_events(world)
    with pytest.raises(InvalidInput, match="is not held by the store"):
        world.registrations.register(candidate(1), code, form)
    assert stored_events(world) == before
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    r = http.post("/registrations", headers=token, json={"registration_code": code, "form": as_json(form)})
    assert r.status_code == 422 and "ababababab" in r.json()["detail"] and "upload it first" in r.json()["detail"], (
        r.text
    )
    assert stored_events(world) == before
    # Uploaded, the same form goes in.
    content = b"%PDF-1.4\n% diploma of candidate 1\n%%EOF\n"
    held = upload(http, token, content).json()
    form = form.model_copy(update={"attachments": [*form.attachments[:-1], unknown.model_copy(
        update={"sha256": held["sha256"]})]})  # fmt: skip
    assert http.post("/registrations", headers=token, json={"registration_code": code, "form": as_json(form)}).status_code == 201  # fmt: skip


def test_a_document_is_no_photo_until_it_passed_the_photo_rules(world, http, database_url, schema):
    iid, cids = queryable_certificates(world, 1)
    cert_staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    held = upload(http, cert_staff, b"%PDF-1.4\n% a scan\n%%EOF\n").json()
    not_checked = Attachment(kind=AttachmentKind.PHOTO, file_name="p.pdf", sha256=held["sha256"])
    r = http.put(f"/certificates/{cids[0]}/photo", headers=cert_staff, json={"photo": as_json(not_checked)})
    assert r.status_code == 422 and "not uploaded as a photo" in r.json()["detail"], r.text
    r = http.put(f"/certificates/{cids[0]}/photo", headers=cert_staff, json={
        "photo": as_json(samples.attachment(AttachmentKind.DIPLOMA))})  # fmt: skip
    assert r.status_code == 422 and "must be a photo" in r.json()["detail"]


def test_files_are_encrypted_at_rest_and_read_only_within_scope(world, http, database_url, schema, conn):  # noqa: F811
    iid, cids = queryable_certificates(world, 2)
    svc = world.certificates
    content = b"%PDF-1.4\n% correction evidence: 1990-01-01 birth certificate of holder\n%%EOF\n"
    mine = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    sha = upload(http, mine, content).json()["sha256"]
    blob = conn.execute(f'SELECT content FROM "{schema}".attachment_blobs WHERE sha256 = %s', (sha,)).fetchone()[0]
    assert b"birth certificate" not in bytes(blob) and len(blob) > len(content)
    assert svc.attachments.content(sha) == content

    evidence = Attachment(kind=AttachmentKind.CORRECTION_EVIDENCE, file_name="出生证明.pdf", sha256=sha)
    svc.receive_forms(staff(iid), iid, 1, 5, "SH-1")
    svc.print(staff(iid), cids[0])
    from domain.certificate import Correction

    collect(svc, iid, cids[0])
    svc.apply_for_correction(staff(iid), cids[0], Correction(name="更正名"), "录入错误", evidence)

    holder = svc.certificate(cids[0]).holder.id_number
    readers = {
        "uploader": mine,
        "the holder": bearer(database_url, schema, Role.CANDIDATE, "holder", id_number=holder, pseudonym_key=KEY.hex()),
        "the centre": bearer(database_url, schema, Role.PROVINCIAL_CENTRE, "centre"),
        "HR of the filing region": bearer(database_url, schema, Role.HR_DEPARTMENT, "hr", jurisdiction="03"),
    }
    from tests.test_read_models import apply_live, bus_messages

    apply_live(conn, bus_messages(world.registrations))  # the catalogue tells HR which institutions are its
    conn.commit()
    for who, token in readers.items():
        r = http.get(f"/attachments/{sha}", headers=token)
        assert r.status_code == 200 and r.content == content, (who, r.text)
        assert r.headers["content-type"] == "application/pdf" and r.headers["x-content-type-options"] == "nosniff"
    strangers = {
        "another institution's staff": bearer(
            database_url, schema, Role.INSTITUTION_STAFF, "other", institution_id=certificate_id(cids[1])
        ),  # fmt: skip
        "another candidate": bearer(
            database_url,
            schema,
            Role.CANDIDATE,
            "c2",
            id_number=resident_id("440305", date(1990, 1, 1), 11),
            pseudonym_key=KEY.hex(),
        ),
        "HR of another region": bearer(database_url, schema, Role.HR_DEPARTMENT, "hr-gz", jurisdiction="01"),
    }
    for who, token in strangers.items():
        assert http.get(f"/attachments/{sha}", headers=token).status_code == 404, who
    assert http.get(f"/attachments/{sha}", headers=bearer(database_url, schema, Role.AUDITOR, "a")).status_code == 403


def test_deleting_a_certificates_data_erases_the_files_only_it_referred_to(world, database_url, schema, conn):  # noqa: F811
    iid, cids = queryable_certificates(world, 2)
    svc = world.certificates
    own = b"%PDF-1.4\n% commitment signed by holder 1\n%%EOF\n"
    svc.attachments.put(own, digest(own), "application/pdf", staff(iid).id, None, iid)
    commitment = Attachment(kind=AttachmentKind.HOLDER_COMMITMENT, file_name="承诺书.pdf", sha256=digest(own))
    svc.record_holder_commitment(staff(iid), cids[0], commitment)
    shared = samples.attachment(AttachmentKind.DIPLOMA)  # the sample diploma both registrations refer to
    photo = svc.certificate(cids[0]).photo
    evidence_bytes = b"%PDF-1.4\n% the holder's birth certificate\n%%EOF\n"
    svc.attachments.put(evidence_bytes, digest(evidence_bytes), "application/pdf", staff(iid).id, None, iid)
    evidence = Attachment(kind=AttachmentKind.CORRECTION_EVIDENCE, file_name="出生证明.pdf",
                          sha256=digest(evidence_bytes))  # fmt: skip
    svc.receive_forms(staff(iid), iid, 1, 5, "SH-1")
    svc.print(staff(iid), cids[0])
    collect(svc, iid, cids[0])
    svc.apply_for_correction(staff(iid), cids[0], Correction(name="更正名"), "录入错误", evidence)
    svc.check_deletion(ASSOCIATION, cids[0], queryable_nationally=True)
    svc.delete_data(staff(iid), cids[0], "持证人放弃证书相关待遇")
    # The holder's signed commitment stays: the institution's proof of consent to the deletion.
    assert svc.attachments.content(digest(own)) == own
    assert svc.attachments.content(photo.sha256) is None  # photo 0 was only this holder's
    assert svc.attachments.content(digest(evidence_bytes)) is None
    row = conn.execute(f'SELECT wrapped_key, erased_at FROM "{schema}".attachments WHERE sha256 = %s',
                       (digest(evidence_bytes),)).fetchone()  # fmt: skip
    assert row[0] is None and row[1] is not None
    assert conn.execute(f'SELECT count(*) FROM "{schema}".attachment_blobs WHERE sha256 = %s',
                        (digest(evidence_bytes),)).fetchone()[0] == 0  # fmt: skip
    assert svc.attachments.content(shared.sha256) == samples.document(AttachmentKind.DIPLOMA)  # still the other's
    assert svc.certificate(cids[1]).photo is not None
    assert svc.attachments.content(svc.certificate(cids[1]).photo.sha256) == samples.photo(1)


def _commitment(content: bytes) -> Attachment:
    return Attachment(kind=AttachmentKind.HOLDER_COMMITMENT, file_name="承诺书.pdf", sha256=digest(content))


def _filed_on_the_first(world, certificates: int, signed: bytes):  # type: ignore[no-untyped-def]
    """Certificates of one institution, the first with this commitment uploaded by staff and filed on it."""
    iid, cids = queryable_certificates(world, certificates)
    svc = world.certificates
    svc.attachments.put(signed, digest(signed), "application/pdf", staff(iid).id, None, iid)
    svc.record_holder_commitment(staff(iid), cids[0], _commitment(signed))
    return iid, cids, svc


def test_a_file_erased_between_a_commands_check_and_its_reference_is_refused_and_nothing_stored(world, conn):  # noqa: F811
    """A command checks that its files are held, then records its references, then saves. Another worker
    deleting a certificate's data erased a file between the two: the command was saved referring to a file
    nobody can read."""
    signed = b"%PDF-1.4\n% one commitment, scanned once and filed twice\n%%EOF\n"
    iid, cids, svc = _filed_on_the_first(world, 2, signed)
    checked = svc.attachments.facts

    def erased_once_checked(*args, **kwargs):  # type: ignore[no-untyped-def]
        facts = checked(*args, **kwargs)
        svc.attachments.facts = checked
        assert digest(signed) in svc.attachments.erase_for([cids[0]], "data of the first certificate deleted")
        return facts

    svc.attachments.facts = erased_once_checked  # type: ignore[method-assign]
    before = stored_events(world)
    with pytest.raises(InvalidInput, match="is not held by the store"):
        svc.record_holder_commitment(staff(iid), cids[1], _commitment(signed))
    assert stored_events(world) == before and svc.certificate(cids[1]).commitment is None
    assert not svc.attachments.referrers(digest(signed))


def test_an_erasure_waits_for_a_reference_being_recorded_and_keeps_the_file(world, database_url, schema):
    """Two workers at once, on real connections: one records a reference to a file (its row locked shared, not
    yet committed) while the other erases the data that referred to it before."""
    signed = b"%PDF-1.4\n% a commitment being referred to again\n%%EOF\n"
    sha = digest(signed)
    iid, cids, svc = _filed_on_the_first(world, 2, signed)
    with psycopg.connect(database_url) as referring:
        # What Attachments.refer does, its transaction held open here.
        referring.execute(f'SELECT 1 FROM "{schema}".attachments WHERE sha256 = %s FOR SHARE', (sha,))
        referring.execute(f'INSERT INTO "{schema}".attachment_refs VALUES (%s, %s, %s)', (sha, cids[1], iid))
        erasing = ThreadPoolExecutor(1)
        erased = erasing.submit(svc.attachments.erase_for, [cids[0]], "data of the first certificate deleted")
        time.sleep(0.5)
        assert not erased.done()  # it waits for the reference's transaction
        referring.commit()
    assert sha not in erased.result(timeout=10)
    erasing.shutdown()
    assert svc.attachments.content(sha) == signed


def test_a_reference_waits_for_an_erasure_under_way_and_finds_the_file_gone(world, database_url, schema):
    """The other order: the erasure has locked the file and erased it, not yet committed, when a command that found
    the file held saves its event referring to it."""
    iid, cids = queryable_certificates(world, 2)
    svc = world.certificates
    signed = b"%PDF-1.4\n% a commitment erased while referred to again\n%%EOF\n"
    sha = digest(signed)
    svc.attachments.put(signed, sha, "application/pdf", staff(iid).id, None, iid)
    before = stored_events(world)
    with psycopg.connect(database_url) as erasing:
        # What Attachments.erase_for does, its transaction held open here.
        erasing.execute(f'SELECT 1 FROM "{schema}".attachments WHERE sha256 = %s FOR UPDATE', (sha,))
        erasing.execute(f'UPDATE "{schema}".attachments SET wrapped_key = NULL, erased_at = now() WHERE sha256 = %s',
                        (sha,))  # fmt: skip
        referring = ThreadPoolExecutor(1)
        referred = referring.submit(svc.record_holder_commitment, staff(iid), cids[1], _commitment(signed))
        time.sleep(0.5)
        assert not referred.done()  # its save waits for the erasure's transaction
        erasing.commit()
    with pytest.raises(InvalidInput, match="is not held by the store"):
        referred.result(timeout=10)
    referring.shutdown()
    assert stored_events(world) == before and svc.certificate(cids[1]).commitment is None
    assert not svc.attachments.referrers(sha)


def test_two_uploads_of_one_new_file_at_once_keep_one_readable_file(world):
    """Both wrote the blob, each under a key of its own, and the key kept could be the other's."""
    iid, _ = queryable_certificates(world, 1)
    store = world.certificates.attachments
    content = b"%PDF-1.4\n% uploaded twice at once (a double click)\n%%EOF\n"
    writing, written = threading.Event(), store.blobs.put

    def slow_first_write(address: str, ciphertext: bytes) -> None:
        written(address, ciphertext)
        if not writing.is_set():
            writing.set()
            time.sleep(0.5)  # the other upload comes now

    store.blobs.put = slow_first_write  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(store.put, content, digest(content), "application/pdf", staff(iid).id, None, iid)
        assert writing.wait(10)
        second = pool.submit(store.put, content, digest(content), "application/pdf", "staff-2", None, iid)
        first.result(), second.result()
    assert store.content(digest(content)) == content


def test_a_file_uploaded_again_while_its_erasure_ends_keeps_its_new_blob(world):
    signed = b"%PDF-1.4\n% erased, then uploaded again at once\n%%EOF\n"
    iid, cids, svc = _filed_on_the_first(world, 1, signed)
    drop = svc.attachments._drop_blobs

    def uploaded_again_first(erased: list[str]) -> None:
        svc.attachments.put(signed, digest(signed), "application/pdf", staff(iid).id, None, iid)
        drop(erased)

    svc.attachments._drop_blobs = uploaded_again_first  # type: ignore[method-assign]
    assert digest(signed) in svc.attachments.erase_for([cids[0]], "data deleted")
    assert svc.attachments.content(digest(signed)) == signed


def test_printing_needs_a_photo_before_any_form_is_booked_and_prints_it(world, tmp_path: Path):
    iid, cids = queryable_certificates(world, 2, photos=False)
    svc = world.certificates
    svc.receive_forms(staff(iid), iid, 1, 10, "SH-1")
    svc.attach_photo(staff(iid), cids[0], samples.photo_attachment(0))
    before = (svc.books(iid).in_stock, stored_events(world))
    with pytest.raises(Conflict, match=f"certificate {svc.certificate(cids[1]).number}: no holder photo"):
        print_certificates(svc, staff(iid), cids, PUBLIC)  # the batch is refused whole, before any form
    with pytest.raises(Conflict, match="no holder photo"):
        svc.print(staff(iid), cids[1])
    assert (svc.books(iid).in_stock, stored_events(world)) == before

    pdf = tmp_path / "c.pdf"
    pdf.write_bytes(print_certificates(svc, staff(iid), cids[:1], PUBLIC))
    listing = subprocess.run(["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True).stdout
    subprocess.run(["pdfimages", "-png", str(pdf), str(tmp_path / "img")], check=True)
    uploaded = Image.open(io.BytesIO(samples.photo(0))).convert("RGB")
    differences = [
        max(ImageStat.Stat(ImageChops.difference(found, uploaded)).mean)
        for found in (Image.open(p).convert("RGB") for p in sorted(tmp_path.glob("img-*.png")))
        if found.size == uploaded.size
    ]
    assert differences and min(differences) < 2, listing  # the uploaded pixels, not a placeholder


def test_the_blob_store_is_an_interface_a_directory_meets(world, tmp_path: Path):
    svc = world.certificates
    store = Attachments(
        svc.recorder.datastore, svc.schema, svc.mapper.cipher, svc.holding, DirectoryBlobs(tmp_path / "blobs")
    )
    content = jpeg(colour=(10, 150, 90))  # not among the samples the store already holds
    store.put(content, digest(content), "image/jpeg", "system:test", (354, 496))
    on_disk = next((tmp_path / "blobs").rglob(digest(content)))
    assert on_disk.read_bytes() != content and store.content(digest(content)) == content


def test_a_registrations_files_are_read_through_it_and_nobody_refers_to_a_file_they_cannot_read(world, http,
                                                                                                 database_url, schema):  # fmt: skip
    """What an outsider found: files referred to by a registration were readable only by their uploader,
    the refusal named the registration, and referring to anyone's file (its hash is on the bus) made it
    readable."""
    iid, _, code = setup_plan(world.registrations)
    form = working_years_form(1)
    me = bearer(database_url, schema, Role.CANDIDATE, "考生1", id_number=form.id_number, pseudonym_key=KEY.hex())
    diploma = b"%PDF-1.4\n% the diploma of candidate 1\n%%EOF\n"
    sha = upload(http, me, diploma).json()["sha256"]
    mine = Attachment(kind=AttachmentKind.DIPLOMA, file_name="毕业证.pdf", sha256=sha)
    form = form.model_copy(update={"attachments": [mine, *form.attachments[1:]]})
    assert http.post("/registrations", headers=me, json={"registration_code": code, "form": as_json(form)}).status_code == 201  # fmt: skip
    colleague = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-wu", iid)  # not the uploader
    centre = bearer(database_url, schema, Role.PROVINCIAL_CENTRE, "centre")
    for who, token in (("the candidate", me), ("a reviewer of the institution", colleague), ("the centre", centre)):
        r = http.get(f"/attachments/{sha}", headers=token)
        assert r.status_code == 200 and r.content == diploma, (who, r.text)
    other = bearer(database_url, schema, Role.INSTITUTION_STAFF, "other", institution_id=uuid4())
    refused, unknown = (
        http.get(f"/attachments/{sha}", headers=other),
        http.get(f"/attachments/{'c' * 64}", headers=other),
    )
    assert refused.status_code == unknown.status_code == 404
    assert refused.json()["detail"] == f"no attachment {sha}" and "registration" not in refused.text

    # Another candidate's upload, never referred to: staff cannot refer to it, so cannot read it either.
    stranger_form = working_years_form(2)
    stranger = bearer(database_url, schema, Role.CANDIDATE, "考生2", id_number=stranger_form.id_number,
                      pseudonym_key=KEY.hex())  # fmt: skip
    theirs = upload(http, stranger, b"%PDF-1.4\n% candidate 2's ID card\n%%EOF\n").json()["sha256"]
    before = stored_events(world)
    borrowed = Attachment(kind=AttachmentKind.DIPLOMA, file_name="x.pdf", sha256=theirs)
    sneaky = working_years_form(3).model_copy(
        update={"attachments": [borrowed, *working_years_form(3).attachments[1:]]}
    )
    r = http.post("/registrations", headers=colleague, json={"registration_code": code, "form": as_json(sneaky)})
    assert r.status_code == 422 and "not the actor's to refer to" in r.json()["detail"], r.text
    assert stored_events(world) == before and http.get(f"/attachments/{theirs}", headers=colleague).status_code == 404
    # The same bytes uploaded by someone else are theirs to read too.
    assert upload(http, colleague, b"%PDF-1.4\n% candidate 2's ID card\n%%EOF\n").json()["sha256"] == theirs
    assert http.get(f"/attachments/{theirs}", headers=colleague).status_code == 200


def test_a_phone_photo_stored_sideways_is_judged_and_printed_upright(world, http, database_url, schema):
    from infra.services.attachments import upright

    iid, _, _ = setup_plan(world.registrations)
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    portrait = Image.open(io.BytesIO(samples.photo(0)))
    sideways = portrait.transpose(Image.Transpose.ROTATE_90)  # stored 496 x 354, as phones write it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view"
    out = io.BytesIO()
    sideways.save(out, "JPEG", exif=exif.tobytes())
    r = upload(http, token, out.getvalue(), "IMG_0001.jpg", kind="photo")
    assert r.status_code == 201 and (r.json()["width"], r.json()["height"]) == (354, 496), r.text
    assert Image.open(io.BytesIO(upright(out.getvalue()))).size == (354, 496)
