"""The other documents of the seeds, A4 portrait: the certificate proof (004 annex 4), the loss or
damage proof application (annex 3), the blank stock demand form (annex 1) and the admission ticket.
Tables are reportlab's platypus; the faces are the certificate's (Kai, Times), embedded."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date, time
from typing import Any

from reportlab.lib.colors import black
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, PageBreak, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from certgen.certificate import CERTIFICATE_QUERY, check_glyphs, check_text
from certgen.fonts import KAI, RENDERING, TIMES, markup, register
from certgen.seal import DIAMETER, draw_seal
from domain.levels import Level

TITLE = ParagraphStyle("title", fontName=KAI, fontSize=20, leading=28, alignment=1, spaceAfter=6 * mm)
# Chinese wraps between any two characters (wordWrap CJK): a long occupation or place ran past the table's edge.
BODY = ParagraphStyle("body", fontName=KAI, fontSize=12, leading=18, wordWrap="CJK")
NUMBER = ParagraphStyle("number", parent=BODY, fontSize=11)  # a certificate's number whole in the narrowest column
SMALL = ParagraphStyle("small", fontName=KAI, fontSize=10.5, leading=15, wordWrap="CJK")
EN = ParagraphStyle("en", fontName=TIMES, fontSize=10, leading=12)
GRID = TableStyle([("FONTNAME", (0, 0), (-1, -1), KAI), ("FONTSIZE", (0, 0), (-1, -1), 12),
                   ("GRID", (0, 0), (-1, -1), 0.6, black), ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                   ("TOPPADDING", (0, 0), (-1, -1), 3 * mm), ("BOTTOMPADDING", (0, 0), (-1, -1), 3 * mm)])  # fmt: skip


class Seal(Flowable):
    """The institution's seal, struck where the signature block is."""

    def __init__(self, institution: str) -> None:
        super().__init__()
        self.institution = institution
        self.width = self.height = DIAMETER

    def draw(self) -> None:
        draw_seal(self.canv, DIAMETER / 2, DIAMETER / 2, self.institution)


def _pdf(title: str, story: list[Any]) -> bytes:
    register()
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, title=title, creator="skillcert certgen",
                            initialFontName=TIMES, leftMargin=22 * mm, rightMargin=22 * mm, topMargin=20 * mm, bottomMargin=20 * mm)  # fmt: skip
    with RENDERING:
        doc.build(story)
    return out.getvalue()


def value(text: str, style: ParagraphStyle | None = None) -> Paragraph:
    """A table cell's value: a paragraph that wraps within its cell (a plain string ran past the table's edge), the
    characters Kai lacks (a name's 𠮷) in their fallback (certgen.fonts). Every document checks its values first
    (check_glyphs), so none reaches here that no face has."""
    return Paragraph(markup(KAI, text), style or BODY)


def bilingual(chinese: str, english: str) -> Paragraph:
    return Paragraph(f'{chinese}<br/><font name="{TIMES}" size="10">{english}</font>', BODY)


def date_cn(d: date | None) -> str:
    return f"{d.year}年{d.month}月{d.day}日" if d else "　　年　　月　　日"


def certificate_proof(
    *, institution: str, holder_name: str, id_type: str, id_number: str, occupation: str, job: str | None,
    level: Level, number: str, proof_number: str, issued_on: date,
) -> bytes:  # fmt: skip
    """职业技能等级证书证明 (004 annex 4): for a lost or damaged certificate, under the institution's seal."""
    values = [institution, holder_name, id_type, id_number, occupation, job or "", number, proof_number]
    check_text(institution, [occupation, job or ""], f"the proof of certificate {number}")  # not the holder's name
    check_glyphs([], f"the proof of certificate {number}", kai=values)
    rows = [
        [bilingual("姓名：", "Name"), value(holder_name), bilingual("证件类型：", "ID Type"), value(id_type)],
        [
            bilingual("证件号码：", "ID No."),
            value(id_number, NUMBER),
            bilingual("职业名称：", "Occupation"),
            value(occupation),
        ],
        [
            bilingual("工种/职业方向：", "Job"),
            value(job or "--"),
            bilingual("职业技能等级：", "Skill Level"),
            level.title,
        ],
        [bilingual("证书编号：", "Certificate No."), number, "", ""],
    ]
    fields = Table(rows, colWidths=[36 * mm, 50 * mm, 36 * mm, 44 * mm])
    fields.setStyle(TableStyle([("FONTNAME", (0, 0), (-1, -1), KAI), ("FONTSIZE", (0, 0), (-1, -1), 12),
                                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"), ("SPAN", (1, 3), (3, 3)),
                                ("BOTTOMPADDING", (0, 0), (-1, -1), 4 * mm)]))  # fmt: skip
    sign = Table([[Seal(institution), Paragraph(f"{markup(KAI, institution)}（盖章）<br/>日期：{date_cn(issued_on)}<br/>"
                                                f'<font name="{TIMES}" size="10">Issue date</font>', BODY)]],
                 colWidths=[DIAMETER + 6 * mm, 90 * mm], hAlign="RIGHT", style=[("FONTNAME", (0, 0), (-1, -1), KAI)])  # fmt: skip
    notes = [
        "说明：",
        "1. 对于遗失、损坏职业技能等级证书的，出具本证明；",
        f"2. 本证明相关单位应予认可，并与技能人才评价证书全国联网查询系统（{CERTIFICATE_QUERY}/）查询结果配合使用；",
        "3. 本证明各项内容涂改无效。",
    ]
    story = [Paragraph("职业技能等级证书证明", TITLE), Paragraph(f"证明编号：{proof_number}", SMALL), Spacer(1, 5 * mm),
             fields, Spacer(1, 10 * mm), sign, Spacer(1, 12 * mm), *(Paragraph(n, SMALL) for n in notes)]  # fmt: skip
    return _pdf("职业技能等级证书证明", story)


