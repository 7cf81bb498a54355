"""The certificate (004 §11, annex 2 and its layout table), one A4 landscape page each.

Left half: the title, the body naming the institution, the institution and issue date under the
red seal, both query URLs and the blank form's serial. Right half: the photo, the holder's fields
(Chinese above, English below) and the QR code that opens the public verification page.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

from reportlab.lib.colors import Color, black
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from certgen.fonts import FANGSONG, KAI, RENDERING, SONG, TIMES, covers, draw, register, width
from certgen.qr import draw_qr, verification_url
from certgen.seal import BOTTOM as SEAL_BOTTOM
from certgen.seal import draw_seal
from domain.certificate import Certificate
from domain.levels import Level
from domain.wording import forbidden_words

PAGE = landscape(A4)  # 297 x 210 mm
BORDER = (277 * mm, 190 * mm)
TITLE, TITLE_EN = "职业技能等级证书", "Certificate of Occupational Skill Level"
CERTIFICATE_QUERY = "http://jndj.osta.org.cn"
# 004 §11 prints p.jg…, annex 2 pjig…: both read the real 评价机构 query site, pjjg.osta.org.cn.
INSTITUTION_QUERY = "http://pjjg.osta.org.cn"
# 004 §11 (4): never on a certificate, except inside the institution's registered name.
# split() keeps the Chinese runs: punctuation, ideographs (extension A, the unified block, compatibility, extensions B
# to H beyond the basic plane), full-width forms.
CJK_CHARS = "\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef\U00020000-\U0003ffff"
CJK = re.compile(f"([{CJK_CHARS}]+)")
CLOSING = "，。、；：？！）》」』】〕…,.;:?!)"
NO_LINE_START = frozenset(CLOSING)
WRAP_TOKENS = re.compile(f"[{CJK_CHARS}]|[^\\s{CJK_CHARS}]+\\s*|\\s+")  # a Chinese character, or a word and its spaces
GREY = Color(0.55, 0.55, 0.55)


FILL_SIZE = 12  # 小四号 (small four), in points


class ForbiddenWording(ValueError):
    pass


@dataclass(frozen=True)
class CertificatePage:
    """What one printed certificate shows."""

    number: str
    institution: str
    issued_on: date
    holder_name: str
    id_type: str
    id_number: str
    occupation: str
    job: str | None
    level: Level
    form_serial: int
    verify_url: str
    photo: bytes | None = None  # the holder's colour photo on white; None prints a marked placeholder
    electronic: bool = False  # the electronic certificate: marked so, with no blank form's serial

    @classmethod
    def of(cls, c: Certificate, form_serial: int, public_url: str, photo: bytes | None = None) -> CertificatePage:
        return cls(
            number=c.number, institution=c.institution_name, issued_on=c.issued_on, holder_name=c.holder.name,
            id_type=c.holder.id_type.value, id_number=c.holder.id_number, occupation=c.occupation, job=c.job,
            level=c.level, form_serial=form_serial, verify_url=verification_url(public_url, c.number), photo=photo,
        )  # fmt: skip

    @property
    def fields(self) -> list[tuple[str, str, str]]:
        return [
            ("姓名", "Name", self.holder_name),
            ("证件类型", "ID Type", self.id_type),
            ("证件号码", "ID No.", self.id_number),
            ("职业名称", "Occupation", self.occupation),
            ("工种/职业方向", "Job", self.job or "--"),  # never blank (004 §11, 2 (1))
            ("职业技能等级", "Skill Level", self.level.title),
            ("证书编号", "Certificate No.", self.number),
        ]

    def body(self) -> tuple[str, str]:
        return (
            f"本证书由{self.institution}颁发，表明持证人通过本机构组织的职业技能等级认定，具备该职业（工种）相应技能等级水平。",
            "This is to certify that the bearer has demonstrated corresponding competency in this occupation (job) "
            f"for successful completion of the occupation skill level assessment organized by {self.institution}.",
        )

    def wording(self) -> list[str]:
        """What the document and the institution say: everything but the holder's own particulars."""
        return [TITLE, TITLE_EN, *self.body(), issue_date(self.issued_on), self.occupation, self.job or "--",
                self.level.title, "职业技能等级认定专用章", *(f[0] for f in self.fields), *(f[1] for f in self.fields)]  # fmt: skip

    def filled(self) -> list[str]:
        """The values filled in: the institution, the date and each field's value."""
        return [self.institution, issue_date(self.issued_on), *(f[2] for f in self.fields)]

    def texts(self) -> list[str]:
        """Every string the page prints."""
        return [TITLE, TITLE_EN, *self.body(), self.institution, issue_date(self.issued_on),
                *(t for f in self.fields for t in f), "职业技能等级认定专用章"]  # fmt: skip


