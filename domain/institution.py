"""Evaluation institutions and their filing with the HR department (004 §3)."""

from __future__ import annotations

from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event
from pydantic import Field, field_validator

from domain.errors import InvalidInput
from domain.model import Actor, Aggregate, Immutable
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


def institution_id(filing: Filing) -> UUID:
    # Deterministic: a second institution with the same filing collides on save.
    return uuid5(NAMESPACE_URL, f"skillcert:institution:{filing.prefix}")


class Institution(Aggregate):
    class Registered(Aggregate.Created):
        actor: Actor
        name: str = Field(json_schema_extra=personal(Personal.NONE))  # the institution's
        filing: Filing
        profile: DeadlineProfile

    @event(Registered)
    def __init__(self, actor: Actor, name: str, filing: Filing, profile: DeadlineProfile) -> None:
        self.name = name
        self.filing = filing
        self.profile = profile

    @classmethod
    def register(cls, actor: Actor, name: str, filing: Filing, profile: DeadlineProfile) -> Institution:
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
        )
