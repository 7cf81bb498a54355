"""A candidate's registration for a plan and its review (001, 000 flows ① and ②)."""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field, field_validator
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumError

from domain.errors import Conflict, Forbidden, InvalidInput
from domain.levels import Level
from domain.model import Actor, Aggregate, Immutable, Role


class IdType(StrEnum):
    RESIDENT_ID = "居民身份证"
    HK_MACAO_PERMIT = "港澳居民来往内地通行证"
    TAIWAN_PERMIT = "台湾居民来往大陆通行证"
    PASSPORT = "护照"
    FOREIGNER_PERMANENT_RESIDENCE = "外国人永久居留身份证"


class Gender(StrEnum):
    MALE = "男"
    FEMALE = "女"


class Education(StrEnum):
    DOCTORATE = "博士研究生"
    MASTER = "硕士研究生"
    BACHELOR = "大学本科"
    JUNIOR_COLLEGE = "大学专科"
    SECONDARY_SPECIALISED = "中等专科"
    VOCATIONAL_HIGH = "职业高中"
    TECHNICAL_SCHOOL = "技工学校"
    HIGH_SCHOOL = "普通高中"
    JUNIOR_HIGH = "初中"
    PRIMARY = "小学"
    OTHER = "其他"

    @property
    def is_college_or_above(self) -> bool:
        # These have a CHSI (学信网) electronic registration record to attach.
        return self in (Education.DOCTORATE, Education.MASTER, Education.BACHELOR, Education.JUNIOR_COLLEGE)


class CandidateSource(StrEnum):
    EMPLOYEE = "本企业职工"
    STUDENT = "院校学生"
    PUBLIC = "社会人员"
    OTHER = "其他"


class LabourRelation(StrEnum):
    EMPLOYEE = "本企业职工"
    DISPATCHED = "劳务派遣"
    FLEXIBLE = "灵活就业"
    OTHER = "其他"


class Basis(StrEnum):
    """What the candidate applies on (001, 需填写的信息)."""

    ENTRY_LEVEL = "entry_level"  # 报名五级
    EDUCATION = "education"  # 以学历报考, levels 3 and 4 only
    WORKING_YEARS = "working_years"  # 以工作年限报考


class AttachmentKind(StrEnum):
    DIPLOMA = "diploma"  # 毕业证
    CHSI_RECORD = "chsi_record"  # 学信网电子注册备案表
    SOCIAL_SECURITY = "social_security"  # 社保证明
    WORK_CERTIFICATE = "work_certificate"  # 工作证明（盖章版）
    LABOUR_CONTRACT = "labour_contract"  # 劳动合同
    PRIOR_CERTIFICATE = "prior_certificate"  # 职称或技能证书


class Attachment(Immutable):
    kind: AttachmentKind
    file_name: str = Field(min_length=1, max_length=200)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="content hash of the uploaded file")


PHONE = re.compile(r"^1[3-9]\d{9}$")
NO_UNIT = "无"


class RegistrationForm(Immutable):
    """The personal-information form of 001 step 5; * fields are required there."""

    name: str = Field(min_length=1, max_length=50)
    id_type: IdType = IdType.RESIDENT_ID
    id_number: str = Field(min_length=5, max_length=30)
    gender: Gender
    date_of_birth: date
    education: Education
    years_in_occupation: int | None = Field(None, ge=0, le=60)
    candidate_source: CandidateSource | None = None
    labour_relation: LabourRelation
    phone: str | None = None
    work_unit: str | None = Field(None, max_length=25)
    basis: Basis
    holds_prior_certificate: bool = Field(False, description="applies with a title or skill certificate")
    attachments: list[Attachment] = Field(default_factory=list)
    declaration_accepted: bool = Field(description="the truthfulness declaration of 001 step 5")

    @field_validator("name", "work_unit")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() if v is not None else v

    @field_validator("id_number")
    @classmethod
    def _id_upper(cls, v: str) -> str:
        return v.strip().upper()

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and not PHONE.match(v.strip()):
            raise ValueError("must be an 11-digit mainland mobile number")
        return v.strip() if v else v


