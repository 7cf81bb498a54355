"""The bus contract: committed schemas follow the models, breaking changes need a new type
version, and each topic carries only the personal data its policy names."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from domain.levels import Level
from domain.personal import Personal, mask_id_number
from domain.registration import PlanSummary, Registration
from infra.bus import schemas
from infra.bus.envelope import envelope, published
from infra.bus.privacy import POLICY, personal_data_in, plan_for, redact, ref
from tests.builders import working_years_form

KEY = bytes(range(32))
ROOT = Path(__file__).resolve().parent.parent


def test_the_committed_schemas_are_the_ones_the_models_generate():
    assert schemas.differences() == []


def test_a_model_change_without_its_schema_change_is_caught(tmp_path):
    shutil.copytree(schemas.SCHEMA_DIR, tmp_path / "s")
    target = tmp_path / "s" / "certificates" / "cn.skillcert.certificate.issued.v1.json"
    edited = json.loads(target.read_text())
    edited["$defs"]["Data"]["properties"]["number"]["description"] = "edited by hand"
    target.write_text(json.dumps(edited))
    (tmp_path / "s" / "stock" / "cn.skillcert.blank_stock.opened.v1.json").unlink()
    assert schemas.differences(tmp_path / "s") == [
        "stock/cn.skillcert.blank_stock.opened.v1.json: no committed schema (run `skillcert schemas --write`)",
        "certificates/cn.skillcert.certificate.issued.v1.json: the model changed; the committed schema did not"
        " (run `skillcert schemas --write`)",
    ]


def test_writing_refuses_a_breaking_change_and_writes_nothing(tmp_path):
    shutil.copytree(schemas.SCHEMA_DIR, tmp_path / "s")
    target = tmp_path / "s" / "certificates" / "cn.skillcert.certificate.issued.v1.json"
    # As if v1 had been published with a field the model has since dropped.
    published_v1 = json.loads(target.read_text())
    published_v1["$defs"]["Data"]["properties"]["grade"] = {"type": "string"}
    published_v1["$defs"]["Data"]["required"].append("grade")
    target.write_text(json.dumps(published_v1))
    before = {p: p.read_bytes() for p in (tmp_path / "s").rglob("*.json")}
    with pytest.raises(schemas.BreakingChange, match=r"issued.v1.json: \$.data.grade: no longer always present"):
        schemas.write(tmp_path / "s")
    assert {p: p.read_bytes() for p in (tmp_path / "s").rglob("*.json")} == before


def _issued() -> dict:
    return json.loads((schemas.SCHEMA_DIR / "certificates" / "cn.skillcert.certificate.issued.v1.json").read_text())


def test_what_breaks_a_subscriber_and_what_does_not():
    old = _issued()
    assert schemas.breaking_changes(old, copy.deepcopy(old)) == []

    added = copy.deepcopy(old)
    added["$defs"]["Data"]["properties"]["grade"] = {"type": "string"}
    added["$defs"]["Data"]["required"].append("grade")
    added["$defs"]["Level"]["enum"].append(6)
    assert schemas.breaking_changes(old, added) == []  # new fields and values are tolerated

    retyped = copy.deepcopy(old)
    retyped["$defs"]["Data"]["properties"]["number"] = {"type": "integer"}
    assert schemas.breaking_changes(old, retyped) == ["$.data.number: may now be integer"]

    nullable = copy.deepcopy(old)
    nullable["$defs"]["Data"]["properties"]["occupation"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert schemas.breaking_changes(old, nullable) == ["$.data.occupation: may now be null"]

    fewer = copy.deepcopy(old)
    fewer["$defs"]["Gender"]["enum"] = ["男"]
    assert schemas.breaking_changes(old, fewer) == ["$.data.holder.gender: values removed: ['女']"]

    renamed = copy.deepcopy(old)
    renamed["properties"]["type"]["const"] = "cn.skillcert.certificate.issued.v2"
    assert schemas.breaking_changes(old, renamed)[0].startswith("$.type: constant")


def test_no_committed_schema_ever_broke_its_own_version():
    """Each file's history in git, oldest first: every revision is compatible with the one
    before, and the working copy with the last commit."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("no git history here (a source archive, not a clone)")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    problems = []
    for path in sorted(schemas.SCHEMA_DIR.glob("*/*.json")):
        rel = str(path.relative_to(ROOT))
        revisions = git("log", "--format=%H", "--reverse", "--", rel).split()
        versions = [json.loads(git("show", f"{r}:{rel}")) for r in revisions] + [json.loads(path.read_text())]
        for older, newer in zip(versions, versions[1:], strict=False):
            problems += [f"{rel}: {p}" for p in schemas.breaking_changes(older, newer)]
    assert problems == []


