"""Test data that reads like the seeds: an institution, a plan, candidates' forms."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from stdnum.cn import ric

from domain.eligibility import Evidence
from domain.institution import DeadlineProfile, Filing, ScopeEntry
from domain.levels import Level
from domain.model import Actor, Role
from domain.plan import PlanDetails
from domain.registration import AttachmentKind, RegistrationForm
from infra.services import samples

ADMIN = Actor(id="centre-admin", role=Role.PROVINCIAL_CENTRE)


def resident_id(area: str, born: date, serial: int) -> str:
    """A valid resident ID number: area code, birth date, 3-digit serial (odd: male), check digit."""
    base = f"{area}{born:%Y%m%d}{serial:03d}"
    return base + ric.calc_check_digit(base + "0")


attachment = samples.attachment  # real files, held by the store (samples.hold)


def plan_details(number: str = "2501", level: Level = Level.TWO, seats: int = 60, **overrides: Any) -> PlanDetails:
    fields: dict[str, Any] = dict(
        plan_number=number, name="人工智能训练师认定", occupation="人工智能训练师", job=None, level=level,
        max_registrations=seats, evaluation_start=date(2026, 4, 10), evaluation_end=date(2026, 4, 10),
        registration_deadline=date(2026, 3, 20), exam_location="广东省深圳市南山区", contact_name="李老师",
        contact_phone="0755-88886666", supervising_region="广东省（省本级）",
    )  # fmt: skip
    fields.update(overrides)
    return PlanDetails(**fields)


def working_years_form(serial: int = 1, **overrides: Any) -> RegistrationForm:
    born = date(1990, 1, 1) + timedelta(days=serial * 7)
    gender = "男" if serial % 2 else "女"
    fields: dict[str, Any] = dict(
        name=f"考生{serial}", id_number=resident_id("440305", born, serial % 1000), gender=gender, date_of_birth=born,
        education="大学本科", years_in_occupation=8, candidate_source="本企业职工", labour_relation="本企业职工",
        phone="13800138000", work_unit="深圳市某某科技有限公司", basis="working_years",
        holds_prior_certificate=True,  # the level-3 certificate L2_CONDITION rests on, uploaded
        attachments=[attachment(k) for k in (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD,
                                             AttachmentKind.SOCIAL_SECURITY, AttachmentKind.PRIOR_CERTIFICATE)],
        declaration_accepted=True,
    )  # fmt: skip
    fields.update(overrides)
    return RegistrationForm(**fields)


def entry_level_form(serial: int = 1, **overrides: Any) -> RegistrationForm:
    fields: dict[str, Any] = dict(
        years_in_occupation=0, candidate_source="其他", labour_relation="其他", work_unit="无", basis="entry_level",
        education="普通高中", attachments=[attachment(AttachmentKind.DIPLOMA)],
    )  # fmt: skip
    fields.update(overrides)
    return working_years_form(serial, **fields)


def staff_of(institution_id: Any) -> Actor:
    return Actor(id="staff-li", role=Role.INSTITUTION_STAFF, institution_id=institution_id)


def candidate(serial: int = 1) -> Actor:
    return Actor(id=f"candidate-{serial}", role=Role.CANDIDATE)


# What the test institutions are filed for (004 §8): the occupation of every test plan, at every level.
SCOPE = [ScopeEntry(occupation="人工智能训练师", job=None, levels=list(Level))]


def setup_plan(service: Any, seats: int = 60, level: Level = Level.TWO, number: str = "2501") -> tuple[Any, Any, str]:
    """An institution with one published plan. Returns (institution_id, plan_id, code)."""
    iid = service.register_institution(
        ADMIN, "深圳市技能人才评价示范中心", Filing(city_code="03", station_serial="015"), DeadlineProfile.S, SCOPE
    )
    pid, code = service.publish_plan(staff_of(iid), iid, plan_details(number, level, seats))
    return iid, pid, code


# A level-2 candidate on condition 2.1: a level-3 certificate held for 5 years, 8 years in the trade.
L2_CONDITION = "2.1"
L2_EVIDENCE = Evidence(
    years_in_occupation=8, prior_level=3, years_since_prior=5, insured_work_unit="深圳市某某科技有限公司"
)  # as declared on working_years_form
