"""The garbage collector while bulk work runs: a rebuild of the read models, the issuance of a cohort, a candidate
list imported, everyone's admission tickets.

Each holds thousands of objects at once (a batch of decoded events; a part's certificates with their events and
stored copies), nested dicts and models that live long enough to be traversed by collection after collection at
Python's default (the youngest generation every 700 allocations) and promoted to the oldest, whose growth sets off
full collections. Their objects hold no cycles that matter: what they allocate is freed by reference counting
either way, so collecting less often costs no memory that stays (a 5,000-row candidate list decided in a process of its
own: maximum resident set 248 MB with and without, twice each; 2026-11-28).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

YOUNG = 10_000  # allocations between the youngest generation's collections while bulk work runs

_collecting = threading.Lock()
_collector: dict[str, Any] = {"running": 0, "found": None}  # bulk works running; the thresholds the first found


@contextmanager
def collecting_less() -> Iterator[None]:
    """The youngest generation collected every YOUNG allocations while this runs, in every thread of the process:
    the threshold is the process's. Works that overlap (two rebuilds, a rebuild and an issuance in one API worker)
    share it: the last to end puts back what the first found. Measured: a rebuild of 101,095 events took 0.9 of
    the time (consumers.rebuild); issuing 10,000 certificates took 0.8 (benchmarks.issuance, 2026-11-28)."""
    with _collecting:
        if not _collector["running"]:
            _collector["found"] = young, *older = gc.get_threshold()
            gc.set_threshold(max(young, YOUNG), *older)
        _collector["running"] += 1
    try:
        yield
    finally:
        with _collecting:
            _collector["running"] -= 1
            if not _collector["running"]:
                gc.set_threshold(*_collector["found"])
