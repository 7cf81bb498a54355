"""The institution's round seal (004 annex 2): 40 mm across, a 1 mm rim, the institution's name
along the upper arc from left to right, a blank centre, 职业技能等级认定专用章 straight across the bottom,
lettered in simplified Song (简化的宋体, 004 §11 二)."""

from __future__ import annotations

import math

from reportlab.lib.colors import Color
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from certgen.fonts import SONG, runs
from domain.text import prints_nothing

RED = Color(0.85, 0.1, 0.1)
DIAMETER, RIM = 40 * mm, 1 * mm
BOTTOM = "职业技能等级认定专用章"


def draw_seal(canvas: Canvas, cx: float, cy: float, institution: str) -> None:
    r = DIAMETER / 2
    canvas.saveState()
    canvas.setStrokeColor(RED)
    canvas.setFillColor(RED)
    canvas.setLineWidth(RIM)
    canvas.circle(cx, cy, r - RIM / 2, stroke=1, fill=0)
    # The name on the upper arc: characters spread over up to 240 degrees, centred on the top,
    # each upright towards the centre.
    letters = [ch for ch in institution if not prints_nothing(ch)]  # a variation selector is no letter of its own
    size = min(3.8 * mm, 2 * math.pi * (r - 6 * mm) * (240 / 360) / max(len(letters), 1))
    text_r = r - RIM - 1.2 * mm - size * 0.8
    span = min(240.0, len(letters) * math.degrees(size * 1.05 / text_r))
    for i, ch in enumerate(letters):
        angle = 90 + span / 2 - (span * (i + 0.5) / len(letters))  # left to right over the top
        a = math.radians(angle)
        canvas.saveState()
        canvas.translate(cx + text_r * math.cos(a), cy + text_r * math.sin(a))
        canvas.rotate(angle - 90)
        canvas.setFont(runs(SONG, ch)[0][0], size)  # a character Song lacks, in its fallback (certgen.fonts)
        canvas.drawCentredString(0, -size * 0.35, ch)
        canvas.restoreState()
    canvas.setFont(SONG, 2.6 * mm)
    canvas.drawCentredString(cx, cy - r * 0.5, BOTTOM)
    canvas.restoreState()
