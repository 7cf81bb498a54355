"""Who may apply for which level: the application conditions (申报条件) of the national
occupational standards, as the 2023 technical rules for writing them set out.

Kept as data: the institution shows it to candidates and reviewers, and the review
decision names the condition a candidate meets and the evidence for it (000 ①).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum

from pydantic import Field

from domain.errors import InvalidInput
from domain.levels import Level
from domain.model import Immutable
from domain.personal import Personal, personal


class Basis(StrEnum):
    """What the candidate applies on (001, 需填写的信息)."""

    ENTRY_LEVEL = "entry_level"  # 报名五级
    EDUCATION = "education"  # 以学历报考, levels 3 and 4 only
    WORKING_YEARS = "working_years"  # 以工作年限报考


class Title(IntEnum):
    """Professional title (职称) in a field matching the occupation."""

    JUNIOR = 1  # 初级
    INTERMEDIATE = 2  # 中级
    SENIOR = 3  # 高级


class School(StrEnum):
    """Graduation certificates (in this or a related major) that open a condition."""

    SECONDARY_VOCATIONAL = "中等及以上职业院校"
    TECHNICAL_SCHOOL = "技工院校"
    TECHNICAL_SENIOR_CLASS = "技工院校高级工班及以上"
    TECHNICIAN_COLLEGE = "高级技工学校、技师学院"
    TECHNICIAN_CLASS_STUDENT = "技师学院预备技师班、技师班学生"
    HIGHER_VOCATIONAL = "高等职业学校、专科及以上普通高等学校"
    ASSESSED_HIGHER_VOCATIONAL = "经评估论证的高等职业学校、专科及以上普通高等学校"


class Condition(Immutable):
    id: str
    level: Level
    basis: Basis
    text: str
    min_age: int = 16
    years: int = 0  # total years in this or a related occupation
    prior_level: Level | None = None  # an earlier skill certificate of this level or higher
    years_since_prior: int = 0
    title: Title | None = None
    years_since_title: int = 0
    schools: frozenset[School] = frozenset()


class Evidence(Immutable):
    """What the reviewer verified from the candidate's materials."""

    age: int | None = Field(None, ge=0, le=120, description="filled in from the date of birth at review")
    years_in_occupation: int = Field(0, ge=0, le=60)
    prior_level: Level | None = None
    years_since_prior: int = Field(0, ge=0, le=60)
    title: Title | None = None
    years_since_title: int = Field(0, ge=0, le=60)
    school: School | None = None
    insured_work_unit: str | None = Field(
        None,
        max_length=25,
        description="the work unit on the social insurance record (社保记录), as the reviewer read it (000 ②)",
        json_schema_extra=personal(Personal.BACKGROUND),
    )


_ANY_SCHOOL = frozenset(School) - {School.TECHNICIAN_CLASS_STUDENT}
W, E, V = Basis.WORKING_YEARS, Basis.EDUCATION, Basis.ENTRY_LEVEL

