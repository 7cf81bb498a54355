"""The 22-character certificate number: built from the filing, parsed back, rejected with
the position at fault."""

from __future__ import annotations

import pytest

from domain.certnumber import InvalidNumber, format_number, parse
from domain.institution import Filing
from domain.levels import Level


def test_the_design_example_parses():
    n = parse("S000044032015252000123")
    assert (n.city_code, n.station_serial, n.year, n.level, n.serial) == ("03", "015", 2025, Level.TWO, 123)
    assert str(n) == "S000044032015252000123"


def test_a_number_is_the_filing_then_year_level_and_serial():
    prefix = Filing(city_code="19", station_serial="207").prefix
    assert format_number(prefix, 2026, Level.FIVE, 1) == "S000044192207265000001"
    assert format_number(prefix, 2026, Level.ONE, 999_999) == "S000044192207261999999"
    with pytest.raises(ValueError):
        format_number(prefix, 2026, Level.ONE, 1_000_000)


@pytest.mark.parametrize(
    "number, position, says",
    [
        ("S00004403201525200012", 22, "22 characters"),
        ("S0000440320152520001234", 23, "22 characters"),
        ("", 1, "22 characters"),
        ("T000044032015252000123", 1, "institution category"),
        ("s000044032015252000123", 1, "institution category"),
        ("S100044032015252000123", 2, "fixed '0000'"),
        ("S000144032015252000123", 5, "fixed '0000'"),
        ("S000045032015252000123", 6, "province must be 44"),
        ("S0000440A2015252000123", 9, "not a digit"),
        ("S000044102015252000123", 8, "not a city code"),
        ("S000044031015252000123", 10, "station category"),
        ("S00004403201X252000123", 13, "not a digit"),
        ("S0000440320152O2000123", 15, "not a digit"),
        ("S000044032015250000123", 16, "level must be 1-5"),
        ("S000044032015256000123", 16, "level must be 1-5"),
        ("S000044032015252000000", 17, "start at 000001"),
        ("S00004403201525200012３", 22, "full-width character: type '3'"),
        ("S００００44032015252000123", 2, "full-width character: type '0'"),  # 0000 said not to be 0000 before
    ],
)
def test_malformed_numbers_name_the_position_at_fault(number, position, says):
    with pytest.raises(InvalidNumber, match=says) as e:
        parse(number)
    assert e.value.position == position
    assert e.value.problems[0][0] == "certificate_number"


@pytest.mark.parametrize("count", [0, -2])
def test_the_serial_counter_never_moves_back(count):
    """What an outside reading found: allocate(-2) after three serials moved the counter back to 1, and the next
    certificate was given 000002 again (004 §3: 000001-999999 依次顺序取值)."""
    from uuid import uuid4

    from domain.certificate import SerialCounter
    from domain.errors import InvalidInput
    from domain.model import Actor, Role

    system = Actor(id="system", role=Role.SYSTEM)
    counter = SerialCounter.open(system, uuid4(), Filing(city_code="03", station_serial="015").prefix, 2026, Level.TWO)
    assert counter.allocate(system, 3)[-1].endswith("000003")
    with pytest.raises(InvalidInput, match=f"not {count}"):
        counter.allocate(system, count)
    assert counter.allocate(system, 1) == ["S000044032015262000004"]