def issue_date(d: date) -> str:
    return f"发证日期：{d.year}年{d.month}月{d.day}日"


def check_wording(page: CertificatePage) -> None:
    check_text(page.institution, page.wording(), f"certificate {page.number}")


def check_text(institution: str, texts: list[str], what: str = "the certificate") -> None:
    """Refuse wording holding a forbidden word outside the institution's registered name (004 §11 (4)).
    Given the document's own wording only: a holder's name is theirs, whatever it contains. Plans are
    checked when published (domain.wording); this catches a plan published before that check."""
    found = sorted({w for t in texts for w in forbidden_words(t, institution)})
    if found:
        raise ForbiddenWording(
            f"{what} would print {', '.join(found)} outside the institution's registered name (004 §11 (4) forbids it)"
        )


class Unprintable(ValueError):
    """A text holds a character the face it prints in has no glyph for: refused, never printed as a blank."""


def preflight(pages: Iterable[CertificatePage]) -> None:
    """Everything that could stop a page from printing right, checked before any form is used:
    the fonts, the forbidden words, a glyph for every character."""
    register()
    for p in pages:
        check_wording(p)
        check_glyphs(p.wording(), f"certificate {p.number}", p.filled())
        if missing := covers(SONG, p.institution + SEAL_BOTTOM):
            raise Unprintable(f"the seal of certificate {p.number}: no installed face has a glyph for {named(missing)}")


def named(chars: list[str]) -> str:
    """Each character and its code: one that shows nothing is still named."""
    return ", ".join(f"{ch} (U+{ord(ch):04X})" for ch in chars)


def check_glyphs(texts: list[str], what: str, filled: list[str] | None = None, kai: list[str] | None = None) -> None:
    """The certificate's fixed Chinese prints in Kai, its English in Times, its filled-in values in FangSong; the
    other documents print their values in Kai (`kai`). Each face with its fallbacks (certgen.fonts.FALLBACK): refuse
    a character none of them has, never print a blank."""
    register()
    checks = [
        (KAI, CJK.findall, texts),
        (TIMES, lambda t: CJK.sub("", t), texts),
        (FANGSONG, lambda t: [t], filled or []),
        (KAI, lambda t: [t], kai or []),
    ]
    for face, part, these in checks:
        missing = list(dict.fromkeys(ch for t in these for ch in covers(face, "".join(part(t)))))
        if missing:
            raise Unprintable(f"{what}: no installed face has a glyph for {named(missing)}")


def unprintable(name: str) -> str | None:
    """Why no installed face could print this person's name on the certificate (FangSong) or the admission ticket
    (Kai), naming each character; None when both can (a character of CJK extension G, newer than every font installed
    here, is the case). Asked where a name comes in (registration, a correction), not after the exam. A name in GB2312
    prints in both (test_every_gb2312_character_of_a_name_prints): the faces are not loaded for it, 40 MB a
    process."""
    try:
        name.encode("gb2312")
        return None
    except UnicodeEncodeError:
        pass
    try:
        check_glyphs([], "name", filled=[name], kai=[name])
    except Unprintable as e:
        return (f"{str(e).removeprefix('name: ')}, so neither the admission ticket nor the certificate could print "
                "this name; printing it needs a font that has the character")  # fmt: skip
    return None


def render(pages: Iterable[CertificatePage], progress: Callable[[int], None] | None = None) -> bytes:
    """One PDF, a page per certificate, fonts embedded."""
    pages = list(pages)
    preflight(pages)
    out = io.BytesIO()
    with RENDERING:
        canvas = Canvas(out, pagesize=PAGE, pageCompression=1, initialFontName=TIMES)  # no unembedded Helvetica
        canvas.setTitle("职业技能等级证书" + ("（电子证书）" if len(pages) == 1 and pages[0].electronic else ""))
        if len(pages) == 1:  # read back by whoever verifies the file (infra.services.ecert)
            canvas.setSubject(pages[0].number)
        canvas.setCreator("skillcert certgen")
        for i, p in enumerate(pages, 1):
            _page(canvas, p)
            canvas.showPage()
            if progress:
                progress(i)
        canvas.save()
    return out.getvalue()


