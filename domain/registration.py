"""A candidate's registration for a plan and its review (001, 000 flows ① and ②)."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event
from pydantic import Field, field_validator
from stdnum.cn import ric
from stdnum.exceptions import ValidationError as StdnumError

from domain import text
from domain.access import CENTRE, STAFF, require, require_region
from domain.eligibility import Basis, Condition, Evidence, School, check_eligibility
from domain.errors import Conflict, Forbidden, InvalidInput
from domain.levels import Level
from domain.model import Actor, Aggregate, Immutable, Role
from domain.personal import Personal, personal
from domain.text import name_problem, trim


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


class AttachmentKind(StrEnum):
    DIPLOMA = "diploma"  # 毕业证
    CHSI_RECORD = "chsi_record"  # 学信网电子注册备案表
    SOCIAL_SECURITY = "social_security"  # 社保证明
    WORK_CERTIFICATE = "work_certificate"  # 工作证明（盖章版）
    LABOUR_CONTRACT = "labour_contract"  # 劳动合同
    PRIOR_CERTIFICATE = "prior_certificate"  # 职称或技能证书
    WRITTEN_EXPLANATION = "written_explanation"  # 书面情况说明, for a change after confirmation
    TRAINING_CERTIFICATE = "training_certificate"  # 培训结业证明
    CERTIFICATE_APPLICATION = "certificate_application"  # 证书申领表, signed, for the physical certificate
    PROOF_APPLICATION = "proof_application"  # 证书遗失、损坏补发证明申请表 (004 annex 3)
    HOLDER_COMMITMENT = "holder_commitment"  # 证书持有人承诺书
    CORRECTION_EVIDENCE = "correction_evidence"  # ID card copy and what shows the right data
    ID_CARD_COPY = "id_card_copy"  # 身份证复印件, with a proof application (000)
    PHOTO = "photo"  # 近半年内一寸彩色白底照片, printed on the certificate (004 §11.2(1))
    ELECTRONIC_CERTIFICATE = "electronic_certificate"  # 电子证书: the signed PDF (004 §11.1(7))


class Attachment(Immutable):
    kind: AttachmentKind
    file_name: str = Field(min_length=1, max_length=200)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="content hash of the uploaded file")


PHONE = re.compile(r"^1[3-9]\d{9}$")
NO_UNIT = "无"
# Highest educations no vocational, technical or higher school's graduation certificate stands behind, and the schools
# whose certificate is a college one (专科及以上): what a condition's school evidence is checked against.
NO_VOCATIONAL_DIPLOMA = frozenset({Education.HIGH_SCHOOL, Education.JUNIOR_HIGH, Education.PRIMARY})
HIGHER_SCHOOLS = frozenset({School.HIGHER_VOCATIONAL, School.ASSESSED_HIGHER_VOCATIONAL})


class RegistrationForm(Immutable):
    """The personal-information form of 001 step 5; * fields are required there."""

    name: str = Field(min_length=1, max_length=50, json_schema_extra=personal(Personal.IDENTITY))
    id_type: IdType = IdType.RESIDENT_ID
    id_number: str = Field(min_length=5, max_length=30, json_schema_extra=personal(Personal.ID_NUMBER))
    gender: Gender = Field(json_schema_extra=personal(Personal.IDENTITY))
    date_of_birth: date = Field(json_schema_extra=personal(Personal.IDENTITY))
    education: Education = Field(json_schema_extra=personal(Personal.BACKGROUND))
    years_in_occupation: int | None = Field(None, ge=0, le=60, json_schema_extra=personal(Personal.BACKGROUND))
    candidate_source: CandidateSource | None = Field(None, json_schema_extra=personal(Personal.BACKGROUND))
    labour_relation: LabourRelation = Field(json_schema_extra=personal(Personal.BACKGROUND))
    phone: str | None = Field(None, json_schema_extra=personal(Personal.CONTACT))
    work_unit: str | None = Field(None, max_length=25, json_schema_extra=personal(Personal.BACKGROUND))
    basis: Basis
    holds_prior_certificate: bool = Field(False, description="applies with a title or skill certificate")
    attachments: list[Attachment] = Field(default_factory=list)
    declaration_accepted: bool = Field(description="the truthfulness declaration of 001 step 5")

    @field_validator("name", "work_unit")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return trim(v) if v is not None else v

    @field_validator("id_number")
    @classmethod
    def _id_upper(cls, v: str) -> str:
        return text.id_number(v)

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v is not None and not PHONE.match(v.strip()):
            raise ValueError("must be an 11-digit mainland mobile number")
        return v.strip() if v else v


class Holder(Immutable):
    """The identity a score book and a certificate carry."""

    name: str = Field(json_schema_extra=personal(Personal.IDENTITY))
    gender: Gender = Field(json_schema_extra=personal(Personal.IDENTITY))
    id_type: IdType
    id_number: str = Field(json_schema_extra=personal(Personal.ID_NUMBER))


# Files an application form may carry. Each kind a basis asks for is one or two; without a bound, a form of 25,000 copies
# of one diploma was stored as a 3.5 MB event the bus could not carry (an outside review).
MAX_ATTACHMENTS = 20


def check_form(form: RegistrationForm, level: Level) -> None:
    """Apply 001's rules for the application basis. Raises InvalidInput listing every problem. (000 ②'s comparison
    of the declared employer with the one insured is the reviewer's, who holds the record: Evidence.insured_work_unit,
    Registration._check_insured_work_unit.)"""
    problems: list[tuple[str, str]] = []

    if not form.name:
        problems.append(("name", "is required"))
    elif why := name_problem(form.name):
        problems.append(("name", why))
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

    if len(form.attachments) > MAX_ATTACHMENTS:
        problems.append(("attachments", f"holds {len(form.attachments):,} files; an application has at most "
                                        f"{MAX_ATTACHMENTS} (a file of each kind the basis asks for, and a few more)"))  # fmt: skip
    else:
        seen: set[tuple[AttachmentKind, str]] = set()
        for i, a in enumerate(form.attachments):
            if (a.kind, a.sha256) in seen:
                problems.append((f"attachments.{i}", f"{a.file_name!r} is attached as {a.kind.value} already"))
            seen.add((a.kind, a.sha256))
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

    if problems:
        raise InvalidInput(problems)


def age_on(born: date, day: date) -> int:
    return day.year - born.year - ((day.month, day.day) < (born.month, born.day))


def registration_id(plan_id: UUID, form: RegistrationForm, key: bytes) -> UUID:
    return registration_key(plan_id, form.id_type, form.id_number, key)


def registration_key(plan_id: UUID, id_type: IdType, id_number: str, key: bytes) -> UUID:
    """Deterministic, so the event store enforces one registration per candidate per plan; keyed, so
    nobody without the installation's secret can go from an id back to the number. Unkeyed, the id
    (on the bus, in certificates' events) and the public plan list plus a masked number left few
    enough candidates to try them all in a minute."""
    if len(key) < 16:
        raise ValueError("a registration id needs the installation's secret key")
    material = f"skillcert:registration:{plan_id}:{id_type.value}:{id_number}".encode()
    return UUID(bytes=hmac.new(key, material, hashlib.sha256).digest()[:16], version=4)


def integrity_key(id_type: IdType, id_number: str, key: bytes) -> UUID:
    """The candidate's integrity record (IntegrityRecord): keyed like a registration, across every plan."""
    return registration_key(UUID(int=0), id_type, id_number, key)


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
    DISQUALIFIED = "disqualified"  # 取消申报资格: the declaration was found false (001 承诺)


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
        condition: str  # the eligibility condition met, e.g. "3.2"
        evidence: Evidence = Field(json_schema_extra=personal(Personal.BACKGROUND))

    class Amended(Aggregate.Event):
        form: RegistrationForm
        changed: list[str]
        explanation: str
        explanation_document: Attachment
        warnings: list[str]

    class FeePaid(Aggregate.Event):
        receipt_number: str
        amount: Decimal

    class TrainingAccountOpened(Aggregate.Event):
        account: str

    class TrainingCompleted(Aggregate.Event):
        hours: Decimal
        evidence: Attachment

    class Returned(Aggregate.Event):
        reasons: str

    class Rejected(Aggregate.Event):
        reasons: str

    class Disqualified(Aggregate.Event):
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
        self.condition: str | None = None
        self.evidence: Evidence | None = None  # what the approval verified
        self.identity = (form.name, form.id_number)  # as first confirmed; only one may ever change
        self.fee_receipt: str | None = None
        self.training_account: str | None = None
        self.training_hours: Decimal | None = None

    @classmethod
    def submit(
        cls,
        actor: Actor,
        plan_id: UUID,
        institution_id: UUID,
        plan: PlanSummary,
        form: RegistrationForm,
        id_key: bytes,
        record: IntegrityRecord | None = None,
    ) -> Registration:
        check_form(form, plan.level)
        warnings = record.warnings() if record else []
        return cls._create(
            cls.Submitted,
            id=registration_id(plan_id, form, id_key),
            actor=actor,
            plan_id=plan_id,
            institution_id=institution_id,
            plan=plan,
            form=form,
            warnings=warnings,
        )

    def resubmit(
        self,
        actor: Actor,
        form: RegistrationForm,
        record: IntegrityRecord | None = None,
    ) -> None:
        """After a return for rework. Identity stays: the registration is keyed by it."""
        if self.status is not Status.RETURNED:
            raise Conflict(
                f"only a registration returned for rework can be resubmitted; this one is {self.status.value}"
            )
        if (form.id_type, form.id_number) != (self.form.id_type, self.form.id_number):
            raise InvalidInput([("id_number", "cannot change on resubmission; register afresh instead")])
        check_form(form, self.plan.level)
        self._resubmitted(actor, form, record.warnings() if record else [])

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

    def approve(self, actor: Actor, condition: str, evidence: Evidence, today: date, reasons: str = "") -> None:
        """Approve against an eligibility condition; the candidate's age is taken from the form."""
        self._check_reviewer(actor)
        evidence = evidence.model_copy(update={"age": age_on(self.form.date_of_birth, today)})
        met = check_eligibility(condition, self.plan.level, self.form.basis, evidence)
        self._check_against_the_application(met, evidence)
        self._check_insured_work_unit(evidence)
        self._approved(actor, reasons.strip(), met.id, evidence)

    def _check_against_the_application(self, met: Condition, evidence: Evidence) -> None:
        """What the reviewer verified must agree with what the candidate applied with (001, 以工作年限报考): the years
        on the application form, the title or skill certificate uploaded, the education stated. Otherwise a condition
        could be approved on evidence the application does not carry."""
        form, problems = self.form, []
        kinds = {a.kind for a in form.attachments}
        if (met.prior_level is not None or met.title is not None) and AttachmentKind.PRIOR_CERTIFICATE not in kinds:
            what = "skill certificate" if met.title is None else "professional title"
            problems.append(("attachments", f"condition {met.id} rests on a {what}, which the candidate must upload "
                             "(001 ③: 一定要上传职称和对应的技能证书); return the registration for it"))  # fmt: skip
        if form.basis is Basis.WORKING_YEARS:
            declared = form.years_in_occupation or 0
            # Years since a certificate are working years in the conditions "取得…证书后，累计从事…工作满 N 年", not in
            # those of students (2.5: "取得…证书满 2 年的…技师班学生"), whose conditions name their schools.
            for field, used, years in (("years_in_occupation", met.years, evidence.years_in_occupation),
                                       ("years_since_prior", met.prior_level and not met.schools,
                                        evidence.years_since_prior),
                                       ("years_since_title", met.title, evidence.years_since_title)):  # fmt: skip
                if used and years > declared:
                    problems.append((f"evidence.{field}", f"{years} years, more than the {declared} the application "
                                     "form states: the working years must agree with the form (001)"))  # fmt: skip
        if met.schools and evidence.school is not None:
            if form.education in NO_VOCATIONAL_DIPLOMA or (
                evidence.school in HIGHER_SCHOOLS and not form.education.is_college_or_above
            ):
                problems.append(("evidence.school", f"a graduation certificate of {evidence.school.value} does not "
                                 f"agree with the education on the form ({form.education.value})"))  # fmt: skip
        if problems:
            raise InvalidInput(problems)

    def _check_insured_work_unit(self, evidence: Evidence) -> None:
        """000 ②: the reviewer compares the employer on the social insurance record with the declared
        one; where they differ, only a stamped work certificate from the actual employer proves the
        working years."""
        insured = (evidence.insured_work_unit or "").strip()
        if self.form.basis is not Basis.WORKING_YEARS:
            if insured:
                raise InvalidInput([("evidence.insured_work_unit", "is recorded for working-years applications only")])
            return
        if not insured:
            if AttachmentKind.SOCIAL_SECURITY in {a.kind for a in self.form.attachments}:
                raise InvalidInput([("evidence.insured_work_unit",
                                     "record the work unit on the social insurance record (000 ②)")])  # fmt: skip
            return  # the years are proved by a work certificate or a labour contract instead
        if insured != (self.form.work_unit or "").strip() and AttachmentKind.WORK_CERTIFICATE not in {
            a.kind for a in self.form.attachments
        }:
            raise InvalidInput([("attachments", f"the social insurance record names {insured}, not the declared "
                                 f"{self.form.work_unit}: a stamped work certificate from the actual employer is "
                                 "required (000 ②); return the registration for it")])  # fmt: skip

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

    def disqualify(self, actor: Actor, reasons: str, filed_in: str) -> None:
        """The candidate's declaration (001 承诺) was found false: "如有虚假，愿意接受取消申报资格、已参加考试
        则被取消当次考试所有科目成绩、已获得证书则被收回、注销证书数据检索及注销证书资格的处理，并登记在诚信档案".
        At any stage after submission, by the institution that holds the registration or by the provincial
        centre (a city's skills centre for the institutions filed in its city, `filed_in`, 属地管理); the service
        cancels the sitting's scores and revokes the certificate with it."""
        require(actor, STAFF + CENTRE, "disqualify candidates", self.institution_id)
        require_region(actor, filed_in, "disqualify candidates")
        if self.status in (Status.REJECTED, Status.DISQUALIFIED):
            raise Conflict(f"the registration is {self.status.value}; there is no eligibility left to cancel")
        if not reasons.strip():
            raise InvalidInput([("reasons", "say what in the declaration was found false, and how")])
        self._disqualified(actor, reasons.strip())

    @event(Disqualified)
    def _disqualified(self, actor: Actor, reasons: str) -> None:
        self.status = Status.DISQUALIFIED
        self.reasons = reasons

    @event(Approved)
    def _approved(self, actor: Actor, reasons: str, condition: str, evidence: Evidence) -> None:
        self.status = Status.APPROVED
        self.reasons = reasons
        self.condition = condition
        self.evidence = evidence

    @event(Returned)
    def _returned(self, actor: Actor, reasons: str) -> None:
        self.status = Status.RETURNED
        self.reasons = reasons

    @event(Rejected)
    def _rejected(self, actor: Actor, reasons: str) -> None:
        self.status = Status.REJECTED
        self.reasons = reasons

    def amend(
        self,
        actor: Actor,
        form: RegistrationForm,
        explanation: str,
        document: Attachment,
        today: date,
        records: Sequence[IntegrityRecord] = (),
    ) -> list[str]:
        """A change after confirmation (000 ②): only with a written explanation, and of name and
        ID number only one may ever differ from what was first confirmed."""
        require(actor, STAFF, "amend confirmed registrations", self.institution_id)
        if self.status not in (Status.SUBMITTED, Status.APPROVED):
            raise Conflict(f"the registration is {self.status.value}; only a confirmed registration is amended")
        problems = []
        if not explanation.strip():
            problems.append(("explanation", "a written explanation of the mistake is required"))
        if document.kind is not AttachmentKind.WRITTEN_EXPLANATION:
            problems.append(("explanation_document", "must be the signed written explanation"))
        if form.id_type is not self.form.id_type:
            problems.append(("id_type", "cannot change; register afresh instead"))
        name_changed = form.name != self.identity[0]
        id_changed = form.id_number != self.identity[1]
        if name_changed and id_changed:
            problems.append(
                (
                    "id_number",
                    "of name and ID number only one may ever change, and the other already has"
                    if (self.form.name, self.form.id_number) != self.identity
                    else "name and ID number cannot both change; only one of them may",
                )
            )
        changed = [f for f in RegistrationForm.model_fields if getattr(form, f) != getattr(self.form, f)]
        if not changed:
            problems.append(("form", "nothing changed"))
        if problems:
            raise InvalidInput(problems)
        # The records of the new number and of the one first confirmed: an entry under both is named once.
        check_form(form, self.plan.level)
        warnings = list(dict.fromkeys(w for r in records for w in r.warnings()))
        if self.status is Status.APPROVED:
            self._check_approval_holds(form, today)
        self._amended(actor, form, changed, explanation.strip(), document, warnings)
        return changed

    def _check_approval_holds(self, form: RegistrationForm, today: date) -> None:
        """An approved registration stays approved only if its approval holds on the amended form: a new date of
        birth, education, working years or set of files could otherwise carry a candidate the review (000 ①) would
        have refused, a 14-year-old among them. Checked as at approval, the age as of today."""
        assert self.condition is not None and self.evidence is not None
        # Only what the amendment breaks: an approval made before a rule existed (a condition approved on a skill
        # certificate never uploaded) is not this amendment's to undo, and must not block a new phone number.
        before = {f for f, _ in self._approval_problems(self.form, today)}
        broken = [(f, m) for f, m in self._approval_problems(form, today) if f not in before]
        if broken:
            raise InvalidInput([(f, f"the approval on condition {self.condition} would no longer hold: "
                                 f"{m.removesuffix('; return the registration for it')}") for f, m in broken])  # fmt: skip

    def _approval_problems(self, form: RegistrationForm, today: date) -> list[tuple[str, str]]:
        """What the approval's checks find on this form, the age as of today; empty when it holds."""
        assert self.condition is not None and self.evidence is not None
        approved = self.form
        try:
            self.form = form  # the checks read the form; put back below whatever they find
            evidence = self.evidence.model_copy(update={"age": age_on(form.date_of_birth, today)})
            met = check_eligibility(self.condition, self.plan.level, form.basis, evidence)
            self._check_against_the_application(met, evidence)
            self._check_insured_work_unit(evidence)
        except InvalidInput as e:
            return e.problems
        finally:
            self.form = approved
        return []

    @event(Amended)
    def _amended(
        self,
        actor: Actor,
        form: RegistrationForm,
        changed: list[str],
        explanation: str,
        explanation_document: Attachment,
        warnings: list[str],
    ) -> None:
        self.form = form
        self.warnings = warnings

    @property
    def holder(self) -> Holder:
        f = self.form
        return Holder(name=f.name, gender=f.gender, id_type=f.id_type, id_number=f.id_number)

    def _require_approved(self, actor: Actor, what: str) -> None:
        require(actor, STAFF, f"record {what}", self.institution_id)
        if self.status is not Status.APPROVED:
            raise Conflict(f"the registration is {self.status.value}; {what} follows approval")

    def pay_fee(self, actor: Actor, receipt_number: str, amount: Decimal) -> None:
        self._require_approved(actor, "fees")
        if self.fee_receipt is not None:
            raise Conflict(f"the fee is already paid (receipt {self.fee_receipt})")
        receipt_number = receipt_number.strip()
        problems = []
        if not re.fullmatch(r"[0-9A-Za-z-]{4,40}", receipt_number):
            problems.append(("receipt_number", "must be the 4-40 character receipt number"))
        if amount <= 0 or amount > 100_000 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
            problems.append(("amount", "must be a positive amount in yuan with at most 2 decimals"))
        if problems:
            raise InvalidInput(problems)
        self._fee_paid(actor, receipt_number, amount)

    @event(FeePaid)
    def _fee_paid(self, actor: Actor, receipt_number: str, amount: Decimal) -> None:
        self.fee_receipt = receipt_number

    def open_training_account(self, actor: Actor, account: str) -> None:
        self._require_approved(actor, "training")
        if self.training_account is not None:
            raise Conflict(f"a training account is already open ({self.training_account})")
        if not account.strip() or len(account) > 50:
            raise InvalidInput([("account", "must be the training platform account, 1-50 characters")])
        self._training_account_opened(actor, account.strip())

    @event(TrainingAccountOpened)
    def _training_account_opened(self, actor: Actor, account: str) -> None:
        self.training_account = account

    def complete_training(self, actor: Actor, hours: Decimal, evidence: Attachment) -> None:
        self._require_approved(actor, "training")
        if self.training_account is None:
            raise Conflict("training is completed on an opened training account; open one first")
        if self.training_hours is not None:
            raise Conflict("training is already completed")
        problems = []
        if not 0 < hours <= 2000:
            problems.append(("hours", "must be the hours trained, more than 0 and at most 2000"))
        if evidence.kind is not AttachmentKind.TRAINING_CERTIFICATE:
            problems.append(("evidence", "must be the training completion certificate"))
        if problems:
            raise InvalidInput(problems)
        self._training_completed(actor, hours, evidence)

    @event(TrainingCompleted)
    def _training_completed(self, actor: Actor, hours: Decimal, evidence: Attachment) -> None:
        self.training_hours = hours


class Alias(Aggregate):
    """Holds the (plan, ID number) key of a registration whose ID number was amended, so that
    the same person cannot register a second time for the plan under the new number."""

    class Claimed(Aggregate.Created):
        actor: Actor
        registration_id: UUID

    @event(Claimed)
    def __init__(self, actor: Actor, registration_id: UUID) -> None:
        self.registration_id = registration_id

    @classmethod
    def claim(cls, actor: Actor, key: UUID, registration_id: UUID) -> Alias:
        return cls._create(cls.Claimed, id=key, actor=actor, registration_id=registration_id)


class IntegrityEntry(Immutable):
    """One disqualification on a candidate's integrity record: where and when, not why (the reasons stay with the
    registration, for its institution and the centre)."""

    registration_id: UUID
    institution_name: str
    plan_number: str
    occupation: str
    level: Level
    on: date


class IntegrityRecord(Aggregate):
    """诚信档案 (001 承诺: "……并登记在诚信档案"): the disqualifications of one person, by ID number, across every
    institution and plan. A later registration of the same number carries a warning naming them, for its reviewer to
    weigh (the seed sets no bar on registering again). Internal: its id derives from the ID number."""

    class Opened(Aggregate.Created):
        actor: Actor
        entry: IntegrityEntry

    class EntryAdded(Aggregate.Event):
        entry: IntegrityEntry

    @event(Opened)
    def __init__(self, actor: Actor, entry: IntegrityEntry) -> None:
        self.entries = [entry]

    @classmethod
    def open(cls, actor: Actor, key: UUID, entry: IntegrityEntry) -> IntegrityRecord:
        return cls._create(cls.Opened, id=key, actor=actor, entry=entry)

    def enter(self, actor: Actor, entry: IntegrityEntry) -> None:
        self._entry_added(actor, entry)

    @event(EntryAdded)
    def _entry_added(self, actor: Actor, entry: IntegrityEntry) -> None:
        self.entries = [*self.entries, entry]

    def warnings(self) -> list[str]:
        return [
            f"integrity record (诚信档案): disqualified on {e.on} for a false declaration, {e.institution_name} plan "
            f"{e.plan_number} ({e.occupation}, level {int(e.level)})"
            for e in self.entries
        ]
