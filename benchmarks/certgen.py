"""Render a 1,000-certificate batch, timed, next to the same text drawn plainly with the same
embedded fonts (no layout, seal or QR code): what reportlab costs for these pages anyway.

    python -m benchmarks.certgen              # 1,000 certificates, 3 runs, one process (one core)

Rendering only: booking the pages on blank forms through the domain is one transaction for the batch on top
(858 certificates booked in 1.68 s, against 22.75 s at one transaction each: docs/benchmarks.md, a ninth machine).
"""

from __future__ import annotations

import io
import statistics
import time
from datetime import date

import typer
from reportlab.lib.pagesizes import A4, landscape
from reportlab.pdfgen.canvas import Canvas
from rich.console import Console
from rich.table import Table

from certgen.certificate import CertificatePage, render
from certgen.fonts import KAI, TIMES, register
from certgen.qr import verification_url
from domain.levels import Level

console = Console()
SURNAMES, GIVEN = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗", "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"


def pages(n: int) -> list[CertificatePage]:
    out = []
    for i in range(1, n + 1):
        number = f"S00004403201526{2}{i:06d}"
        out.append(CertificatePage(
            number=number, institution="深圳市技能人才评价示范中心", issued_on=date(2026, 4, 29),
            holder_name=SURNAMES[i % 20] + GIVEN[(i * 7) % 20] + GIVEN[(i * 3) % 20], id_type="居民身份证",
            id_number=f"440305199{i % 10}0101{i % 1000:03d}X", occupation="人工智能训练师", job=None, level=Level.TWO,
            form_serial=10_000_000 + i, verify_url=verification_url("https://verify.example.org", number),
        ))  # fmt: skip
    return out


def plain(batch: list[CertificatePage]) -> bytes:
    """The floor: every page's strings, in the same two embedded faces, one line each."""
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=landscape(A4), pageCompression=1, initialFontName=TIMES)
    for p in batch:
        y = 560.0
        for text in p.texts():
            canvas.setFont(KAI if any(ord(ch) > 0x2000 for ch in text) else TIMES, 12)
            canvas.drawString(40, y, text)
            y -= 16
        canvas.showPage()
    canvas.save()
    return out.getvalue()


def main(count: int = typer.Option(1000, help="certificates per batch"), runs: int = 3) -> None:
    register()
    batch = pages(count)
    render(batch[:5])  # warm the font subsetting caches before timing
    rows = []
    for run in range(1, runs + 1):
        started = time.perf_counter()
        pdf = render(batch)
        ours = time.perf_counter() - started
        started = time.perf_counter()
        plain(batch)
        floor = time.perf_counter() - started
        rows.append((run, count / ours, count / floor, len(pdf)))
    table = Table("run", "certificates/s", "plain pages/s (floor)", "ratio", "PDF size")
    for run, ours, floor, size in rows:
        table.add_row(str(run), f"{ours:,.1f}", f"{floor:,.1f}", f"{ours / floor:.2f}", f"{size / 1e6:.1f} MB")
    med_ours, med_floor = statistics.median(r[1] for r in rows), statistics.median(r[2] for r in rows)
    table.add_row("median", f"{med_ours:,.1f}", f"{med_floor:,.1f}", f"{med_ours / med_floor:.2f}", "")
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
