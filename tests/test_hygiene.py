"""Hostile text at every door: NUL and other controls, bidi overrides, lone surrogates, invisible-only
values, sent in every string of every operation (query parameters, path parameters, JSON bodies at
any depth), as a candidate's token could. Each is refused with a 422 naming the field; nothing is
stored; nothing answers 5xx. Accepted text arrives NFC-normalised.

Before, "张\\u0000三" as a name answered 201 and then stopped the read models for good, and
/plans?location=%00 answered 500 to anyone.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from domain.model import Role
from domain.text import BIDI_CONTROLS, problem
from infra.api import create_app
from infra.api.hygiene import body_fields, multiline_fields
from tests.api import bearer
from tests.builders import plan_details, setup_plan, working_years_form

CONTROLS = [chr(c) for c in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0))]
SURROGATES = ["\ud800", "\udfff"]
TAGS = ["\U000e0001", "\U000e0041", "\U000e007f"]
BAD = CONTROLS + sorted(BIDI_CONTROLS) + SURROGATES + TAGS
# Characters that show nothing on their own: zero-width ones, the BOM, variation selectors,
# combining marks with no base, Hangul fillers, the blank braille cell, unusual spaces.
INVISIBLE = list(
    "\u200b\u200c\u200d\u2060\ufeff\u180e\ufe0f\ufe00\U000e0100\u0301\u20dd\u3164\u115f\uffa0\u2800\u00a0\u3000"
)
LINE_BREAKS = ["\n", "\t", "\r", "\u2028", "\u2029"]


@st.composite
def hostile(draw: Any, multiline: bool = False) -> str:
    """Ordinary text with at least one character the rule refuses somewhere in it, or only invisible ones."""
    if draw(st.booleans()) and not multiline:
        return draw(st.text(alphabet=INVISIBLE + [" "], min_size=1, max_size=5).filter(lambda s: s.strip(" ")))
    text = draw(st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs"]), max_size=12))
    at = draw(st.integers(0, len(text)))
    bad = draw(st.sampled_from(BAD if multiline else [*BAD, *LINE_BREAKS]))
    return text[:at] + bad + text[at:]


@given(st.data())
def test_the_rule_refuses_every_hostile_string_and_accepts_ordinary_text(data: Any) -> None:
    assert problem(data.draw(hostile())) is not None
    assert problem(data.draw(hostile(multiline=True)), multiline=True) is not None
    ordinary = data.draw(st.text(alphabet=st.characters(codec="utf-8", categories=["L", "M", "N", "P", "S", "Zs"])))
    if any(unicodedata.category(c)[0] in "LNPS" and c not in INVISIBLE for c in ordinary):
        assert problem(ordinary) is None
    assert problem("第一行\n第二行\t（附件见后）\u2028", multiline=True) is None
    # Marks and selectors inside other text stay: é composed, an emoji's presentation, a joiner.
    assert problem("Zoe\u0308 \u2764\ufe0f \U0001f468\u200d\U0001f469") is None


def test_the_quick_search_stops_at_every_character_the_rule_looks_at() -> None:
    """problem() walks a text only when one search finds a character that may be refused; every code point
    is tried both ways: alone after a letter (the search decides) and after a line break in a multi-line
    field (the line break makes it walk), and each must come to the same verdict."""
    missed = []
    for c in range(0x110000):
        ch = chr(c)
        walked = problem("\na" + ch, multiline=True) is None  # the line break makes it walk the rest
        if (problem("a" + ch, multiline=True) is None) != walked or (
            (problem("a" + ch) is None) != (walked and ch not in LINE_BREAKS)
        ):
            missed.append(f"U+{c:04X}")
    assert not missed, missed[:20]
    assert problem("a\u202eb") == "contains the bidirectional control U+202E (RIGHT-TO-LEFT OVERRIDE) at character 2, " \
        "which changes how text displays"  # fmt: skip


# Every string an operation takes, as (where, JSON path or parameter name).
def _strings(schema: dict[str, Any], node: dict[str, Any], path: tuple[Any, ...], seen: frozenset[str]) -> Iterator:
    if "$ref" in node:
        name = node["$ref"].rpartition("/")[2]
        if name not in seen:
            yield from _strings(schema, schema["components"]["schemas"][name], path, seen | {name})
        return
    for alt in node.get("anyOf", []) + node.get("allOf", []) + node.get("oneOf", []):
        yield from _strings(schema, alt, path, seen)
    kind = node.get("type")
    if kind == "string" and "enum" not in node and "const" not in node:
        yield path
    if kind == "array" and isinstance(node.get("items"), dict):
        yield from _strings(schema, node["items"], (*path, 0), seen)
    if kind == "object":
        for name, prop in node.get("properties", {}).items():
            yield from _strings(schema, prop, (*path, name), seen)
        if isinstance(node.get("additionalProperties"), dict):
            yield (*path, "*key*")


def operations(app: Any) -> list[tuple[str, str, str, tuple[Any, ...]]]:
    """(method, path template, where, field) for every string field of every operation."""
    schema = app.openapi()
    found = []
    for template, methods in schema["paths"].items():
        for method, op in methods.items():
            for p in op.get("parameters", []):
                if p["in"] in ("query", "path") and "string" in json.dumps(p["schema"]):
                    found.append((method, template, p["in"], (p["name"],)))
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body:
                for path in set(_strings(schema, body, (), frozenset())):
                    found.append((method, template, "body", path))
    return sorted(found, key=repr)


def _nest(path: tuple[Any, ...], value: str) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if head == 0:
        return [_nest(rest, value)]
    if head == "*key*":
        return {value: 1}
    return {head: _nest(rest, value)}


@pytest.fixture
def client(world: Any, database_url: str, schema: str) -> Iterator[TestClient]:
    with TestClient(create_app(database_url, schema, today=world.clock), raise_server_exceptions=False) as c:
        yield c


def test_every_string_of_every_operation_refuses_hostile_text_and_stores_nothing(world, client, database_url,
                                                                                 schema) -> None:  # fmt: skip
    iid, pid, code = setup_plan(world.registrations)
    token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    app = client.app
    fields = operations(app)
    assert len(fields) > 150, len(fields)  # every operation's strings, not a sample
    multiline = multiline_fields(app.openapi())
    head = world.registrations.recorder.max_notification_id()

    # No shrinking: each example sends every field; the failing request is in the assertion.
    @settings(
        max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), database=None, phases=[Phase.generate]
    )
    @given(st.data())
    def send(data: Any) -> None:
        for method, template, where, path in fields:
            field_multiline = where == "body" and path and path[-1] in multiline
            value = data.draw(hostile(multiline=bool(field_multiline)))
            url = template.replace("{plan_id}", str(pid)).replace("{institution_id}", str(iid))
            for name in ("registration_id", "exam_id", "certificate", "serial", "year", "number", "aggregate_id"):
                url = url.replace("{" + name + "}", "x")
            kwargs: dict[str, Any] = {"headers": token}
            if where == "query":
                url += "?" + quote(path[0]) + "=" + quote(value.encode("utf-8", "surrogatepass"), safe="")
            elif where == "path":
                url = template.replace("{" + path[0] + "}", quote(value.encode("utf-8", "surrogatepass"), safe=""))
                url = url.replace("{plan_id}", str(pid)).replace("{institution_id}", str(iid))
                for name in ("registration_id", "exam_id", "certificate", "serial", "year", "number", "aggregate_id"):
                    url = url.replace("{" + name + "}", "x")
            else:
                raw = json.dumps(_nest(path, value), ensure_ascii=True)  # \\ud800 survives as JSON escapes
                kwargs["content"] = raw.encode()
                kwargs["headers"] = {**token, "Content-Type": "application/json"}
            r = client.request(method.upper(), url, **kwargs)
            assert r.status_code < 500, (method, template, where, path, value, r.text)
            assert r.status_code == 422, (method, template, where, path, value, r.status_code, r.text)
            named = [e["field"] for e in r.json()["errors"]]
            if where == "query":
                assert f"query.{path[0]}" in named, named
            elif where == "path":
                assert f"path.{path[0]}" in named, (named, method, url, value)
            else:
                expected = ".".join(str(p) for p in path if p != "*key*")
                assert any(n == expected or n.startswith(expected + ".") or n == expected.rstrip(".") for n in named), \
                    (named, expected)  # fmt: skip

    send()
    assert world.registrations.recorder.max_notification_id() == head, "nothing was stored"


def test_accepted_text_is_stored_nfc_normalised_and_multi_line_fields_keep_their_lines(world, client, database_url,
                                                                                        schema) -> None:  # fmt: skip
    iid, pid, code = setup_plan(world.registrations)
    form = json.loads(working_years_form(1).model_dump_json())
    decomposed = unicodedata.normalize("NFD", "Zoë 考生")
    assert decomposed != unicodedata.normalize("NFC", decomposed)
    form["name"] = decomposed
    staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    r = client.post("/registrations", headers=staff, json={"registration_code": code, "form": form})
    assert r.status_code == 201, r.text
    from domain.registration import Registration

    stored = world.registrations.get(Registration, r.json()["id"], "registration")
    assert stored.form.name == unicodedata.normalize("NFC", "Zoë 考生")

    # Reasons may span lines; a name may not.
    r = client.post(f"/registrations/{stored.id}/review", headers=staff,
                    json={"decision": "returned", "reasons": "社保证明缺页：\n请补第2页"})  # fmt: skip
    assert r.status_code == 204, r.text
    form["name"] = "张\n三"
    r = client.post("/registrations", headers=staff, json={"registration_code": code, "form": form})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "form.name", r.text


def test_no_field_name_is_multi_line_in_one_request_and_one_line_in_another(client) -> None:
    """The middleware allows line breaks by a field's name; that is exact only while names agree."""
    schema = client.app.openapi()
    components = schema["components"]["schemas"]
    marked, plain, seen = set(), set(), set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node and (name := node["$ref"].rpartition("/")[2]) not in seen:
                seen.add(name)
                walk(components[name])
            for name, prop in (node.get("properties") or {}).items():
                if isinstance(prop, dict) and '"string"' in json.dumps(prop):
                    (marked if prop.get("x-multiline") else plain).add(name)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for methods in schema["paths"].values():
        for op in methods.values():
            walk(op.get("requestBody", {}))
    assert not marked & plain, marked & plain
    assert marked == {"reasons", "reason", "note", "explanation"}


