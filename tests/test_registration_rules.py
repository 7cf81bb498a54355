"""The form rules of seed 001, checked in the pure domain (no I/O)."""

from __future__ import annotations

import re
from datetime import date

import pytest
from pydantic import ValidationError

from domain.errors import InvalidInput
from domain.levels import Level
from domain.registration import AttachmentKind, check_form
from tests.builders import attachment, entry_level_form, resident_id, working_years_form


def fields_at_fault(form, level) -> set[str]:
    with pytest.raises(InvalidInput) as caught:
        check_form(form, level)
    return {f for f, _ in caught.value.problems}


def test_a_complete_working_years_form_is_accepted():
    assert check_form(working_years_form(), Level.TWO) is None


def test_a_level_five_form_is_accepted_with_the_prescribed_values():
    assert check_form(entry_level_form(), Level.FIVE) is None


def test_the_id_number_checksum_is_verified():
    good = working_years_form().id_number
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    assert fields_at_fault(working_years_form(id_number=bad), Level.TWO) == {"id_number"}


def test_date_of_birth_and_gender_must_agree_with_the_id_number():
    form = working_years_form(1)  # serial 1: male
    problems = fields_at_fault(working_years_form(1, date_of_birth=date(1991, 5, 5), gender="女"), Level.TWO)
    assert problems == {"date_of_birth", "gender"}
    assert form.gender == "男"


def test_a_female_id_number_has_an_even_sequence_digit():
    born = date(1992, 2, 29)
    number = resident_id("440303", born, 24)
    assert check_form(working_years_form(24, id_number=number, date_of_birth=born, gender="女"), Level.TWO) is None


def test_work_unit_is_at_most_25_characters():
    with pytest.raises(ValidationError) as caught:
        working_years_form(work_unit="深" * 26)
    assert caught.value.errors()[0]["loc"] == ("work_unit",)


@pytest.mark.parametrize("field,value", [("years_in_occupation", 3), ("candidate_source", "本企业职工"),
                                         ("work_unit", "某公司"), ("labour_relation", "本企业职工")])  # fmt: skip
def test_level_five_demands_the_prescribed_field_values(field, value):
    assert field in fields_at_fault(entry_level_form(**{field: value}), Level.FIVE)


def test_education_basis_is_only_for_levels_three_and_four():
    form = entry_level_form(basis="education")
    assert check_form(form, Level.THREE) is None
    assert check_form(form, Level.FOUR) is None
    assert "basis" in fields_at_fault(form, Level.TWO)
    assert "basis" in fields_at_fault(form, Level.FIVE)


def test_level_five_plans_are_applied_for_on_the_entry_level_basis():
    assert "basis" in fields_at_fault(working_years_form(), Level.FIVE)
    assert "basis" in fields_at_fault(entry_level_form(), Level.THREE)


def test_working_years_needs_employee_values_and_years():
    form = working_years_form(years_in_occupation=0, candidate_source="其他", labour_relation="其他", work_unit="无")
    assert fields_at_fault(form, Level.THREE) == {
        "years_in_occupation", "candidate_source", "labour_relation", "work_unit"
    }  # fmt: skip


def test_college_education_needs_the_chsi_record():
    form = working_years_form(
        attachments=[attachment(AttachmentKind.DIPLOMA), attachment(AttachmentKind.LABOUR_CONTRACT)]
    )
    with pytest.raises(InvalidInput, match="chsi_record"):
        check_form(form, Level.TWO)


def test_working_years_needs_proof_of_employment():
    form = working_years_form(attachments=[attachment(AttachmentKind.DIPLOMA), attachment(AttachmentKind.CHSI_RECORD)])
    with pytest.raises(InvalidInput, match="social security proof"):
        check_form(form, Level.TWO)


def test_applying_with_a_prior_certificate_needs_it_attached():
    without = [a for a in working_years_form().attachments if a.kind is not AttachmentKind.PRIOR_CERTIFICATE]
    with pytest.raises(InvalidInput, match="prior_certificate"):
        check_form(working_years_form(holds_prior_certificate=True, attachments=without), Level.TWO)


def test_an_application_carries_at_most_twenty_files_each_once():
    """An outside review registered with 25,000 copies of one diploma: stored as a 3.5 MB event that the bus could not
    carry, it stopped the relay and, with it, `skillcert up`."""
    many = working_years_form(attachments=[attachment(AttachmentKind.DIPLOMA)] * 9_000)
    with pytest.raises(InvalidInput) as refused:
        check_form(many, Level.TWO)
    assert refused.value.problems[0] == ("attachments", "holds 9,000 files; an application has at most 20 (a file of "
                                                        "each kind the basis asks for, and a few more)")  # fmt: skip
    assert len(refused.value.problems) <= 30  # not a problem for each of 9,000 copies
    form = working_years_form()
    twice = working_years_form(attachments=[*form.attachments, form.attachments[0]])
    assert fields_at_fault(twice, Level.TWO) == {f"attachments.{len(form.attachments)}"}
    check_form(form, Level.TWO)


@pytest.mark.parametrize(
    "invisible", ["\u200b", "\u200d", "\ufeff", "\u00ad", "\u034f", "\u2060", "\u3164", "\u115f", "\u1160", "\uffa0"]
)
def test_a_name_holding_a_character_that_prints_nothing_is_refused(invisible):
    """王 U+200B 芳 was stored as a name differing invisibly from 王芳 (an outside review); 葛 U+E0100 亮, a variant an ID
    card may print, stays."""
    with pytest.raises(InvalidInput, match="prints nothing"):
        check_form(working_years_form(name=f"王{invisible}芳"), Level.TWO)
    check_form(working_years_form(name="葛\U000e0100亮"), Level.TWO)


def test_the_truthfulness_declaration_must_be_accepted():
    assert "declaration_accepted" in fields_at_fault(working_years_form(declaration_accepted=False), Level.TWO)


def test_every_problem_is_reported_at_once():
    form = working_years_form(declaration_accepted=False, years_in_occupation=0, gender="女")
    assert {"declaration_accepted", "years_in_occupation", "gender"} <= fields_at_fault(form, Level.TWO)


@pytest.mark.parametrize("name,refused", [("张😀", "U+1F600"), ("李★", "U+2605"), ("王<b>", "U+003C"),
                                          ("买买提·艾力", None), ("𠮷田", None), ("Mary-Jane O'Neil", None)])  # fmt: skip
def test_a_name_holds_letters_and_the_punctuation_of_names_only(name, refused):
    """What an outsider found: 张😀 registered (201), and then no document with it could print."""
    form = working_years_form(name=name)
    if refused is None:
        check_form(form, Level.TWO)
    else:
        with pytest.raises(InvalidInput, match=re.escape(f"name: contains {refused}")):
            check_form(form, Level.TWO)
