"""The bus contract: one JSON Schema per public event type, generated from the domain models.

Each file under schemas/<context>/<type>.json describes the whole Kafka message value (the
CloudEvent with its data) as subscribers receive it. `skillcert schemas --write` regenerates
them and refuses a change that would break a subscriber of the same type version; the
test suite fails when a model changed and its schema file did not.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventsourcing.domain import CanInitAggregate
from eventsourcing.utils import get_topic, resolve_topic

from domain.model import DomainEvent, Role, Snapshot
from infra.bus.envelope import CONTEXTS, NOT_IN_DATA, SPEC_VERSION, event_type
from infra.bus.privacy import POLICY, redact_schema

# The checkout's schemas/ (an editable install), or where an image put them (the Dockerfile sets it).
SCHEMA_DIR = Path(os.environ.get("SKILLCERT_SCHEMA_DIR") or Path(__file__).resolve().parents[2] / "schemas")
DRAFT = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class PublicEvent:
    model: type[DomainEvent]
    topic: str  # the event store's topic for the class
    context: str
    type: str  # CloudEvents type, with its version

    @property
    def path(self) -> str:
        return f"{self.context}/{self.type}.json"


def public_events() -> list[PublicEvent]:
    found = []
    for aggregate_topic, context in CONTEXTS.items():
        if context is None:
            continue
        aggregate = resolve_topic(aggregate_topic)
        # Snapshots are kept apart from the events, never in the log, never published.
        models = [m for m in vars(aggregate).values()
                  if isinstance(m, type) and issubclass(m, DomainEvent) and not issubclass(m, Snapshot)]  # fmt: skip
        own_creation = any(m.__name__ != "Created" and issubclass(m, CanInitAggregate) for m in models)
        for model in models:
            if any(other is not model and issubclass(other, model) for other in models):
                continue  # a base class (the aggregate's Event, Created): never stored itself
            if model.__name__ == "Created" and own_creation:
                continue  # the library makes one per aggregate; this aggregate is created by an event of its own
            topic = get_topic(model)
            found.append(PublicEvent(model, topic, context, event_type(topic)))
    return sorted(found, key=lambda e: e.path)


def message_schema(event: PublicEvent) -> dict[str, Any]:
    data = event.model.model_json_schema(mode="serialization")
    defs = data.pop("$defs", {})
    for name in NOT_IN_DATA:
        data.get("properties", {}).pop(name, None)
        if name in data.get("required", []):
            data["required"] = [r for r in data["required"] if r != name]
    defs["Data"] = data
    defs = _string_keys(defs, defs)
    uuid = {"type": "string", "format": "uuid"}
    return redact_schema(
        {
            "$schema": DRAFT,
            "$id": schema_id(event.type),
            "title": event.type,
            "description": (
                f"{event.model.__qualname__} on the {event.context} topic: a CloudEvent in structured JSON,"
                " keyed by aggregate id. Subscribers must ignore fields they do not know."
            ),
            "type": "object",
            "properties": {
                "specversion": {"const": SPEC_VERSION},
                "id": {**uuid, "description": "stable across republishing: deduplicate by it"},
                "source": {"const": f"/skillcert/{event.context}"},
                "type": {"const": event.type},
                "subject": {**uuid, "description": "the aggregate id"},
                "dataschema": {
                    "const": schema_id(event.type),
                    "description": "this schema's $id; the file is schemas/<topic>/<type>.json, also served "
                    "by the API at /schemas/<topic>/<type>.json",
                },
                "time": {"type": "string", "format": "date-time"},
                "datacontenttype": {"const": "application/json"},
                "aggregateid": uuid,
                "aggregateversion": {"type": "integer", "minimum": 1},
                "position": {"type": "integer", "minimum": 1, "description": "place in the event store's total order"},
                "actorid": {"type": "string"},
                "actorrole": {"enum": [r.value for r in Role]},
                "data": {"$ref": "#/$defs/Data"},
            },
            "required": [
                "specversion",
                "id",
                "source",
                "type",
                "subject",
                "dataschema",
                "time",
                "datacontenttype",
                "aggregateid",
                "aggregateversion",
                "position",
                "actorid",
                "actorrole",
                "data",
            ],  # fmt: skip
            "$defs": defs,
        },
        POLICY[event.context].carries,
    )


def schema_id(event_type: str) -> str:
    return f"urn:skillcert:schema:{event_type}"


def _string_keys(node: Any, defs: dict[str, Any]) -> Any:
    """JSON object keys are strings: a map keyed by an integer enum (dict[Level, int]) is described by
    pydantic with propertyNames of that enum, which no JSON object can satisfy. Say the keys' strings."""
    if isinstance(node, list):
        return [_string_keys(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _string_keys(v, defs) for k, v in node.items()}
    names = out.get("propertyNames")
    if isinstance(names, dict):
        target = defs.get(names.get("$ref", "").rpartition("/")[2], names)
        if target.get("type") == "integer" and "enum" in target:
            out["propertyNames"] = {"enum": [str(v) for v in target["enum"]],
                                    "description": f"{target.get('title', 'the key')}, as a string"}  # fmt: skip
    return out


def generate() -> dict[str, dict[str, Any]]:
    """Relative path -> schema, for every public event type."""
    return {e.path: message_schema(e) for e in public_events()}


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def committed(directory: Path = SCHEMA_DIR) -> dict[str, dict[str, Any]]:
    return {str(p.relative_to(directory)): json.loads(p.read_text()) for p in sorted(directory.glob("*/*.json"))}


ASYNCAPI = "asyncapi.json"
SAMPLES = "samples"  # samples/<context>/<type>.json: one message of each type from a lifecycle run


def asyncapi_problems(directory: Path = SCHEMA_DIR) -> list[str]:
    from infra.bus.asyncapi import document

    path = directory / ASYNCAPI
    if not path.exists():
        return [f"{ASYNCAPI}: not committed (run `skillcert schemas --write`)"]
    if json.loads(path.read_text()) != document():
        return [
            f"{ASYNCAPI}: the models or topics changed; the committed document did not (run `skillcert schemas --write`)"
        ]
    return []


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as our own messages must meet it: no property it does not name, anywhere.
    (Subscribers must ignore unknown fields; the publisher must not send undocumented ones.)"""

    def tighten(node: Any) -> Any:
        if isinstance(node, dict):
            node = {k: tighten(v) for k, v in node.items()}
            if "properties" in node and "additionalProperties" not in node:
                node["additionalProperties"] = False
            return node
        if isinstance(node, list):
            return [tighten(v) for v in node]
        return node

    return tighten(schema)


def validate_strictly(schema: dict[str, Any], message: dict[str, Any]) -> list[str]:
    """Every way `message` fails the strict schema, formats (uuid, date, date-time) checked too."""
    from jsonschema import Draft202012Validator, FormatChecker

    validator = Draft202012Validator(strict(schema), format_checker=FormatChecker())
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(message)'}: {e.message}" for e in
            sorted(validator.iter_errors(message), key=lambda e: list(map(str, e.absolute_path)))]  # fmt: skip


def sample_problems(directory: Path = SCHEMA_DIR) -> list[str]:
    """Each published type has a committed sample (a real message from a lifecycle run) that its
    committed schema accepts strictly; no sample is of a type no longer published."""
    files = committed(directory)
    samples = {str(p.relative_to(directory / SAMPLES)): json.loads(p.read_text())
               for p in sorted((directory / SAMPLES).glob("*/*.json"))}  # fmt: skip
    out = [f"{p}: no sample of this type was ever emitted (run the lifecycle: see docs/bus.md)"
           for p in sorted(files.keys() - samples.keys())]  # fmt: skip
    out += [f"{SAMPLES}/{p}: a sample of a type that has no schema" for p in sorted(samples.keys() - files.keys())]
    for p in sorted(files.keys() & samples.keys()):
        out += [f"{SAMPLES}/{p}: {why}" for why in validate_strictly(files[p], samples[p])]
    return out


def differences(directory: Path = SCHEMA_DIR) -> list[str]:
    """What differs between the models and the committed files; empty when in step."""
    now, files = generate(), committed(directory)
    out = [f"{p}: no committed schema (run `skillcert schemas --write`)" for p in sorted(now.keys() - files.keys())]
    out += [f"{p}: committed but no model publishes it any more" for p in sorted(files.keys() - now.keys())]
    out += [
        f"{p}: the model changed; the committed schema did not (run `skillcert schemas --write`)"
        for p in sorted(now.keys() & files.keys())
        if now[p] != files[p]
    ]
    return out + asyncapi_problems(directory)


class BreakingChange(ValueError):
    pass


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema; returns the paths changed. Refuses, writing nothing, when a change
    would break subscribers of an existing type version."""
    now, files = generate(), committed(directory)
    problems = [f"{p}: {b}" for p in sorted(now.keys() & files.keys()) for b in breaking_changes(files[p], now[p])]
    if problems:
        raise BreakingChange(
            "incompatible with the published version (give the event a new version in"
            " infra.envelope.VERSIONS and upcast its stored events):\n  " + "\n  ".join(problems)
        )
    changed = []
    for p, schema in now.items():
        if files.get(p) != schema:
            target = directory / p
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(dumps(schema))
            changed.append(p)
    for p in sorted(files.keys() - now.keys()):  # a type no longer emitted, or a version replaced
        (directory / p).unlink()
        changed.append(f"{p} (removed: no event is published with it any more)")
    if asyncapi_problems(directory):
        from infra.bus.asyncapi import document

        (directory / ASYNCAPI).write_text(dumps(document()))
        changed.append(ASYNCAPI)
    return changed


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Ways a subscriber written against `old` could fail on messages valid under `new`.

    Compatible: a new field (subscribers ignore unknown ones), a field that may no longer
    be null, a new enum value (subscribers must tolerate them), narrower constraints.
    Breaking: a field removed or no longer always present, a changed type or constant,
    an enum value removed, a value that may now be null.
    """
    problems: list[str] = []

    def deref(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = root["$defs"][node["$ref"].rpartition("/")[2]]
        return node

    def alternatives(node: dict[str, Any], root: dict[str, Any]) -> list[dict[str, Any]]:
        node = deref(node, root)
        if "anyOf" in node or "oneOf" in node:
            return [a for alt in node.get("anyOf", []) + node.get("oneOf", []) for a in alternatives(alt, root)]
        return [node]

    def types(node: dict[str, Any], root: dict[str, Any]) -> set[str]:
        out: set[str] = set()
        for alt in alternatives(node, root):
            if "const" in alt:
                out.add(_json_type(alt["const"]))
            elif "enum" in alt:
                out |= {_json_type(v) for v in alt["enum"]}
            elif "type" in alt:
                out |= set(alt["type"]) if isinstance(alt["type"], list) else {alt["type"]}
            elif "properties" in alt:
                out.add("object")
            else:
                out.add("any")
        return out

    def merged(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
        """Properties, required names, array items and map values over a node's alternatives."""
        out: dict[str, Any] = {"properties": {}, "required": set(), "items": None, "values": None}
        for alt in alternatives(node, root):
            out["properties"].update(alt.get("properties", {}))
            out["required"] |= set(alt.get("required", []))
            out["items"] = alt.get("items", out["items"])
            if isinstance(alt.get("additionalProperties"), dict):
                out["values"] = alt["additionalProperties"]
        return out

    def check(o: dict[str, Any], n: dict[str, Any], path: str, depth: int) -> None:
        if depth > 20:
            return
        ot, nt = types(o, old), types(n, new)
        if "any" not in ot:
            extra = {t for t in nt - ot if not (t == "integer" and "number" in ot)}
            if extra:
                problems.append(f"{path}: may now be {', '.join(sorted(extra))}")
        oc = [a["const"] for a in alternatives(o, old) if "const" in a]
        nc = [a["const"] for a in alternatives(n, new) if "const" in a]
        if oc and oc != nc:
            problems.append(f"{path}: constant {oc} became {nc or 'unconstrained'}")
        oe = {v for a in alternatives(o, old) for v in a.get("enum", [])}
        ne = {v for a in alternatives(n, new) for v in a.get("enum", [])}
        if oe and ne and (gone := oe - ne):
            problems.append(f"{path}: values removed: {sorted(map(str, gone))}")
        om, nm = merged(o, old), merged(n, new)
        for name in sorted(om["required"] - nm["required"]):
            problems.append(f"{path}.{name}: no longer always present")
        for name, sub in om["properties"].items():
            if name in nm["properties"]:
                check(sub, nm["properties"][name], f"{path}.{name}", depth + 1)
        for key, mark in (("items", "[]"), ("values", "{}")):
            if om[key] is not None and nm[key] is not None:
                check(om[key], nm[key], f"{path}{mark}", depth + 1)

    check(old, new, "$", 0)
    return problems


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if v is None:
        return "null"
    if isinstance(v, str):
        return "string"
    return "object" if isinstance(v, dict) else "array"
