"""Personal data on the bus: what each topic carries and how it is reduced there (PIPL).

The event store keeps the full record; the bus carries what subscribers need:
- No topic carries an ID number. Each becomes {"masked": "4403**********123X", "ref": ...}.
  "ref" is HMAC-SHA256 of the number under this installation's key, so the same person has
  the same ref across events and topics, a system that already holds a number and is given
  the key can match it, and nobody else can recover the number (an unkeyed hash of an ID
  number is guessed in hours: the birth date and area code leave few possibilities).
- A candidate's or holder's phone number is not published at all.
- Everything else marked personal (domain.personal) is published as is, and only on the
  topics whose policy below carries its class; on other topics the field is left out. A test
  holds each topic's schemas to its policy.

Both the published schemas and the published data are derived from the "x-personal"
marks in the domain models' JSON Schemas, so they cannot disagree.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cache
from typing import Any

from domain.personal import NOT_PERSONAL, Personal, mask_id_number
from infra.store.secrets import installation_secret


@dataclass(frozen=True)
class TopicPolicy:
    audience: str  # "restricted": named systems with broker ACLs; "wide": any authorised subscriber
    carries: frozenset[Personal]
    why: str


P = Personal
POLICY: dict[str, TopicPolicy] = {
    "registrations": TopicPolicy(
        "restricted",
        frozenset({P.IDENTITY, P.ID_NUMBER, P.BACKGROUND, P.BUSINESS_CONTACT}),
        "skillcert's read models and the provincial supervision system review who applied and on what basis; "
        "plans carry the contact the institution publishes with them (001)",
    ),
    "exams": TopicPolicy(
        "restricted",
        frozenset({P.IDENTITY, P.ID_NUMBER, P.RESULTS}),
        "score books and result reports name each candidate and their scores",
    ),
    "certificates": TopicPolicy(
        "wide",
        frozenset({P.IDENTITY, P.ID_NUMBER}),
        "a certificate names its holder; the national query platform, subsidy and HR systems match on it",
    ),
    "stock": TopicPolicy("wide", frozenset(), "blank certificate forms carry no personal data"),
    "audit": TopicPolicy("wide", frozenset(), "checkpoints of the hash chain: positions and hashes only"),
}

PSEUDONYMISED = "pseudonymise"
OMITTED = "omit"


def action(kind: Personal, carries: frozenset[Personal]) -> str | None:
    """What happens to a field of this class on a topic carrying `carries`: published as it is (None),
    pseudonymised (ID numbers), or left out (a class the topic does not carry; phone numbers always)."""
    if kind is P.NONE:
        return None
    if kind not in carries or kind is P.CONTACT:
        return OMITTED
    return PSEUDONYMISED if kind is P.ID_NUMBER else None


PSEUDONYM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An ID number as published: masked for people, keyed hash for matching.",
    "properties": {
        "masked": {"type": "string", "description": "first and last four characters (two if short)"},
        "ref": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "HMAC-SHA256 under the installation key"},
    },
    "required": ["masked", "ref"],
}

Plan = dict[str, Any]  # field -> action, or a nested plan for an object, array or map value
EVERY_VALUE = "*"  # not a field name: JSON Schema property names here are Python identifiers


def plan_for(schema: dict[str, Any], carries: frozenset[Personal]) -> Plan:
    """What to do to each personal field of data valid under `schema` (a pydantic JSON Schema) on a
    topic carrying `carries`."""
    return _plan(schema, schema.get("$defs", {}), set(), carries) or {}


def _plan(node: dict[str, Any], defs: dict[str, Any], seen: set[str], carries: frozenset[Personal]) -> Plan | None:
    if "$ref" in node:
        name = node["$ref"].rpartition("/")[2]
        if name in seen:
            return None
        return _plan(defs[name], defs, seen | {name}, carries)
    plan: Plan = {}
    for alt in node.get("anyOf", []) + node.get("oneOf", []) + node.get("allOf", []):
        plan.update(_plan(alt, defs, seen, carries) or {})
    if isinstance(node.get("items"), dict):
        plan.update(_plan(node["items"], defs, seen, carries) or {})
    if isinstance(node.get("additionalProperties"), dict) and (
        values := _plan(node["additionalProperties"], defs, seen, carries)
    ):
        plan[EVERY_VALUE] = values
    for name, prop in node.get("properties", {}).items():
        mark = prop.get("x-personal")
        if mark is not None and (todo := action(Personal(mark), carries)) is not None:
            plan[name] = todo
        elif sub := _plan(prop, defs, seen, carries):
            plan[name] = sub
    return plan


def redact(plan: Plan, value: Any, key: bytes) -> Any:
    """A copy of `value` with the plan applied; lists and maps apply it to every element."""
    if isinstance(value, list):
        return [redact(plan, v, key) for v in value]
    if not isinstance(value, dict):
        return value
    if EVERY_VALUE in plan:  # a map (dict[Subject, X]): the plan is for its values
        value = {k: redact(plan[EVERY_VALUE], v, key) for k, v in value.items()}
    out = dict(value)
    for name, action in plan.items():
        if name not in out:
            continue
        v = out[name]
        if action == OMITTED:
            del out[name]
        elif v is None:
            continue
        elif action == PSEUDONYMISED:
            out[name] = pseudonym(v, key)
        else:
            out[name] = redact(action, v, key)
    return out


def pseudonym(number: str, key: bytes) -> dict[str, str]:
    return {"masked": mask_id_number(number), "ref": ref(number, key)}


def ref(number: str, key: bytes) -> str:
    h = _keyed(key).copy()  # copying a keyed HMAC is cheaper than keying a new one per number
    h.update(number.strip().upper().encode())
    return h.hexdigest()


@cache
def _keyed(key: bytes) -> hmac.HMAC:
    return hmac.new(key, digestmod=hashlib.sha256)


def redact_schema(schema: dict[str, Any], carries: frozenset[Personal]) -> dict[str, Any]:
    """The schema of what `redact` publishes on a topic carrying `carries`; also drops
    additionalProperties: false, since subscribers must tolerate fields added later, and marks every
    string field named in domain.personal.NOT_PERSONAL as carrying none."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: walk(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
        props = out.get("properties")
        if isinstance(props, dict):
            for name, prop in list(props.items()):
                todo = action(Personal(prop["x-personal"]), carries) if "x-personal" in prop else None
                if "x-personal" not in prop and name in NOT_PERSONAL:
                    props[name] = {**prop, "x-personal": Personal.NONE.value}
                if todo == OMITTED:
                    del props[name]
                    if name in out.get("required", []):
                        out["required"] = [r for r in out["required"] if r != name]
                elif todo == PSEUDONYMISED:
                    nullable = any(a.get("type") == "null" for a in prop.get("anyOf", []))
                    ref_node: dict[str, Any] = {"$ref": "#/$defs/PublishedIdNumber"}
                    props[name] = {
                        **({"anyOf": [ref_node, {"type": "null"}]} if nullable else ref_node),
                        "x-personal": prop["x-personal"],
                    }
        return out

    published = walk(schema)
    published.setdefault("$defs", {})["PublishedIdNumber"] = PSEUDONYM_SCHEMA
    return published


def personal_data_in(schema: dict[str, Any]) -> set[Personal]:
    """Every kind of personal data a (published) schema can carry."""
    found: set[Personal] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "x-personal" in node and node["x-personal"] != Personal.NONE.value:
                found.add(Personal(node["x-personal"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return found


def installation_key(database_url: str, schema: str, configured: str | None = None) -> bytes:
    """The pseudonym key: SKILLCERT_PSEUDONYM_KEY when set (hex), else one generated on first
    use and kept in the database, so every process of one installation agrees."""
    return installation_secret(database_url, schema, "pseudonym_key", configured)