def check_form(form: RegistrationForm, level: Level, hr_work_unit: str | None = None) -> list[str]:
    """Apply 001's rules for the application basis. Raises InvalidInput listing every problem.

    Returns warnings that do not stop the registration (the work-unit comparison).
    hr_work_unit is what the provincial HR records say, when they say anything.
    """
    problems: list[tuple[str, str]] = []
    warnings: list[str] = []

    if not form.name:
        problems.append(("name", "is required"))
    if not form.declaration_accepted:
        problems.append(("declaration_accepted", "the truthfulness declaration must be accepted"))

    if form.id_type is IdType.RESIDENT_ID:
        try:
            ric.validate(form.id_number)
        except StdnumError as e:
            problems.append(("id_number", f"is not a valid resident ID number: {e}"))
        else:
            born = ric.get_birth_date(form.id_number)
            if born != form.date_of_birth:
                problems.append(("date_of_birth", f"does not match the ID number, which says {born.isoformat()}"))
            # The 17th character is odd for men, even for women.
            gender = Gender.MALE if int(form.id_number[16]) % 2 else Gender.FEMALE
            if gender != form.gender:
                problems.append(("gender", f"does not match the ID number, which says {gender.value}"))

    kinds = {a.kind for a in form.attachments}

    def need(kind: AttachmentKind, why: str) -> None:
        if kind not in kinds:
            problems.append(("attachments", f"a {kind.value} attachment is required {why}"))

    if level is Level.FIVE and form.basis is not Basis.ENTRY_LEVEL:
        problems.append(("basis", "a level-5 plan is applied for on the entry_level basis"))
    if level is not Level.FIVE and form.basis is Basis.ENTRY_LEVEL:
        problems.append(("basis", f"entry_level is only for level-5 plans; this plan is level {int(level)}"))
    if form.basis is Basis.EDUCATION and level not in (Level.THREE, Level.FOUR):
        problems.append(("basis", f"applying by education is only for levels 3 and 4; this plan is level {int(level)}"))

    if form.basis in (Basis.ENTRY_LEVEL, Basis.EDUCATION):
        basis = "for level 5 and education-based applications"
        if form.years_in_occupation != 0:
            problems.append(("years_in_occupation", f"must be 0 {basis}"))
        if form.candidate_source is not CandidateSource.OTHER:
            problems.append(("candidate_source", f'must be "其他" {basis}'))
        if form.work_unit != NO_UNIT:
            problems.append(("work_unit", f'must be "无" {basis}'))
        if form.labour_relation is not LabourRelation.OTHER:
            problems.append(("labour_relation", f'must be "其他" {basis}'))
        need(AttachmentKind.DIPLOMA, basis)
        if form.education.is_college_or_above:
            need(AttachmentKind.CHSI_RECORD, "for college education and above")
    else:
        basis = "when applying by working years"
        if not form.years_in_occupation:
            problems.append(("years_in_occupation", f"must be the years on the application form {basis}"))
        if form.candidate_source is not CandidateSource.EMPLOYEE:
            problems.append(("candidate_source", f'must be "本企业职工" {basis}'))
        if form.labour_relation is not LabourRelation.EMPLOYEE:
            problems.append(("labour_relation", f'must be "本企业职工" {basis}'))
        if not form.work_unit or form.work_unit == NO_UNIT:
            problems.append(("work_unit", f"must be the latest employer on the application form {basis}"))
        need(AttachmentKind.DIPLOMA, basis)
        if form.education.is_college_or_above:
            need(AttachmentKind.CHSI_RECORD, "for college education and above")
        if not kinds & {
            AttachmentKind.SOCIAL_SECURITY,
            AttachmentKind.WORK_CERTIFICATE,
            AttachmentKind.LABOUR_CONTRACT,
        }:
            problems.append(
                (
                    "attachments",
                    f"social security proof, a stamped work certificate or a labour contract is required {basis}",
                )
            )
        if form.holds_prior_certificate:
            need(AttachmentKind.PRIOR_CERTIFICATE, "when applying with a title or skill certificate")
        # 000 ②: the provincial records disagree with the stated employer.
        if hr_work_unit is not None and form.work_unit and hr_work_unit != form.work_unit:
            warnings.append(f"work unit differs from the provincial HR records ({hr_work_unit})")
            need(
                AttachmentKind.WORK_CERTIFICATE,
                "from the actual employer, since the work unit differs from the provincial HR records",
            )

    if problems:
        raise InvalidInput(problems)
    return warnings


def registration_id(plan_id: UUID, form: RegistrationForm) -> UUID:
    # Deterministic: one registration per candidate per plan, enforced by the event store.
    return uuid5(NAMESPACE_URL, f"skillcert:registration:{plan_id}:{form.id_type.value}:{form.id_number}")


