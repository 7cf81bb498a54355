"""The authorisation matrix: every role against every endpoint, over real PostgreSQL.

Institution A has a confirmed exam, issued certificates on the query platform and blank stock;
institution B's staff, a second candidate, the provincial centre, the HR department and an
auditor each try everything. A refusal is 403 (401 without a token) and stores nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient

from domain.errors import InvalidInput
from domain.exam import Subject
from domain.institution import DeadlineProfile, Filing
from domain.model import Role
from domain.registration import AttachmentKind
from infra.api import create_app
from infra.api.tokens import Tokens
from infra.services.samples import photo_attachment
from projections.store import connect
from tests.api import as_json, bearer
from tests.builders import ADMIN, SCOPE, attachment, plan_details, working_years_form
from tests.lifecycle import confirmed_exam, staff
from tests.test_read_models import KEY, apply_live, bus_messages, conn  # noqa: F401 (fixture)

STAFF, OTHER_STAFF, CENTRE, HR, AUDITOR = "staff", "other_staff", "centre", "hr", "auditor"
CANDIDATE, OTHER_CANDIDATE, ANONYMOUS, ASSOCIATION = "candidate", "other_candidate", "anonymous", "association"
ROLES = (STAFF, OTHER_STAFF, CENTRE, HR, AUDITOR, CANDIDATE, OTHER_CANDIDATE, ASSOCIATION, ANONYMOUS)
EVERYONE = set(ROLES)
TOKENED = EVERYONE - {ANONYMOUS}
OVERSIGHT = {CENTRE, HR, AUDITOR}
OWN_INSTITUTION = {STAFF} | OVERSIGHT
BOTH_STAFF = {STAFF, OTHER_STAFF} | OVERSIGHT
OWN_RECORD = OWN_INSTITUTION | {CANDIDATE}
DOCUMENT = as_json(attachment(AttachmentKind.CERTIFICATE_APPLICATION))


@dataclass
class Setup:
    app: Any
    http: TestClient
    headers: dict[str, dict[str, str]]
    iid: UUID
    pid: UUID
    exam_id: UUID
    rid: UUID
    number: str
    id_number: str
    code: str

    def head(self) -> int:
        return self.app.state.registrations.recorder.max_notification_id() or 0  # type: ignore[attr-defined]


@pytest.fixture
def setup(world, conn, database_url, schema) -> Iterator[Setup]:  # noqa: F811
    iid, pid, rids, exam_id = confirmed_exam(world, 3)
    world.at(date(2026, 4, 29))
    issued = world.certificates.issue(staff(iid), exam_id)
    world.certificates.receive_forms(staff(iid), iid, 1, 20, "SH-2026-001")
    other = world.registrations.register_institution(
        ADMIN, "广州市技能评价中心", Filing(city_code="01", station_serial="007"), DeadlineProfile.S, SCOPE
    )
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    plan = world.registrations.repository.get(pid)
    me = working_years_form(1)
    k = KEY.hex()
    headers = {
        STAFF: bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid),
        OTHER_STAFF: bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-gz", other),
        CENTRE: bearer(database_url, schema, Role.PROVINCIAL_CENTRE, "centre-wang"),
        HR: bearer(database_url, schema, Role.HR_DEPARTMENT, "hr-zhao"),
        AUDITOR: bearer(database_url, schema, Role.AUDITOR, "auditor-sun"),
        CANDIDATE: bearer(database_url, schema, Role.CANDIDATE, "candidate-1", id_number=me.id_number, pseudonym_key=k),
        OTHER_CANDIDATE: bearer(
            database_url, schema, Role.CANDIDATE, "candidate-2x", id_number="11010519491231002X", pseudonym_key=k
        ),
        ASSOCIATION: bearer(database_url, schema, Role.ASSOCIATION, "assoc-lin"),
        ANONYMOUS: {},
    }
    app = create_app(database_url, schema, pseudonym_key=k)
    with TestClient(app) as http:
        yield Setup(
            app, http, headers, iid, pid, exam_id, rids[0], issued[rids[0]], me.id_number, plan.registration_code
        )


def endpoints(s: Setup) -> list[tuple[str, str, str, Any, set[str]]]:
    """(method, route, concrete path, JSON body, roles allowed). Commands come last within each
    group so that an allowed call changing state comes after every refusal was checked."""
    me = working_years_form(1)
    cert = s.number
    from domain.institution import Institution

    serial = s.app.state.certificates.get(Institution, s.iid, "institution").signing_serial
    return [
        # Public.
        ("GET", "/health", "/health", None, EVERYONE),
        ("GET", "/plans", "/plans", None, EVERYONE),
        ("GET", "/plans/{plan_id}", f"/plans/{s.pid}", None, EVERYONE),
        ("GET", "/verify/{number}", f"/verify/{cert}", None, EVERYONE),
        ("GET", "/verify", "/verify", None, EVERYONE),
        ("GET", "/schemas", "/schemas", None, EVERYONE),
        ("GET", "/schemas/asyncapi.json", "/schemas/asyncapi.json", None, EVERYONE),
        ("GET", "/schemas/{topic}/{message_type}.json", "/schemas/certificates/cn.skillcert.certificate.issued.v1.json",
         None, EVERYONE),
        # Reads.
        ("GET", "/me", "/me", None, TOKENED),
        ("GET", "/plans/{plan_id}/registrations", f"/plans/{s.pid}/registrations", None, OWN_INSTITUTION),
        ("GET", "/plans/{plan_id}/registration-code", f"/plans/{s.pid}/registration-code", None, {STAFF}),
        ("GET", "/plans/{plan_id}/registrations.csv", f"/plans/{s.pid}/registrations.csv", None, OWN_INSTITUTION),
        ("GET", "/registrations/{registration_id}", f"/registrations/{s.rid}", None, OWN_RECORD),
        ("GET", "/candidates/{id_number}/registrations", f"/candidates/{s.id_number}/registrations", None,
         OWN_RECORD | {OTHER_STAFF}),  # other staff: filtered to nothing, checked below
        ("GET", "/certificates/{number}", f"/certificates/{cert}", None, OWN_RECORD | {ASSOCIATION}),
        ("GET", "/certificates", f"/certificates?holder_id_number={s.id_number}", None, OWN_RECORD | {OTHER_STAFF}),
        ("GET", "/certificates/{number}/correction", f"/certificates/{cert}/correction", None,
         OWN_RECORD | {ASSOCIATION}),
        ("GET", "/audit", f"/audit?institution_id={s.iid}", None, OWN_INSTITUTION),
        ("GET", "/deadlines", f"/deadlines?institution_id={s.iid}", None, OWN_INSTITUTION),
        ("GET", "/aggregates/{aggregate_id}", f"/aggregates/{s.rid}", None, OVERSIGHT),
        ("GET", "/deadlines/overdue", "/deadlines/overdue", None, BOTH_STAFF),
        ("GET", "/institutions/{institution_id}/stock", f"/institutions/{s.iid}/stock", None, OWN_INSTITUTION),
        ("GET", "/institutions/{institution_id}/stock/forms/{serial}", f"/institutions/{s.iid}/stock/forms/1", None,
         OWN_INSTITUTION),
        ("GET", "/statistics/issued", f"/statistics/issued?institution_id={s.iid}", None, OWN_INSTITUTION),
        ("GET", "/statistics/pass-rates", f"/statistics/pass-rates?institution_id={s.iid}", None, OWN_INSTITUTION),
        ("GET", "/projections", "/projections", None, OVERSIGHT),
        ("GET", "/bus/relay", "/bus/relay", None, OVERSIGHT),
        ("GET", "/principals", "/principals", None, {AUDITOR}),
        ("GET", "/principals/{principal_id}", "/principals/p_nobody", None, {AUDITOR}),
        # Commands.
        ("POST", "/institutions", "/institutions",
         {"name": "佛山某中心", "filing": {"city_code": "06", "station_serial": "001"}, "profile": "T",
          "scope": [as_json(SCOPE[0])]}, {CENTRE}),
        ("PUT", "/institutions/{institution_id}/scope", f"/institutions/{s.iid}/scope",
         {"scope": [as_json(s) for s in SCOPE] + [{"occupation": "焊工", "job": None, "levels": [4]}], "reason": "新增"},
         {CENTRE}),
        ("GET", "/institutions", "/institutions", None, EVERYONE),
        # 004 第十条, reasons left out: allowed roles get a 422 and the institution stays active for the rows after.
        *[("POST", f"/institutions/{{institution_id}}/{step}", f"/institutions/{s.iid}/{step}", {"reasons": ""},
           {CENTRE}) for step in ("suspension", "reinstatement", "withdrawal")],  # fmt: skip
        ("POST", "/institutions/{institution_id}/invalidation", f"/institutions/{s.iid}/invalidation",
         {"certificates": [cert], "reasons": ""}, {CENTRE}),
        ("POST", "/institutions/{institution_id}/plans", f"/institutions/{s.iid}/plans",
         as_json(plan_details("2602", registration_deadline=date(2030, 1, 1), evaluation_start=date(2030, 2, 1),
                              evaluation_end=date(2030, 2, 1))), {STAFF}),
        ("POST", "/registrations", "/registrations", {"registration_code": s.code, "form": as_json(me)},
         {STAFF, CANDIDATE}),
        ("POST", "/registrations/{registration_id}/resubmission", f"/registrations/{s.rid}/resubmission", as_json(me),
         {STAFF, CANDIDATE}),
        ("POST", "/registrations/{registration_id}/review", f"/registrations/{s.rid}/review",
         {"decision": "returned", "reasons": "补充材料"}, {STAFF}),
        ("POST", "/registrations/{registration_id}/amendment", f"/registrations/{s.rid}/amendment",
         {"form": as_json(me), "explanation": "手机号变更",
          "document": as_json(attachment(AttachmentKind.WRITTEN_EXPLANATION))}, {STAFF}),
        ("POST", "/registrations/{registration_id}/fee", f"/registrations/{s.rid}/fee",
         {"receipt_number": "R1", "amount": "380.00"}, {STAFF}),
        ("POST", "/registrations/{registration_id}/training-account", f"/registrations/{s.rid}/training-account",
         {"account": "T-1"}, {STAFF}),
        ("POST", "/registrations/{registration_id}/training", f"/registrations/{s.rid}/training",
         {"hours": "40", "evidence": as_json(attachment(AttachmentKind.TRAINING_CERTIFICATE))}, {STAFF}),
        # Reasons left out: allowed roles get a 422 and the registration stays as the rows after it need it.
        ("POST", "/registrations/{registration_id}/disqualification", f"/registrations/{s.rid}/disqualification",
         {"reasons": ""}, {STAFF, CENTRE}),
        ("POST", "/plans/{plan_id}/sessions", f"/plans/{s.pid}/sessions",
         {"session": "B", "exam_date": "2026-04-17", "starts_at": "09:00", "ends_at": "11:00", "location": "考点",
          "rooms": [{"name": "301", "seats": 30}]}, {STAFF}),
        ("POST", "/sessions/{exam_id}/tickets", f"/sessions/{s.exam_id}/tickets", {}, {STAFF}),
        ("POST", "/registrations/{registration_id}/attendance", f"/registrations/{s.rid}/attendance",
         {"step": "check_in"}, {STAFF, CANDIDATE}),
        ("POST", "/sessions/{exam_id}/day-closure", f"/sessions/{s.exam_id}/day-closure", None, {STAFF}),
        ("PUT", "/sessions/{exam_id}/scores", f"/sessions/{s.exam_id}/scores",
         {"book": {str(s.rid): {Subject.THEORY.value: "80", Subject.SKILLS.value: "80",
                                Subject.COMPREHENSIVE.value: "80"}}}, {STAFF}),
        ("POST", "/sessions/{exam_id}/scores/import", f"/sessions/{s.exam_id}/scores/import", "scores", {STAFF}),
        ("POST", "/sessions/{exam_id}/scores/publication", f"/sessions/{s.exam_id}/scores/publication", None, {STAFF}),
        ("POST", "/registrations/{registration_id}/score-review", f"/registrations/{s.rid}/score-review",
         {"subject": Subject.THEORY.value, "reason": "复核理论成绩"}, {STAFF, CANDIDATE}),
        ("POST", "/registrations/{registration_id}/score-review/answer", f"/registrations/{s.rid}/score-review/answer",
         {"outcome": "upheld", "note": "维持"}, {STAFF}),
        ("POST", "/sessions/{exam_id}/results/report", f"/sessions/{s.exam_id}/results/report", None, {STAFF}),
        ("POST", "/sessions/{exam_id}/results/confirmation", f"/sessions/{s.exam_id}/results/confirmation", None,
         {CENTRE}),
        ("POST", "/sessions/{exam_id}/results/return", f"/sessions/{s.exam_id}/results/return",
         {"reasons": "复核"}, {CENTRE}),
        ("POST", "/sessions/{exam_id}/certificates", f"/sessions/{s.exam_id}/certificates", {}, {STAFF}),
        ("POST", "/plans/{plan_id}/registrations/import", f"/plans/{s.pid}/registrations/import", "candidates",
         {STAFF}),
        ("POST", "/certificates/data-report", "/certificates/data-report", {"certificates": [cert]}, {STAFF}),
        ("POST", "/certificates/data-acceptance", "/certificates/data-acceptance", {"certificates": [cert]},
         {CENTRE}),
        ("POST", "/certificates/{certificate}/data-return", f"/certificates/{cert}/data-return",
         {"reasons": "信息有误"}, {CENTRE}),
        ("POST", "/certificates/queryability", "/certificates/queryability", {"certificates": [cert]}, {CENTRE}),
        ("POST", "/certificates/{certificate}/print", f"/certificates/{cert}/print", {}, {STAFF}),
        ("POST", "/certificates/{certificate}/handover", f"/certificates/{cert}/handover",
         {"delivery": "pickup", "application_form": DOCUMENT}, {STAFF}),
        ("POST", "/certificates/{certificate}/receipt", f"/certificates/{cert}/receipt", {"signed_by": "考生1"},
         {STAFF}),
        ("POST", "/certificates/{certificate}/proof-application", f"/certificates/{cert}/proof-application",
         {"kind": "lost", "application_form": as_json(attachment(AttachmentKind.PROOF_APPLICATION)),
          "id_number": me.id_number, "id_document": "copy_received",
          "id_copy": as_json(attachment(AttachmentKind.ID_CARD_COPY))}, {STAFF}),
        ("POST", "/certificates/{certificate}/proof", f"/certificates/{cert}/proof", None, {STAFF}),
        ("POST", "/certificates/{certificate}/proof-handover", f"/certificates/{cert}/proof-handover",
         {"receipt_number": f"{cert}-R01", "id_number": me.id_number}, {STAFF}),
        ("POST", "/certificates/{certificate}/correction-application", f"/certificates/{cert}/correction-application",
         {"correction": {"name": "更正姓名"}, "reasons": "录入错误",
          "evidence": as_json(attachment(AttachmentKind.CORRECTION_EVIDENCE))}, {STAFF}),
        # Profile S (the test institution): the association checks, the skills centre decides (000 二3).
        ("POST", "/certificates/{certificate}/correction-check", f"/certificates/{cert}/correction-check",
         {"queryable_nationally": True}, {ASSOCIATION}),
        ("POST", "/certificates/{certificate}/correction-approval", f"/certificates/{cert}/correction-approval", None,
         {CENTRE}),
        ("POST", "/certificates/{certificate}/correction-rejection", f"/certificates/{cert}/correction-rejection",
         {"reasons": "材料不足"}, {CENTRE}),
        ("POST", "/certificates/{certificate}/holder-commitment", f"/certificates/{cert}/holder-commitment",
         {"document": as_json(attachment(AttachmentKind.HOLDER_COMMITMENT))}, {STAFF}),
        ("POST", "/institutions/{institution_id}/stock/demand", f"/institutions/{s.iid}/stock/demand",
         {"year": 2027, "per_level": {"2": 100}}, {STAFF}),
        ("POST", "/institutions/{institution_id}/stock/receipts", f"/institutions/{s.iid}/stock/receipts",
         {"first": 21, "last": 40, "delivery_note": "SH-2026-002"}, {STAFF}),
        ("POST", "/institutions/{institution_id}/stock/spoiled", f"/institutions/{s.iid}/stock/spoiled",
         {"serial": 20, "reason": "卡纸"}, {STAFF}),
        ("POST", "/institutions/{institution_id}/stock/destroyed", f"/institutions/{s.iid}/stock/destroyed",
         {"serials": [20], "witness": "王监督"}, {STAFF}),
        ("POST", "/institutions/{institution_id}/stock/stocktakes", f"/institutions/{s.iid}/stock/stocktakes",
         {"period": "2026H2", "counted": 18}, {STAFF}),
        ("POST", "/sessions/{exam_id}/certificates/print", f"/sessions/{s.exam_id}/certificates/print", None,
         {STAFF}),
        ("POST", "/plans/{plan_id}/certificates/print", f"/plans/{s.pid}/certificates/print", None, {STAFF}),
        ("POST", "/certificates/print", "/certificates/print", {"certificates": [cert]}, {STAFF}),
        ("POST", "/certificates/print-not-made", "/certificates/print-not-made",
         {"certificates": [cert], "reason": "文件未送达打印机"}, {STAFF}),
        ("GET", "/certificates/{certificate}/proof.pdf", f"/certificates/{cert}/proof.pdf", None, {STAFF}),
        ("GET", "/certificates/{certificate}/proof-receipt.pdf", f"/certificates/{cert}/proof-receipt.pdf", None,
         {STAFF}),
        ("GET", "/certificates/{certificate}/proof-application.pdf", f"/certificates/{cert}/proof-application.pdf",
         None, {STAFF}),
        ("GET", "/institutions/{institution_id}/stock/demand/{year}.pdf",
         f"/institutions/{s.iid}/stock/demand/2026.pdf?contact=李老师&phone=0755-1&address=深圳", None, {STAFF}),
        ("GET", "/sessions/{exam_id}/tickets.pdf", f"/sessions/{s.exam_id}/tickets.pdf", None, {STAFF}),
        ("GET", "/registrations/{registration_id}/ticket.pdf", f"/registrations/{s.rid}/ticket.pdf", None,
         {STAFF, CANDIDATE}),
        ("POST", "/certificates/{certificate}/spoiled-print", f"/certificates/{cert}/spoiled-print",
         {"form_serial": 1, "reason": "卡纸"}, {STAFF}),
        ("POST", "/certificates/{certificate}/deletion", f"/certificates/{cert}/deletion", {"reasons": "放弃"},
         {STAFF}),
        ("POST", "/certificates/{certificate}/deletion-check", f"/certificates/{cert}/deletion-check",
         {"queryable_nationally": True}, {ASSOCIATION}),
        ("GET", "/snapshots", "/snapshots", None, {AUDITOR}),
        ("POST", "/certificates/{certificate}/electronic", f"/certificates/{cert}/electronic", None, {STAFF}),
        ("GET", "/certificates/{certificate}/electronic.pdf", f"/certificates/{cert}/electronic.pdf", None,
         {STAFF, CANDIDATE, OTHER_CANDIDATE}),
        ("POST", "/verify/pdf", "/verify/pdf", "pdf", EVERYONE),
        ("GET", "/esign/authority.pem", "/esign/authority.pem", None, EVERYONE),
        ("GET", "/esign/crl", "/esign/crl", None, EVERYONE),
        ("GET", "/institutions/{institution_id}/sample.pdf", f"/institutions/{s.iid}/sample.pdf", None,
         {STAFF, CENTRE, HR, AUDITOR}),
        ("GET", "/certificates/{certificate}/credential", f"/certificates/{cert}/credential", None,
         {STAFF, CANDIDATE, OTHER_CANDIDATE}),
        ("GET", "/esign/keys/{serial}", f"/esign/keys/{serial}", None, EVERYONE),
        ("GET", "/esign/status/{institution_id}", f"/esign/status/{s.iid}", None, EVERYONE),
        ("GET", "/esign/institutions/{institution_id}", f"/esign/institutions/{s.iid}", None, EVERYONE),
        ("POST", "/attachments", "/attachments", "attachment", {STAFF, OTHER_STAFF, CANDIDATE, OTHER_CANDIDATE}),
        ("GET", "/attachments/{sha256}", f"/attachments/{attachment(AttachmentKind.DIPLOMA).sha256}", None,
         {STAFF, OTHER_STAFF, CENTRE, HR, CANDIDATE, OTHER_CANDIDATE}),
        ("PUT", "/certificates/{certificate}/photo", f"/certificates/{cert}/photo",
         {"photo": as_json(photo_attachment(1))}, {STAFF}),
    ]  # fmt: skip


FILES = {
    "attachment": ("scan.pdf", "%PDF-1.4\n% a scan\n%%EOF\n"),
    "pdf": ("certificate.pdf", "%PDF-1.4\n%%EOF\n"),
    "scores": ("scores.csv", "证件号码,姓名,理论知识,操作技能,综合评审\n{id},考生1,80,80,80\n"),
    "candidates": (
        "list.csv",
        "姓名,证件号码,性别,出生日期,文化程度,劳动关系,申报依据\n张三,{id},男,1990-01-01,初中,其他,working_years\n",
    ),
}


def call(s: Setup, role: str, method: str, path: str, body: Any) -> Any:
    if isinstance(body, str):  # a file upload
        name, text = FILES[body]
        files = {"file": (name, text.format(id=s.id_number).encode(), "text/csv")}
        return s.http.request(method, path, headers=s.headers[role], files=files)
    return s.http.request(method, path, headers=s.headers[role], json=body)


def test_every_role_against_every_endpoint(setup: Setup) -> None:
    s = setup
    table = endpoints(s)
    routes = {(m.upper(), path) for path, ops in s.app.openapi()["paths"].items() for m in ops}
    assert routes == {(m, r) for m, r, *_ in table}, "every endpoint is in the matrix"

    refusals = 0
    for method, _, path, body, allowed in table:
        for role in sorted(set(ROLES) - allowed):
            before = s.head()
            r = call(s, role, method, path, body)
            expected = 401 if role == ANONYMOUS else 403
            assert r.status_code == expected, (role, method, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            assert s.head() == before, f"{role} {method} {path} was refused but stored events"
            refusals += 1
        for role in sorted(allowed):
            r = call(s, role, method, path, body)
            assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text)
            assert r.status_code < 500, (role, method, path, r.text)
    assert refusals > 300

    # Where staff are narrowed rather than refused, another institution's staff see nothing of A's.
    for path in (f"/candidates/{s.id_number}/registrations", f"/certificates?holder_id_number={s.id_number}"):
        assert s.http.get(path, headers=s.headers[OTHER_STAFF]).json()["total"] == 0
        assert s.http.get(path, headers=s.headers[STAFF]).json()["total"] == 1


def test_a_path_naming_something_else_is_not_found_for_either_institutions_staff(setup: Setup) -> None:
    """Staff are held to their institution by the target the path names, looked up before anything else:
    an id of another kind there (A's plan where a registration belongs) is not found, for A's staff and for
    B's, rather than refused, which would tell B's staff that the id exists."""
    s = setup
    for role in (STAFF, OTHER_STAFF):
        for path, body in ((f"/registrations/{s.pid}/fee", {"receipt_number": "R-1", "amount": "380.00"}),
                           (f"/registrations/{s.exam_id}/training-account", {"account": "T-1"}),
                           (f"/sessions/{s.rid}/scores/publication", None)):  # fmt: skip
            before = s.head()
            r = s.http.post(path, headers=s.headers[role], json=body)
            assert r.status_code == 404, (role, path, r.status_code, r.text)
            assert s.head() == before


def test_the_actor_on_the_event_is_the_token_holder_never_the_body(setup: Setup, database_url, schema) -> None:
    s = setup
    r = s.http.post(
        f"/registrations/{s.rid}/training-account",
        headers={**s.headers[STAFF], "X-Actor-Id": "someone-else", "X-Request-Id": "req-42"},
        json={"account": "T-9", "actor": {"id": "forged", "role": "provincial_centre"}},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "actor"  # unknown fields are refused
    r = s.http.post(
        f"/registrations/{s.rid}/training-account",
        headers={**s.headers[STAFF], "X-Actor-Id": "someone-else", "X-Request-Id": "req-42"},
        json={"account": "T-9"},
    )
    assert r.status_code == 204, r.text
    with connect(database_url, schema) as c:
        app = s.app.state.registrations
        last = app.recorder.select_notifications(start=s.head(), limit=1)[0]
        actor = app.mapper.to_domain_event(last).actor
        me = s.http.get("/me", headers=s.headers[STAFF]).json()
        assert (actor.id, actor.role, actor.institution_id, actor.request_id) == (
            me["principal_id"],  # a pseudonymous principal id, never the holder's name
            Role.INSTITUTION_STAFF,
            s.iid,
            "req-42",
        )
        assert actor.id.startswith("p_") and "staff-li" not in actor.id
        # An auditor, and only an auditor, resolves it to the name and role.
        who = s.http.get(f"/principals/{actor.id}", headers=s.headers[AUDITOR]).json()
        assert (who["name"], who["role"], who["institution_id"]) == ("staff-li", "institution_staff", str(s.iid))
        assert [t["token_id"] for t in who["tokens"]] == [me["token_id"]]
        assert s.http.get(f"/principals/{actor.id}", headers=s.headers[CENTRE]).status_code == 403
        del c


def test_tokens_are_stored_hashed_and_revocable(setup: Setup, database_url, schema) -> None:
    from infra.api.tokens import Tokens

    s = setup
    secret = s.headers[AUDITOR]["Authorization"].removeprefix("Bearer ")
    with connect(database_url, schema) as c:
        stored = c.execute("SELECT string_agg(encode(secret_sha256, 'escape') || id || name, '') FROM api_tokens")
        assert secret not in stored.fetchone()[0]
        refs = [r[0] for r in c.execute("SELECT candidate_ref FROM api_tokens WHERE role = 'candidate'")]
        assert s.id_number not in str(refs) and all(len(r) == 64 for r in refs)
    assert s.http.get("/me", headers=s.headers[AUDITOR]).json()["name"] == "auditor-sun"
    token_id = secret.split("_")[1]
    assert Tokens(database_url, schema).revoke(token_id)
    r = s.http.get("/me", headers=s.headers[AUDITOR])
    assert r.status_code == 401 and "revoked" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert s.http.get("/me", headers={"Authorization": "Bearer skc_00000000_guess"}).status_code == 401


def test_an_hr_department_reads_only_what_concerns_the_institutions_filed_in_its_region(
    setup: Setup, database_url, schema
) -> None:
    """Shenzhen's HR department (03) sees the Shenzhen institution's data; Guangzhou's (01) sees none
    of it: 403 when it names it, nothing when it lists."""
    shenzhen = setup.headers[HR]
    guangzhou = bearer(database_url, schema, Role.HR_DEPARTMENT, "hr-gz", jurisdiction="01")
    http = setup.http
    for path in (f"/certificates/{setup.number}", f"/registrations/{setup.rid}", f"/aggregates/{setup.rid}",
                 f"/institutions/{setup.iid}/stock", f"/deadlines?institution_id={setup.iid}",
                 f"/audit?institution_id={setup.iid}"):  # fmt: skip
        assert http.get(path, headers=shenzhen).status_code == 200, path
        r = http.get(path, headers=guangzhou)
        assert r.status_code == 403 and "region 01" in r.json()["detail"], (path, r.status_code, r.text)
    for path in ("/deadlines", "/deadlines/overdue", "/statistics/issued", "/statistics/pass-rates",
                 f"/certificates?holder_id_number={setup.id_number}", f"/candidates/{setup.id_number}/registrations"):  # fmt: skip
        mine, theirs = http.get(path, headers=shenzhen).json(), http.get(path, headers=guangzhou).json()
        rows = theirs["items"] if isinstance(theirs, dict) else theirs
        assert rows == [], (path, rows)
        assert (mine["items"] if isinstance(mine, dict) else mine) or path.startswith("/deadlines"), path
    # An HR token must name its region.
    with pytest.raises(InvalidInput, match="jurisdiction"):
        Tokens(database_url, schema).create("hr-nowhere", Role.HR_DEPARTMENT)
