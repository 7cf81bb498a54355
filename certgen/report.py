"""The auditor's report as a PDF (A4 landscape, Song, embedded): the period and scope, the hash chain's
state, counts per event type, the corrections, deletions and spoiled forms, then every event. The
data comes in as plain rows (infra.services.report gathers them); the CSV beside it holds the same."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from reportlab.lib.colors import HexColor, black
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import LongTable, Paragraph, SimpleDocTemplate, Spacer, TableStyle

from certgen.fonts import RENDERING, SONG, covers, markup, register

MAX_DETAIL = 3000  # rows of the event list in the PDF; the CSV has every one
TITLE = ParagraphStyle("t", fontName=SONG, fontSize=18, leading=26, alignment=1, spaceAfter=4 * mm)
HEAD = ParagraphStyle("h", fontName=SONG, fontSize=13, leading=20, spaceBefore=5 * mm, spaceAfter=2 * mm)
BODY = ParagraphStyle("b", fontName=SONG, fontSize=10, leading=15)
CELL = ParagraphStyle("c", fontName=SONG, fontSize=7.5, leading=9.5)
GRID = TableStyle([("FONTNAME", (0, 0), (-1, -1), SONG), ("GRID", (0, 0), (-1, -1), 0.4, black), ("BACKGROUND", (0, 0), (-1, 0), HexColor("#eeeeee")),
                   ("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                   ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)])  # fmt: skip
# The event list's columns as printed (the CSV has all of them): time, position, event, actor, role, actor id,
# the details where there are some (the forms a stock event moved) or else the subject, certificate number.
PRINTED = (0, 1, 2, 4, 5, 6, 11, 8)
WIDTHS = (30, 16, 46, 24, 30, 34, 60, 40)


def _p(value: Any, style: ParagraphStyle = CELL) -> Paragraph:
    """A name's 喆 or 𠮷 in a fallback face; a character no face has as its code, [U+30000], rather than left out: the
    report stands whatever an actor or an institution is called (the CSV beside it holds the text as stored)."""
    text = str(value)
    for ch in covers(style.fontName, text):
        text = text.replace(ch, f"[U+{ord(ch):04X}]")
    return Paragraph(markup(style.fontName, text), style)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], widths: Sequence[float]) -> LongTable:
    data = [[_p(c) for c in columns], *([_p(v) for v in row] for row in rows)]
    table = LongTable(data, colWidths=[w * mm for w in widths], repeatRows=1)
    table.setStyle(GRID)
    return table


def render(*, scope: str, first: date, last: date, zone: str, made_at: datetime, chain: Sequence[tuple[str, str]],
           counts: Sequence[tuple[str, str, int]], columns: Sequence[str], corrections: Sequence[Sequence[Any]],
           deletions: Sequence[Sequence[Any]], spoiled: Sequence[Sequence[Any]],
           rows: Sequence[Sequence[Any]]) -> bytes:  # fmt: skip
    register()
    printed = [columns[i] if i != 11 else f"{columns[7]}/{columns[11]}" for i in PRINTED]

    def pick(rs: Sequence[Sequence[Any]]) -> list[list[Any]]:
        return [[r[i] if i != 11 else r[11] or r[7] for i in PRINTED] for r in rs]

    story: list[Any] = [
        Paragraph("职业技能等级认定　审计报告", TITLE),
        _p(f"范围：{scope}　　期间：{first:%Y年%m月%d日} 至 {last:%Y年%m月%d日}（{zone}）", BODY),
        _p(f"生成时间：{made_at:%Y-%m-%d %H:%M:%S}（{zone}）　　期间内发布的事件：{len(rows):,}", BODY),
        _p(
            "哈希链的事件数计入全部存储的事件，包括不对外发布的内部事件（报名码、证书编号计数器），且不限于本期间。",
            CELL,
        ),
        Paragraph("一、哈希链状态", HEAD),
        _table(["项目", "状态"], chain, (40, 220)),
        Paragraph("二、按事件类型统计", HEAD),
        _table(["事件", "事件类型", "次数"], counts, (80, 120, 20)),
    ]
    for heading, rs in (
        ("三、证书纠错", corrections),
        ("四、证书数据删除、取消资格与机构处理（成绩取消、证书注销、暂停或取消评价业务）", deletions),
        ("五、证书作废、未打印退回与销毁", spoiled),
    ):
        story.append(Paragraph(heading, HEAD))
        story.append(_table(printed, pick(rs), WIDTHS) if rs else _p("期间内无。", BODY))
    story.append(Paragraph("六、操作明细（按日志顺序）", HEAD))
    if len(rows) > MAX_DETAIL:
        story.append(_p(f"以下列出前 {MAX_DETAIL:,} 条；全部 {len(rows):,} 条见同名 CSV 文件。", BODY))
        story.append(Spacer(0, 2 * mm))
    story.append(_table(printed, pick(rows[:MAX_DETAIL]), WIDTHS) if rows else _p("期间内无。", BODY))
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=landscape(A4), title="职业技能等级认定审计报告", creator="skillcert", initialFontName=SONG,
                            leftMargin=12 * mm, rightMargin=12 * mm, topMargin=12 * mm, bottomMargin=12 * mm)  # fmt: skip
    with RENDERING:
        doc.build(story)
    return out.getvalue()