def mixed(canvas: Canvas, x: float, y: float, text: str, size: float) -> None:
    """Chinese runs in Kai, the rest in Times, as the layout table sets them."""
    for t in CJK.split(text):
        if t:
            x = draw(canvas, x, y, t, KAI if CJK.fullmatch(t) else TIMES, size)


def width_of(text: str, size: float) -> float:
    return sum(width(KAI if CJK.fullmatch(t) else TIMES, t, size) for t in CJK.split(text) if t)


def wrap_words(text: str, size: float, limit: float) -> list[str]:
    """English wraps between words, a Chinese name inside it between any two of its characters (an institution's
    name of 27 characters, taken as one word, ran across into the right half), a word wider than the line between
    its letters (a name of 35 letters without a space ran off the page); closing punctuation never starts a line."""
    lines, line, used = [], "", 0.0  # used: the line's width, trailing spaces included (the faces have no kerning)
    for token in WRAP_TOKENS.findall(text):
        core = token.rstrip()
        if line.strip() and core and used + width_of(core, size) > limit and token[0] not in NO_LINE_START:
            lines.append(line.rstrip())
            line = token.lstrip()
            used = width_of(line, size)
        else:
            line += token
            used += width_of(token, size)
        while used > limit and width_of(body := line.rstrip(), size) > limit:
            if width_of(body.rstrip(CLOSING), size) <= limit:
                break  # closing punctuation hangs past the line's end rather than start the next
            k = next((k for k in range(len(body), 1, -1) if width_of(body[:k], size) <= limit), 1)
            while 1 < k < len(body) and body[k] in NO_LINE_START:
                k -= 1
            lines.append(body[:k].rstrip())
            line = line[k:].lstrip()
            used = width_of(line, size)
    return [*lines, line.rstrip()] if line.strip() else lines


def wrap_chars(text: str, font: str, size: float, limit: float) -> list[str]:
    """Chinese wraps between any two characters."""
    lines, line, used = [], "", 0.0
    for ch in text:
        w = width(font, ch, size)  # the faces have no kerning: a line is as wide as its characters together
        if used + w > limit and line and ch not in NO_LINE_START:  # closing punctuation stays on the line it ends
            lines.append(line)
            line, used = ch, w
        else:
            line, used = line + ch, used + w
    return [*lines, line] if line else lines