def test_the_request_id_header_takes_visible_ascii_only(world, client, database_url, schema) -> None:
    iid, pid, code = setup_plan(world.registrations)
    staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    form = json.loads(working_years_form(1).model_dump_json())
    hidden = "abc\u202edef".encode()  # the UTF-8 bytes of a bidi override, as a header carries them
    r = client.post("/registrations", headers={**staff, "X-Request-Id": hidden},
                    json={"registration_code": code, "form": form})  # fmt: skip
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "header.x-request-id", r.text


@pytest.mark.parametrize("content_type", ["application/problem+json", "application/merge-patch+json",
                                          "Application/JSON; charset=utf-8", "application/json ; x=1"])  # fmt: skip
def test_every_type_fastapi_reads_as_json_is_checked(world, client, database_url, schema, content_type) -> None:
    """What an outsider found: the rule looked only at bodies sent as exactly application/json, while FastAPI reads
    every application/*+json as JSON too. A plan named "测试\\u0000计划\\u202e" sent as problem+json was stored, and
    shown to everyone by the public catalogue."""
    iid, pid, code = setup_plan(world.registrations)
    staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    form = json.loads(working_years_form(1).model_dump_json())
    form["name"] = "张\u0000三\u202e"
    head = world.registrations.recorder.max_notification_id()
    r = client.post("/registrations", headers={**staff, "Content-Type": content_type},
                    content=json.dumps({"registration_code": code, "form": form}).encode())  # fmt: skip
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "form.name", r.text
    assert world.registrations.recorder.max_notification_id() == head


