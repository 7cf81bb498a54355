"""The rebuild reads the log a few batches ahead on a thread of its own (consumers.rebuild._ahead):
the batches arrive in order, a failure while reading is raised to the rebuild, and a rebuild that stops
part way stops the reader too."""

from __future__ import annotations

import threading
import time

import pytest

from consumers.rebuild import _ahead


def test_batches_arrive_in_order_and_no_further_ahead_than_asked():
    made = []

    def batches():
        for i in range(50):
            made.append(i)
            yield i

    seen = []
    for b in _ahead(batches(), depth=2):
        time.sleep(0.002)
        assert len(made) - len(seen) <= 4  # the queue's two, one being offered, one made
        seen.append(b)
    assert seen == list(range(50))


def test_a_failure_while_reading_is_raised_to_the_rebuild_after_what_was_read():
    def batches():
        yield 1
        yield 2
        raise OSError("the server closed the connection")

    seen = []
    with pytest.raises(OSError, match="closed the connection"):
        for b in _ahead(batches()):
            seen.append(b)
    assert seen == [1, 2]


def test_a_rebuild_that_stops_part_way_stops_its_reader():
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    before = {t.ident for t in threading.enumerate()}
    ahead = _ahead(endless())
    for b in ahead:
        if b == 3:
            break
    ahead.close()
    time.sleep(0.3)
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []
