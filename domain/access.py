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


STAFF = (Role.INSTITUTION_STAFF, Role.SYSTEM)
STAFF_OR_CANDIDATE = (Role.INSTITUTION_STAFF, Role.SYSTEM, Role.CANDIDATE)
CENTRE = (Role.PROVINCIAL_CENTRE, Role.SYSTEM)
HR = (Role.HR_DEPARTMENT, Role.SYSTEM)
ASSOCIATION = (Role.ASSOCIATION, Role.SYSTEM)
