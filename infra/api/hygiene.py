"""Every text the API receives passes domain.text's rule before any route sees it.

One middleware covers the path, every query parameter and every string in a JSON body (values and
object keys, at any depth), whatever the operation: a route added later is covered without a
line of its own. Refused text answers 422 naming the field ("query.location", "form.name",
"path"); accepted text reaches the route NFC-normalised. Files (the multipart imports) are checked
cell by cell by their reader, which names rows and columns instead.

Which body fields may hold line breaks comes from the models: a field marked with
domain.text.MULTILINE in its JSON Schema, by name (the test suite checks that no name is
multi-line in one model and single-line in another).
"""

from __future__ import annotations

import email.message
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_to_bytes, urlencode

import anyio.to_thread
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from domain.text import normalise, problem
from infra.api.problems import problem_body

Problems = list[tuple[str, str]]
IN_A_THREAD = 64 * 1024  # bytes: a JSON body larger than this is checked off the event loop
MAX_DEPTH = 32  # levels of arrays and objects in a JSON body; ours nest 5 or so, and FastAPI's own walks recurse
MAX_INT_DIGITS = 30  # a JSON integer longer than this is no value of any field (the largest: form serials, 8 digits)


def multiline_fields(openapi: dict[str, Any]) -> frozenset[str]:
    """Names of the body properties marked multi-line anywhere in the API's schemas."""
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if isinstance(prop, dict) and prop.get("x-multiline"):
                    names.add(name)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(openapi)
    return frozenset(names)


@dataclass(frozen=True)
class Fields:
    """What the API's body schemas say of a property, by its name (a name means the same in every model: the tests
    check it): which may hold line breaks, which take only true or false, which only a whole number."""

    multiline: frozenset[str] = frozenset()
    booleans: frozenset[str] = frozenset()
    integers: frozenset[str] = frozenset()
    mixed: frozenset[str] = frozenset()  # a boolean or a number in one model, something else in another: unchecked
    integer_elements: frozenset[str] = frozenset()  # lists of whole numbers, or maps to them (serials, per_level)


def body_fields(openapi: dict[str, Any]) -> Fields:
    components = openapi.get("components", {}).get("schemas", {})
    kinds: dict[str, set[str]] = {}

    def types(node: Any, seen: frozenset[str] = frozenset()) -> set[str]:
        if not isinstance(node, dict):
            return set()
        if ref := node.get("$ref"):
            name = ref.rpartition("/")[2]
            return set() if name in seen else types(components.get(name), seen | {name})
        found = {node["type"]} if isinstance(node.get("type"), str) else set()
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                found |= types(sub, seen)
        return found

    elements: dict[str, set[str]] = {}  # what the items of a list, or the values of a map, may be

    def element_types(node: Any, seen: frozenset[str] = frozenset()) -> set[str]:
        if not isinstance(node, dict):
            return set()
        if ref := node.get("$ref"):
            name = ref.rpartition("/")[2]
            return set() if name in seen else element_types(components.get(name), seen | {name})
        found = types(node.get("items")) | types(node.get("additionalProperties"))
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                found |= element_types(sub, seen)
        return found

    walked: set[str] = set()

    def walk(node: Any) -> None:  # what a request body may hold, its models' models included
        if isinstance(node, dict):
            if (ref := node.get("$ref")) and (name := ref.rpartition("/")[2]) not in walked:
                walked.add(name)
                walk(components.get(name))
            for name, prop in (node.get("properties") or {}).items():
                kinds.setdefault(name, set()).update(types(prop) - {"null"})
                elements.setdefault(name, set()).update(element_types(prop) - {"null"})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            walk(operation.get("requestBody"))
    return Fields(multiline_fields(openapi), frozenset(n for n, k in kinds.items() if k == {"boolean"}),
                  frozenset(n for n, k in kinds.items() if k == {"integer"}),
                  frozenset(n for n, k in kinds.items() if len(k) > 1 and k & {"boolean", "integer"}),
                  frozenset(n for n, k in elements.items() if k == {"integer"}))  # fmt: skip


