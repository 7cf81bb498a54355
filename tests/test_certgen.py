"""Certificates as PDFs, read back with real tools: poppler's pdftotext, pdffonts and pdfinfo,
and zbarimg for the QR code."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path

import psycopg
import pytest

from certgen import documents, fonts
from certgen.certificate import CertificatePage, ForbiddenWording, render
from certgen.qr import verification_url
from domain.errors import Conflict
from domain.levels import Level
from domain.model import Role
from infra.services.printing import print_certificates, to_print
from infra.services.samples import photo_attachment
from tests.builders import setup_plan
from tests.lifecycle import collect, confirmed_exam, id_check, staff
from tests.test_read_models import conn  # noqa: F401 (fixture)

TOOLS = [t for t in ("pdftotext", "pdffonts", "pdfinfo", "pdftoppm", "zbarimg") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(TOOLS), reason=f"{TOOLS} missing: .ci/run installs poppler-utils and zbar-tools")
PUBLIC = "https://verify.example.org"


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def session(world):
    """Three passes of a confirmed session, their data queryable nationally, 20 blank forms in stock."""
    from domain.certificate import certificate_id
    from tests.lifecycle import CENTRE

    iid, _, _, exam_id = confirmed_exam(world, 3)
    world.at(date(2026, 4, 29))
    issued = world.certificates.issue(staff(iid), exam_id)
    ids = [certificate_id(r) for r in issued]
    world.certificates.report_data(staff(iid), ids)
    world.certificates.accept_data(CENTRE, ids)
    world.at(date(2026, 7, 1))
    world.certificates.make_queryable(CENTRE, ids)
    for k, cid in enumerate(ids):
        world.certificates.attach_photo(staff(iid), cid, photo_attachment(k))
    world.certificates.receive_forms(staff(iid), iid, 10_000_001, 10_000_020, "SH-2026-001")
    return iid, exam_id


def test_a_session_prints_on_consecutive_forms_and_every_field_reads_back(world, session, tmp_path: Path):
    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    assert len(ids) == 3
    pdf = tmp_path / "session.pdf"
    pdf.write_bytes(print_certificates(svc, staff(iid), ids, PUBLIC))

    info = run("pdfinfo", str(pdf))
    assert re.search(r"Pages:\s+3\n", info) and "841.89 x 595.276 pts (A4)" in info  # landscape: wider than high
    font_rows = run("pdffonts", str(pdf)).splitlines()[2:]
    assert font_rows and all(row.split()[-5] == "yes" for row in font_rows), font_rows  # the "emb" column
    # Kai for the fixed wording, Times (Liberation Serif) for English, and for the filled-in values
    # and the seal the Song face (AR PL SungtiL GB): no free FangSong covers simplified Chinese.
    assert {row.split()[0].split("+")[1] for row in font_rows} == {"UKaiCN-0", "LiberationSerif", "BousungEG-Light-GB"}
    # The filled-in values are 小四 (12 pt); the labels 16 pt (word boxes' heights, in points).
    boxes = re.findall(r'yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">([^<]+)</word>',
                       run("pdftotext", "-f", "1", "-l", "1", "-bbox", str(pdf), "-"))  # fmt: skip
    height = {word: round(float(y1) - float(y0), 1) for y0, y1, word in boxes}
    first = svc.certificate(ids[0])
    for value in (first.holder.name, first.holder.id_number, first.number, "人工智能训练师", "发证日期：2026年4月29日"):
        assert height[value] == 12.0, (value, height.get(value))
    assert height["姓名："] == 16.0 and height["职业技能等级证书"] == 30.0

    books = svc.stock(iid)
    for page, cid in enumerate(ids, 1):
        c = svc.certificate(cid)
        serial = 10_000_000 + page
        assert c.printed_forms == [serial] and serial in books.used  # which form the certificate is on, booked as used
        text = run("pdftotext", "-f", str(page), "-l", str(page), "-layout", str(pdf), "-")
        flat = re.sub(r"\s+", "", text)
        for expected in ("职业技能等级证书", "CertificateofOccupationalSkillLevel", c.holder.name, c.holder.id_type.value,
                         c.holder.id_number, "人工智能训练师", "二级/技师", c.number, "深圳市技能人才评价示范中心",
                         "发证日期：2026年4月29日", f"NO.{serial}", "http://jndj.osta.org.cn", "http://pjjg.osta.org.cn",
                         "职业技能等级认定专用章"):  # fmt: skip
            assert expected in flat, (expected, text)
        assert re.search(r"工种/职业方向：\s+--", text)  # no job: "--", never blank
        run("pdftoppm", "-f", str(page), "-l", str(page), "-r", "100", "-png", str(pdf), str(tmp_path / f"p{page}"))
        png = next(tmp_path.glob(f"p{page}*.png"))
        assert run("zbarimg", "--raw", "-q", str(png)).strip() == verification_url(PUBLIC, c.number)
    assert to_print(svc, exam_id) == []


def test_a_spoiled_print_goes_to_the_spoiled_forms_and_is_printed_again_on_the_next(world, session, conn, tmp_path):  # noqa: F811
    iid, exam_id = session
    svc = world.certificates
    first, *rest = to_print(svc, exam_id)
    print_certificates(svc, staff(iid), [first], PUBLIC)
    svc.spoil_print(staff(iid), first, 10_000_001, "卡纸")
    assert to_print(svc, exam_id)[0] == first
    again = tmp_path / "again.pdf"
    again.write_bytes(print_certificates(svc, staff(iid), [first], PUBLIC))
    assert svc.certificate(first).printed_forms == [10_000_001, 10_000_002]
    books = svc.stock(iid)
    assert books.spoiled == {10_000_001: "卡纸"} and list(books.used) == [10_000_002]
    assert "NO.10000002" in re.sub(r"\s+", "", run("pdftotext", str(again), "-"))
    # The stock ledger read model, fed the events as the bus delivers them, agrees.
    from projections import stock as ledger
    from tests.test_read_models import apply_live, bus_messages

    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    assert ledger.form(conn, str(iid), 10_000_001)["status"] == "spoiled"
    assert ledger.form(conn, str(iid), 10_000_002)["certificate_number"] == svc.certificate(first).number
    books = ledger.ledger(conn, str(iid))
    assert (books["used"], books["spoiled"], books["in_stock"]) == (1, 1, 18)
    with pytest.raises(Conflict, match="does not hold"):
        svc.spoil_print(staff(iid), first, 10_000_001, "again")
    with pytest.raises(Conflict, match="already printed"):
        print_certificates(svc, staff(iid), [first], PUBLIC)


def test_a_print_never_made_puts_its_forms_back_in_stock_and_its_certificates_await_a_print(
    world,
    session,
    conn,  # noqa: F811
    database_url,
    schema,
    monkeypatch,  # noqa: F811
):
    """A batch print booked its forms and then answered no PDF (a render that failed, Ctrl-C in the CLI, a file that
    could not be written, a browser that gave up): the certificates no longer awaited a print and the forms were
    booked as used while they lay blank in the tray, and the only way out was to record each as a spoiled print,
    which sent blank forms to be destroyed. The batch now puts its forms back itself, and a print whose answer was
    lost afterwards is recorded not made (POST /certificates/print-not-made), all or none."""
    from fastapi.testclient import TestClient

    import infra.services.printing as printing
    from infra.api import create_app
    from projections import certificates as registry
    from projections import stock as ledger
    from tests.api import bearer
    from tests.test_read_models import apply_live, bus_messages

    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    stored = svc.recorder.max_notification_id

    def broken(pages, progress=None):
        raise RuntimeError("the renderer fell over")

    monkeypatch.setattr(printing, "render", broken)
    with pytest.raises(RuntimeError, match="fell over"):
        print_certificates(svc, staff(iid), ids, PUBLIC)
    monkeypatch.undo()
    assert to_print(svc, exam_id) == ids and not svc.stock(iid).used
    assert all(svc.certificate(i).printed_forms == [] for i in ids)

    def interrupted(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        print_certificates(svc, staff(iid), ids, PUBLIC, progress=interrupted)
    assert to_print(svc, exam_id) == ids and not svc.stock(iid).used

    def disk_full(content: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        print_certificates(svc, staff(iid), ids, PUBLIC, deliver=disk_full)
    assert to_print(svc, exam_id) == ids and not svc.stock(iid).used

    # Printed, and the answer lost on its way: staff record the prints not made.
    print_certificates(svc, staff(iid), ids, PUBLIC)
    numbers = [svc.certificate(i).number for i in ids]
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    with TestClient(create_app(database_url, schema, today=world.clock)) as http:
        before = stored()
        r = http.post("/certificates/print-not-made", headers=token,
                      json={"certificates": [str(i) for i in ids[:2]], "reason": ""})  # fmt: skip
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason", r.text
        r = http.post("/certificates/print-not-made", headers=token,
                      json={"certificates": [str(i) for i in ids[:2]], "reason": "文件未送达打印机"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.json() == [{"certificate_number": n, "form_serial": 10_000_001 + k, "form": f"NO. {10_000_001 + k}"}
                            for k, n in enumerate(numbers[:2])]  # fmt: skip
        assert stored() == before + 4  # each certificate's event and its form's
        before = stored()
        r = http.post("/certificates/print-not-made", headers=token,
                      json={"certificates": [str(i) for i in ids], "reason": "文件未送达打印机"})  # fmt: skip
        assert r.status_code == 409 and numbers[0] in r.json()["detail"] and numbers[1] in r.json()["detail"], r.text
        assert "awaits a print" in r.json()["detail"] and stored() == before  # all or none
    assert to_print(svc, exam_id) == ids[:2] and list(svc.stock(iid).used) == [10_000_003]
    # Printed again, they take the same forms, lowest first.
    print_certificates(svc, staff(iid), ids[:2], PUBLIC)
    assert [svc.certificate(i).printed_forms for i in ids] == [[10_000_001], [10_000_002], [10_000_003]]
    # A print handed over was made.
    collect(svc, iid, ids[2])
    with pytest.raises(Conflict, match="handed over"):
        svc.print_not_made(staff(iid), [ids[2]], "文件未送达打印机")
    # The read models, fed the events as the bus delivers them, agree.
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    books = ledger.ledger(conn, str(iid))
    assert (books["used"], books["spoiled"], books["in_stock"]) == (3, 0, 17)
    assert [ledger.form(conn, str(iid), 10_000_001 + k)["certificate_number"] for k in range(3)] == numbers
    # The form's own history shows each booking and each return: the failed render, Ctrl-C, the full disk, the lost
    # PDF, and the print that stood.
    history = ledger.form(conn, str(iid), 10_000_001)["history"]
    assert [h["event"] for h in history] == ["forms_received", *["form_used", "form_returned"] * 4, "form_used"]
    assert (
        history[2]["reason"] == "the PDF could not be made (RuntimeError)"
        and history[-2]["reason"] == "文件未送达打印机"
    )
    assert {h["certificate_number"] for h in history[1:]} == {numbers[0]}
    assert ledger.form(conn, str(iid), 10_000_004)["status"] == "in_stock"
    assert [registry.certificate_by_number(conn, n)["forms_printed"] for n in numbers] == [1, 1, 1]


def page_for(**changes) -> CertificatePage:
    from domain.levels import Level

    base = CertificatePage(
        number="S000044032015262000001", institution="深圳市技能人才评价示范中心", issued_on=date(2026, 4, 29),
        holder_name="李娜", id_type="居民身份证", id_number="440304199206124426", occupation="人工智能训练师", job=None,
        level=Level.TWO, form_serial=10_000_001, verify_url=verification_url(PUBLIC, "S000044032015262000001"),
    )  # fmt: skip
    return replace(base, **changes)


def _batch_saving_after(world, other_work):  # type: ignore[no-untyped-def]
    """The batch's first save waits until `other_work` (another API worker's command) is done, as if that worker
    had been a moment faster: the batch was decided on what it loaded before."""
    save = world.certificates.save
    waited = []

    def save_after_the_other(*aggregates, **kwargs):  # type: ignore[no-untyped-def]
        if not waited:
            waited.append(True)
            other_work()
        return save(*aggregates, **kwargs)

    world.certificates.save = save_after_the_other


def test_a_batch_that_meets_a_print_by_another_worker_books_no_form_and_prints_nothing(
    world, session, database_url, schema
):
    """Two staff print at once: one the session, the other one of its certificates. The session's batch, decided
    before the other print was saved, is refused whole: no form is booked for a page that is never made."""
    from infra.services.certificates import Certificates

    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    other = Certificates(database_url, schema, today=world.clock)  # another API worker
    try:
        _batch_saving_after(world, lambda: print_certificates(other, staff(iid, "staff-he"), [ids[1]], PUBLIC))
        with pytest.raises(Conflict, match=rf"certificate {svc.certificate(ids[1]).number} .*already printed"):
            print_certificates(svc, staff(iid), ids, PUBLIC)
    finally:
        other.close()
    assert [svc.certificate(i).printed_forms for i in ids] == [[], [10_000_001], []]
    assert list(svc.stock(iid).used) == [10_000_001]
    assert to_print(svc, exam_id) == [ids[0], ids[2]]


def test_a_batch_that_meets_a_correction_approved_meanwhile_prints_the_corrected_name(
    world, session, database_url, schema, monkeypatch, tmp_path
):
    """A correction approved by another worker while a batch is being decided: the batch prints what it saves,
    the corrected name, not the name it had loaded."""
    from domain.certificate import Correction
    from domain.registration import AttachmentKind
    from infra.services import printing
    from infra.services.certificates import Certificates
    from tests.builders import attachment
    from tests.lifecycle import ASSOCIATION, CENTRE

    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    svc.apply_for_correction(staff(iid), ids[1], Correction(name="更正姓名"), "录入错误",
                             attachment(AttachmentKind.CORRECTION_EVIDENCE))  # fmt: skip
    svc.check_correction(ASSOCIATION, ids[1], queryable_nationally=True)  # profile S: the association first
    pages = []
    real_render = printing.render
    monkeypatch.setattr(printing, "render", lambda ps, progress=None: real_render(pages.extend(ps) or ps, progress))
    other = Certificates(database_url, schema, today=world.clock)  # another API worker
    try:
        _batch_saving_after(world, lambda: other.approve_correction(CENTRE, ids[1]))
        pdf = print_certificates(svc, staff(iid), ids, PUBLIC)
    finally:
        other.close()
    corrected = svc.certificate(ids[1])
    assert corrected.holder.name == corrected.printed_holder.name == "更正姓名"
    assert [p.holder_name for p in pages if p.number == corrected.number] == ["更正姓名"]
    (tmp_path / "batch.pdf").write_bytes(pdf)
    assert "更正姓名" in re.sub(r"\s+", "", run("pdftotext", "-f", "2", "-l", "2", str(tmp_path / "batch.pdf"), "-"))


def test_forbidden_words_never_print_outside_the_institutions_registered_name(world, session, monkeypatch):
    with pytest.raises(ForbiddenWording, match="中国"):
        render([page_for(job="中国结艺")])
    with pytest.raises(ForbiddenWording, match="国家, 职业资格"):
        render([page_for(occupation="国家职业资格电工")])
    assert render([page_for(institution="广东省某某职业技能评价中心")]).startswith(b"%PDF")  # in the name: allowed
    # Nothing is booked when a page of a batch would break the rule (here: were 训练师 forbidden).
    from domain import wording

    monkeypatch.setattr(wording, "FORBIDDEN", (*wording.FORBIDDEN, "训练师"))
    iid, exam_id = session
    svc = world.certificates
    ids = to_print(svc, exam_id)
    with pytest.raises(ForbiddenWording, match="训练师"):
        print_certificates(svc, staff(iid), ids, PUBLIC)
    assert len(svc.stock(iid).used) == 0 and all(svc.certificate(i).needs_print for i in ids)


def test_holders_whose_names_hold_the_words_get_certificates_and_proofs(tmp_path):
    """The rule is about the document's wording, never a person's lawful name (004 §11 一(4))."""
    for name in ("王中华", "张国家"):
        pdf = tmp_path / "c.pdf"
        pdf.write_bytes(render([page_for(holder_name=name)]))
        assert name in re.sub(r"\s+", "", run("pdftotext", str(pdf), "-"))
        pdf.write_bytes(documents.certificate_proof(
            institution="深圳市技能人才评价示范中心", holder_name=name, id_type="居民身份证", id_number="440304199206124426",
            occupation="人工智能训练师", job=None, level=Level.TWO, number="S000044032015262000001",
            proof_number="S000044032015262000001-Z01", issued_on=date(2026, 8, 3)))  # fmt: skip
        assert name in re.sub(r"\s+", "", run("pdftotext", str(pdf), "-"))


def test_a_plan_whose_job_or_occupation_holds_a_forbidden_word_is_refused_at_publication(world):
    from domain.errors import InvalidInput
    from tests.builders import plan_details

    iid, _, _ = setup_plan(world.registrations)
    before = world.registrations.recorder.max_notification_id()
    with pytest.raises(InvalidInput) as e:
        world.registrations.publish_plan(
            staff(iid), iid, plan_details(number="2599", job="国家级电工", occupation="中国结艺师")
        )
    assert [f for f, _ in e.value.problems] == ["occupation", "job"] and "国家" in str(e.value)
    assert world.registrations.recorder.max_notification_id() == before


def test_a_missing_font_is_refused_naming_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(fonts, "DIRS", (tmp_path,))
    fonts.register.cache_clear()
    try:
        with pytest.raises(fonts.FontMissing, match="apt-get install fonts-arphic-ukai"):
            render([page_for()])
    finally:
        fonts.register.cache_clear()


def test_a_missing_fallback_face_is_refused_when_a_name_needs_it_and_only_then(monkeypatch, tmp_path):
    from reportlab.pdfbase import pdfmetrics

    for file, *_ in fonts.FACES.values():
        if not file.startswith("Hana"):
            [installed] = [p for d in fonts.DIRS if d.is_dir() for p in d.rglob(file)]
            (tmp_path / file).symlink_to(installed)
    monkeypatch.setattr(fonts, "DIRS", (tmp_path,))
    monkeypatch.setattr(pdfmetrics, "_fonts", {k: v for k, v in pdfmetrics._fonts.items() if not k.startswith("Hana")})
    fonts.register.cache_clear()
    try:
        assert render([page_for(holder_name="张喆")]).startswith(b"%PDF")  # Song, then UMing: no Hanazono needed
        with pytest.raises(fonts.FontMissing, match="apt-get install fonts-hanazono"):
            render([page_for(holder_name="𠮷田")])
    finally:
        fonts.register.cache_clear()


def test_staff_print_over_http_and_cli_and_reprint(world, session, conn, database_url, schema, tmp_path):  # noqa: F811
    import os
    import sys

    from fastapi.testclient import TestClient

    from domain.exam import ExamSession
    from domain.model import Role
    from infra.api import create_app
    from tests.api import bearer
    from tests.test_read_models import KEY, apply_live, bus_messages

    iid, exam_id = session
    staff_token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex(), public_url=PUBLIC)) as http:
        r = http.post(f"/sessions/{exam_id}/certificates/print", headers=staff_token)
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
        (tmp_path / "http.pdf").write_bytes(r.content)
        assert re.search(r"Pages:\s+3\n", run("pdfinfo", str(tmp_path / "http.pdf")))
        again = http.post(f"/plans/{world.exams.get(ExamSession, exam_id, 'session').plan_id}/certificates/print",
                          headers=staff_token)  # fmt: skip
        assert again.status_code == 422 and "nothing to print" in again.json()["detail"]
        apply_live(conn, bus_messages(world.registrations))
        conn.commit()
        first = world.certificates.certificate(to_print_all(world, exam_id)[0])
        # The other documents, as staff download them.
        from domain.certificate import LossKind
        from domain.levels import Level
        from domain.registration import AttachmentKind
        from tests.builders import attachment

        world.certificates.file_demand(staff(iid), iid, 2027, {Level.TWO: 80})
        holder = world.certificates.certificate(to_print_all(world, exam_id)[1])  # collected, then lost
        collect(world.certificates, iid, holder.id)
        world.certificates.apply_for_proof(
            staff(iid),
            holder.id,
            LossKind.LOST,
            attachment(AttachmentKind.PROOF_APPLICATION),
            **id_check(world.certificates, holder.id),
        )
        proof_number = world.certificates.issue_proof(staff(iid), holder.id)
        for path, wanted in (
            (f"/certificates/{holder.number}/proof.pdf", [proof_number, holder.holder.id_number, "职业技能等级证书证明"]),
            (f"/certificates/{holder.number}/proof-application.pdf", ["证书遗失、损坏补发证明申请表", holder.number]),
            (f"/certificates/{holder.number}/proof-receipt.pdf", ["证书遗失、损坏补发证明受理回执", f"{holder.number}-R01",
             holder.holder.name, "凭本人身份证件原件和本回执领取"]),
            (f"/institutions/{iid}/stock/demand/2027.pdf?contact=李老师&phone=0755-88886666&address=深圳市南山区",
             ["技师（二级）80", "合计80", "李老师"]),
            (f"/sessions/{exam_id}/tickets.pdf", ["职业技能等级认定准考证", "深圳市南山区科技园考点", "2026年4月10日"]),
        ):  # fmt: skip
            r = http.get(path, headers=staff_token)
            assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", (path, r.text)
            (tmp_path / "doc.pdf").write_bytes(r.content)
            flat = re.sub(r"\s+", "", run("pdftotext", "-layout", str(tmp_path / "doc.pdf"), "-"))
            assert all(re.sub(r"\s+", "", w) in flat for w in wanted), (path, flat[:300])
        assert re.search(r"Pages:\s+3\n", run("pdfinfo", str(tmp_path / "doc.pdf")))  # a ticket per candidate
        r = http.post(f"/certificates/{first.number}/spoiled-print", headers=staff_token,
                      json={"form_serial": first.printed_forms[-1], "reason": "卡纸"})  # fmt: skip
        assert r.status_code == 204, r.text
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_TOKEN": staff_token["Authorization"].removeprefix("Bearer "), "SKILLCERT_PUBLIC_URL": PUBLIC}  # fmt: skip
    out = tmp_path / "reprint.pdf"
    done = subprocess.run([sys.executable, "-m", "infra.cli", "print", "certificates", first.number, "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 certificate(s) booked" in done.stdout
    assert world.certificates.certificate(first.id).printed_forms == [first.printed_forms[-1], 10_000_004]
    assert "NO.10000004" in re.sub(r"\s+", "", run("pdftotext", str(out), "-"))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []  # written aside, then moved
    # That print never came out: recorded from the CLI, its form is back. A file that cannot be written books nothing.
    done = subprocess.run([sys.executable, "-m", "infra.cli", "print", "not-made", first.number, "--reason", "打印机离线"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "NO. 10000004 back in stock" in done.stdout, done.stdout + done.stderr
    before = world.certificates.recorder.max_notification_id()
    done = subprocess.run([sys.executable, "-m", "infra.cli", "print", "certificates", first.number, "--out",
                           str(tmp_path / "no-such-directory" / "x.pdf")], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and "nothing booked" in done.stderr, done.stdout + done.stderr
    assert world.certificates.recorder.max_notification_id() == before
    done = subprocess.run([sys.executable, "-m", "infra.cli", "print", "certificates", first.number, "--out",
                           "/dev/full"], env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and "the forms are back in stock" in done.stderr, done.stdout + done.stderr
    assert world.certificates.certificate(first.id).printed_forms == [first.printed_forms[-1]]
    assert 10_000_004 not in world.certificates.stock(iid).used


def to_print_all(world, exam_id) -> list:
    from domain.certificate import certificate_id
    from domain.exam import ExamSession

    session = world.certificates.get(ExamSession, exam_id, "exam session")
    return [certificate_id(e.registration_id) for e in session.passed()]


def test_the_proof_the_loss_application_the_demand_form_and_the_ticket_read_back(tmp_path):
    from datetime import time

    from certgen import documents
    from domain.levels import Level

    holder = dict(holder_name="李娜", id_number="440304199206124426", occupation="人工智能训练师",
                  number="S000044032015262000001", level=Level.TWO)  # fmt: skip
    made = {
        "proof": documents.certificate_proof(institution="深圳市技能人才评价示范中心", id_type="居民身份证", job=None,
                                             proof_number="S000044032015262000001-P1", issued_on=date(2026, 8, 3),
                                             **holder),
        "application": documents.loss_application(kind="lost", **holder),
        "demand": documents.demand_form(institution="深圳市技能人才评价示范中心", contact="李老师", phone="0755-88886666",
                                        address="深圳市南山区科技园", year=2027, per_level={Level.TWO: 120, Level.FIVE: 300},
                                        filed_on=date(2027, 1, 20)),
        "ticket": documents.admission_ticket(name="李娜", id_number_masked="4403**********4426",
                                             plan_name="2026年春季人工智能训练师（二级）认定", occupation="人工智能训练师",
                                             level=Level.TWO, session="A", exam_date=date(2026, 4, 10), starts_at=time(9),
                                             location="深圳市南山区科技园考点", room="301", seat=7,
                                             institution="深圳市技能人才评价示范中心"),
    }  # fmt: skip
    expected = {
        "proof": ["职业技能等级证书证明", "李娜", "440304199206124426", "人工智能训练师", "--", "二级/技师",
                  "S000044032015262000001", "S000044032015262000001-P1", "深圳市技能人才评价示范中心（盖章）",
                  "2026年8月3日", "职业技能等级认定专用章", "本证明各项内容涂改无效"],
        "application": ["证书遗失、损坏补发证明申请表", "李娜", "440304199206124426", "S000044032015262000001",
                        "证书级别：二级/技师", "■遗失证书", "□损坏证书", "申请人签名"],
        "demand": ["职业技能等级空白证书需求登记表", "2027年度预估评价合格人数", "技师（二级）120", "初级（五级）300",
                   "高级技师（一级）0", "合计420", "2027年1月20日"],
        "ticket": ["职业技能等级认定准考证", "李娜", "4403**********4426", "2026年4月10日09:00", "深圳市南山区科技园考点",
                   "301", "座位号07"],
    }  # fmt: skip
    for name, content in made.items():
        pdf = tmp_path / f"{name}.pdf"
        pdf.write_bytes(content)
        flat = re.sub(r"\s+", "", run("pdftotext", "-layout", str(pdf), "-"))
        for text in expected[name]:
            assert re.sub(r"\s+", "", text) in flat, (name, text, flat)
        rows = run("pdffonts", str(pdf)).splitlines()[2:]
        assert rows and all(r.split()[-5] == "yes" for r in rows), (name, rows)
        assert "595.276 x 841.89 pts (A4)" in run("pdfinfo", str(pdf))
    # Annexes 1 and 3 carry exactly their own rows, in the seed's order (004 附件1, 附件3), and not each other's.
    own = {
        "demand": ["填报单位", "联系人", "联系电话", "详细地址", "级别", "初级（五级）", "中级（四级）", "高级（三级）",
                   "技师（二级）", "高级技师（一级）", "合计", "填报单位意见", "负责人签字（盖章）", "备注"],
        "application": ["申请人姓名", "身份证号", "职业名称", "证书编号", "证书级别", "申办事项",
                        "遗失声明", "取证方式", "申请人声明", "以下栏目由受理部门填写", "受理部门意见", "受理日期", "备注"],
    }  # fmt: skip
    foreign = {"demand": ["受理部门", "受理日期", "申请人"], "application": ["填报单位", "负责人签字", "合计"]}
    for name in own:
        flat = re.sub(r"\s+", "", run("pdftotext", "-layout", str(tmp_path / f"{name}.pdf"), "-"))
        at = [flat.find(label) for label in own[name]]
        assert -1 not in at and at == sorted(at), (name, dict(zip(own[name], at, strict=True)))
        assert [w for w in foreign[name] if w in flat] == [] and flat.count("备注") == 1, (name, flat)
    assert "证书基本信息" in re.sub(
        r"\s+", "", run("pdftotext", str(tmp_path / "application.pdf"), "-")
    )  # spans two rows
    with pytest.raises(ForbiddenWording, match="国家"):
        documents.certificate_proof(institution="某中心", id_type="居民身份证", job="国家某工种",
                                    proof_number="P", issued_on=date(2026, 8, 3), **holder)  # fmt: skip


def test_rendering_a_long_document_holds_no_transaction_open(session, database_url, schema, monkeypatch):  # noqa: F811
    """Before, the token lookup's transaction stayed open while 5,000 tickets rendered; PostgreSQL
    ended it after 30 s idle and the request failed at COMMIT. With idle transactions ended after
    1 s here, a render of 2.5 s must still answer, and leave nothing idle in a transaction."""
    import time

    from fastapi.testclient import TestClient

    from certgen import documents
    from domain.model import Role
    from infra.api import create_app
    from tests.api import bearer
    from tests.test_read_models import KEY

    monkeypatch.setattr(
        "infra.api.SESSION_OPTIONS", "-c statement_timeout=15s -c idle_in_transaction_session_timeout=1s"
    )
    render = documents.admission_tickets
    idle_during = []

    def slow(tickets):
        time.sleep(2.5)
        with psycopg.connect(database_url, autocommit=True) as c:
            idle_during.extend(c.execute(
                "SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()"
                " AND pid <> pg_backend_pid()").fetchall())  # fmt: skip
        return render(tickets)

    monkeypatch.setattr(documents, "admission_tickets", slow)
    iid, exam_id = session
    staff_token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-wu", iid)
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex(), public_url=PUBLIC)) as http:
        r = http.get(f"/sessions/{exam_id}/tickets.pdf", headers=staff_token)
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
    assert idle_during == []


def test_a_name_no_installed_face_can_print_refuses_its_document_naming_it_not_a_500(world, database_url, schema):
    """What an outsider found: a candidate named 𠮷田 (a real name character, CJK extension B) registered, and then
        the whole session's admission tickets answered 500; an emoji in the demand form's contact did the same (it prints
    now, in Hanazono). 𠮷 prints
        now (test_names_beyond_gb2312_print_in_a_fallback_face_and_read_back); a character no installed face has (extension
        G's 𰀀, newer than the fonts) answers 409 naming the ticket and the character; what the request itself gives, 422
        naming the field. A name with an emoji is refused at registration (test_registration_rules)."""
    from fastapi.testclient import TestClient

    from domain.registration import AttachmentKind, Registration
    from infra.api import create_app
    from tests.api import bearer
    from tests.builders import attachment, working_years_form
    from tests.lifecycle import approved_cohort, sit_exam

    iid, pid, rids = approved_cohort(world, 2)
    # Stored before registration refused such a name (test_a_name_no_installed_face_can_print_is_refused_at_registra
    # tion): through the aggregate, past the service's check.
    held = world.registrations.get(Registration, rids[1], "registration")
    held.amend(staff(iid), working_years_form(2, name="\U00030000田"), "姓名录入错误",
               attachment(AttachmentKind.WRITTEN_EXPLANATION), world.registrations.today())  # fmt: skip
    world.registrations.save(held)
    exam_id = sit_exam(world, iid, pid, rids)
    world.certificates.file_demand(staff(iid), iid, 2027, {Level.TWO: 80})
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    with TestClient(create_app(database_url, schema, today=world.clock), raise_server_exceptions=False) as http:
        r = http.get(f"/sessions/{exam_id}/tickets.pdf", headers=token)
        assert r.status_code == 409 and re.search(
            r"the ticket for room \S+, seat \d+: .*\U00030000", r.json()["detail"]
        ), r.text
        r = http.get(f"/institutions/{iid}/stock/demand/2027.pdf?contact=李\U00030000&phone=0755-1&address=深圳",
                     headers=token)  # fmt: skip
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "query.contact", r.text


def test_a_name_no_installed_face_can_print_is_refused_at_registration(world, database_url, schema):
    """A name with a character no installed face has (extension G's 𰀀, newer than every font here) was accepted at
    registration and refused only at printing: the candidate was reviewed, paid, sat and passed, and then got neither
    an admission ticket nor a certificate. It is refused where it comes in now, naming the character: registration
    (over HTTP, a 422 naming form.name), a candidate list (the row), a resubmission and an amendment that changes the
    name, each storing nothing. A name the fallback faces print (𠮷, extension B) goes in."""
    from fastapi.testclient import TestClient

    from domain.errors import InvalidInput
    from domain.registration import AttachmentKind, Registration
    from infra.api import create_app
    from infra.services.imports import import_candidates
    from infra.services.registrations import Decision
    from tests.api import as_json, bearer
    from tests.builders import attachment, candidate, working_years_form
    from tests.test_imports import csv_bytes, row

    iid, pid, code = setup_plan(world.registrations, seats=10)
    stored = world.registrations.recorder.max_notification_id

    before = stored()
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    with TestClient(create_app(database_url, schema, today=world.clock)) as http:
        r = http.post("/registrations", headers=token,
                      json={"registration_code": code, "form": as_json(working_years_form(1, name="\U00030000田"))})  # fmt: skip
        assert r.status_code == 422, r.text
        error = r.json()["errors"][0]
        assert error["field"].endswith("name") and "U+30000" in error["message"], r.text
        assert "certificate" in error["message"], r.text
        assert stored() == before
        r = http.post("/registrations", headers=token,
                      json={"registration_code": code, "form": as_json(working_years_form(1, name="\U00020bb7田"))})  # fmt: skip
        assert r.status_code == 201, r.text
    with pytest.raises(InvalidInput) as refused:
        import_candidates(world.registrations, staff(iid), pid, csv_bytes([row(2), row(3, 姓名="李\U00030000")]),
                          "list.csv")  # fmt: skip
    assert [f for f, _ in refused.value.problems] == ["row 3.姓名"] and "U+30000" in refused.value.problems[0][1]
    rid = world.registrations.register(candidate(4), code, working_years_form(4))
    before = stored()
    with pytest.raises(InvalidInput, match="U\\+30000"):
        world.registrations.amend(staff(iid), rid, working_years_form(4, name="\U00030000四"), "姓名录入错误",
                                  attachment(AttachmentKind.WRITTEN_EXPLANATION))  # fmt: skip
    assert stored() == before
    world.registrations.review(staff(iid), rid, Decision.RETURNED, reasons="照片不清晰")
    with pytest.raises(InvalidInput, match="U\\+30000"):
        world.registrations.resubmit(candidate(4), rid, working_years_form(4, name="\U00030000四"))
    assert world.registrations.get(Registration, rid, "registration").form.name == working_years_form(4).name


def test_a_correction_to_a_name_no_installed_face_can_print_is_refused(world, database_url, schema):
    """What an outside review found: a correction to 𰀀明 was applied for, checked, approved and re-reported, and then
    the certificate could never be printed again (its one correction spent), and every batch print of its plan was
    refused naming it. The application is refused now, a 422 naming correction.name; 𠮷 goes in."""
    from fastapi.testclient import TestClient

    from domain.registration import AttachmentKind
    from infra.api import create_app
    from tests.api import bearer
    from tests.builders import attachment
    from tests.lifecycle import queryable_certificates

    iid, cids = queryable_certificates(world, 1)
    evidence = attachment(AttachmentKind.CORRECTION_EVIDENCE).model_dump(mode="json")
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    before = world.certificates.recorder.max_notification_id()
    with TestClient(create_app(database_url, schema, today=world.clock)) as http:
        r = http.post(f"/certificates/{cids[0]}/correction-application", headers=token,
                      json={"correction": {"name": "\U00030000明"}, "reasons": "姓名录入错误", "evidence": evidence})  # fmt: skip
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "correction.name", r.text
        assert "U+30000" in r.json()["errors"][0]["message"], r.text
        assert world.certificates.recorder.max_notification_id() == before
        r = http.post(f"/certificates/{cids[0]}/correction-application", headers=token,
                      json={"correction": {"name": "\U00020bb7明"}, "reasons": "姓名录入错误", "evidence": evidence})  # fmt: skip
        assert r.status_code == 204, r.text
    assert world.certificates.certificate(cids[0]).correction.name == "\U00020bb7明"


def test_every_gb2312_character_of_a_name_prints():
    """Registration and a correction check a name against the faces only when it is not all GB2312 (certgen.
    certificate.unprintable): every character of GB2312 (and ASCII) a name may hold prints on the certificate and the
    ticket."""
    from domain.text import name_problem

    gb2312 = [bytes([a, b]).decode("gb2312", errors="ignore") for a in range(0xA1, 0xF8) for b in range(0xA1, 0xFF)]
    names = "".join(ch for ch in [*gb2312, *map(chr, range(0x20, 0x7F))] if ch and name_problem(ch) is None)
    assert len(names) > 7000 and "喆" not in names and "张" in names
    fonts.register()
    assert fonts.covers(fonts.FANGSONG, names) == [] and fonts.covers(fonts.KAI, names) == []


def test_names_beyond_gb2312_print_in_a_fallback_face_and_read_back(tmp_path):
    """GB2312's 6,763 hanzi leave out characters thousands of people are named with (喆, 堃, 玥, 珺, 旻, 祎, 䶮 of
    extension A, 𠮷 of extension B). Each used to be refused as unprintable in the Song face the filled-in values print
    in, and the holder got no certificate. Each now prints in the next face that has it (Song, then AR PL UMing, then
    Hanazono Mincho), on the certificate, its proof and the admission ticket, and copies out of the PDF as itself."""
    from datetime import time

    from certgen.documents import admission_ticket, certificate_proof
    from certgen.fonts import covers, register

    names = ["张喆", "李堃", "王玥珺", "赵旻祎", "罗䶮", "𠮷田"]
    register()
    assert covers("Song", "".join(names)) == []  # with the fallbacks
    pdf = tmp_path / "names.pdf"
    pdf.write_bytes(render([page_for(holder_name=n, institution="深圳市堃鹏技能评价中心") for n in names]))
    fonts_used = {row.split()[0].split("+")[1] for row in run("pdffonts", str(pdf)).splitlines()[2:]}
    assert {"BousungEG-Light-GB", "UMingCN-0", "HanaMinA"} <= fonts_used, fonts_used
    for page, name in enumerate(names, 1):
        text = re.sub(r"\s+", "", run("pdftotext", "-f", str(page), "-l", str(page), str(pdf), "-"))
        assert name in text and "深圳市堃鹏技能评价中心" in text, (name, text)
    proof = tmp_path / "proof.pdf"
    proof.write_bytes(certificate_proof(
        institution="深圳市堃鹏技能评价中心", holder_name="𠮷田喆", id_type="居民身份证", id_number="440304199206124426",
        occupation="人工智能训练师", job=None, level=Level.TWO, number="S000044032015262000001", proof_number="P1",
        issued_on=date(2026, 8, 3)))  # fmt: skip
    ticket = tmp_path / "ticket.pdf"
    ticket.write_bytes(admission_ticket(
        name="𠮷田喆", id_number_masked="4403**********4426", plan_name="人工智能训练师认定", occupation="人工智能训练师",
        level=Level.TWO, session="A", exam_date=date(2026, 4, 10), starts_at=time(9), location="深圳 & 东莞",
        room="R1", seat=3, institution="深圳市堃鹏技能评价中心"))  # fmt: skip
    for document in (proof, ticket):
        text = re.sub(r"\s+", "", run("pdftotext", str(document), "-"))
        assert "𠮷田喆" in text and "深圳市堃鹏技能评价中心" in text, text
    assert "深圳&东莞" in re.sub(r"\s+", "", run("pdftotext", str(ticket), "-"))  # escaped, not taken for markup


def test_names_the_registration_takes_print_on_every_document_not_only_the_certificate(tmp_path):
    """What an outside review found: 阿卜杜・热合曼 (U+30FB) and 阿卜杜‧热合曼 (U+2027), whose punctuation the
    registration takes, Vietnamese letters, a decomposed accent and 葛 with a variation selector printed on the
    certificate but were refused on the ticket, the proof and the other documents (checked against Times, printed in
    Kai), one such name stopping a whole session's tickets; the selector was named as an invisible character. Each now
    prints on every document (the selector asks for a variant no face has: 葛 prints), and what no face has is named
    by its code."""
    from datetime import time

    from certgen import report
    from certgen.certificate import Unprintable, check_glyphs
    from certgen.documents import admission_ticket, certificate_proof, loss_application, proof_receipt

    names = {"阿卜杜・热合曼": "阿卜杜・热合曼", "阿卜杜‧热合曼": "阿卜杜‧热合曼", "Nguyễn Thị Hằng": "NguyễnThịHằng",
             "Đặng Văn Lâm": "ĐặngVănLâm", "李\u0301娜": "李", "葛\U000e0100优": "葛优"}  # fmt: skip
    for name, reads in names.items():
        pdfs = {
            "certificate": render([page_for(holder_name=name)]),
            "ticket": admission_ticket(
                name=name, id_number_masked="4403**********4426", plan_name="人工智能训练师认定",
                occupation="人工智能训练师", level=Level.TWO, session="A", exam_date=date(2026, 4, 10),
                starts_at=time(9), location="深圳", room="R1", seat=3, institution="深圳市技能人才评价示范中心"),
            "proof": certificate_proof(
                institution="深圳市技能人才评价示范中心", holder_name=name, id_type="居民身份证",
                id_number="440304199206124426", occupation="人工智能训练师", job=None, level=Level.TWO,
                number="S000044032015262000001", proof_number="P1", issued_on=date(2026, 8, 3)),
            "receipt": proof_receipt(
                institution="深圳市技能人才评价示范中心", holder_name=name, number="S000044032015262000001",
                receipt_number="S000044032015262000001-R01", kind="lost", applied_on=date(2026, 8, 3),
                due=date(2026, 8, 10)),
            "application": loss_application(holder_name=name, id_number="440304199206124426",
                                            occupation="人工智能训练师", number="S000044032015262000001",
                                            level=Level.TWO),
        }  # fmt: skip
        for document, pdf in pdfs.items():
            (tmp_path / "d.pdf").write_bytes(pdf)
            text = re.sub(r"\s+", "", run("pdftotext", str(tmp_path / "d.pdf"), "-"))
            assert reads in text, (name, document, text)
    with pytest.raises(Unprintable, match=r"the ticket: no installed face has a glyph for 𰀀 \(U\+30000\)"):
        check_glyphs([], "the ticket", kai=["张\U00030000"])
    (tmp_path / "r.pdf").write_bytes(report.render(
        scope="深圳\U00030000中心", first=date(2026, 1, 1), last=date(2026, 1, 31), zone="Asia/Shanghai",
        made_at=datetime(2026, 2, 1, 9), chain=[("状态", "完好")], counts=[], columns=[str(i) for i in range(12)],
        corrections=[], deletions=[], spoiled=[], rows=[]))  # fmt: skip
    assert "深圳[U+30000]中心" in re.sub(r"\s+", "", run("pdftotext", str(tmp_path / "r.pdf"), "-"))


@pytest.mark.parametrize(("institution", "holder"), [
    ("广州市白云区人力资源和社会保障局职业技能等级认定评价中心", "阿卜杜热合曼·买买提明·艾合买提江·吐尔逊"),
    (("广州市海珠区喆玥职业技能等级认定评价中心有限责任公司（第二分公司）" * 3)[:100], "阿卜杜热合曼·买买提明·艾合买提江·吐尔逊"),
    ("W" * 100, "W" * 50), ("广州市某某某（一）", "KHAMSAVATH-PHOMMACHANH-SOUVANNAVONG"),
])  # fmt: skip
def test_long_names_wrap_inside_their_column_and_the_border(tmp_path, institution, holder):
    """What an outside review found: an institution's name of 27 characters (the registration allows 100) ran across
    the English body into the right half, and under the seal past the border; a holder's name, an occupation or a job
    past about 18 characters ran off the page (they may be 50). Each now wraps within its column, the body smaller only
    when a very long name would reach the name under the seal, a field's value smaller only past two lines."""
    from reportlab.lib.units import mm

    from certgen.certificate import BORDER, PAGE, wrap_chars, wrap_words

    page = page_for(
        institution=institution, holder_name=holder, occupation="人" * 50, job="Cloud-Infrastructure-Engineer"
    )
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(render([page]))
    words = [(float(x0), float(x1), w) for x0, x1, w in re.findall(
        r'xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">([^<]+)</word>',
        run("pdftotext", "-bbox", str(pdf), "-"))]  # fmt: skip
    left, right = (PAGE[0] - BORDER[0]) / 2, (PAGE[0] + BORDER[0]) / 2
    middle = PAGE[0] / 2
    seal = set("职业技能等级认定专用章" + institution)  # the seal's own lettering is struck over the name, as it should
    assert all(left < x0 and x1 < right for x0, x1, _ in words), [w for w in words if not left < w[0] < w[1] < right]
    crossing = [w for x0, x1, w in words if x0 < middle - 10 < x1 and not set(w) <= seal]
    assert crossing == [], crossing
    # A value's second line shares its height with the English label under the Chinese one: read without them.
    text = re.sub(r"\s+", "", re.sub(r"\b(Name|Occupation|Job)\b", "", run("pdftotext", str(pdf), "-")))
    # pdftotext takes a hyphen ending a line for a hyphenation, and leaves it out.
    assert holder.replace("-", "") in text.replace("-", "") and "人" * 50 in text, text
    chinese, english = page.body()
    for lines in (wrap_chars(chinese, fonts.KAI, 16, 118 * mm), wrap_words(english, 16, 118 * mm)):
        assert not [line for line in lines[1:] if line[0] in "）。，."], lines  # closing punctuation starts no line


def test_an_institution_of_any_name_the_registration_allows_is_registered_certified_and_printed(world, tmp_path):
    """What an outside review found: an institution of 16 Chinese characters or more could not be registered (its
    signing certificate's common name, '<name> 电子证书签章', past X.509's 64 bytes: a 500 after the institution was
    saved, so it stayed without a key); a variation selector in its name crashed the seal, after a batch print had
    booked its forms."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from domain.institution import DeadlineProfile, Filing, Institution
    from tests.builders import ADMIN, SCOPE

    for serial, name in enumerate(["广州市白云区人力资源和社会保障局职业技能等级认定评价中心", "喆" * 100,
                                   "深圳市葛\U000e0100技能\u200d评价中心"], 20):  # fmt: skip
        iid = world.registrations.register_institution(
            ADMIN, name, Filing(city_code="01", station_serial=f"{serial:03d}"), DeadlineProfile.S, SCOPE
        )
        institution = world.registrations.get(Institution, iid, "institution")
        assert institution.sample and institution.signing_serial, name
        [pem] = [e.certificate_pem for e in world.registrations.events.get(iid) if hasattr(e, "certificate_pem")]
        subject = x509.load_pem_x509_certificate(pem.encode()).subject
        organisation = subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value  # RFC 5280: 64 at most
        assert organisation == (name if len(name) <= 64 else name[:63] + "…").replace("\U000e0100", "").replace(
            "\u200d", "")  # fmt: skip
        common = subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        assert common.endswith(" 电子证书签章") and len(common.encode()) <= 64, common
        (tmp_path / "c.pdf").write_bytes(render([page_for(institution=name)]))
        assert name.replace("\U000e0100", "").replace("\u200d", "")[:6] in run(
            "pdftotext", str(tmp_path / "c.pdf"), "-"
        )


def test_a_candidate_prints_their_own_admission_ticket(world, session, database_url, schema, tmp_path):
    """An outside review, as a candidate: the only ticket was the session's, for staff (403); a candidate, who
    prints the 准考证 at home, could not get theirs. GET /registrations/{id}/ticket.pdf: their own, one page, read
    back; another's is refused; one not yet issued says when it will be."""
    from fastapi.testclient import TestClient

    from domain.exam import ExamSession
    from domain.registration import Registration
    from infra.api import create_app
    from tests.api import bearer

    iid, exam_id = session
    exams = world.exams
    held = ExamSession.candidates_in(exams.events.get(exam_id))
    mine, other = (exams.get(Registration, r, "registration") for r in list(held)[:2])
    seat = exams.sitting(mine.id)
    token = bearer(database_url, schema, Role.CANDIDATE, mine.form.name, id_number=mine.form.id_number)
    with TestClient(create_app(database_url, schema, today=world.clock)) as http:
        r = http.get(f"/registrations/{mine.id}/ticket.pdf", headers=token)
        assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
        (tmp_path / "ticket.pdf").write_bytes(r.content)
        flat = re.sub(r"\s+", "", run("pdftotext", str(tmp_path / "ticket.pdf"), "-"))
        assert "职业技能等级认定准考证" in flat and mine.form.name in flat and other.form.name not in flat, flat[:300]
        assert mine.form.id_number not in flat and seat.room in flat  # masked, as on the session's tickets
        assert re.search(r"Pages:\s+1\n", run("pdfinfo", str(tmp_path / "ticket.pdf")))
        r = http.get(f"/registrations/{other.id}/ticket.pdf", headers=token)
        assert r.status_code == 403, r.text
    from tests.builders import candidate, plan_details, working_years_form

    details = plan_details("2699", registration_deadline=date(2099, 1, 1), evaluation_start=date(2099, 2, 1),
                           evaluation_end=date(2099, 2, 1))  # fmt: skip
    _, code = world.registrations.publish_plan(staff(iid), iid, details)
    waiting = world.registrations.register(candidate(90), code, working_years_form(90))
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-wu", iid)
    with TestClient(create_app(database_url, schema, today=world.clock)) as http:
        r = http.get(f"/registrations/{waiting}/ticket.pdf", headers=token)
        assert r.status_code == 404 and "one week before the exam" in r.json()["detail"], r.text