SUBMITTED = "domain.registration:Registration.Submitted"


def submitted(serial: int) -> tuple:
    """A stored Registration.Submitted state, as the mapper decodes it, and its form."""
    form = working_years_form(serial)
    event = Registration.Submitted(
        originator_id="9d5c3c4e-1f0e-4a53-9d2a-2c4c1c3f4a10", originator_version=1, originator_topic="x",
        actor={"id": f"candidate-{serial}", "role": "candidate"}, plan_id="9d5c3c4e-1f0e-4a53-9d2a-2c4c1c3f4a11",
        institution_id="9d5c3c4e-1f0e-4a53-9d2a-2c4c1c3f4a12", form=form, warnings=[],
        plan=PlanSummary(plan_number="2501", plan_name="人工智能训练师二级", institution_name="深圳市技能人才评价示范中心",
                         occupation="人工智能训练师", job=None, level=Level.TWO),
    )  # fmt: skip
    return event.model_dump(mode="json"), form


def test_every_public_event_type_has_a_schema_that_accepts_its_messages():
    state, form = submitted(7)
    topic = SUBMITTED
    message = envelope(topic, 42, state, KEY)
    schema = json.loads((schemas.SCHEMA_DIR / "registrations" / f"{message['type']}.json").read_text())
    Draft202012Validator(schema).validate(message)
    f = message["data"]["form"]
    assert f["id_number"] == {"masked": mask_id_number(form.id_number), "ref": ref(form.id_number, KEY)}
    assert "phone" not in f and f["name"] == form.name and f["work_unit"] == form.work_unit
    assert published(topic).type == "cn.skillcert.registration.submitted.v1"
    assert {e.path for e in schemas.public_events()} == set(schemas.committed())  # one file on disk for each


def test_each_topic_carries_the_personal_data_its_policy_names_and_no_more():
    carried: dict[str, set[Personal]] = {c: set() for c in POLICY}
    for path, schema in schemas.generate().items():
        carried[path.partition("/")[0]] |= personal_data_in(schema)
    assert carried == {c: set(p.carries) for c, p in POLICY.items()}
    assert all(Personal.CONTACT not in kinds for kinds in carried.values())
    assert POLICY["certificates"].audience == "wide"

    # Wherever an ID number appears, what is published is the masked form and the ref.
    def id_fields(node, out):
        if isinstance(node, dict):
            if node.get("x-personal") == "id_number":
                out.append(node)
            for v in node.values():
                id_fields(v, out)
        elif isinstance(node, list):
            for v in node:
                id_fields(v, out)
        return out

    for schema in schemas.generate().values():
        for field in id_fields(schema, []):
            assert "#/$defs/PublishedIdNumber" in json.dumps(field), field


def test_the_redaction_follows_nested_lists_and_maps():
    schema = {
        "$defs": {
            "Holder": {
                "properties": {"name": {"type": "string"}, "id_number": {"type": "string", "x-personal": "id_number"}}
            },  # fmt: skip
            "Entry": {"properties": {"holder": {"$ref": "#/$defs/Holder"}, "phone": {"x-personal": "contact"}}},
        },
        "properties": {
            "entries": {"type": "array", "items": {"$ref": "#/$defs/Entry"}},
            "by_room": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Entry"}},
        },
    }
    data = {
        "entries": [{"holder": {"name": "甲", "id_number": "440305199001010011"}, "phone": "13800138000"}],
        "by_room": {"301": {"holder": {"name": "乙", "id_number": "X1234567"}, "phone": None}},
    }
    out = redact(plan_for(schema, POLICY["certificates"].carries), data, KEY)
    assert out["entries"][0] == {"holder": {"name": "甲", "id_number": {"masked": "4403**********0011", "ref": ref("440305199001010011", KEY)}}}  # fmt: skip
    assert out["by_room"]["301"]["holder"]["id_number"]["masked"] == "X1****67"
    assert "phone" not in out["by_room"]["301"] and data["entries"][0]["phone"] == "13800138000"  # a copy


