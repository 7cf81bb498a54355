"""The auditor's report (skillcert audit report): who did what to which registration or certificate in
a period, in Chinese, times in the installation's time zone; counts per event type; every correction,
deletion and spoiled form; the hash chain's state and its last checkpoint.

Read from the audit trail read model (every published event, with its actor) and the principals (the
names behind actor ids); the chain is walked in the event store itself, read-only, as `audit verify`
walks it. Written as a CSV of every event and a PDF for reading (certgen.report).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from domain.glossary import ROLES, event_label, event_name
from domain.stock import form_label
from infra.store import chain
from projections.store import read_tolerantly

CORRECTIONS = ("certificate.correction_applied", "certificate.correction_checked", "certificate.correction_approved",
               "certificate.correction_rejected")  # fmt: skip
# What voids a certificate or a candidate's result: a deletion (000), a disqualification with what it cancels (001 承诺);
# and an institution's business suspended, reinstated or withdrawn (004 第十条), with its certificates declared void.
DELETIONS = ("certificate.data_deleted", "registration.disqualified", "exam_session.scores_cancelled",
             "certificate.revoked", "institution.suspended", "institution.reinstated",
             "institution.evaluation_withdrawn")  # fmt: skip
SPOILED = ("blank_stock.form_spoiled", "blank_stock.print_spoiled", "blank_stock.form_returned",
           "blank_stock.forms_destroyed", "certificate.print_spoiled", "certificate.print_not_made")  # fmt: skip
COLUMNS = ["时间", "日志位置", "事件", "事件类型", "操作人", "操作人角色", "操作人ID", "对象", "证书编号", "机构ID",
           "请求ID", "详情"]  # fmt: skip


@dataclass
class Report:
    institution: str  # its name, or 全部机构
    first: date
    last: date
    zone: str
    made_at: datetime
    rows: list[list[Any]] = field(default_factory=list)  # COLUMNS, one per event, in log order
    counts: list[tuple[str, str, int]] = field(default_factory=list)  # (label, type, count)
    corrections: list[list[Any]] = field(default_factory=list)
    deletions: list[list[Any]] = field(default_factory=list)
    spoiled: list[list[Any]] = field(default_factory=list)
    chain: list[tuple[str, str]] = field(default_factory=list)  # (what, state)


def gather(conn: psycopg.Connection[Any], schema: str, events_table: str, institution_id: UUID | None, first: date,
           last: date, zone: str) -> Report:  # fmt: skip
    tz = ZoneInfo(zone)
    since = datetime.combine(first, time(), tz)
    until = datetime.combine(last + timedelta(days=1), time(), tz)
    with conn.cursor(row_factory=dict_row) as cur:
        name = "全部机构"
        if institution_id is not None:
            cur.execute("SELECT name FROM catalogue_institutions WHERE institution_id = %s", (institution_id,))
            found = cur.fetchone()
            if found is None:
                raise LookupError(f"no institution {institution_id} in the catalogue")
            name = found["name"]
        where, args = "e.at >= %s AND e.at < %s", [since, until]
        if institution_id is not None:
            where += " AND e.institution_id = %s"
            args.append(institution_id)
        cur.execute(
            sql.SQL("SELECT e.*, p.name AS actor_name, c.number AS registered_number FROM audit_events e "
                    "LEFT JOIN {} p ON p.principal_id = e.actor_id "
                    "LEFT JOIN certificate_registry c ON c.certificate_id = e.aggregate_id "
                    f"WHERE {where} ORDER BY e.position").format(sql.Identifier(schema, "principals")),
            args,
        )  # fmt: skip
        events = cur.fetchall()
        moves = _movements(cur, [e["position"] for e in events if e["type"].startswith("cn.skillcert.blank_stock.")])
    report = Report(name, first, last, zone, datetime.now(tz))
    counts: Counter[str] = Counter()
    for e in events:
        kind = event_name(e["type"])
        counts[kind] += 1
        move = moves.get(e["position"])
        number = e["registered_number"] or e.get("number") or (move or {}).get("certificate_number") or ""
        row = [
            e["at"].astimezone(tz).strftime("%Y-%m-%d %H:%M:%S"), e["position"], event_label(e["type"]), kind,
            e["actor_name"] or "", ROLES.get(e["actor_role"], e["actor_role"]), e["actor_id"], str(e["aggregate_id"]),
            number, str(e["institution_id"] or ""), e["request_id"] or "", _detail(move) if move else "",
        ]  # fmt: skip
        report.rows.append(row)
        if kind in CORRECTIONS:
            report.corrections.append(row)
        elif kind in DELETIONS:
            report.deletions.append(row)
        elif kind in SPOILED:
            report.spoiled.append(row)
    report.counts = sorted(((event_label(k), k, n) for k, n in counts.items()), key=lambda x: (-x[2], x[1]))
    report.chain = chain_state(conn, schema, events_table, tz)
    return report


def _movements(cur: psycopg.Cursor[Any], positions: list[int]) -> dict[int, dict[str, Any]]:
    """The forms each of these stock events moved, from the stock ledger (a ledger not yet rebuilt at its version 4
    has none to give: the rows then name the stock only)."""

    def read() -> dict[int, dict[str, Any]]:
        cur.execute("SELECT * FROM stock_movements WHERE position = ANY(%s)", (positions,))
        return {r["position"]: r for r in cur.fetchall()}

    return read_tolerantly(cur.connection, read, dict) if positions else {}


def _detail(move: dict[str, Any]) -> str:
    """Which forms, for which certificate, why: 'NO. 10000003；证书 S…；卡纸'."""
    serials = move["serials"]
    forms = (f"{form_label(serials[0])} 至 {form_label(serials[1])}" if move["event"] == "forms_received"
             else "、".join(form_label(s) for s in serials))  # fmt: skip
    number = f"证书 {move['certificate_number']}" if move["certificate_number"] else ""
    return "；".join(part for part in (forms, number, move["reason"] or "") if part)


def chain_state(conn: psycopg.Connection[Any], schema: str, events_table: str, tz: ZoneInfo) -> list[tuple[str, str]]:
    """The whole history's hash chain, walked now, and the last checkpoint recorded in the store."""
    conn.commit()
    verdict = chain.verify(conn, schema, events_table)
    lines = [("哈希链", "完整" if verdict.intact else f"在日志位置 {verdict.broken_at} 处断裂：{verdict.problem}"),
             ("事件数", f"{verdict.events:,}"), ("链头位置", str(verdict.head_position)),
             ("链头哈希", verdict.head.hex())]  # fmt: skip
    stored = [c for c in verdict.checkpoints if c.source == "store"]
    if stored:
        last = stored[-1]
        row = conn.execute(sql.SQL("SELECT state FROM {} WHERE notification_id = %s").format(
            sql.Identifier(schema, events_table)), (last.at,)).fetchone()  # fmt: skip
        when = datetime.fromisoformat(orjson.loads(bytes(row[0]))["timestamp"]).astimezone(tz) if row else None
        lines.append(("最近检查点", f"日志位置 {last.position}，记录于 "
                      f"{when:%Y-%m-%d %H:%M:%S}" if when else f"日志位置 {last.position}"))  # fmt: skip
        lines.append(("检查点哈希", last.log_hash.hex()))
    else:
        lines.append(("最近检查点", "尚无（skillcert audit checkpoint 记录）"))
    conn.commit()
    return lines