def balanced(text: str, font: str, size: float, limit: float) -> list[str]:
    """wrap_chars, its lines made as even as they fit: a 27-character name on two lines of 14 and 13, not 26 and 1."""
    lines = wrap_chars(text, font, size, limit)
    if len(lines) < 2:
        return lines
    per = -(-len(text) // len(lines))
    even = [text[i : i + per] for i in range(0, len(text), per)]
    ok = len(even) == len(lines) and all(width(font, t, size) <= limit for t in even)
    return even if ok and not any(t[0] in NO_LINE_START for t in even[1:]) else lines


def fitted(value: str, font: str, limit: float, lines: int = 2, smallest: float = 7) -> tuple[float, list[str]]:
    """The size and the lines a field's value prints in: 小四 (FILL_SIZE) on up to `lines` lines; smaller, to
    `smallest`, only for a value longer than those hold (a 50-character occupation), never across the border."""
    size = float(FILL_SIZE)
    while True:
        wrapped = wrap_words(value, size, limit) if not CJK.search(value) else balanced(value, font, size, limit)
        if len(wrapped) <= lines or size <= smallest:
            return size, wrapped
        size -= 0.5


def _page(canvas: Canvas, p: CertificatePage) -> None:
    w, h = PAGE
    bx, by = (w - BORDER[0]) / 2, (h - BORDER[1]) / 2
    canvas.setStrokeColor(black)
    canvas.setLineWidth(2)
    canvas.rect(bx, by, *BORDER)
    canvas.setLineWidth(0.5)
    canvas.rect(bx + 2 * mm, by + 2 * mm, BORDER[0] - 4 * mm, BORDER[1] - 4 * mm)

    # Left half.
    left_x, left_w = bx + 12 * mm, BORDER[0] / 2 - 20 * mm
    centre = bx + BORDER[0] / 4
    canvas.setFillColor(black)
    canvas.setFont(KAI, 30)
    canvas.drawCentredString(centre, by + 160 * mm, TITLE)
    canvas.setFont(TIMES, 16)
    canvas.drawCentredString(centre, by + 150 * mm, TITLE_EN)
    # The institution's name under the seal, filled in (小四号仿宋, 004 §11 二(1)): as many lines as it takes, upwards.
    names = balanced(p.institution, FANGSONG, FILL_SIZE, left_w)
    # The body names the institution too: in 16 pt, or smaller where a long name (up to 100 characters) would run it
    # into the name under the seal.
    chinese, english = p.body()
    floor = by + (44 + 5.5 * (len(names) - 1)) * mm + FILL_SIZE + 3 * mm
    for body in range(16, 9, -1):
        cn, en = wrap_chars(chinese, KAI, body, left_w), wrap_words(english, body, left_w)
        if by + 136 * mm - (len(cn) * 8 + 2 + (len(en) - 1) * 6.5) * mm * body / 16 >= floor:
            break
    y = by + 136 * mm
    for line in cn:
        draw(canvas, left_x, y, line, KAI, body)
        y -= 8 * mm * body / 16
    y -= 2 * mm * body / 16
    for line in en:
        mixed(canvas, left_x, y, line, body)
        y -= 6.5 * mm * body / 16
    for k, line in enumerate(reversed(names)):
        draw(canvas, centre, by + (44 + 5.5 * k) * mm, line, FANGSONG, FILL_SIZE, centred=True)
    draw(canvas, centre, by + 38 * mm, issue_date(p.issued_on), FANGSONG, FILL_SIZE, centred=True)
    draw_seal(canvas, centre, by + 44 * mm, p.institution)  # the seal is struck over name and date
    canvas.setFillColor(black)
    mixed(canvas, left_x, by + 20 * mm, f"证书信息查询网址(Certificate Information): {CERTIFICATE_QUERY}", 11)
    mixed(canvas, left_x, by + 14 * mm, f"机构信息查询网址(Assessment Information): {INSTITUTION_QUERY}", 11)
    if p.electronic:  # 004 §11.1(7): the same page, no blank form behind it
        mixed(canvas, left_x, by + 7 * mm, "电子证书(Electronic Certificate)", 11)
    else:
        canvas.setFont(TIMES, 11)
        canvas.drawString(left_x, by + 7 * mm, f"NO. {p.form_serial:08d}")

    # Right half: photo (一寸, 25 x 35 mm), fields, QR code.
    rx = bx + BORDER[0] / 2 + 14 * mm
    photo_x, photo_y = bx + BORDER[0] * 3 / 4 - 12.5 * mm, by + 140 * mm
    if p.photo is not None:
        canvas.drawImage(ImageReader(io.BytesIO(p.photo)), photo_x, photo_y, 25 * mm, 35 * mm, preserveAspectRatio=True)
    else:
        canvas.setStrokeColor(GREY)
        canvas.setDash(3, 2)
        canvas.rect(photo_x, photo_y, 25 * mm, 35 * mm)
        canvas.setDash()
        canvas.setFillColor(GREY)
        canvas.setFont(KAI, 9)
        canvas.drawCentredString(photo_x + 12.5 * mm, photo_y + 19 * mm, "照片待贴")
        canvas.setFont(TIMES, 8)
        canvas.drawCentredString(photo_x + 12.5 * mm, photo_y + 14 * mm, "PHOTO PENDING")
        canvas.setFillColor(black)
    y = by + 128 * mm
    value_w = bx + BORDER[0] - 6 * mm - (rx + 50 * mm)  # to the inner border
    for chinese_label, english_label, value in p.fields:
        canvas.setFont(KAI, 16)
        canvas.drawString(rx, y, f"{chinese_label}：")
        # The value, filled in: 小四号仿宋 (004 §11 二(1)), on two lines where one is too short, smaller only where two are.
        size, lines = fitted(value, FANGSONG, value_w)
        for k, line in enumerate(lines):
            draw(canvas, rx + 50 * mm, y - k * (size + 3), line, FANGSONG, size)
        canvas.setFont(TIMES, 16)
        canvas.drawString(rx, y - 6.5 * mm, english_label)
        y -= 14 * mm
    size = 28 * mm
    draw_qr(canvas, p.verify_url, bx + BORDER[0] - size - 7 * mm, by + 7 * mm, size)