def path_patterns(openapi: dict[str, Any]) -> list[re.Pattern[str]]:
    """A pattern per path template of the API, capturing each parameter by name."""
    out = []
    for template in openapi.get("paths", {}):
        parts = re.split(r"\{(\w+)\}", template)
        regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]*)" for i, p in enumerate(parts))
        out.append(re.compile(f"^{regex}$"))
    return out


class TooDeep(ValueError):
    pass


def clean_json(value: Any, at: str, fields: Fields, problems: Problems, key: str = "", depth: int = 0) -> Any:
    """The value with every string NFC-normalised; what is refused goes into `problems`. JSON's true is no number, and 1
    or "yes" no yes: pydantic would read either as the other (a plan of `true` places), so those are refused too, by
    the field's name. Strings first: most values are."""
    kind = type(value)
    if kind is str:
        if key in fields.booleans:
            problems.append((at, f"{_json(value)} is not true or false"))
        why = problem(value, multiline=key in fields.multiline)
        if why:
            problems.append((at or "body", why))
        return normalise(value)
    if kind is dict or kind is list:
        if key in fields.booleans:
            problems.append((at, f"{_json(value)} is not true or false"))
        if depth >= MAX_DEPTH:
            raise TooDeep(at)
        if key in fields.integer_elements:  # a list of serials, a map of counts: true is no number in them either
            for name, v in enumerate(value) if kind is list else value.items():
                if type(v) is bool:
                    problems.append((f"{at}.{name}", f"{str(v).lower()} is no number: give a whole number"))
        if kind is list:
            return [clean_json(v, f"{at}.{i}" if at else str(i), fields, problems, depth=depth + 1)
                    for i, v in enumerate(value)]  # fmt: skip
        out = {}
        for k, v in value.items():
            why = problem(k)
            where = f"{at}.{_shown(k)}" if at else _shown(k)
            if why:
                problems.append((where, f"the name of this field {why}"))
            out[normalise(k)] = clean_json(v, where, fields, problems, key=k, depth=depth + 1)
        return out
    if kind is bool:
        if key in fields.integers:
            problems.append((at, f"{str(value).lower()} is no number: give a whole number"))
    elif value is not None and key in fields.booleans:
        problems.append((at, f"{_json(value)} is not true or false"))
    elif kind is int and abs(value) >= 10**MAX_INT_DIGITS:
        problems.append((at or "body", f"a number of {len(str(abs(value)))} digits: no field takes more than "
                         f"{MAX_INT_DIGITS}"))  # fmt: skip
    return value


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


