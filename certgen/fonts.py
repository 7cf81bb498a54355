"""The faces of the certificate, embedded as TrueType (004 §11 and its layout table):

- Kai (楷体) for the document's fixed Chinese wording: Debian's fonts-arphic-ukai;
- Times for English: Liberation Serif (fonts-liberation), Times New Roman's metrics. reportlab's
  built-in Times is not embedded in the PDF, so it is not used;
- FangSong (仿宋) for the filled-in values, 小四 (12 pt), as 004 §11 二(1) binds them. No free
  FangSong in Debian covers simplified Chinese: cwTeX 仿宋 (fonts-cwtex-fs) lacks 2,379 of GB2312's
  6,763 hanzi (it is traditional only; measured with reportlab's cmap). The fill-ins therefore use
  the face FangSong imitates, Song: AR PL SungtiL GB (fonts-arphic-gbsn00lp), complete for GB2312.
  An institution holding a licence for a FangSong face (e.g. 方正仿宋 or Windows' simfang.ttf) sets
  SKILLCERT_FANGSONG_FONT to its file, and that is embedded instead;
- Song (宋体) for the seal's lettering (简化的宋体): the same AR PL SungtiL GB.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

KAI, TIMES, SONG, FANGSONG = "Kai", "Times", "Song", "FangSong"
FACES = {
    KAI: ("ukai.ttc", "fonts-arphic-ukai", {"subfontIndex": 0}),
    TIMES: ("LiberationSerif-Regular.ttf", "fonts-liberation", {}),
    SONG: ("gbsn00lp.ttf", "fonts-arphic-gbsn00lp", {}),
}
DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")
FANGSONG_SETTING = "SKILLCERT_FANGSONG_FONT"


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
    licensed = os.environ.get(FANGSONG_SETTING)
    if licensed:
        if not Path(licensed).is_file():
            raise FontMissing(f"{FANGSONG_SETTING}={licensed}: no such font file")
        pdfmetrics.registerFont(TTFont(FANGSONG, licensed))
    else:
        song = pdfmetrics.getFont(SONG).face
        pdfmetrics.registerFont(TTFont(FANGSONG, song.filename))


def covers(font: str, text: str) -> list[str]:
    """The characters of `text` the face has no glyph for."""
    face = pdfmetrics.getFont(font).face
    return [ch for ch in dict.fromkeys(text) if not ch.isspace() and ord(ch) not in face.charToGlyph]
