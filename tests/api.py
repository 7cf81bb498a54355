"""HTTP helpers for the API tests: tokens made the way `skillcert tokens create` makes them."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from domain.model import Role
from infra.privacy import installation_key, ref
from infra.tokens import Tokens


def bearer(
    database_url: str,
    schema: str,
    role: Role,
    name: str,
    institution_id: UUID | None = None,
    id_number: str | None = None,
    pseudonym_key: str | None = None,
) -> dict[str, str]:
    tokens = Tokens(database_url, schema)
    tokens.create_table()
    holder = ref(id_number, installation_key(database_url, schema, pseudonym_key)) if id_number else None
    _, token = tokens.create(name, role, institution_id, holder)
    return {"Authorization": f"Bearer {token}"}


def as_json(model: Any) -> Any:
    import json

    return json.loads(model.model_dump_json())
