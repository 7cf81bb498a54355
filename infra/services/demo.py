"""A small sample scenario so a new user has something to look at."""

from __future__ import annotations

from datetime import date, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from stdnum.cn import ric

from domain.certificate import certificate_id
from domain.eligibility import Evidence
from domain.errors import Conflict
from domain.exam import Room, Subject
from domain.institution import DeadlineProfile, Filing, ScopeEntry, institution_id
from domain.levels import Level
from domain.model import Actor, Role
from domain.plan import PlanDetails
from domain.registration import AttachmentKind, RegistrationForm
from infra.services import samples
from infra.services.certificates import Certificates
from infra.services.exams import Exams
from infra.services.registrations import Decision, Registrations

SYSTEM = Actor(id="demo-loader", role=Role.SYSTEM)
FILING = Filing(city_code="03", station_serial="015")


def resident_id(base17: str) -> str:
    return base17 + ric.calc_check_digit(base17 + "0")  # it ignores the last character


attachment = samples.attachment  # real files, held by the store (samples.hold)


# The scenario's people, as principals (infra.api.tokens): every event names its actor by these ids.
PEOPLE = {
    "staff": ("p_demo_staff", "staff-li", Role.INSTITUTION_STAFF),
    "proctor": ("p_demo_proctor", "proctor-liu", Role.INSTITUTION_STAFF),
    "centre": ("p_demo_centre", "centre-wang", Role.PROVINCIAL_CENTRE),
    "hr": ("p_demo_hr", "hr-zhao", Role.HR_DEPARTMENT),
    "association": ("p_demo_association", "assoc-lin", Role.ASSOCIATION),
    "auditor": ("p_demo_auditor", "auditor-sun", Role.AUDITOR),
}
# The HR department the sample institution is filed with: Shenzhen's (004 table 2: 03).
REGION = {"hr": FILING.city_code}


def actor(who: str, iid: UUID | None = None) -> Actor:
    principal_id, _, role = PEOPLE[who]
    return Actor(id=principal_id, role=role, institution_id=iid if role is Role.INSTITUTION_STAFF else None,
                 jurisdiction=REGION.get(who))  # fmt: skip


def register_people(database_url: str, schema: str, key: bytes) -> None:
    from infra.api.tokens import Tokens
    from infra.bus.privacy import ref

    store = Tokens(database_url, schema)
    store.create_table()
    iid = institution_id(FILING)
    for who, (principal_id, name, role) in PEOPLE.items():
        store.register(name, role, iid if role is Role.INSTITUTION_STAFF else None, principal_id=principal_id,
                       jurisdiction=REGION.get(who))  # fmt: skip
    for i, (_, base, _, _) in enumerate(CANDIDATES + CERTIFIED, 1):
        store.register(f"candidate-{i}", Role.CANDIDATE, candidate_ref=ref(resident_id(base), key),
                       principal_id=candidate(base).id)  # fmt: skip


# The evaluation scope the HR department filed for the sample institution (004 §8).
SCOPE = [
    ScopeEntry(occupation="人工智能训练师", job=None, levels=[Level.TWO, Level.THREE, Level.FOUR, Level.FIVE]),
    ScopeEntry(occupation="中式烹调师", job="中式烹调", levels=[Level.THREE, Level.FOUR, Level.FIVE]),
]


