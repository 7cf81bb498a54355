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

A name is not bound to GB2312: 喆, 玥, 堃, 珺, 赟, 旻, 祎 and thousands more (GB18030, Unicode's extensions, 𠮷) are
people's names and must print. A character its face lacks prints in the next face of its chain (FALLBACK) that has
it, in the same style where one exists: Song and FangSong fall back to AR PL UMing CN (明体, the Song style;
fonts-arphic-uming, 24,000 characters), then to Hanazono Mincho A and B (fonts-hanazono): together 87,870 of the
87,915 ideographs of the unified block and extensions A to F (those missing were added since 2017; extension G's
none). Kai falls back to Hanazono. Only a character no face of the chain has is refused.
"""

from __future__ import annotations

import os
import threading
import unicodedata
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.pdfbase import pdfmetrics, ttfonts
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas

from domain.text import prints_nothing

KAI, TIMES, SONG, FANGSONG = "Kai", "Times", "Song", "FangSong"
MING, HANA_A, HANA_B = "Ming", "HanaMinA", "HanaMinB"  # the fallbacks
FACES = {
    KAI: ("ukai.ttc", "fonts-arphic-ukai", {"subfontIndex": 0}),
    TIMES: ("LiberationSerif-Regular.ttf", "fonts-liberation", {}),
    SONG: ("gbsn00lp.ttf", "fonts-arphic-gbsn00lp", {}),
    MING: ("uming.ttc", "fonts-arphic-uming", {"subfontIndex": 0}),  # AR PL UMing CN
    HANA_A: ("HanaMinA.ttf", "fonts-hanazono", {}),
    HANA_B: ("HanaMinB.ttf", "fonts-hanazono", {}),
}
# Each face, then the faces that print what it lacks, in order: Chinese faces end in Times for the Latin, Greek and
# Cyrillic letters of a name (Nguyễn, Đặng), Times in Kai for the Chinese punctuation a name may hold (・, ‧).
FALLBACK = {
    KAI: (KAI, HANA_A, HANA_B, TIMES),
    SONG: (SONG, MING, HANA_A, HANA_B, TIMES),
    FANGSONG: (FANGSONG, MING, HANA_A, HANA_B, TIMES),
    TIMES: (TIMES, KAI, HANA_A, HANA_B),
}
FALLBACKS = (MING, HANA_A, HANA_B)
DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".local/share/fonts")
FANGSONG_SETTING = "SKILLCERT_FANGSONG_FONT"


class FontMissing(RuntimeError):
    """Rendering without the face would print missing glyphs: refuse, saying what to install."""


def _to_unicode(fontname: str, subset: list[int]) -> str:
    """reportlab's ToUnicode CMap (ttfonts.makeToUnicodeCMap), each code point written as UTF-16BE, as the PDF
    reference wants: reportlab 5.1 writes one beyond the basic plane (𠮷, U+20BB7) as five hex digits, which a reader
    takes for U+20BB and more. The glyph printed right; the text copied or searched out of the PDF was another."""
    return "\n".join([
        "/CIDInit /ProcSet findresource begin", "12 dict begin", "begincmap", "/CIDSystemInfo",
        f"<< /Registry ({fontname})", f"/Ordering ({fontname})", "/Supplement 0", ">> def",
        f"/CMapName /{fontname} def", "/CMapType 2 def", "1 begincodespacerange", f"<00> <{len(subset) - 1:02X}>",
        "endcodespacerange", f"{len(subset)} beginbfchar",
        *(f"<{i:02X}> <{chr(v).encode('utf-16-be').hex().upper()}>" for i, v in enumerate(subset)),
        "endbfchar", "endcmap", "CMapName currentdict /CMap defineresource pop", "end", "end",
    ])  # fmt: skip


ttfonts.makeToUnicodeCMap = _to_unicode


@cache
def register() -> None:
    """The faces every document prints in. The fallbacks are registered when a text first needs one (_glyphs): they
    hold 87,000 glyphs and cost a process 130 MB and a quarter of a second, which most documents never need."""
    for name in FACES:
        if name not in FALLBACKS:
            _register(name)
    licensed = os.environ.get(FANGSONG_SETTING)
    if licensed:
        if not Path(licensed).is_file():
            raise FontMissing(f"{FANGSONG_SETTING}={licensed}: no such font file")
        pdfmetrics.registerFont(TTFont(FANGSONG, licensed))
    else:
        song = pdfmetrics.getFont(SONG).face
        pdfmetrics.registerFont(TTFont(FANGSONG, song.filename))


def _register(name: str) -> None:
    file, package, options = FACES[name]
    found = next((p for d in DIRS if d.is_dir() for p in d.rglob(file)), None)
    if found is None:
        raise FontMissing(f"font file {file} not found under {', '.join(map(str, DIRS))}: install the Debian "
                          f"package {package} (apt-get install {package})")  # fmt: skip
    pdfmetrics.registerFont(TTFont(name, str(found), **options))


_fallbacks_made = threading.Lock()
# One document rendered at a time in a process: reportlab keeps what each document uses of an embedded TrueType face
# (its subset) in the face's object, which every thread shares, and documents rendered at once mixed their subsets
# (KeyError or IndexError in ttfonts.makeSubset: twelve electronic certificates signed at once, one of them refused).
# Rendering holds the interpreter's lock anyway: taking turns costs little.
RENDERING = threading.RLock()  # re-entrant: a document may draw another's parts


def _glyphs(face: str) -> dict[int, int]:
    """The face's character -> glyph map, a fallback registered on first use."""
    if face in FALLBACKS:
        with _fallbacks_made:
            if face not in pdfmetrics.getRegisteredFontNames():
                _register(face)
    return pdfmetrics.getFont(face).face.charToGlyph


def _face_for(font: str, ch: str) -> str | None:
    """The first face of `font`'s chain with a glyph for `ch` (a fallback looked at only when those before lack it)."""
    return next((f for f in FALLBACK.get(font, (font,)) if ord(ch) in _glyphs(f)), None)


def covers(font: str, text: str) -> list[str]:
    """The characters of `text` that neither the face nor any of its fallbacks has a glyph for."""
    return [
        ch for ch in dict.fromkeys(text) if not (ch.isspace() or prints_nothing(ch)) and _face_for(font, ch) is None
    ]


def runs(font: str, text: str) -> list[tuple[str, str]]:
    """`text` (NFC) cut into (face, run) where the face changes: each character in the first face of `font`'s chain
    that has it. Spaces, and a combining mark the run's face has, stay with the run they are in; characters that print
    nothing (domain.text.prints_nothing) are left out; a character none has stays in `font` (`covers` refuses it first)."""
    own = _glyphs(font)
    if all(ord(ch) in own or ch.isspace() for ch in text):  # nearly always: one run, a lookup a character
        return [(font, text)] if text else []
    out: list[tuple[str, str]] = []
    for ch in unicodedata.normalize("NFC", text):
        if prints_nothing(ch):
            continue
        face = font
        if out and (ch.isspace() or (unicodedata.combining(ch) and ord(ch) in _glyphs(out[-1][0]))):
            face = out[-1][0]
        elif not ch.isspace():
            face = font if ord(ch) in own else _face_for(font, ch) or font
        if out and out[-1][0] == face:
            out[-1] = (face, out[-1][1] + ch)
        else:
            out.append((face, ch))
    return out


def width(font: str, text: str, size: float) -> float:
    """How wide `text` prints in `font` with its fallbacks."""
    return sum(pdfmetrics.stringWidth(t, f, size) for f, t in runs(font, text))


def draw(canvas: Canvas, x: float, y: float, text: str, font: str, size: float, centred: bool = False) -> float:
    """Draw `text` in `font`, each character its face lacks in its fallback; centred on x when asked. Returns where it
    ends."""
    if centred:
        x -= width(font, text, size) / 2
    for face, t in runs(font, text):
        canvas.setFont(face, size)
        canvas.drawString(x, y, t)
        x += pdfmetrics.stringWidth(t, face, size)
    return x


def markup(font: str, text: str) -> str:
    """`text` for a reportlab Paragraph set in `font`: escaped, the runs its face lacks wrapped in their fallback."""
    return "".join(escape(t) if f == font else f'<font name="{f}">{escape(t)}</font>' for f, t in runs(font, text))
