"""The QR code a certificate carries: it opens the public verification page for its number."""

from __future__ import annotations

from urllib.parse import quote

from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing


def verification_url(public_url: str, number: str) -> str:
    """What the QR code encodes: the API's public address (SKILLCERT_PUBLIC_URL) and /verify/<number>."""
    return f"{public_url.rstrip('/')}/verify/{quote(number)}"


def qr_drawing(url: str, size: float) -> Drawing:
    """A square QR code of `size` points, error correction M (survives a scuffed print)."""
    widget = QrCodeWidget(url, barLevel="M")
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    drawing.add(widget)
    return drawing
