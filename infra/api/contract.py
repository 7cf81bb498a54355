"""The bus contract over HTTP, for a downstream team's tools: the committed JSON Schema of each
message type and the AsyncAPI document, exactly the files under schemas/. No token: they hold no
data, only its shape."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from domain.errors import NotFound
from infra.bus.schemas import ASYNCAPI, SCHEMA_DIR, committed

router = APIRouter(tags=["bus contract"])
SCHEMA_MEDIA = "application/schema+json"


@cache
def _files() -> dict[str, dict[str, Any]]:
    return committed(SCHEMA_DIR)


@router.get("/schemas", summary="Index of the bus contract")
def index() -> dict[str, Any]:
    """Each topic's message types, with the address of its schema; and the AsyncAPI document."""
    topics: dict[str, list[dict[str, str]]] = {}
    for path in _files():
        context, _, name = path.partition("/")
        topics.setdefault(context, []).append({"type": name.removesuffix(".json"), "schema": f"/schemas/{path}"})
    return {"asyncapi": f"/schemas/{ASYNCAPI}", "topics": topics}


@router.get("/schemas/asyncapi.json", summary="The AsyncAPI 3.0 document of the bus")
def asyncapi() -> JSONResponse:
    return JSONResponse(json.loads((SCHEMA_DIR / ASYNCAPI).read_text()))


@router.get("/schemas/{topic}/{message_type}.json", summary="The JSON Schema of one message type")
def message_schema(
    topic: str = Path(pattern=r"^[a-z]+$", max_length=30),
    message_type: str = Path(pattern=r"^[a-z0-9_.]+$", max_length=100),
) -> JSONResponse:
    found = _files().get(f"{topic}/{message_type}.json")
    if found is None:
        raise NotFound(f"no message type {message_type} on the topic {topic}", field="message_type")
    return JSONResponse(found, media_type=SCHEMA_MEDIA)