def load(service: Registrations, today: date, database_url: str, schema: str, key: bytes) -> UUID:
    """Idempotent: an institution already loaded is left as it is."""
    iid = institution_id(FILING)
    register_people(database_url, schema, key)
    samples.hold(service.attachments)  # the scans and photos the scenario refers to
    try:
        service.register_institution(SYSTEM, "深圳市技能人才评价示范中心", FILING, DeadlineProfile.S, SCOPE)
    except Conflict:
        return iid
    certified(database_url, schema, iid)  # first: its own clock starts in March
    staff = actor("staff", iid)
    common = dict(
        exam_location="广东省深圳市南山区",
        contact_name="李老师",
        contact_phone="0755-88886666",
        supervising_region="深圳市",
    )
    ai_plan, ai_code = service.publish_plan(
        staff,
        iid,
        PlanDetails(
            plan_number="2601", name="2026年第一期人工智能训练师认定", occupation="人工智能训练师", job=None,
            level=Level.TWO, max_registrations=60, evaluation_start=today + timedelta(days=30),
            evaluation_end=today + timedelta(days=30), registration_deadline=today + timedelta(days=14), **common,
        ),
    )  # fmt: skip
    service.publish_plan(
        staff,
        iid,
        PlanDetails(
            plan_number="2602", name="2026年第一期中式烹调师（初级）认定", occupation="中式烹调师", job="中式烹调",
            level=Level.FIVE, max_registrations=40, evaluation_start=today + timedelta(days=45),
            evaluation_end=today + timedelta(days=46), registration_deadline=today + timedelta(days=21), **common,
        ),
    )  # fmt: skip
    ids = []
    for name, base, gender, born in CANDIDATES:
        form = RegistrationForm(
            name=name, id_number=resident_id(base), gender=gender, date_of_birth=born, education="大学本科",
            years_in_occupation=8, candidate_source="本企业职工", labour_relation="本企业职工",
            phone="13800138000", work_unit="深圳市某某科技有限公司", basis="working_years",
            holds_prior_certificate=True,  # a level-3 certificate, the one condition 2.1 rests on
            attachments=[attachment(k) for k in (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD,
                                                 AttachmentKind.SOCIAL_SECURITY, AttachmentKind.LABOUR_CONTRACT,
                                                 AttachmentKind.PRIOR_CERTIFICATE)],
            declaration_accepted=True,
        )  # fmt: skip
        ids.append(service.register(candidate(base), ai_code, form))
    service.review(
        staff, ids[0], Decision.APPROVED, "材料齐全，符合申报条件", condition="2.1",
        evidence=Evidence(years_in_occupation=8, prior_level=3, years_since_prior=5,
                          insured_work_unit="深圳市某某科技有限公司"),
    )  # fmt: skip
    service.review(staff, ids[1], Decision.RETURNED, "社保证明缺少近12个月记录，请补充后重新提交")
    service.review(staff, ids[2], Decision.REJECTED, "从业年限不符合二级申报条件")
    return iid


class Clock:
    def __init__(self) -> None:
        self.today = date(2026, 3, 2)

    def __call__(self) -> date:
        return self.today


CERTIFIED = [("李娜", "44030419920612442", "女", date(1992, 6, 12)), ("刘洋", "44030519870923151", "男", date(1987, 9, 23)),
             ("黄敏", "44030719930418282", "女", date(1993, 4, 18))]  # fmt: skip
CANDIDATES = [("张伟", "44030519900307231", "男", date(1990, 3, 7)), ("王芳", "44030319880815262", "女", date(1988, 8, 15)),
              ("陈磊", "44030119950120353", "男", date(1995, 1, 20))]  # fmt: skip
CENTRE = actor("centre")


def candidate(base17: str) -> Actor:
    """A candidate of the scenario, by a principal id of their own (never derived from their ID number)."""
    i = [b for _, b, _, _ in CANDIDATES + CERTIFIED].index(base17) + 1
    return Actor(id=f"p_demo_candidate{i}", role=Role.CANDIDATE)


