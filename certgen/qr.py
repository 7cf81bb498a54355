"""The QR code a certificate carries: it opens the public verification page for its number."""

from __future__ import annotations

from urllib.parse import quote

from reportlab.graphics.barcode.qrencoder import QR8bitByte, QRCode, QRErrorCorrectLevel
from reportlab.pdfgen.canvas import Canvas

QUIET = 4  # modules of white margin, as the standard asks


def verification_url(public_url: str, number: str) -> str:
    """What the QR code encodes: the API's public address (SKILLCERT_PUBLIC_URL) and /verify/<number>."""
    return f"{public_url.rstrip('/')}/verify/{quote(number)}"


def modules(text: str) -> list[list[bool]]:
    """The QR matrix, error correction M (survives a scuffed print), encoded by reportlab."""
    code = QRCode(None, QRErrorCorrectLevel.M)
    code.addData(QR8bitByte(text))
    code.make()
    return code.modules


def draw_qr(canvas: Canvas, text: str, x: float, y: float, size: float) -> None:
    """A square QR code of `size` points with its lower left corner at (x, y). Dark modules of a row
    are joined into runs and the whole code is one filled path: reportlab's widget draws a shape per
    module and encodes twice, and was two thirds of a certificate's rendering time."""
    matrix = modules(text)
    cell = size / (len(matrix) + 2 * QUIET)
    path = canvas.beginPath()
    for r, row in enumerate(matrix):
        top = y + size - (QUIET + r + 1) * cell
        c = 0
        while c < len(row):
            if row[c]:
                start = c
                while c < len(row) and row[c]:
                    c += 1
                path.rect(x + (QUIET + start) * cell, top, (c - start) * cell, cell)
            else:
                c += 1
    canvas.saveState()
    canvas.setFillGray(0)
    canvas.drawPath(path, stroke=0, fill=1)
    canvas.restoreState()
