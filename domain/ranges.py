"""Sets of form serials kept as sorted, disjoint, inclusive ranges.

Forms are received, used and printed in runs, so a blank stock that has used 100,000 forms holds a few
ranges rather than 100,000 serials: loading it for a print costs the same in its first year and its
tenth (benchmarks.stock_size)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class Ranges:
    __slots__ = ("_starts", "_ends", "_count")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0
        for first, last in ranges:
            self.add_range(first, last)

    def __contains__(self, serial: object) -> bool:
        if not isinstance(serial, int):
            return False
        i = bisect_right(self._starts, serial) - 1
        return i >= 0 and serial <= self._ends[i]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for first, last in zip(self._starts, self._ends, strict=True):
            yield from range(first, last + 1)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ranges) and self.pairs() == other.pairs()

    def __repr__(self) -> str:
        return f"Ranges({self.pairs()})"

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def add(self, serial: int) -> None:
        self.add_range(serial, serial)

    def add_range(self, first: int, last: int) -> None:
        # The ranges that overlap or touch [first, last] are [i, j): merged into one.
        i = bisect_left(self._ends, first - 1)
        j = bisect_right(self._starts, last + 1)
        if i < j:
            first, last = min(first, self._starts[i]), max(last, self._ends[j - 1])
            self._count -= sum(e - s + 1 for s, e in zip(self._starts[i:j], self._ends[i:j], strict=True))
        self._starts[i:j] = [first]
        self._ends[i:j] = [last]
        self._count += last - first + 1

    def remove(self, serial: int) -> None:
        i = bisect_right(self._starts, serial) - 1
        if i < 0 or serial > self._ends[i]:
            raise KeyError(serial)
        first, last = self._starts[i], self._ends[i]
        kept = [(s, e) for s, e in ((first, serial - 1), (serial + 1, last)) if s <= e]
        self._starts[i : i + 1] = [s for s, _ in kept]
        self._ends[i : i + 1] = [e for _, e in kept]
        self._count -= 1

    def first_from(self, serial: int) -> int:
        """The lowest serial at or above `serial` that is not in the set."""
        i = bisect_right(self._starts, serial) - 1
        return self._ends[i] + 1 if i >= 0 and serial <= self._ends[i] else serial
