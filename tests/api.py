"""HTTP helpers for the API tests: tokens made the way `skillcert tokens create` makes them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import uvicorn

from domain.model import Role
from infra.api.tokens import Tokens
from infra.bus.privacy import installation_key, ref
from infra.embedded import free_port


def bearer(
    database_url: str,
    schema: str,
    role: Role,
    name: str,
    institution_id: UUID | None = None,
    id_number: str | None = None,
    pseudonym_key: str | None = None,
    jurisdiction: str | None = None,
) -> dict[str, str]:
    tokens = Tokens(database_url, schema)
    tokens.create_table()
    holder = ref(id_number, installation_key(database_url, schema, pseudonym_key)) if id_number else None
    if role is Role.HR_DEPARTMENT and jurisdiction is None:
        jurisdiction = "03"  # Shenzhen: where the test institutions are filed
    _, token = tokens.create(name, role, institution_id, holder, jurisdiction=jurisdiction)
    return {"Authorization": f"Bearer {token}"}


def as_json(model: Any) -> Any:
    import json

    return json.loads(model.model_dump_json())


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app on a real port (uvicorn, in a thread), for clients that need a URL: a browser, schemathesis."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", proxy_headers=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the API did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)


def store_with_samples(database_url: str, schema: str) -> None:
    """The store's tables made, and the sample files (infra.services.samples) held, as uploads would,
    before separately started processes race to make the tables."""
    from infra.services import samples
    from infra.services.base import Service

    service = Service(database_url, schema)
    samples.hold(service.attachments)
    service.close()