class TextHygiene:
    def __init__(
        self, app: ASGIApp, fields: Callable[[], Fields] = Fields, routes: Callable[[], list[re.Pattern[str]]] = list
    ) -> None:
        self.app = app
        self.fields = fields
        self.routes = routes  # a pattern per path template, to name the path parameter at fault

    def _match(self, path: str) -> re.Match[str] | None:
        for regex in self.routes():
            if match := regex.match(path):
                return match
        return None

    def _param_holding(self, path: str, text: str) -> str:
        """The name of the path parameter whose value holds `text` ("path" when no route says)."""
        if match := self._match(path):
            return next((f"path.{n}" for n, v in match.groupdict().items() if text in v), "path")
        return "path"

    def _path_problems(self, path: str) -> Problems:
        if match := self._match(path):
            return [(f"path.{name}", why) for name, value in match.groupdict().items() if (why := problem(value))]
        for segment in path.split("/"):  # no route: each segment is a value of its own
            if why := problem(segment):
                return [("path", why)]
        return []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problems: Problems = []
        try:
            # The server decodes the path leniently (invalid UTF-8 becomes U+FFFD); look at the bytes sent.
            unquote_to_bytes(scope.get("raw_path") or scope["path"].encode()).decode("utf-8")
        except UnicodeDecodeError:
            problems.append((self._param_holding(scope["path"], "\ufffd"), "is not UTF-8 once percent-decoded"))
        problems += self._path_problems(scope["path"])
        query = self._query(scope, problems)
        headers = Headers(scope=scope)
        body: bytes | None = None
        if is_json(headers.get("content-type")):
            raw = await _read(receive)
            if len(raw) > IN_A_THREAD:
                # Parsing and walking a body of megabytes takes the interpreter for a second or more: on the event
                # loop, every other request (a load balancer's /health among them) would wait for it.
                body, found = await anyio.to_thread.run_sync(self._body, raw)
            else:
                body, found = self._body(raw)
            problems += found
        if problems:
            await _refuse(problems, scope, receive, send)
            return
        scope = dict(scope)
        if query is not None:
            scope["query_string"] = query
        if body is not None:
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope["headers"].append((b"content-length", str(len(body)).encode()))
            receive = _replay(body, receive)
        await self.app(scope, receive, send)

    def _query(self, scope: Scope, problems: Problems) -> bytes | None:
        raw: bytes = scope.get("query_string", b"")
        if not raw:
            return None
        cleaned = []
        for piece in raw.split(b"&"):
            if not piece:
                continue
            name_raw, _, value_raw = piece.partition(b"=")
            try:
                name = unquote_to_bytes(name_raw.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                problems.append(("query", "a parameter's name is not UTF-8 once percent-decoded"))
                continue
            try:
                value = unquote_to_bytes(value_raw.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                problems.append((f"query.{_shown(name)}", "is not UTF-8 once percent-decoded"))
                continue
            for text, what in ((name, "the parameter's name"), (value, "")):
                if why := problem(text):
                    problems.append((f"query.{_shown(name)}", f"{what} {why}".strip()))
            cleaned.append((normalise(name), normalise(value)))
        return urlencode(cleaned).encode()

    def _body(self, raw: bytes) -> tuple[bytes | None, Problems]:
        deep = [("body", f"is nested more than {MAX_DEPTH} levels deep: no request of this API nests so deep")]
        try:
            # json.loads' own steps, with a decoder made once: a decoder of its own per body (what passing the hooks
            # to json.loads makes) cost each registration about 15 µs.
            data = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
        except Inexact as e:
            return None, [("body", str(e))]
        except RecursionError:  # the parser's own limit, past ours
            return None, deep
        except ValueError as e:
            if "integer string conversion" in str(e):  # Python's own limit on digits (4,300), far past ours
                return None, [
                    ("body", f"a number of more than 4,300 digits: no field takes more than {MAX_INT_DIGITS}")
                ]
            return raw, []  # not JSON: the route's own validation says so
        found: Problems = []
        try:
            cleaned = clean_json(data, "", self.fields(), found)
        except TooDeep:
            return None, deep
        # Refused text may not even be encodable (a lone surrogate): only accepted text is re-encoded.
        return (None, found) if found else (json.dumps(cleaned, ensure_ascii=False).encode(), [])


@lru_cache(maxsize=64)  # a client sends one or two types; each read through the email package costs ~10 µs
def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this type as JSON (fastapi.routing): application/json or any application/*+json
    (problem+json, merge-patch+json, ...), parsed as it does. Anything it would parse, this middleware checks first."""
    if not content_type:
        return False  # FastAPI's strict content type (its default): the body is not parsed, and refused
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class Inexact(Exception):  # not a ValueError: the decoder would take that for a syntax error
    pass


def _exact_float(text: str) -> float:
    """A JSON number with a fraction or an exponent, as Python's float, refused where the float is not the number sent:
    59.99999999999999999 would reach the rules as 60.0, a fail as a pass, and 1e-400 as 0."""
    value = float(text)
    if math.isfinite(value) and Decimal(repr(value)) != Decimal(text):
        raise Inexact(f"the number {text[:40]} has more digits than the API keeps (it would be read as {value!r}): "
                      "send at most 15 significant digits")  # fmt: skip
    return value


_DECODER = json.JSONDecoder(parse_float=_exact_float)


def _shown(name: str) -> str:
    """A field's name fit to put in an answer: a refused one may not even be encodable."""
    return name.encode("unicode_escape").decode() if problem(name) else name


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


async def _refuse(problems: Problems, scope: Scope, receive: Receive, send: Send) -> None:
    from starlette.responses import JSONResponse

    detail = "; ".join(f"{f}: {m}" for f, m in problems)
    body = problem_body(422, "InvalidInput", detail, "invalid-text", [{"field": f, "message": m} for f, m in problems])
    await JSONResponse(body, status_code=422, media_type="application/problem+json")(scope, receive, send)
