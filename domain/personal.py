"""Which fields hold personal information (个人信息保护法, PIPL), marked where they are declared.

The mark travels into the field's JSON Schema as "x-personal", so the bus contract and
the data sent on it are derived from the same declaration (infra.bus.privacy).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Personal(StrEnum):
    IDENTITY = "identity"  # name, gender, date of birth
    ID_NUMBER = "id_number"  # sensitive personal information (PIPL art. 28)
    CONTACT = "contact"  # phone number
    BACKGROUND = "background"  # education, employment, eligibility evidence
    RESULTS = "results"  # exam scores


def personal(kind: Personal) -> dict[str, Any]:
    return {"x-personal": kind.value}


def mask_id_number(number: str) -> str:
    """Shows what a holder recognises and nobody can use: 4403**********123X.

    Long numbers (resident IDs, 18) keep the first and last four; short ones (passports)
    the first and last two.
    """
    keep = 4 if len(number) >= 15 else 2 if len(number) >= 8 else 1
    return number[:keep] + "*" * (len(number) - 2 * keep) + number[-keep:]