def test_numbers_the_api_would_not_read_as_sent_are_refused(world, client, database_url, schema) -> None:
    """What an outsider found: 59.99999999999999999 in a score book reached the rules as 60.0, a fail recorded as a
    pass; 1e-400 as 0. JSON nested hundreds deep answered 500 (RecursionError) to anyone, without a token."""
    iid, pid, code = setup_plan(world.registrations)
    staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    head = world.registrations.recorder.max_notification_id()
    for number, says in (("59.99999999999999999", "would be read as 60.0"), ("1e-400", "would be read as 0.0"),
                         ("9" * 40, "a number of 40 digits"), ("9" * 5000, "more than 4,300 digits")):  # fmt: skip
        r = client.put(f"/sessions/{pid}/scores", headers={**staff, "Content-Type": "application/json"},
                       content=f'{{"book": {{"{pid}": {{"理论知识": {number}}}}}}}'.encode())  # fmt: skip
        assert r.status_code == 422 and says in r.json()["detail"], r.text
    for depth in (40, 600, 100_000):
        r = client.post("/health", headers={"Content-Type": "application/json"},
                        content=b"[" * depth + b"]" * depth)  # fmt: skip
        assert r.status_code == 422 and "nested more than 32 levels" in r.json()["detail"], r.text
    ordinary = client.post("/registrations", headers={**staff, "Content-Type": "application/json"}, json={
        "registration_code": code, "form": json.loads(working_years_form(1).model_dump_json()) | {"years_in_occupation": 8.0}
    })  # fmt: skip
    assert ordinary.status_code == 201, ordinary.text  # 8.0 is 8: read as sent
    assert world.registrations.recorder.max_notification_id() == head + 2  # the registration and its seat, only


