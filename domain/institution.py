"""Evaluation institutions, their filing with the HR department (004 §3) and the evaluation scope
filed with it (备案的评价范围, 004 §8 and §11 二(2)): the occupations, jobs and levels the institution
may evaluate and certify. Only the provincial centre files and amends the scope, as events; a plan
outside it is refused at publication, and no certificate outside it is ever issued."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field, field_validator

from domain.access import CENTRE, require, require_region
from domain.errors import Conflict, InvalidInput, NotEvaluating
from domain.levels import Level
from domain.model import Actor, Aggregate, Immutable, Role
from domain.personal import Personal, personal

# 004 table 2: where the institution (station) is, as positions 8-9 of a certificate number.
CITY_CODES: dict[str, str] = {
    "00": "广东省省本级", "01": "广州市", "02": "韶关市", "03": "深圳市", "04": "珠海市",
    "05": "汕头市", "06": "佛山市", "07": "江门市", "08": "湛江市", "09": "茂名市",
    "12": "肇庆市", "13": "惠州市", "14": "梅州市", "15": "汕尾市", "16": "河源市",
    "17": "阳江市", "18": "清远市", "19": "东莞市", "20": "中山市", "51": "潮州市",
    "52": "揭阳市", "53": "云浮市",
}  # fmt: skip

CATEGORY_SOCIAL = "S"  # social training evaluation organisation (position 1)
STATION_CATEGORY = "2"  # position 10


class DeadlineProfile(StrEnum):
    """Which document's deadlines the institution follows (DESIGN.md profile table)."""

    S = "S"  # social evaluation organisations, seed 000
    T = "T"  # technical schools, seed 004


class Filing(Immutable):
    """What the HR department assigned: positions 1-13 of every certificate number."""

    category: str = Field(CATEGORY_SOCIAL, description="institution category, position 1")
    city_code: str = Field(description="004 table 2, positions 8-9")
    station_serial: str = Field(description="assigned by the HR department, positions 11-13")

    @field_validator("category")
    @classmethod
    def _category(cls, v: str) -> str:
        if v != CATEGORY_SOCIAL:
            raise ValueError(f"must be {CATEGORY_SOCIAL!r} (social training evaluation organisation)")
        return v

    @field_validator("city_code")
    @classmethod
    def _city(cls, v: str) -> str:
        if v not in CITY_CODES:
            raise ValueError(f"{v!r} is not a city code of 004 table 2 ({', '.join(CITY_CODES)})")
        return v

    @field_validator("station_serial")
    @classmethod
    def _serial(cls, v: str) -> str:
        if len(v) != 3 or not v.isdigit():
            raise ValueError("must be three digits, 000-999")
        return v

    @property
    def prefix(self) -> str:
        """Positions 1-13 of a certificate number."""
        return f"{self.category}000044{self.city_code}{STATION_CATEGORY}{self.station_serial}"


class ScopeEntry(Immutable):
    """One filed occupation (and job, where the occupation has jobs) with the levels filed for it."""

    occupation: str = Field(min_length=1, max_length=50, description="职业名称 as filed")
    job: str | None = Field(
        None, max_length=50, description="工种/职业方向 as filed; none when the occupation has none"
    )
    levels: list[Level] = Field(min_length=1, max_length=5, description="the levels filed for it")

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: list[Level]) -> list[Level]:
        return sorted(set(v))

    @property
    def label(self) -> str:
        return f"{self.occupation}（{self.job}）" if self.job else self.occupation


MAX_SCOPE = 500


def _checked(scope: list[ScopeEntry]) -> list[ScopeEntry]:
    if len(scope) > MAX_SCOPE:
        raise InvalidInput([("scope", f"at most {MAX_SCOPE} occupations and jobs")])
    seen = [(e.occupation, e.job) for e in scope]
    if len(set(seen)) != len(seen):
        raise InvalidInput([("scope", "each occupation and job appears once; give all its levels there")])
    return scope


def institution_id(filing: Filing) -> UUID:
    # Deterministic: a second institution with the same filing collides on save.
    return uuid5(NAMESPACE_URL, f"skillcert:institution:{filing.prefix}")