CONDITIONS: tuple[Condition, ...] = (
    Condition(id="5.1", level=Level.FIVE, basis=V, text="年满16周岁，拟从事本职业或相关职业工作"),
    Condition(id="5.2", level=Level.FIVE, basis=V, text="年满16周岁，从事本职业或相关职业工作"),
    Condition(id="4.1", level=Level.FOUR, basis=W, years=5, text="累计从事本职业或相关职业工作满5年"),
    Condition(id="4.2", level=Level.FOUR, basis=W, prior_level=Level.FIVE, years_since_prior=3,
              text="取得本职业或相关职业五级/初级工职业技能等级证书后，累计从事本职业或相关职业工作满3年"),
    Condition(id="4.3", level=Level.FOUR, basis=E, schools=_ANY_SCHOOL,
              text="取得本专业或相关专业的技工院校或中等及以上职业院校、专科及以上普通高等学校毕业证书（含在读应届毕业生）"),
    Condition(id="3.1", level=Level.THREE, basis=W, years=10, text="累计从事本职业或相关职业工作满10年"),
    Condition(id="3.2", level=Level.THREE, basis=W, prior_level=Level.FOUR, years_since_prior=4,
              text="取得本职业或相关职业四级/中级工职业技能等级证书后，累计从事本职业或相关职业工作满4年"),
    Condition(id="3.3", level=Level.THREE, basis=W, title=Title.JUNIOR, years_since_title=1,
              text="取得符合专业对应关系的初级职称（专业技术人员职业资格）后，累计从事本职业或相关职业工作满1年"),
    Condition(id="3.4", level=Level.THREE, basis=E,
              schools=frozenset({School.TECHNICAL_SENIOR_CLASS, School.TECHNICIAN_COLLEGE}),
              text="取得本专业或相关专业的技工院校高级工班及以上毕业证书（含在读应届毕业生）"),
    Condition(id="3.5", level=Level.THREE, basis=E, prior_level=Level.FOUR,
              schools=frozenset({School.HIGHER_VOCATIONAL, School.ASSESSED_HIGHER_VOCATIONAL}),
              text="取得本职业或相关职业四级/中级工职业技能等级证书，并取得高等职业学校、专科及以上普通高等学校本专业或相关专业毕业证书（含在读应届毕业生）"),
    Condition(id="3.6", level=Level.THREE, basis=E, schools=frozenset({School.ASSESSED_HIGHER_VOCATIONAL}),
              text="取得经评估论证、以高级技能为培养目标的高等职业学校本专业或相关专业毕业证书（含在读应届毕业生）"),
    Condition(id="2.1", level=Level.TWO, basis=W, prior_level=Level.THREE, years_since_prior=5,
              text="取得本职业或相关职业三级/高级工职业技能等级证书后，累计从事本职业或相关职业工作满5年"),
    Condition(id="2.2", level=Level.TWO, basis=W, years=5, title=Title.JUNIOR, years_since_title=1,
              text="取得符合专业对应关系的初级职称后，累计从事本职业或相关职业工作满5年，并在取得初级职称后从事本职业或相关职业工作满1年"),
    Condition(id="2.3", level=Level.TWO, basis=W, title=Title.INTERMEDIATE, years_since_title=1,
              text="取得符合专业对应关系的中级职称后，累计从事本职业或相关职业工作满1年"),
    Condition(id="2.4", level=Level.TWO, basis=W, years=2, prior_level=Level.THREE,
              schools=frozenset({School.TECHNICIAN_COLLEGE}),
              text="取得本职业或相关职业三级/高级工职业技能等级证书的高级技工学校、技师学院毕业生，累计从事本职业或相关职业工作满2年"),
    Condition(id="2.5", level=Level.TWO, basis=W, prior_level=Level.THREE, years_since_prior=2,
              schools=frozenset({School.TECHNICIAN_CLASS_STUDENT}),
              text="取得本职业或相关职业三级/高级工职业技能等级证书满2年的技师学院预备技师班、技师班学生"),
    Condition(id="1.1", level=Level.ONE, basis=W, prior_level=Level.TWO, years_since_prior=5,
              text="取得本职业或相关职业二级/技师职业技能等级证书后，累计从事本职业或相关职业工作满5年"),
    Condition(id="1.2", level=Level.ONE, basis=W, years=5, title=Title.INTERMEDIATE, years_since_title=1,
              text="取得符合专业对应关系的中级职称后，累计从事本职业或相关职业工作满5年，并在取得中级职称后从事本职业或相关职业工作满1年"),
    Condition(id="1.3", level=Level.ONE, basis=W, title=Title.SENIOR, years_since_title=1,
              text="取得符合专业对应关系的高级职称后，累计从事本职业或相关职业工作满1年"),
)  # fmt: skip
BY_ID = {c.id: c for c in CONDITIONS}


def unmet(condition: Condition, evidence: Evidence) -> list[str]:
    """What the evidence lacks for the condition; empty when it is met."""
    c, e = condition, evidence
    gaps = []
    if e.age is None or e.age < c.min_age:
        gaps.append(f"needs age {c.min_age} or over; the candidate is {e.age}")
    if e.years_in_occupation < c.years:
        gaps.append(f"needs {c.years} years in the occupation; the evidence shows {e.years_in_occupation}")
    if c.prior_level is not None:
        if e.prior_level is None or e.prior_level > c.prior_level:
            held = f"level {int(e.prior_level)}" if e.prior_level else "none"
            gaps.append(f"needs a level-{int(c.prior_level)} certificate or higher; the evidence shows {held}")
        elif e.years_since_prior < c.years_since_prior:
            gaps.append(
                f"needs {c.years_since_prior} years after the level-{int(c.prior_level)} certificate; "
                f"the evidence shows {e.years_since_prior}"
            )
    if c.title is not None:
        if e.title is None or e.title < c.title:
            gaps.append(f"needs a {c.title.name.lower()} professional title or higher")
        elif e.years_since_title < c.years_since_title:
            gaps.append(
                f"needs {c.years_since_title} year(s) after the title; the evidence shows {e.years_since_title}"
            )
    if c.schools and e.school not in c.schools:
        gaps.append(f"needs a graduation certificate from: {'; '.join(sorted(c.schools))}")
    return gaps


def check_eligibility(condition_id: str, level: Level, basis: Basis, evidence: Evidence) -> Condition:
    condition = BY_ID.get(condition_id)
    if condition is None:
        raise InvalidInput([("condition", f"{condition_id!r} is not a condition; see the eligibility table")])
    if condition.level is not level:
        raise InvalidInput(
            [("condition", f"condition {condition.id} is for level {int(condition.level)}, not {int(level)}")]
        )
    if condition.basis is not basis:
        raise InvalidInput(
            [
                (
                    "condition",
                    f"condition {condition.id} is applied for on the {condition.basis.value} basis, not {basis.value}",
                )
            ]
        )
    gaps = unmet(condition, evidence)
    if gaps:
        raise InvalidInput([("evidence", f"condition {condition.id} not met: {g}") for g in gaps])
    return condition
