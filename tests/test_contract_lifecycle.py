"""The contract against what is really published: a lifecycle run emits every published event type,
and every message it emits meets its committed schema strictly (no undocumented property, formats
checked). A schema no real message meets, or a type the lifecycle never emits, fails here.

The committed samples (schemas/samples/) are messages of this run: `skillcert schemas` validates
them. SKILLCERT_WRITE_SAMPLES=1 rewrites them from this run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

from domain.certificate import certificate_id
from domain.institution import Institution, ScopeEntry
from domain.levels import Level
from domain.model import Actor, Role
from infra.bus import schemas
from infra.bus.schemas import SAMPLES, SCHEMA_DIR, public_events, validate_strictly
from infra.services.registrations import Decision
from infra.services.samples import photo_attachment
from infra.store.chain import record_checkpoint
from tests.builders import L2_CONDITION, L2_EVIDENCE, SCOPE, candidate, plan_details, working_years_form
from tests.lifecycle import (
    CENTRE,
    CONFIRM_DAY,
    ISSUE_DAY,
    REPORT_DAY,
    full_lifecycle,
    score_and_publish,
    sit_exam,
    staff,
)
from tests.test_read_models import bus_messages
from tests.test_tamper import sign

ROOT = Path(__file__).resolve().parents[1]


def every_kind_of_event(world, database_url: str, schema: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The whole lifecycle, then each rarer step once on a second plan of the same institution: a
    registration returned and resubmitted, one rejected (its seat released), a results report
    returned by the centre, a spoiled print, a print not made, a signed checkpoint."""
    life = full_lifecycle(world, 60)
    reg, exams, certs = world.registrations, world.exams, world.certificates
    iid = life.iid
    world.at(date(2026, 3, 2))
    pid, code = reg.publish_plan(staff(iid), iid, plan_details(number="2502", seats=5))
    rids = [reg.register(candidate(i), code, working_years_form(i)) for i in (1, 2, 3)]
    reg.review(staff(iid), rids[0], Decision.RETURNED, reasons="缺少工作年限证明")
    reg.resubmit(candidate(1), rids[0], working_years_form(1))
    reg.review(staff(iid), rids[1], Decision.REJECTED, reasons="不符合申报条件")
    for i, rid in ((1, rids[0]), (3, rids[2])):
        reg.review(staff(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
        reg.pay_fee(staff(iid), rid, f"R2027{i:06d}", Decimal("380.00"))
    rejected = frozenset({rids[1]})
    exam_id = sit_exam(world, iid, pid, rids, rejected)
    score_and_publish(world, iid, exam_id, rids, rejected)
    world.at(REPORT_DAY)
    exams.report_results(staff(iid), exam_id)
    exams.return_results(CENTRE, exam_id, "成绩单缺少考评员签字")
    exams.report_results(staff(iid), exam_id)
    world.at(CONFIRM_DAY)
    exams.confirm_results(CENTRE, exam_id)
    world.at(ISSUE_DAY)
    printed = certificate_id(rids[0])
    certs.issue(staff(iid), exam_id)
    certs.report_data(staff(iid), [printed])
    certs.accept_data(CENTRE, [printed])
    world.at(date(2026, 10, 9))
    certs.make_queryable(CENTRE, [printed])
    certs.attach_photo(staff(iid), printed, photo_attachment())
    certs.print(staff(iid), printed)
    certs.spoil_print(staff(iid), printed, certs.certificate(printed).printed_forms[-1], "打印错位")
    certs.print(staff(iid), printed)
    certs.print_not_made(staff(iid), [printed], "文件未送达打印机")  # the form back in stock
    lost = life.lost  # its proof was issued in the lifecycle: collected now against the receipt
    certs.hand_over_proof(
        staff(iid), lost, certs.certificate(lost).receipts[-1], certs.certificate(lost).holder.id_number
    )
    reg.amend_scope(CENTRE, iid, [*SCOPE, ScopeEntry(occupation="焊工", job="电焊", levels=[Level.FOUR])], "新增焊工")
    from infra.services import ecert

    ecert.issue_electronic(certs, staff(iid), printed, "https://verify.example.cn")  # signed, recorded
    serial = certs.get(Institution, iid, "institution").signing_serial
    ecert.revoke(certs, CENTRE, iid, serial, "密钥遗失")  # and the key that signed it revoked
    # 004 第十条: a certificate issued improperly declared void; the business suspended, reinstated, then withdrawn.
    certs.invalidate(CENTRE, iid, [life.cids[9]], "督查发现该证书考试记录系伪造")
    reg.suspend_institution(CENTRE, iid, "督查发现伪造考试记录（粤鉴督〔2026〕12号）")
    reg.reinstate_institution(CENTRE, iid, "整改验收合格")
    reg.withdraw_institution(CENTRE, iid, "再次发现滥发证书")
    record_checkpoint(reg, Actor(id="skillcert-audit", role=Role.SYSTEM), sign(reg, schema))
    return bus_messages(reg)


def test_a_lifecycle_emits_every_published_type_and_each_message_meets_its_schema_strictly(
    world, database_url, schema
) -> None:
    messages = every_kind_of_event(world, database_url, schema)
    files = schemas.committed()
    by_type: dict[str, dict] = {}
    failures: list[str] = []
    for m in messages:
        context = m["source"].rpartition("/")[2]
        path = f"{context}/{m['type']}.json"
        assert path in files, f"{m['type']} is published but has no committed schema"
        if path not in by_type:
            by_type[path] = m
        failures += [f"{m['type']} at position {m['position']}: {why}" for why in validate_strictly(files[path], m)]
    assert failures == [], "\n".join(failures[:20])
    never = sorted(e.path for e in public_events() if e.path not in by_type)
    assert never == [], f"published types the lifecycle never emits: {never}"
    counts = Counter(m["type"] for m in messages)
    print(f"{len(messages)} messages of {len(counts)} types, each valid strictly")
    if os.environ.get("SKILLCERT_WRITE_SAMPLES"):
        for path, m in by_type.items():
            target = SCHEMA_DIR / SAMPLES / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(m, indent=2, ensure_ascii=False) + "\n")


def test_skillcert_schemas_checks_the_committed_samples_and_fails_on_a_bad_one(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "infra.cli", "schemas"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sample messages validate strictly" in done.stdout
    # The same check on a copy where one sample gained an undocumented field and another went missing.
    import shutil

    copy = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, copy)
    sample = sorted((copy / SAMPLES).glob("certificates/*.json"))[0]
    m = json.loads(sample.read_text())
    m["data"]["undocumented"] = "x"
    sample.write_text(json.dumps(m))
    gone = sorted((copy / SAMPLES).glob("stock/*.json"))[0]
    gone.unlink()
    problems = schemas.sample_problems(copy)
    assert any(sample.name in p and "undocumented" in p for p in problems), problems
    assert any(gone.name in p and "no sample" in p for p in problems), problems