def proof_receipt(
    *, institution: str, holder_name: str, number: str, receipt_number: str, kind: str, applied_on: date,
    due: date,
) -> bytes:  # fmt: skip
    """受理回执: the acceptance receipt of a loss or damage proof application (004 §13 (三)); the
    holder collects the proof (annex 4) with it and the original ID card."""
    what = {"lost": "遗失", "damaged": "损坏"}.get(kind, kind)
    check_glyphs([], f"the receipt {receipt_number}", kai=[institution, holder_name, number, receipt_number])
    rows = [
        ["回执编号", value(receipt_number, NUMBER)],
        ["申请人", value(holder_name)],
        ["证书编号", value(number, NUMBER)],
        ["申办事项", f"证书{what}，申请补发证明"],
        ["受理日期", date_cn(applied_on)],
        ["办结期限", f"{date_cn(due)}前"],
    ]
    table = Table(rows, colWidths=[36 * mm, 130 * mm])
    table.setStyle(GRID)
    sign = Table([[Seal(institution), Paragraph(f"{markup(KAI, institution)}（盖章）<br/>{date_cn(applied_on)}", BODY)]],
                 colWidths=[DIAMETER + 6 * mm, 90 * mm], hAlign="RIGHT", style=[("FONTNAME", (0, 0), (-1, -1), KAI)])  # fmt: skip
    notes = ["领取须知：", f"请于{date_cn(due)}后，凭本人身份证件原件和本回执领取《职业技能等级证书证明》（004 第十三条）。",
             "本回执遗失的，凭身份证件原件到受理点核实后领取。"]  # fmt: skip
    story = [Paragraph("证书遗失、损坏补发证明受理回执", TITLE), Spacer(1, 5 * mm), table, Spacer(1, 10 * mm), sign,
             Spacer(1, 10 * mm), *(Paragraph(n, SMALL) for n in notes)]  # fmt: skip
    return _pdf("证书遗失、损坏补发证明受理回执", story)


def loss_application(
    *, holder_name: str, id_number: str, occupation: str, number: str, level: Level, kind: str | None = None,
) -> bytes:  # fmt: skip
    """证书遗失、损坏补发证明申请表 (004 annex 3), filled in from the registry for the holder to sign."""
    check_glyphs([], f"the proof application for {number}", kai=[holder_name, id_number, occupation, number])
    box = {"lost": ("■", "□"), "damaged": ("□", "■")}.get(kind or "", ("□", "□"))
    rows = [
        ["申请人姓名", value(holder_name), "身份证号", value(id_number, NUMBER)],
        ["证书基本信息", "职业名称", value(occupation), ""],
        ["", "证书编号", value(number, NUMBER), value(f"证书级别：{level.title}", NUMBER)],
        ["申办事项", f"{box[0]} 遗失证书　　{box[1]} 损坏证书", "", ""],
        ["遗失声明", Paragraph("本人证书遗失、损坏，现申请补发证明。<br/><br/>", BODY), "", ""],
        ["取证方式", Paragraph("□ 到受理点领取　□ 邮政快递（到付，邮费需要签收人支付。）<br/>□ EMS 速递单号：", BODY), "", ""],
        ["申请人声明", Paragraph("本申请表所填内容正确无误，所提交的身份证明文件真实有效。如有虚假愿承担法律责任。<br/><br/>"
                                  "申请人签名：　　　　　　联系电话：<br/>日期：　　年　　月　　日", BODY), "", ""],
        ["以下栏目由受理部门填写", "", "", ""],
        ["受理部门意见", f"受理日期：{date_cn(None)}", "", ""],
        ["备注", "", "", ""],
    ]  # fmt: skip
    table = Table(rows, colWidths=[30 * mm, 36 * mm, 48 * mm, 52 * mm])  # a number and a level whole on their line
    table.setStyle(GRID)
    table.setStyle(
        TableStyle(
            [
                ("SPAN", (0, 1), (0, 2)),
                ("SPAN", (2, 1), (3, 1)),
                *[("SPAN", (1, r), (3, r)) for r in range(3, 7)],
                ("SPAN", (0, 7), (3, 7)),
                ("ALIGN", (0, 7), (3, 7), "CENTER"),
                *[("SPAN", (1, r), (3, r)) for r in (8, 9)],
            ]
        )
    )
    return _pdf("证书遗失、损坏补发证明申请表", [Paragraph("证书遗失、损坏补发证明申请表", TITLE), table])


