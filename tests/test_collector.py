"""Bulk work collects garbage less often while it runs (infra.collector): the issuance of a session or a cohort, a
candidate list imported, and everyone's admission tickets, each hold thousands of objects at once. The threshold is
the process's: each puts back what it found, also when it fails."""

from __future__ import annotations

import gc

import pytest

from domain.errors import InvalidInput
from infra.collector import YOUNG
from infra.services.certificates import Certificates
from infra.services.exams import Exams
from infra.services.registrations import Registrations
from tests.builders import working_years_form
from tests.lifecycle import ISSUE_DAY, approved_cohort, confirmed_exam, setup_plan, sit_exam, staff


def watching(monkeypatch, cls: type, method: str) -> list[tuple[int, ...]]:
    """The collector's thresholds each time `cls.method` runs."""
    seen: list[tuple[int, ...]] = []
    original = getattr(cls, method)

    def watched(self, *args):
        seen.append(gc.get_threshold())
        return original(self, *args)

    monkeypatch.setattr(cls, method, watched)
    return seen


def failing(monkeypatch, cls: type, method: str) -> None:
    def fails(self, *args):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(cls, method, fails)


def raised(seen: list[tuple[int, ...]]) -> bool:
    return bool(seen) and all(t[0] >= YOUNG for t in seen)


def test_issuing_collects_less_while_it_numbers_and_puts_the_collector_back(world, monkeypatch):
    iid, _, _, exam = confirmed_exam(world, 3)
    world.at(ISSUE_DAY)
    before = gc.get_threshold()
    seen = watching(monkeypatch, Certificates, "_number")
    assert len(world.certificates.issue_cohort(staff(iid), [exam])) == 3
    assert raised(seen), seen
    assert gc.get_threshold() == before
    failing(monkeypatch, Certificates, "_issue_session")
    with pytest.raises(RuntimeError):
        world.certificates.issue(staff(iid), exam)
    assert gc.get_threshold() == before


def test_an_imported_list_collects_less_while_it_is_decided_and_puts_the_collector_back(world, monkeypatch):
    reg = world.registrations
    iid, pid, _ = setup_plan(reg, seats=10)
    before = gc.get_threshold()
    seen = watching(monkeypatch, Registrations, "records")
    assert (
        len(reg.register_many(staff(iid), pid, [(2, working_years_form(1), []), (3, working_years_form(2), [])])) == 2
    )
    assert raised(seen), seen
    assert gc.get_threshold() == before
    with pytest.raises(InvalidInput):  # a row with a problem: nothing stored
        reg.register_many(staff(iid), pid, [(2, working_years_form(3), [("row 2.name", "is empty")])])
    assert gc.get_threshold() == before


def test_everyones_tickets_collect_less_while_they_are_issued_and_put_the_collector_back(world, monkeypatch):
    iid, pid, rids = approved_cohort(world, 3)
    before = gc.get_threshold()
    seen = watching(monkeypatch, Exams, "_issue_tickets")
    exam = sit_exam(world, iid, pid, rids)
    assert raised(seen), seen
    assert gc.get_threshold() == before
    failing(monkeypatch, Exams, "_issue_tickets")
    with pytest.raises(RuntimeError):
        world.exams.issue_tickets(staff(iid), exam)
    assert gc.get_threshold() == before
