"""Regenerate docs/certificate.png: `.venv/bin/python docs/render_sample.py` (needs poppler's pdftoppm)."""

import subprocess
import tempfile
from datetime import date
from pathlib import Path

from certgen.certificate import CertificatePage, render
from certgen.qr import verification_url
from domain.levels import Level
from infra.services.samples import photo

NUMBER = "S000044032015262000001"
page = CertificatePage(
    number=NUMBER, institution="深圳市技能人才评价示范中心", issued_on=date(2026, 4, 29), holder_name="李娜",
    id_type="居民身份证", id_number="440304199206124426", occupation="人工智能训练师", job=None, level=Level.TWO,
    form_serial=10_000_001, verify_url=verification_url("http://127.0.0.1:8000", NUMBER), photo=photo(0),
)  # fmt: skip
with tempfile.TemporaryDirectory() as tmp:
    pdf = Path(tmp) / "certificate.pdf"
    pdf.write_bytes(render([page]))
    here = Path(__file__).parent
    subprocess.run(["pdftoppm", "-png", "-r", "110", "-singlefile", str(pdf), str(here / "certificate")], check=True)