def demand_form(
    *, institution: str, contact: str, phone: str, address: str, year: int, per_level: dict[Level, int],
    filed_on: date | None = None,
) -> bytes:  # fmt: skip
    """职业技能等级空白证书需求登记表 (004 annex 1): this year's expected passes per level."""
    check_glyphs([], f"the {year} demand form", kai=[institution, contact, phone, address])
    names = {Level.FIVE: "初级（五级）", Level.FOUR: "中级（四级）", Level.THREE: "高级（三级）", Level.TWO: "技师（二级）",
             Level.ONE: "高级技师（一级）"}  # fmt: skip
    rows: list[Sequence[Any]] = [
        ["填报单位", value(institution), "", ""],
        ["联系人", value(contact), "联系电话", value(phone, NUMBER)],
        ["详细地址", value(address), "", ""],
        ["级别", f"{year}年度预估评价合格人数（人次）", "", ""],
        *[[names[lv], str(per_level.get(lv, 0)), "", ""] for lv in names],
        ["合计", str(sum(per_level.values())), "", ""],
        ["填报单位意见", f"负责人签字（盖章）：　　　　{date_cn(filed_on)}", "", ""],
        ["备注", "", "", ""],  # annex 1 ends here; the receiving department's rows belong to annex 3
    ]
    table = Table(rows, colWidths=[34 * mm, 60 * mm, 30 * mm, 42 * mm])
    table.setStyle(GRID)
    spans = [("SPAN", (1, r), (3, r)) for r in range(len(rows)) if r != 1]
    table.setStyle(TableStyle(spans))
    return _pdf("职业技能等级空白证书需求登记表", [Paragraph("职业技能等级空白证书需求登记表", TITLE), table])


def admission_ticket(**ticket: Any) -> bytes:
    """准考证: what the candidate brings with their ID card on the exam day."""
    return admission_tickets([ticket])


def admission_tickets(tickets: Sequence[dict[str, Any]]) -> bytes:
    """A session's tickets, one page each."""
    story: list[Any] = []
    for t in tickets:
        if story:
            story.append(PageBreak())
        story += _ticket(**t)
    return _pdf("职业技能等级认定准考证", story)


def _ticket(
    *, name: str, id_number_masked: str, plan_name: str, occupation: str, level: Level, session: str,
    exam_date: date, starts_at: time, location: str, room: str, seat: int, institution: str,
) -> list[Any]:  # fmt: skip
    check_glyphs([], f"the ticket for room {room}, seat {seat}",
                 kai=[name, id_number_masked, plan_name, occupation, session, location, room, institution])  # fmt: skip
    rows = [
        ["姓名", value(name), "证件号码", value(id_number_masked, NUMBER)],
        ["认定计划", value(plan_name), "", ""],
        ["职业（工种）", value(occupation), "等级", level.title],
        ["场次", value(session), "考试日期", f"{date_cn(exam_date)} {starts_at:%H:%M}"],
        ["考点", value(location), "", ""],
        ["考场", value(room), "座位号", f"{seat:02d}"],
    ]
    table = Table(rows, colWidths=[28 * mm, 62 * mm, 26 * mm, 50 * mm])
    table.setStyle(GRID)
    table.setStyle(TableStyle([("SPAN", (1, 1), (3, 1)), ("SPAN", (1, 4), (3, 4))]))
    rules = ["考生须知：", "1. 凭本准考证和有效身份证件原件入场，二者缺一不可；", "2. 开考前完成线上签到，入场时核验身份；",
             "3. 按准考证所列考场和座位号就座，监考人员二次核验身份后开始考试。"]  # fmt: skip
    return [Paragraph("职业技能等级认定准考证", TITLE), Paragraph(markup(KAI, institution), SMALL), Spacer(1, 4 * mm), table,
            Spacer(1, 8 * mm), *(Paragraph(r, SMALL) for r in rules)]  # fmt: skip
