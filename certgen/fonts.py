"""The two faces the guide names, embedded as TrueType: Kai (楷体) for Chinese, Times for English.

Debian's fonts-arphic-ukai is the Kai; Liberation Serif (fonts-liberation) has Times New Roman's
metrics. reportlab's built-in Times is not embedded in the PDF, so it is not used.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

KAI, TIMES = "Kai", "Times"
FACES = {
    KAI: ("ukai.ttc", "fonts-arphic-ukai", {"subfontIndex": 0}),
    TIMES: ("LiberationSerif-Regular.ttf", "fonts-liberation", {}),
}
DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")


class FontMissing(RuntimeError):
    """Rendering without the face would print missing glyphs: refuse, saying what to install."""


@cache
def register() -> None:
    for name, (file, package, options) in FACES.items():
        found = next((p for d in DIRS if d.is_dir() for p in d.rglob(file)), None)
        if found is None:
            raise FontMissing(f"font file {file} not found under {', '.join(map(str, DIRS))}: install the Debian "
                              f"package {package} (apt-get install {package})")  # fmt: skip
        pdfmetrics.registerFont(TTFont(name, str(found), **options))


def covers(font: str, text: str) -> list[str]:
    """The characters of `text` the face has no glyph for."""
    face = pdfmetrics.getFont(font).face
    return [ch for ch in dict.fromkeys(text) if not ch.isspace() and ord(ch) not in face.charToGlyph]
