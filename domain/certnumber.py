"""The 22-character certificate number (004 §3, tables 1-3; DESIGN.md).

Positions 1-13 come from the institution's filing, 14-22 are the year, the level and
a serial that runs 000001-999999 per institution, year and level.
"""

from __future__ import annotations

from domain.errors import InvalidInput
from domain.institution import CATEGORY_SOCIAL, CITY_CODES, STATION_CATEGORY
from domain.levels import Level
from domain.model import Immutable

LENGTH = 22
MAX_SERIAL = 999_999


class InvalidNumber(InvalidInput):
    """Names the first position at fault (1-based, as 004 counts them)."""

    def __init__(self, number: str, position: int, message: str, zh: str) -> None:
        self.position = position
        self.zh = f"第 {position} 位：{zh}"  # for the public verification page, which speaks Chinese first
        super().__init__([("certificate_number", f"{number!r} position {position}: {message}")])


class CertificateNumber(Immutable):
    prefix: str  # positions 1-13
    city_code: str
    station_serial: str
    year: int  # full year
    level: Level
    serial: int

    def __str__(self) -> str:
        return format_number(self.prefix, self.year, self.level, self.serial)


def format_number(prefix: str, year: int, level: Level, serial: int) -> str:
    if not 1 <= serial <= MAX_SERIAL:
        raise ValueError(f"serial {serial} is outside 1-{MAX_SERIAL}")
    return f"{prefix}{year % 100:02d}{int(level)}{serial:06d}"


def parse(number: str) -> CertificateNumber:
    """Validate and split a certificate number; raise InvalidNumber at the first bad position."""
    for i, ch in enumerate(number, 1):
        # Typed on a Chinese keyboard, "０" looks like "0" on a phone: say which it is, not that 0000 is not 0000.
        if "\uff01" <= ch <= "\uff5e" or ch == "\u3000":
            half = chr(ord(ch) - 0xFEE0) if ch != "\u3000" else " "
            raise InvalidNumber(number, i, f"{ch!r} is a full-width character: type {half!r} (half-width)",
                                f"「{ch}」是全角字符，请用半角输入（{half}）")  # fmt: skip
    if len(number) != LENGTH:
        # the first position that is missing, or the first one too many
        raise InvalidNumber(
            number,
            min(len(number), LENGTH) + 1,
            f"must be {LENGTH} characters, not {len(number)}",
            f"证书编号应为 {LENGTH} 位，此编号为 {len(number)} 位",
        )

    def digits(start: int, end: int) -> str:
        part = number[start - 1 : end]
        for i, ch in enumerate(part, start):
            if not ("0" <= ch <= "9"):
                raise InvalidNumber(
                    number,
                    i,
                    f"{ch!r} is not a digit (positions {start}-{end} are digits)",
                    f"「{ch}」不是数字（第 {start}–{end} 位为数字）",
                )
        return part

    if number[0] != CATEGORY_SOCIAL:
        raise InvalidNumber(
            number,
            1,
            f"institution category must be {CATEGORY_SOCIAL!r}, not {number[0]!r}",
            f"机构类别应为大写 {CATEGORY_SOCIAL}，而非「{number[0]}」",
        )
    for i in range(2, 6):
        if number[i - 1] != "0":
            raise InvalidNumber(
                number,
                i,
                f"positions 2-5 are the fixed '0000', found {number[1:5]!r}",
                f"第 2–5 位固定为 0000，此处为「{number[1:5]}」",
            )
    province = digits(6, 7)
    if province != "44":
        raise InvalidNumber(
            number, 6, f"province must be 44 (Guangdong), not {province}", f"省份代码应为 44（广东），而非 {province}"
        )
    city = digits(8, 9)
    if city not in CITY_CODES:
        raise InvalidNumber(number, 8, f"{city} is not a city code of 004 table 2", f"{city} 不是广东省地市代码")
    if number[9] != STATION_CATEGORY:
        raise InvalidNumber(
            number,
            10,
            f"station category must be {STATION_CATEGORY!r}, not {number[9]!r}",
            f"站点类别应为 {STATION_CATEGORY}，而非「{number[9]}」",
        )
    station = digits(11, 13)
    year = digits(14, 15)
    level = digits(16, 16)
    if not "1" <= level <= "5":
        raise InvalidNumber(number, 16, f"level must be 1-5, not {level}", f"等级应为 1–5，而非 {level}")
    serial = digits(17, 22)
    if serial == "000000":
        raise InvalidNumber(number, 17, "serials start at 000001", "流水号从 000001 开始")
    return CertificateNumber(
        prefix=number[:13],
        city_code=city,
        station_serial=station,
        year=2000 + int(year),
        level=Level(int(level)),
        serial=int(serial),
    )