def test_the_contract_shows_one_valid_example_per_topic():
    section = (ROOT / "docs" / "bus.md").read_text()
    blocks = [json.loads(b.split("```")[0]) for b in section.split("```json\n")[1:]]
    contexts = set()
    for message in blocks:
        context = message["source"].rpartition("/")[2]
        schema = json.loads((schemas.SCHEMA_DIR / context / f"{message['type']}.json").read_text())
        Draft202012Validator(schema).validate(message)
        contexts.add(context)
    assert contexts == set(POLICY)


def test_messages_are_what_the_cloudevents_sdk_builds_and_parses():
    """The relay builds messages without the SDK's objects (for speed); the SDK's Kafka
    binding must read them as the very event it would have written itself."""
    from datetime import datetime

    from cloudevents.core.bindings.kafka import KafkaMessage, from_structured, to_structured
    from cloudevents.core.formats.json import JSONFormat
    from cloudevents.core.v1.event import CloudEvent

    from infra.bus.envelope import HEADERS, message

    state, _ = submitted(3)
    context, key, value = message(SUBMITTED, 7, state, KEY)
    ours = from_structured(KafkaMessage(headers=dict(HEADERS), key=key, value=value), JSONFormat())

    attributes = {k: v for k, v in json.loads(value).items() if k != "data"}
    attributes["time"] = datetime.fromisoformat(attributes["time"])
    theirs = to_structured(
        CloudEvent(attributes=attributes, data=json.loads(value)["data"]), JSONFormat(), key_mapper=lambda e: key
    )
    assert dict(HEADERS) == theirs.headers and key == theirs.key
    sdk = from_structured(theirs, JSONFormat())
    assert ours.get_attributes() == sdk.get_attributes() and ours.get_data() == sdk.get_data()
    assert context == "registrations" and ours.get_subject() == key.decode() == state["originator_id"]


def test_event_ids_are_the_uuid5_the_documentation_names():
    """event_id formats the hash by hand (the relay makes one per message); it must be the uuid5 a
    subscriber computes with its own library, for every variant nibble the hash can give."""
    import uuid

    from infra.bus.envelope import event_id

    for _ in range(50):
        aggregate = str(uuid.uuid4())
        for version in (1, 2, 17, 100_000):
            expected = uuid.uuid5(uuid.NAMESPACE_URL, f"skillcert:event:{aggregate}:{version}")
            assert event_id(aggregate, version) == str(expected)


def test_the_event_a_rebuild_applies_is_the_message_a_subscriber_parses():
    """A rebuild takes the event as a dict instead of writing it out and parsing it back."""
    from infra.bus.envelope import cloud_event, message

    state, _ = submitted(3)
    assert cloud_event(SUBMITTED, 7, state, KEY) == (message(SUBMITTED, 7, state, KEY)[0],
                                                      json.loads(message(SUBMITTED, 7, state, KEY)[2]))  # fmt: skip


