"""Bulk work collects garbage less often while it runs (infra.collector): the issuance of a session or a cohort, and
a candidate list imported, each hold thousands of objects at once. The threshold is the process's: each puts back
what it found, also when it fails."""

from __future__ import annotations

import gc

import pytest

from domain.errors import InvalidInput
from infra.collector import YOUNG
from infra.services.certificates import Certificates
from infra.services.registrations import Registrations
from tests.builders import working_years_form
from tests.lifecycle import ISSUE_DAY, confirmed_exam, setup_plan, staff


def test_issuing_collects_less_while_it_numbers_and_puts_the_collector_back(world, monkeypatch):
    iid, _, _, exam = confirmed_exam(world, 3)
    world.at(ISSUE_DAY)
    seen, before = [], gc.get_threshold()
    number = Certificates._number

    def numbering(self, *args):
        seen.append(gc.get_threshold())
        return number(self, *args)

    monkeypatch.setattr(Certificates, "_number", numbering)
    assert len(world.certificates.issue_cohort(staff(iid), [exam])) == 3
    assert seen and all(t[0] >= YOUNG for t in seen), seen
    assert gc.get_threshold() == before

    def failing(self, *args):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(Certificates, "_issue_session", failing)
    with pytest.raises(RuntimeError):
        world.certificates.issue(staff(iid), exam)
    assert gc.get_threshold() == before


def test_an_imported_list_collects_less_while_it_is_decided_and_puts_the_collector_back(world, monkeypatch):
    reg = world.registrations
    iid, pid, _ = setup_plan(reg, seats=10)
    seen, before = [], gc.get_threshold()
    records = Registrations.records

    def looking(self, forms):
        seen.append(gc.get_threshold())
        return records(self, forms)

    monkeypatch.setattr(Registrations, "records", looking)
    assert (
        len(reg.register_many(staff(iid), pid, [(2, working_years_form(1), []), (3, working_years_form(2), [])])) == 2
    )
    assert seen and all(t[0] >= YOUNG for t in seen), seen
    assert gc.get_threshold() == before
    with pytest.raises(InvalidInput):  # a row with a problem: nothing stored
        reg.register_many(staff(iid), pid, [(2, working_years_form(3), [("row 2.name", "is empty")])])
    assert gc.get_threshold() == before
