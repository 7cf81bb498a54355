"""Occupational skill levels (004 table 3)."""

from __future__ import annotations

from enum import IntEnum


class Level(IntEnum):
    ONE = 1
    TWO = 2
    THREE = 3
    FOUR = 4
    FIVE = 5

    @property
    def title(self) -> str:
        """As printed on a certificate: "二级/技师"."""
        return LEVEL_TITLES[self]


LEVEL_TITLES = {
    Level.ONE: "一级/高级技师",
    Level.TWO: "二级/技师",
    Level.THREE: "三级/高级工",
    Level.FOUR: "四级/中级工",
    Level.FIVE: "五级/初级工",
}
