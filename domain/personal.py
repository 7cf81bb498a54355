"""Which fields hold personal information (个人信息保护法, PIPL), marked where they are declared.

Every field of every event has a class. Fields that hold personal information are marked where the
model declares them (`personal(...)`); the mark travels into the field's JSON Schema as
"x-personal", so the bus contract and the data sent on it are derived from the same declaration
(infra.bus.privacy). Fields that carry none are either marked `personal(Personal.NONE)` or named
in NOT_PERSONAL: names that mean the same thing in every model (ids, times, amounts, codes). A
field that is neither is unclassified, and the contract's tests fail on it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Personal(StrEnum):
    IDENTITY = "identity"  # a person's name, gender, date of birth, signature
    ID_NUMBER = "id_number"  # sensitive personal information (PIPL art. 28)
    CONTACT = "contact"  # a candidate's or holder's phone number: never published
    BUSINESS_CONTACT = "business_contact"  # the contact person and phone an institution publishes with a plan (001)
    BACKGROUND = "background"  # education, employment, eligibility evidence
    RESULTS = "results"  # exam scores
    NONE = "none"  # no personal information


def personal(kind: Personal) -> dict[str, Any]:
    return {"x-personal": kind.value}


# Field names that carry no personal information in any model that uses them. Reviewed: a name here
# may not also be marked personal anywhere (the contract's tests check).
NOT_PERSONAL = frozenset(
    # Identifiers: random or keyed (domain.registration.registration_key), never derived from a person.
    "originator_id originator_topic institution_id plan_id registration_id exam_id certificate_id aggregate_id "
    "request_id id subject aggregateid actorid log_hash signature public_key sha256 "
    # Times and dates of the process, not of a person.
    "timestamp time start due on applied_on reported_on issued_on exam_date starts_at ends_at evaluation_start "
    "evaluation_end registration_deadline answered_on published_on requested_on filed_on returned_on checked_on revoked_on cancelled_on "
    # Codes, numbers and names of the process, the institution and the plan.
    "number certificate_number proof_number plan_number plan_name occupation job institution_name category "
    "city_code station_serial registration_code session location exam_location supervising_region room "
    "file_name tracking_number receipt_number work_order jurisdiction account amount hours condition changed period "
    "delivery_note "
    # The institution's signing keys: X.509 certificates of the institution, never of a person.
    "serial signer_serial fingerprint certificate_pem not_after sample_sha256 seal_text "
    # Staff's reasons and notes about a case (staff are told not to put ID or phone numbers in them).
    "reasons reason note explanation warnings".split()
)


def mask_id_number(number: str) -> str:
    """Shows what a holder recognises and nobody can use: 4403**********123X.

    Long numbers (resident IDs, 18) keep the first and last four; short ones (passports)
    the first and last two.
    """
    keep = 4 if len(number) >= 15 else 2 if len(number) >= 8 else 1
    return number[:keep] + "*" * (len(number) - 2 * keep) + number[-keep:]