class PlanSummary(Immutable):
    """What the candidate confirmed (001 step 4), kept on the registration."""

    plan_number: str
    plan_name: str
    institution_name: str
    occupation: str
    job: str | None
    level: Level


class Status(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"
    RETURNED = "returned"
    REJECTED = "rejected"


class Registration(Aggregate):
    class Submitted(Aggregate.Created):
        actor: Actor
        plan_id: UUID
        institution_id: UUID
        plan: PlanSummary
        form: RegistrationForm
        warnings: list[str]

    class Resubmitted(Aggregate.Event):
        form: RegistrationForm
        warnings: list[str]

    class Approved(Aggregate.Event):
        reasons: str

    class Returned(Aggregate.Event):
        reasons: str

    class Rejected(Aggregate.Event):
        reasons: str

    @event(Submitted)
    def __init__(
        self,
        actor: Actor,
        plan_id: UUID,
        institution_id: UUID,
        plan: PlanSummary,
        form: RegistrationForm,
        warnings: list[str],
    ) -> None:
        self.plan_id = plan_id
        self.institution_id = institution_id
        self.plan = plan
        self.form = form
        self.warnings = warnings
        self.status = Status.SUBMITTED
        self.reasons = ""

    @classmethod
    def submit(
        cls,
        actor: Actor,
        plan_id: UUID,
        institution_id: UUID,
        plan: PlanSummary,
        form: RegistrationForm,
        hr_work_unit: str | None = None,
    ) -> Registration:
        warnings = check_form(form, plan.level, hr_work_unit)
        return cls._create(
            cls.Submitted,
            id=registration_id(plan_id, form),
            actor=actor,
            plan_id=plan_id,
            institution_id=institution_id,
            plan=plan,
            form=form,
            warnings=warnings,
        )

    def resubmit(self, actor: Actor, form: RegistrationForm, hr_work_unit: str | None = None) -> None:
        """After a return for rework. Identity stays: the registration is keyed by it."""
        if self.status is not Status.RETURNED:
            raise Conflict(
                f"only a registration returned for rework can be resubmitted; this one is {self.status.value}"
            )
        if (form.id_type, form.id_number) != (self.form.id_type, self.form.id_number):
            raise InvalidInput([("id_number", "cannot change on resubmission; register afresh instead")])
        self._resubmitted(actor, form, check_form(form, self.plan.level, hr_work_unit))

    @event(Resubmitted)
    def _resubmitted(self, actor: Actor, form: RegistrationForm, warnings: list[str]) -> None:
        self.form = form
        self.warnings = warnings
        self.status = Status.SUBMITTED
        self.reasons = ""

    def _check_reviewer(self, actor: Actor) -> None:
        if actor.role not in (Role.INSTITUTION_STAFF, Role.SYSTEM):
            raise Forbidden(f"a {actor.role.value} cannot review registrations")
        if actor.role is Role.INSTITUTION_STAFF and actor.institution_id != self.institution_id:
            raise Forbidden("only the plan's own institution reviews its registrations")
        if self.status is not Status.SUBMITTED:
            raise Conflict(f"the registration is {self.status.value}, not awaiting review")

    def approve(self, actor: Actor, reasons: str = "") -> None:
        self._check_reviewer(actor)
        self._approved(actor, reasons.strip())

    def return_for_rework(self, actor: Actor, reasons: str) -> None:
        self._check_reviewer(actor)
        if not reasons.strip():
            raise InvalidInput([("reasons", "say what the candidate must rework")])
        self._returned(actor, reasons.strip())

    def reject(self, actor: Actor, reasons: str) -> None:
        self._check_reviewer(actor)
        if not reasons.strip():
            raise InvalidInput([("reasons", "say why the registration is not accepted")])
        self._rejected(actor, reasons.strip())

    @event(Approved)
    def _approved(self, actor: Actor, reasons: str) -> None:
        self.status = Status.APPROVED
        self.reasons = reasons

    @event(Returned)
    def _returned(self, actor: Actor, reasons: str) -> None:
        self.status = Status.RETURNED
        self.reasons = reasons

    @event(Rejected)
    def _rejected(self, actor: Actor, reasons: str) -> None:
        self.status = Status.REJECTED
        self.reasons = reasons
