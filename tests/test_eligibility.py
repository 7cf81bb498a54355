"""The eligibility table, one case per condition: evidence that meets it, and evidence that
just misses it with what the reviewer is told."""

from __future__ import annotations

import re

import pytest

from domain.eligibility import BY_ID, CONDITIONS, Basis, Evidence, School, Title, check_eligibility
from domain.errors import InvalidInput
from domain.levels import Level

E = Evidence
W, ED, V = Basis.WORKING_YEARS, Basis.EDUCATION, Basis.ENTRY_LEVEL

CASES = {
    # id: (meets, misses, what the miss says)
    "5.1": (E(age=16), E(age=15), "age 16 or over"),
    "5.2": (E(age=40), E(age=15), "age 16 or over"),
    "4.1": (E(age=30, years_in_occupation=5), E(age=30, years_in_occupation=4), "5 years in the occupation"),
    "4.2": (E(age=30, prior_level=5, years_since_prior=3), E(age=30, prior_level=5, years_since_prior=2), "3 years after the level-5"),
    "4.3": (E(age=19, school=School.SECONDARY_VOCATIONAL), E(age=19), "graduation certificate"),
    "3.1": (E(age=35, years_in_occupation=10), E(age=35, years_in_occupation=9), "10 years in the occupation"),
    "3.2": (E(age=35, prior_level=4, years_since_prior=4), E(age=35, prior_level=5, years_since_prior=9), "level-4 certificate or higher"),
    "3.3": (E(age=28, title=Title.JUNIOR, years_since_title=1), E(age=28, title=Title.JUNIOR), "1 year(s) after the title"),
    "3.4": (E(age=20, school=School.TECHNICAL_SENIOR_CLASS), E(age=20, school=School.TECHNICAL_SCHOOL), "graduation certificate"),
    "3.5": (E(age=22, prior_level=4, school=School.HIGHER_VOCATIONAL), E(age=22, school=School.HIGHER_VOCATIONAL), "level-4 certificate"),
    "3.6": (E(age=22, school=School.ASSESSED_HIGHER_VOCATIONAL), E(age=22, school=School.HIGHER_VOCATIONAL), "graduation certificate"),
    "2.1": (E(age=40, prior_level=3, years_since_prior=5), E(age=40, prior_level=3, years_since_prior=4), "5 years after the level-3"),
    "2.2": (E(age=33, years_in_occupation=5, title=Title.JUNIOR, years_since_title=1), E(age=33, years_in_occupation=4, title=Title.JUNIOR, years_since_title=3), "5 years in the occupation"),
    "2.3": (E(age=33, title=Title.INTERMEDIATE, years_since_title=1), E(age=33, title=Title.JUNIOR, years_since_title=9), "intermediate professional title"),
    "2.4": (E(age=24, years_in_occupation=2, prior_level=3, school=School.TECHNICIAN_COLLEGE), E(age=24, years_in_occupation=1, prior_level=3, school=School.TECHNICIAN_COLLEGE), "2 years in the occupation"),
    "2.5": (E(age=21, prior_level=3, years_since_prior=2, school=School.TECHNICIAN_CLASS_STUDENT), E(age=21, prior_level=3, years_since_prior=2, school=School.TECHNICIAN_COLLEGE), "graduation certificate"),
    "1.1": (E(age=45, prior_level=2, years_since_prior=5), E(age=45, prior_level=2, years_since_prior=4), "5 years after the level-2"),
    "1.2": (E(age=45, years_in_occupation=5, title=Title.INTERMEDIATE, years_since_title=1), E(age=45, years_in_occupation=5, title=Title.INTERMEDIATE), "1 year(s) after the title"),
    "1.3": (E(age=50, title=Title.SENIOR, years_since_title=1), E(age=50, title=Title.INTERMEDIATE, years_since_title=10), "senior professional title"),
}  # fmt: skip


def test_every_condition_in_the_table_has_a_case():
    assert set(CASES) == set(BY_ID)
    assert len(CONDITIONS) == 19


@pytest.mark.parametrize("cid", sorted(CASES))
def test_each_condition_accepts_evidence_that_meets_it_and_says_what_is_missing_otherwise(cid):
    c = BY_ID[cid]
    meets, misses, says = CASES[cid]
    assert check_eligibility(cid, c.level, c.basis, meets) is c
    with pytest.raises(InvalidInput, match=re.escape(says)) as e:
        check_eligibility(cid, c.level, c.basis, misses)
    assert all(field == "evidence" for field, _ in e.value.problems)
    assert f"condition {cid} not met" in e.value.message


def test_a_higher_certificate_or_title_counts_for_a_lower_one():
    assert check_eligibility("2.1", Level.TWO, W, E(age=40, prior_level=2, years_since_prior=5))
    assert check_eligibility("3.3", Level.THREE, W, E(age=40, title=Title.SENIOR, years_since_title=2))


def test_a_condition_for_another_level_or_basis_is_refused():
    with pytest.raises(InvalidInput, match="for level 3, not 2"):
        check_eligibility("3.1", Level.TWO, W, E(age=40, years_in_occupation=20))
    with pytest.raises(InvalidInput, match="education basis, not working_years"):
        check_eligibility("4.3", Level.FOUR, W, E(age=19, school=School.TECHNICAL_SCHOOL))
    with pytest.raises(InvalidInput, match="not a condition"):
        check_eligibility("9.9", Level.TWO, W, E(age=40))


def test_every_gap_is_reported_at_once():
    with pytest.raises(InvalidInput) as e:
        check_eligibility("1.2", Level.ONE, W, E(age=45, years_in_occupation=3))
    assert len(e.value.problems) == 2  # years and the title


def test_the_table_is_published_with_its_source_text():
    assert all(c.text and c.id.startswith(str(int(c.level))) for c in CONDITIONS)
    assert {c.basis for c in CONDITIONS if c.level is Level.FIVE} == {V}
    assert {c.level for c in CONDITIONS if c.basis is ED} == {Level.THREE, Level.FOUR}
