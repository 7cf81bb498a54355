"""The auditor's report, as an auditor runs it: a CSV and a PDF in Chinese, times in Shanghai, names behind
the actor ids, counts per type, the corrections, deletions and spoiled forms, the chain's state."""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from domain.model import Role
from infra.api.tokens import Tokens
from tests.lifecycle import staff
from tests.test_read_models import apply_live, bus_messages, certificates_in_every_state, conn  # noqa: F401


def test_the_report_says_who_did_what_in_chinese_with_the_chain_state(world, conn, database_url, schema, tmp_path):  # noqa: F811
    iid, cids = certificates_in_every_state(world)
    world.certificates.spoil_form(staff(iid), iid, 40, "卡纸")
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    tokens = Tokens(database_url, schema)
    tokens.create_table()
    tokens.register("李老师", Role.INSTITUTION_STAFF, iid, principal_id=staff(iid).id)
    checkpoint = subprocess.run([sys.executable, "-m", "infra.cli", "audit", "checkpoint"], capture_output=True,
                                text=True, env={**os.environ, "SKILLCERT_DATABASE_URL": database_url,
                                                "SKILLCERT_DB_SCHEMA": schema}, timeout=60)  # fmt: skip
    assert checkpoint.returncode == 0, checkpoint.stderr

    today = datetime.now(ZoneInfo("Asia/Shanghai")).date()
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema}
    done = subprocess.run([sys.executable, "-m", "infra.cli", "audit", "report", "--institution", str(iid),
                           "--from", str(today - timedelta(days=1)), "--to", str(today), "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    rows = list(csv.reader(io.StringIO((tmp_path / "report.csv").read_bytes().decode("utf-8-sig"))))
    header, events = rows[0], rows[1:]
    assert header[:5] == ["时间", "日志位置", "事件", "事件类型", "操作人"]
    kinds = [r[3] for r in events]
    assert kinds.count("certificate.correction_applied") == 2 and "certificate.data_deleted" in kinds
    approved = next(r for r in events if r[3] == "certificate.correction_approved")
    assert approved[2] == "证书纠错批准" and approved[8].startswith("S0000440320")  # the certificate's number
    by_staff = next(r for r in events if r[3] == "certificate.printed")
    assert (by_staff[4], by_staff[5], by_staff[6]) == ("李老师", "评价机构工作人员", staff(iid).id)
    stamp = datetime.strptime(events[0][0], "%Y-%m-%d %H:%M:%S")  # Shanghai wall time, no offset
    assert abs(stamp - datetime.now(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)) < timedelta(minutes=10)
    # Which forms each stock event moved, and why (an outside review found the rows named only the stock).
    spoiled = [r for r in events if r[3] == "blank_stock.form_spoiled"]
    assert spoiled and all(re.fullmatch(r"NO\. \d{8}；.+", r[11]) for r in spoiled), spoiled
    used = next(r for r in events if r[3] == "blank_stock.form_used")
    assert re.fullmatch(r"NO\. \d{8}；证书 S\d{21}", used[11]) and used[8] == used[11].rpartition(" ")[2], used
    received = next(r for r in events if r[3] == "blank_stock.forms_received")
    assert re.fullmatch(r"NO\. \d{8} 至 NO\. \d{8}；.+", received[11]), received
    assert all(r[11] == "" for r in events if not r[3].startswith("blank_stock."))
    positions = [int(r[1]) for r in events]
    assert positions == sorted(positions) and len(events) == len(set(positions))

    text = subprocess.run(["pdftotext", "-layout", str(tmp_path / "report.pdf"), "-"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    for words in ("审计报告", "哈希链", "完整", "最近检查点", "证书纠错", "证书数据删除", "证书作废、未打印退回与销毁", "空白证书作废",
                  "证书纠错批准", approved[8], "李老师", "对象/详情", spoiled[0][11].partition("；")[0]):  # fmt: skip
        assert words in text, words
    fonts = subprocess.run(["pdffonts", str(tmp_path / "report.pdf")], capture_output=True, text=True).stdout
    assert all(" yes " in line for line in fonts.splitlines()[2:]), fonts  # every face embedded

    # Another institution's report has none of these events; a wrong period has none at all.
    empty = subprocess.run([sys.executable, "-m", "infra.cli", "audit", "report", "--from", "2020-01-01", "--to",
                            "2020-01-31", "--out", str(tmp_path / "old")], env=env, capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert empty.returncode == 0 and len((tmp_path / "old" / "report.csv").read_bytes().splitlines()) == 1