class Standing(StrEnum):
    """Whether the institution may evaluate (004 第十条)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"  # 暂停评价业务
    WITHDRAWN = "withdrawn"  # 取消评价业务


def _reasons(reasons: str, what: str) -> str:
    if not reasons.strip():
        raise InvalidInput([("reasons", f"say why the institution's evaluation business is {what}")])
    if len(reasons.strip()) > 500:
        raise InvalidInput([("reasons", "at most 500 characters")])
    return reasons.strip()


class Institution(Aggregate):
    class Registered(Aggregate.Created):
        actor: Actor
        name: str = Field(json_schema_extra=personal(Personal.NONE))  # the institution's
        filing: Filing
        profile: DeadlineProfile
        scope: list[ScopeEntry] = Field([], description="the evaluation scope filed (004 §8); empty: none filed yet")

    class ScopeAmended(Aggregate.Event):
        actor: Actor
        scope: list[ScopeEntry] = Field(description="the whole scope as filed from now on")
        reason: str = Field(max_length=200, description="why, e.g. the HR department's filing notice")

    class SigningCertificateIssued(Aggregate.Event):
        """The provincial centre's authority certified a key of the institution's for signing its
        electronic certificates (004 §11.1(7)); the key itself never leaves the store."""

        serial: str = Field(pattern=r"^[0-9a-f]{1,40}$", description="the X.509 certificate's serial number, hex")
        fingerprint: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the certificate (DER)")
        certificate_pem: str = Field(max_length=10_000, description="the X.509 certificate, PEM")
        not_after: date

    class SampleFiled(Aggregate.Event):
        """The certificate sample with its seal, filed with the HR department (004 §11.1(7): 证书样本（含印章内容）
        须在人力资源社会保障部门备案): the rendered sample's hash and the seal's lettering."""

        sample_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the sample PDF")
        seal_text: str = Field(
            max_length=200, description="the seal's lettering: the name, then 职业技能等级认定专用章"
        )

    class SigningCertificateRevoked(Aggregate.Event):
        serial: str = Field(pattern=r"^[0-9a-f]{1,40}$")
        reason: str = Field(max_length=200)

    # 004 第十条: an institution that faked, favoured or issued certificates improperly (弄虚作假，徇私舞弊，滥发证书)
    # has its evaluation business suspended or withdrawn (暂停或取消评价业务), as the case is grave. Meanwhile it
    # publishes no plan, takes no registration, schedules no exam, issues no ticket and no certificate.
    class Suspended(Aggregate.Event):
        actor: Actor
        reasons: str = Field(max_length=500, description="the finding, e.g. the centre's decision and its number")
        on: date = Field(description="the service's day it took effect")

    class Reinstated(Aggregate.Event):
        actor: Actor
        reasons: str = Field(max_length=500)
        on: date

    class EvaluationWithdrawn(Aggregate.Event):
        """取消评价业务: for good; a withdrawn institution is never reinstated (it would be filed anew)."""

        actor: Actor
        reasons: str = Field(max_length=500)
        on: date

    @event(Registered)
    def __init__(
        self, actor: Actor, name: str, filing: Filing, profile: DeadlineProfile, scope: list[ScopeEntry] | None = None
    ) -> None:
        self.name = name
        self.filing = filing
        self.profile = profile
        self.scope = list(scope or [])
        self.signing: dict[str, bool] = {}  # serial -> still good (not revoked)
        self.sample: str | None = None  # the filed certificate sample's hash
        self.standing = Standing.ACTIVE
        self.standing_since: date | None = None

    @property
    def signing_serial(self) -> str | None:
        """The newest signing certificate not revoked."""
        good = [serial for serial, ok in self.signing.items() if ok]
        return good[-1] if good else None

    def record_signing_certificate(
        self, actor: Actor, serial: str, fingerprint: str, pem: str, not_after: date
    ) -> None:
        require(actor, (*CENTRE, Role.SYSTEM), "certify institutions' signing keys")
        self._signing_certificate_issued(actor, serial, fingerprint, pem, not_after)

    @event(SigningCertificateIssued)
    def _signing_certificate_issued(self, actor: Actor, serial: str, fingerprint: str, certificate_pem: str,
                                    not_after: date) -> None:  # fmt: skip
        self.signing[serial] = True

    def file_sample(self, actor: Actor, sample_sha256: str, seal_text: str) -> None:
        require(actor, (*CENTRE, Role.SYSTEM), "file certificate samples")
        self._sample_filed(actor, sample_sha256, seal_text)

    @event(SampleFiled)
    def _sample_filed(self, actor: Actor, sample_sha256: str, seal_text: str) -> None:
        self.sample = sample_sha256

    def revoke_signing_certificate(self, actor: Actor, serial: str, reason: str) -> None:
        """A lost or compromised key: what it signed no longer verifies as good."""
        require(actor, CENTRE, "revoke institutions' signing keys")
        if not self.signing.get(serial):
            raise Conflict(f"no signing certificate {serial} of {self.name} that is not revoked", field="serial")
        if not reason.strip():
            raise InvalidInput([("reason", "say why the key is revoked")])
        self._signing_certificate_revoked(actor, serial, reason.strip())

    @event(SigningCertificateRevoked)
    def _signing_certificate_revoked(self, actor: Actor, serial: str, reason: str) -> None:
        self.signing[serial] = False

    @classmethod
    def register(
        cls, actor: Actor, name: str, filing: Filing, profile: DeadlineProfile, scope: list[ScopeEntry] | None = None
    ) -> Institution:
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidInput([("name", "must be the registered name, 1-100 characters")])
        return cls._create(
            cls.Registered,
            id=institution_id(filing),
            actor=actor,
            name=name,
            filing=filing,
            profile=profile,
            scope=_checked(list(scope or [])),
        )

    def amend_scope(self, actor: Actor, scope: list[ScopeEntry], reason: str) -> None:
        """The provincial centre files a new scope (the whole of it), saying why."""
        require(actor, CENTRE, "amend an institution's evaluation scope")
        if not reason.strip():
            raise InvalidInput([("reason", "say why the scope changes (the filing notice)")])
        if _checked(scope) == self.scope:
            raise Conflict("the scope filed is already this one")
        self._scope_amended(actor, scope, reason.strip())

    @event(ScopeAmended)
    def _scope_amended(self, actor: Actor, scope: list[ScopeEntry], reason: str) -> None:
        self.scope = list(scope)

    def check_scope(self, occupation: str, job: str | None, level: Level) -> None:
        """Refuse what lies outside the filed scope, naming the field that does (004 §8, §11 二(2))."""
        entries = [e for e in self.scope if e.occupation == occupation]
        if not self.scope:
            raise Conflict(f"{self.name} has no evaluation scope filed; the provincial centre files it first",
                           field="occupation")  # fmt: skip
        if not entries:
            raise InvalidInput([("occupation", f"{occupation} is not in {self.name}'s filed evaluation scope "
                                               f"({'、'.join(dict.fromkeys(e.occupation for e in self.scope))})")])  # fmt: skip
        entry = next((e for e in entries if e.job == (job or None)), None)
        if entry is None:
            filed = "、".join(e.job or "（无工种）" for e in entries)
            raise InvalidInput([("job", f"{occupation} is filed with the jobs {filed}, not {job or '（无工种）'}")])
        if level not in entry.levels:
            raise InvalidInput([("level", f"{entry.label} is filed for levels "
                                           f"{'、'.join(lv.title for lv in entry.levels)}, not {level.title}")])  # fmt: skip

    def check_active(self, what: str) -> None:
        """Refuse an act of evaluation while the business is suspended or withdrawn (004 第十条)."""
        if self.standing is Standing.SUSPENDED:
            raise NotEvaluating(f"{self.name}'s evaluation business is suspended since {self.standing_since} "
                           f"(004 第十条); it cannot {what} until the centre reinstates it")  # fmt: skip
        if self.standing is Standing.WITHDRAWN:
            raise NotEvaluating(f"{self.name}'s evaluation business was withdrawn on {self.standing_since} "
                           f"(004 第十条); it cannot {what}")  # fmt: skip

    def suspend(self, actor: Actor, reasons: str, today: date) -> None:
        """暂停评价业务. The provincial centre, or a city's skills centre for an institution filed in its city."""
        self._may_judge(actor, "suspend an institution's evaluation business")
        if self.standing is not Standing.ACTIVE:
            raise Conflict(f"{self.name}'s evaluation business is already {self.standing.value} "
                           f"(since {self.standing_since})")  # fmt: skip
        self._suspended(actor, _reasons(reasons, "suspended"), today)

    @event(Suspended)
    def _suspended(self, actor: Actor, reasons: str, on: date) -> None:
        self.standing, self.standing_since = Standing.SUSPENDED, on

    def reinstate(self, actor: Actor, reasons: str, today: date) -> None:
        self._may_judge(actor, "reinstate an institution's evaluation business")
        if self.standing is not Standing.SUSPENDED:
            raise Conflict(f"{self.name}'s evaluation business is {self.standing.value}, not suspended: "
                           "only a suspension is lifted")  # fmt: skip
        self._reinstated(actor, _reasons(reasons, "reinstated"), today)

    @event(Reinstated)
    def _reinstated(self, actor: Actor, reasons: str, on: date) -> None:
        self.standing, self.standing_since = Standing.ACTIVE, on

    def withdraw_evaluation(self, actor: Actor, reasons: str, today: date) -> None:
        """取消评价业务, from active or suspended; final."""
        self._may_judge(actor, "withdraw an institution's evaluation business")
        if self.standing is Standing.WITHDRAWN:
            raise Conflict(f"{self.name}'s evaluation business was already withdrawn on {self.standing_since}")
        self._evaluation_withdrawn(actor, _reasons(reasons, "withdrawn"), today)

    @event(EvaluationWithdrawn)
    def _evaluation_withdrawn(self, actor: Actor, reasons: str, on: date) -> None:
        self.standing, self.standing_since = Standing.WITHDRAWN, on

    def _may_judge(self, actor: Actor, what: str) -> None:
        require(actor, CENTRE, what)
        require_region(actor, self.filing.city_code, what)
