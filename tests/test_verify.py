"""Public certificate verification: JSON for programs, the HTML page for the browser a QR code opens.

The browser test renders the certificate's QR code into a PDF with reportlab (as certgen prints
it), rasterises it with poppler's pdftoppm, decodes it with zbarimg, and opens the URL it holds
in headless Chromium against a real server.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfgen.canvas import Canvas

from certgen.qr import draw_qr, verification_url
from infra.api import create_app
from tests.api import serving
from tests.test_read_models import KEY, apply_live, bus_messages, certificates_in_every_state, conn  # noqa: F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = [tool for tool, found in (("chromium", CHROMIUM), ("pdftoppm", shutil.which("pdftoppm")),
                                    ("zbarimg", shutil.which("zbarimg"))) if not found]  # fmt: skip


@dataclass
class Certs:
    valid: str
    proof: str
    corrected: str
    revoked: str
    holder: Any


@pytest.fixture
def certs(world, conn) -> Certs:  # noqa: F811
    _, cids = certificates_in_every_state(world, 6)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    number = [world.certificates.certificate(c).number for c in cids]
    return Certs(number[4], number[0], number[1], number[3], world.certificates.certificate(cids[4]).holder)


def test_verification_answers_for_valid_corrected_revoked_unknown_and_malformed_numbers(certs, database_url, schema):
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex(), verify_rate_limit="1000/minute")) as http:
        v = http.get(f"/verify/{certs.valid}").json()
        assert (v["status"], v["holder_name"], v["level"], v["job"]) == ("valid", certs.holder.name, "二级/技师", "--")
        assert v["occupation"] == "人工智能训练师" and v["institution"] == "深圳市技能人才评价示范中心"
        assert v["issued_on"] == "2026-04-29" and v["nationally_queryable_since"] == "2026-07-01"
        number = certs.holder.id_number
        assert v["id_number"] == number[:4] + "*" * 10 + number[-4:] and number not in str(v)
        assert http.get(f"/verify/{certs.proof}").json()["loss_proof_issued"] is True
        corrected = http.get(f"/verify/{certs.corrected}").json()
        assert (corrected["status"], corrected["holder_name"]) == ("corrected", "更正后姓名")
        # What an outsider found: the page said the corrected data was queryable nationally since July, while it was
        # only being reported again: an employer checking there found the name before the correction.
        assert corrected["nationally_queryable_since"] is None and corrected["correction_pending_national"] is True
        page = http.get(f"/verify/{certs.corrected}", headers={"Accept": "text/html"}).text
        assert "全国联网查询暂仍显示更正前的信息" in page and "更正前打印的纸质证书已作废" in page
        assert "2026-07-01" not in page
        # Typed in lower case, or with a space: refused, naming the position, not repaired.
        r = http.get(f"/verify/{certs.corrected.lower()}")
        assert (
            r.status_code == 422
            and r.json()["errors"][0]["field"] == "certificate_number"
            and "position 1" in r.json()["detail"]
        )
        r = http.get(f"/verify/%20{certs.corrected}")
        assert r.status_code == 422 and "23" in r.json()["detail"]
        revoked = http.get(f"/verify/{certs.revoked}").json()
        assert revoked["status"] == "revoked" and revoked["holder_name"] is None and revoked["id_number"] is None

        unknown = certs.valid[:-6] + "999999"
        r = http.get(f"/verify/{unknown}")
        assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == f"no certificate carries the number {unknown}"
        r = http.get("/verify/S00004403201526200000")  # one character short
        assert r.status_code == 422 and "must be 22 characters, not 21" in r.json()["detail"]
        r = http.get(f"/verify/{certs.valid[:15]}9{certs.valid[16:]}")
        assert r.status_code == 422 and "position 16: level must be 1-5, not 9" in r.json()["detail"]

        page = http.get(f"/verify/{certs.valid}", headers={"Accept": "text/html"})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'data-status="valid"' in page.text and certs.holder.name in page.text and number not in page.text
        missing = http.get(f"/verify/{unknown}", headers={"Accept": "text/html"})
        assert missing.status_code == 404 and 'data-status="not_found"' in missing.text


def test_verification_is_rate_limited_per_address(certs, database_url, schema):
    with TestClient(create_app(database_url, schema, verify_rate_limit="5/minute")) as http:
        answers = [http.get(f"/verify/{certs.valid}").status_code for _ in range(7)]
        assert answers == [200] * 5 + [429] * 2
        r = http.get(f"/verify/{certs.valid}")
        assert r.headers["content-type"] == "application/problem+json" and 1 <= int(r.headers["retry-after"]) <= 61
        assert http.get("/health").status_code == 200  # only verification is limited


@pytest.fixture
def server(certs, database_url, schema) -> Iterator[str]:
    with serving(create_app(database_url, schema, pseudonym_key=KEY.hex())) as base:
        yield base


def scan(tmp_path: Path, url: str) -> str:
    """Print the QR code as certgen does, rasterise the page, read the code back."""
    tmp_path.mkdir(exist_ok=True)
    pdf = tmp_path / "certificate.pdf"
    canvas = Canvas(str(pdf), pagesize=landscape(A4))
    draw_qr(canvas, url, 700, 40, 80)
    canvas.save()
    subprocess.run(["pdftoppm", "-png", "-r", "150", str(pdf), str(tmp_path / "page")], check=True)
    png = next(tmp_path.glob("page*.png"))
    return subprocess.run(
        ["zbarimg", "--raw", "-q", str(png)], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.skipif(
    bool(MISSING), reason=f"{MISSING} not installed: .ci/run installs chromium, poppler-utils, zbar-tools"
)
def test_the_page_a_qr_code_opens_shows_the_status_in_a_real_browser(certs, server, tmp_path):
    from playwright.sync_api import sync_playwright

    urls = {c: scan(tmp_path / c, verification_url(server, getattr(certs, c))) for c in ("valid", "revoked")}
    assert urls["valid"] == f"{server}/verify/{certs.valid}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(urls["valid"])
        assert page.get_attribute("#status", "data-status") == "valid"
        assert page.inner_text("#status") == "有效 / Valid"
        assert page.inner_text("#holder") == certs.holder.name and page.inner_text("#level") == "二级/技师"
        assert "*" in page.inner_text("#id-number") and certs.holder.id_number not in page.content()
        page.goto(urls["revoked"])
        assert page.get_attribute("#status", "data-status") == "revoked"
        assert page.locator("#holder").count() == 0
        page.goto(f"{server}/verify/NOT-A-NUMBER")
        assert page.get_attribute("#status", "data-status") == "malformed"
        detail = page.inner_text("#detail")
        assert detail.startswith("第 13 位：证书编号应为 22 位") and "must be 22 characters" in detail, detail
        page.goto(f"{server}/verify/{certs.valid[:-1]}9")
        assert page.inner_text("#status").startswith("查无此证书") and page.inner_text("#detail").startswith("编号")
        browser.close()


@pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} not installed: .ci/run installs chromium")
def test_the_page_reads_on_a_phone_without_scrolling_sideways(certs, server, tmp_path):
    """390 x 844 (a common phone) and 320 x 640 (the narrowest): nothing wider than the screen, the
    number and the masked ID whole on the page, system fonts. SKILLCERT_WRITE_SAMPLES=1 refreshes
    docs/verify-phone.png from the 390-wide screenshot."""
    import os

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        for width, height in ((390, 844), (320, 640)):
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=2, is_mobile=True)
            for number in (certs.valid, f"{certs.valid}X", certs.revoked):
                page.goto(f"{server}/verify/{number}")
                widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
                assert widths[0] <= widths[1], (width, number, widths)
                for selector in ("#number", "#id-number", "#detail"):
                    if page.locator(selector).count():
                        box = page.locator(selector).bounding_box()
                        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (width, selector, box)
            page.goto(f"{server}/verify/{certs.valid}")
            assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("system-ui")
            shot = tmp_path / f"verify-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            if width == 390 and os.environ.get("SKILLCERT_WRITE_SAMPLES"):
                Path(__file__).parent.parent.joinpath("docs", "verify-phone.png").write_bytes(shot.read_bytes())
            page.close()
        browser.close()


@pytest.mark.skipif(bool(MISSING), reason=f"{MISSING} not installed: .ci/run installs chromium")
def test_the_interactive_docs_render_with_no_network_but_the_api(server):
    """/docs and /redoc in Chromium with every request to another host refused, as on an intranet."""
    from urllib.parse import urlsplit

    from playwright.sync_api import sync_playwright

    ours = urlsplit(server).netloc
    refused: list[str] = []

    def only_ours(route):  # type: ignore[no-untyped-def]
        if urlsplit(route.request.url).netloc == ours:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.route("**/*", only_ours)
        page.goto(f"{server}/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() > 50
        page.goto(f"{server}/redoc")
        page.wait_for_selector("[data-section-id^='operation/']", state="attached", timeout=30_000)
        assert page.locator("[data-section-id^='operation/']").count() > 50
        browser.close()
    # Only ReDoc's "powered by" logo is fetched from elsewhere; refused, nothing is missing but that picture.
    assert all(u == "https://cdn.redoc.ly/redoc/logo-mini.svg" for u in refused), refused


def test_a_browser_is_answered_with_the_page_whatever_goes_wrong(certs, database_url, schema):
    """What an outsider found: a phone got raw English problem+json after 60 scans from one office (429), for a number
    over 64 characters, and for /verify with no number; and there was no page to type a number in."""
    page = {"Accept": "text/html,application/xhtml+xml"}
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex(), verify_rate_limit="5/minute")) as http:
        asked = http.get("/verify", headers=page)
        assert (
            asked.status_code == 200 and 'name="number"' in asked.text and "text/html" in asked.headers["content-type"]
        )
        typed = http.get("/verify", params={"number": f" {certs.valid} "}, headers=page, follow_redirects=False)
        assert typed.status_code == 303 and typed.headers["location"] == f"/verify/{certs.valid}"
        # Typed on a phone (an outside review): the letter in lower case, the digits in groups; the example in the
        # box is a number of the right length.
        spaced = f"{certs.valid[:6].lower()} {certs.valid[6:14]} {certs.valid[14:]}"
        typed = http.get("/verify", params={"number": spaced}, headers=page, follow_redirects=False)
        assert typed.status_code == 303 and typed.headers["location"] == f"/verify/{certs.valid}"
        example = re.search(r'placeholder="([^"]+)"', asked.text).group(1)
        assert len(example) == 22 and http.get(f"/verify/{example}").status_code in (200, 404)
        for path, status, says in (
            (f"/verify/{'S' * 65}", 422, "这不是证书编号"),
            ("/verify/S0/1", 404, "没有这个页面"),
        ):
            r = http.get(path, headers=page)
            assert r.status_code == status and says in r.text and "text/html" in r.headers["content-type"], r.text
            assert 'name="number"' in r.text  # the form again, to type the number in
            assert http.get(path).headers["content-type"] == "application/problem+json"  # programs: as before
        for _ in range(5):
            http.get(f"/verify/{certs.valid}")
        limited = http.get(f"/verify/{certs.valid}", headers=page)
        assert limited.status_code == 429 and "查验过于频繁" in limited.text and limited.headers["retry-after"]
        assert f'value="{certs.valid}"' in limited.text  # the number stays in the box, to try again
        assert http.get(f"/verify/{certs.valid}").headers["content-type"] == "application/problem+json"