def certified(database_url: str, schema: str, iid: UUID) -> list[str]:
    """A plan of spring 2026 taken from registration to certificates on the national query
    platform, then printed on blank forms: something to verify. Its own clock walks the dates."""
    clock = Clock()
    reg, exams, certs = (cls(database_url, schema, today=clock) for cls in (Registrations, Exams, Certificates))
    try:
        staff = actor("staff", iid)
        proctor = actor("proctor", iid)
        pid, code = reg.publish_plan(staff, iid, PlanDetails(
            plan_number="2501", name="2026年春季人工智能训练师（二级）认定", occupation="人工智能训练师", job=None,
            level=Level.TWO, max_registrations=30, evaluation_start=date(2026, 4, 10), evaluation_end=date(2026, 4, 10),
            registration_deadline=date(2026, 3, 20), exam_location="广东省深圳市南山区", contact_name="李老师",
            contact_phone="0755-88886666", supervising_region="深圳市",
        ))  # fmt: skip
        rids = []
        for i, (name, base, gender, born) in enumerate(CERTIFIED, 1):
            form = RegistrationForm(
                name=name, id_number=resident_id(base), gender=gender, date_of_birth=born, education="大学本科",
                years_in_occupation=9, candidate_source="本企业职工", labour_relation="本企业职工", phone="13900139000",
                work_unit="深圳市某某智能有限公司", basis="working_years", declaration_accepted=True,
                holds_prior_certificate=True,
                attachments=[attachment(k) for k in (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD,
                                                     AttachmentKind.SOCIAL_SECURITY, AttachmentKind.PRIOR_CERTIFICATE)],
            )  # fmt: skip
            rid = reg.register(candidate(base), code, form)
            reg.review(staff, rid, Decision.APPROVED, "材料齐全", condition="2.1",
                       evidence=Evidence(years_in_occupation=9, prior_level=3, years_since_prior=5,
                                         insured_work_unit="深圳市某某智能有限公司"))  # fmt: skip
            reg.pay_fee(staff, rid, f"R2026{i:06d}", Decimal("380.00"))
            rids.append(rid)
        clock.today = date(2026, 4, 3)
        exam_id = exams.schedule(staff, pid, "A", date(2026, 4, 10), time(9), time(11, 30), "深圳市南山区科技园考点",
                                 [Room(name="301", seats=30)])  # fmt: skip
        seats = {a.registration_id: a.seat for a in exams.issue_tickets(staff, exam_id)}
        clock.today = date(2026, 4, 10)
        for (_, base, _, _), rid in zip(CERTIFIED, rids, strict=True):
            exams.check_in(candidate(base), rid)
            exams.check_identity(proctor, rid)
            exams.sign_in(proctor, rid, seats[rid], second_identity_check=True)
            exams.start(proctor, rid)
            exams.finish(proctor, rid)
        exams.close_day(staff, exam_id)
        clock.today = date(2026, 4, 13)
        marks = {Subject.THEORY: Decimal("78"), Subject.SKILLS: Decimal("85.5"), Subject.COMPREHENSIVE: Decimal("80")}
        exams.record_scores(staff, exam_id, {rid: marks for rid in rids})
        exams.publish_scores(staff, exam_id)
        clock.today = date(2026, 4, 27)
        exams.report_results(staff, exam_id)
        clock.today = date(2026, 4, 28)
        exams.confirm_results(CENTRE, exam_id)
        clock.today = date(2026, 4, 29)
        numbers = certs.issue(staff, exam_id)
        ids = [certificate_id(r) for r in numbers]
        certs.report_data(staff, ids)
        certs.accept_data(CENTRE, ids)
        clock.today = date(2026, 7, 1)
        certs.make_queryable(CENTRE, ids)
        certs.receive_forms(staff, iid, 10_000_001, 10_000_100, "粤人社证书〔2026〕第15号")
        for i, cid in enumerate(ids):
            certs.attach_photo(staff, cid, samples.photo_attachment(i))
            certs.print(staff, cid)
        return list(numbers.values())
    finally:
        for service in (reg, exams, certs):
            service.close()


DEMO_TOKEN_DAYS = 30
HOLDERS = {"staff": "staff", "centre": "centre", "hr": "hr", "association": "association", "auditor": "auditor"}


def tokens(database_url: str, schema: str, key: bytes, kept: dict[str, str] | None = None) -> dict[str, str]:
    """A token for each role, for the README's tour, valid DEMO_TOKEN_DAYS days. The tokens in `kept`
    (the file a second shell has sourced) stay while every one of them still opens the API; otherwise
    the demo's tokens are revoked and made again, for the same principals."""
    import psycopg

    from infra.api.tokens import Refused, Tokens

    store = Tokens(database_url, schema)
    store.create_table()
    wanted = {**{role: PEOPLE[who][0] for role, who in HOLDERS.items()}, "candidate": candidate(CERTIFIED[0][1]).id}
    if kept and set(kept) == set(wanted):
        try:
            with psycopg.connect(database_url) as conn:
                conn.execute(f'SET search_path TO "{schema}"')
                if all(store.principal(conn, token).principal_id == wanted[role] for role, token in kept.items()):
                    return kept
        except Refused:
            pass
    for t in store.list():
        if t["principal_id"] in wanted.values() and t["revoked_at"] is None:
            store.revoke(t["id"])
    register_people(database_url, schema, key)
    return {
        role: _create(store, _holder(store, database_url, schema, principal_id), principal_id)
        for role, principal_id in wanted.items()
    }  # fmt: skip


def _create(store: Any, holder: tuple[object, ...], principal_id: str) -> str:
    name, role, institution, candidate_ref, region = holder
    return store.create(name, role, institution, candidate_ref, days=DEMO_TOKEN_DAYS, principal_id=principal_id,
                        jurisdiction=region)[1]  # fmt: skip


def _holder(store: object, database_url: str, schema: str, principal_id: str) -> tuple[object, ...]:
    import psycopg

    with psycopg.connect(database_url) as conn:
        name, role, institution, candidate_ref, region = conn.execute(
            f'SELECT name, role, institution_id, candidate_ref, jurisdiction FROM "{schema}".principals'
            " WHERE principal_id = %s",
            (principal_id,),
        ).fetchone()
    return name, Role(role), institution, candidate_ref, region