def test_every_field_of_every_published_schema_is_classified():
    """A new string field without a class (personal, or in domain.personal.NOT_PERSONAL) fails here."""
    from domain.personal import NOT_PERSONAL

    unclassified, both = [], []
    marked_personal: set[str] = set()

    def walk(node, path, defs, seen):
        if isinstance(node, list):
            for v in node:
                walk(v, path, defs, seen)
            return
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rpartition("/")[2]
            if name not in seen and name != "PublishedIdNumber":  # an ID number's published form: classified above
                walk(defs[name], path, defs, seen | {name})
        for name, prop in (node.get("properties") or {}).items():
            if not isinstance(prop, dict):
                continue
            text = json.dumps(prop)
            stringish = '"string"' in text and "enum" not in prop and "const" not in prop
            if "x-personal" in prop:
                if prop["x-personal"] != "none":
                    marked_personal.add(name)
                continue  # classified: what is inside is covered by the class
            if stringish and "$ref" not in prop and "properties" not in prop:
                unclassified.append(f"{path}.{name}")
            walk(prop, f"{path}.{name}", defs, seen)
        for key in ("items", "additionalProperties", "anyOf", "oneOf", "allOf"):
            if key in node:
                walk(node[key], path, defs, seen)

    for file, schema in schemas.committed().items():
        walk(schema, file, schema.get("$defs", {}), frozenset())
    assert unclassified == [], unclassified[:20]
    both = sorted(marked_personal & NOT_PERSONAL)
    assert both == [], f"named as carrying no personal data, yet marked personal somewhere: {both}"


def test_the_asyncapi_document_is_committed_current_and_valid_asyncapi_3():
    """Validated against the AsyncAPI 3.0.0 JSON Schema as published by the AsyncAPI initiative
    (npm @asyncapi/specs 6.11.1, vendored in tests/data), not against our idea of it."""
    from jsonschema import Draft7Validator

    from infra.bus.asyncapi import document

    committed = json.loads((schemas.SCHEMA_DIR / "asyncapi.json").read_text())
    assert committed == document(), "run `skillcert schemas --write`"
    spec = json.loads((ROOT / "tests" / "data" / "asyncapi-3.0.0.schema.json").read_text())
    errors = sorted(Draft7Validator(spec).iter_errors(committed), key=lambda e: list(map(str, e.absolute_path)))
    assert errors == [], [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]
    # Every published type is a message of its topic's channel, with its committed schema and key.
    published = {(e.context, e.path) for e in schemas.public_events()}
    described = set()
    for context, channel in committed["channels"].items():
        assert channel["x-audience"] == POLICY[context].audience
        for link in channel["messages"].values():
            message = committed["components"]["messages"][link["$ref"].rpartition("/")[2]]
            assert (schemas.SCHEMA_DIR / message["payload"]["schema"]["$ref"]).exists()
            assert message["bindings"]["kafka"]["key"]["format"] == "uuid"
            described.add((context, message["payload"]["schema"]["$ref"]))
    assert described == published
    # A broken document is caught by the same validation: the check can fail.
    broken = {**committed, "operations": {"x": {"action": "listen", "channel": {"$ref": "#/channels/stock"}}}}
    assert list(Draft7Validator(spec).iter_errors(broken))


def test_the_api_serves_the_committed_contract_without_a_token(database_url, schema):
    from fastapi.testclient import TestClient

    from infra.api import create_app

    with TestClient(create_app(database_url, schema)) as http:
        index = http.get("/schemas").json()
        assert set(index["topics"]) == set(POLICY)
        served = {s["schema"] for types in index["topics"].values() for s in types}
        assert served == {f"/schemas/{p}" for p in schemas.committed()}
        one = sorted(served)[0]
        r = http.get(one)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/schema+json")
        assert r.json() == json.loads((schemas.SCHEMA_DIR / one.removeprefix("/schemas/")).read_text())
        assert http.get("/schemas/asyncapi.json").json()["asyncapi"] == "3.0.0"
        missing = http.get("/schemas/certificates/cn.skillcert.certificate.nothing.v1.json")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        assert http.get("/schemas/..%2Fpyproject/x.json").status_code in (404, 422)


def test_every_published_type_has_its_chinese_name_in_the_glossary_and_the_bus_documentation():
    from pathlib import Path

    from domain.glossary import EVENTS, event_label, event_name
    from infra.bus import schemas

    types = sorted(Path(path).name.removesuffix(".json") for path in schemas.committed())
    assert types and all(event_name(t) in EVENTS for t in types), [t for t in types if event_name(t) not in EVENTS]
    bus = (Path(__file__).parent.parent / "docs" / "bus.md").read_text()
    for t in types:
        assert f"| `{t}` | {event_label(t)} |" in bus, t
