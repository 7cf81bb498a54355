"""A small sample scenario so a new user has something to look at."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from uuid import UUID

from stdnum.cn import ric

from domain.eligibility import Evidence
from domain.errors import Conflict
from domain.institution import DeadlineProfile, Filing, institution_id
from domain.levels import Level
from domain.model import Actor, Role
from domain.plan import PlanDetails
from domain.registration import Attachment, AttachmentKind, RegistrationForm
from infra.registrations import Decision, Registrations

SYSTEM = Actor(id="demo-loader", role=Role.SYSTEM)
FILING = Filing(city_code="03", station_serial="015")


def resident_id(base17: str) -> str:
    return base17 + ric.calc_check_digit(base17 + "0")  # it ignores the last character


def attachment(kind: AttachmentKind) -> Attachment:
    return Attachment(kind=kind, file_name=f"{kind.value}.pdf", sha256=hashlib.sha256(kind.value.encode()).hexdigest())


def load(service: Registrations, today: date) -> UUID:
    """Idempotent: an institution already loaded is left as it is."""
    iid = institution_id(FILING)
    try:
        service.register_institution(SYSTEM, "深圳市技能人才评价示范中心", FILING, DeadlineProfile.S)
    except Conflict:
        return iid
    staff = Actor(id="staff-li", role=Role.INSTITUTION_STAFF, institution_id=iid)
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
    people = [("张伟", "44030519900307231", "男", date(1990, 3, 7)), ("王芳", "44030319880815262", "女", date(1988, 8, 15)),
              ("陈磊", "44030119950120353", "男", date(1995, 1, 20))]  # fmt: skip
    ids = []
    for name, base, gender, born in people:
        candidate = Actor(id=f"candidate-{base[-4:]}", role=Role.CANDIDATE)
        form = RegistrationForm(
            name=name, id_number=resident_id(base), gender=gender, date_of_birth=born, education="大学本科",
            years_in_occupation=8, candidate_source="本企业职工", labour_relation="本企业职工",
            phone="13800138000", work_unit="深圳市某某科技有限公司", basis="working_years",
            attachments=[attachment(k) for k in (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD,
                                                 AttachmentKind.SOCIAL_SECURITY, AttachmentKind.LABOUR_CONTRACT)],
            declaration_accepted=True,
        )  # fmt: skip
        ids.append(service.register(candidate, ai_code, form))
    service.review(
        staff, ids[0], Decision.APPROVED, "材料齐全，符合申报条件", condition="2.1",
        evidence=Evidence(years_in_occupation=8, prior_level=3, years_since_prior=5),
    )  # fmt: skip
    service.review(staff, ids[1], Decision.RETURNED, "社保证明缺少近12个月记录，请补充后重新提交")
    service.review(staff, ids[2], Decision.REJECTED, "从业年限不符合二级申报条件")
    return iid
