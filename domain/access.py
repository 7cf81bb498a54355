"""Who may do what: roles, and staff only for their own institution."""

from __future__ import annotations

from uuid import UUID

from domain.errors import Forbidden
from domain.model import Actor, Role


def require(actor: Actor, roles: tuple[Role, ...], what: str, institution_id: UUID | None = None) -> None:
    if actor.role not in roles:
        raise Forbidden(f"a {actor.role.value} cannot {what}")
    if actor.role is Role.INSTITUTION_STAFF and institution_id is not None and actor.institution_id != institution_id:
        raise Forbidden(f"staff may {what} only for their own institution")


def require_region(actor: Actor, filed_in: str, what: str) -> None:
    """A city's skills centre (a centre with a jurisdiction) acts only for the institutions filed in its city
    (属地管理); the provincial centre ("00", or none) for all."""
    if actor.role is Role.PROVINCIAL_CENTRE and actor.jurisdiction not in (None, "00", filed_in):
        raise Forbidden(f"the skills centre of region {filed_in} or the provincial centre may {what} for this "
                        f"institution (属地管理), not the centre of {actor.jurisdiction}")  # fmt: skip


STAFF = (Role.INSTITUTION_STAFF, Role.SYSTEM)
STAFF_OR_CANDIDATE = (Role.INSTITUTION_STAFF, Role.SYSTEM, Role.CANDIDATE)
CENTRE = (Role.PROVINCIAL_CENTRE, Role.SYSTEM)
HR = (Role.HR_DEPARTMENT, Role.SYSTEM)
ASSOCIATION = (Role.ASSOCIATION, Role.SYSTEM)