def test_true_is_no_number_and_one_is_no_yes(world, client, database_url, schema) -> None:
    """What an outsider found: a plan of `"max_registrations": true` was stored with one place, and a registration
    with `"declaration_accepted": 1`, the candidate's legal declaration, was stored as accepted: pydantic reads
    either as the other. A name is a number, or true or false, in every request model alike, or in none."""
    fields = body_fields(client.app.openapi())
    assert not fields.mixed, fields.mixed
    assert {"declaration_accepted", "holds_prior_certificate"} <= fields.booleans
    assert {"max_registrations", "seats", "level", "years_in_occupation", "form_serial"} <= fields.integers
    iid, pid, code = setup_plan(world.registrations)
    staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    head = world.registrations.recorder.max_notification_id()
    form = json.loads(working_years_form(1).model_dump_json())
    for change, field, says in (({"declaration_accepted": 1}, "form.declaration_accepted", "1 is not true or false"),
                                ({"holds_prior_certificate": "yes"}, "form.holds_prior_certificate", '"yes" is not'),
                                ({"years_in_occupation": True}, "form.years_in_occupation", "true is no number")):  # fmt: skip
        r = client.post("/registrations", headers=staff, json={"registration_code": code, "form": form | change})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field and says in r.json()["detail"], r.text
    plan = json.loads(plan_details("2602", seats=5).model_dump_json()) | {"max_registrations": True}
    r = client.post(f"/institutions/{iid}/plans", headers=staff, json=plan)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "max_registrations", r.text
    # In lists and maps too (a reviewer found `"serials": [true]` stored as blank form 1 destroyed).
    assert {"serials", "per_level", "levels"} <= fields.integer_elements
    for path, body, field in ((f"/institutions/{iid}/stock/demand", {"year": 2027, "per_level": {"3": True}},
                               "per_level.3"),
                              (f"/institutions/{iid}/stock/destroyed", {"serials": [1, True], "witness": "王主任"},
                               "serials.1")):  # fmt: skip
        r = client.post(path, headers=staff, json=body)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == field, r.text
    assert world.registrations.recorder.max_notification_id() == head


def test_a_form_of_thousands_of_files_or_an_event_too_large_for_the_bus_is_refused_and_nothing_stored(
    world, client, database_url, schema, monkeypatch
) -> None:
    """An outside review registered with 9,000 copies of one diploma (1.2 MB): answered 201, stored as an event too
    large for the bus, it stopped the relay and then `skillcert up` for good. The form is refused naming its
    attachments; and whatever the command, no event larger than the bus carries is stored (409, naming its size)."""
    import infra.store.eventstore as eventstore

    iid, pid, code = setup_plan(world.registrations)
    staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    head = world.registrations.recorder.max_notification_id
    before = head()
    form = json.loads(working_years_form(1).model_dump_json())
    form["attachments"] = form["attachments"][:1] * 9_000
    r = client.post("/registrations", headers=staff, json={"registration_code": code, "form": form})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "attachments", r.text[:500]
    assert "at most 20" in r.json()["errors"][0]["message"] and len(r.content) < 10_000
    monkeypatch.setattr(eventstore, "MAX_EVENT_BYTES", 1_000)  # smaller than a registration's event
    r = client.post("/registrations", headers=staff,
                    json={"registration_code": code, "form": json.loads(working_years_form(1).model_dump_json())})  # fmt: skip
    assert r.status_code == 409 and "an event may hold" in r.json()["detail"], r.text
    assert head() == before


def test_a_command_sent_without_its_body_is_told_so(world, client, database_url, schema) -> None:
    """An outside review sent a command with no body and was answered `": Field required"`, naming no field."""
    iid, _, _ = setup_plan(world.registrations)
    staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    r = client.post("/registrations", headers=staff)
    assert r.status_code == 422 and r.json()["errors"] == [{"field": "body", "message": "a JSON body is required"}]
    assert r.json()["detail"] == "body: a JSON body is required", r.text
