"""The bus and the public API as an outsider reads them, with code of their own and no key.

A downstream team holds every topic; anyone holds the public catalogue and verification pages. They
know (or guess) a holder's ID number, or have the masked form and want the rest. This test is that
outsider: after a lifecycle with personal data in every corner (holders, candidates, a corrected ID
number, a plan's contact, a destruction's witness, a candidate acting with a token named after
herself), it reads every key, header and value of every topic and the public pages, then
- tries the unkeyed ways an id could have been made from an ID number (uuid5 under the standard
  namespaces, SHA-1, SHA-256 and MD5 of strings holding the number with the plan, type and other
  visible parts), and finds none of them anywhere;
- finds no ID number and no candidate's phone number anywhere, and each known name only in a field
  the published schemas declare as personal identity on that topic (and the plan's contact only
  where it is declared, on the restricted registrations topic).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from domain.institution import Filing, institution_id
from domain.model import Role
from infra.api import create_app
from infra.bus.envelope import topic_names
from infra.bus.schemas import SCHEMA_DIR
from tests.api import bearer
from tests.builders import plan_details, staff_of, working_years_form
from tests.bus import Bus, eventually, expected, position, read_topic, world_with_personal_data
from tests.lifecycle import staff

NAMESPACES = [uuid.NAMESPACE_URL, uuid.NAMESPACE_DNS, uuid.NAMESPACE_OID, uuid.NAMESPACE_X500]
ID_TYPE = "居民身份证"
WITNESS = "张伟伟"
TOKEN_NAME = "欧阳建国"
PLAN_PHONE = "13912345678"


@pytest.fixture
def bus(database_url: str, schema: str, bootstrap: str, tmp_path: Any) -> Iterator[Bus]:
    b = Bus(database_url, schema, bootstrap, tmp_path)
    yield b
    b.stop_all()


def guesses(number: str, visible: list[str]) -> set[str]:
    """What an outsider would compute from a number and the ids and words they can see."""
    texts = {number, f"{ID_TYPE}:{number}", f"registration:{number}", f"skillcert:{number}"}
    for v in visible:
        texts |= {f"{v}:{number}", f"{v}:{ID_TYPE}:{number}", f"skillcert:registration:{v}:{ID_TYPE}:{number}",
                  f"skillcert:registration:{v}:{number}", f"{number}:{v}", f"{v}{number}"}  # fmt: skip
    out = set()
    for text in texts:
        data = text.encode()
        out |= {str(uuid.uuid5(ns, text)) for ns in NAMESPACES}
        out |= {hashlib.sha1(data).hexdigest(), hashlib.sha256(data).hexdigest(), hashlib.md5(data).hexdigest()}
    return out


def declared(kind: str) -> dict[str, set[str]]:
    """Per topic, the field names the committed schemas mark with this class of personal data."""
    found: dict[str, set[str]] = {}

    def walk(node: Any, topic: str) -> None:
        if isinstance(node, dict):
            for name, prop in (node.get("properties") or {}).items():
                if isinstance(prop, dict) and prop.get("x-personal") == kind:
                    found.setdefault(topic, set()).add(name)
            for v in node.values():
                walk(v, topic)
        elif isinstance(node, list):
            for v in node:
                walk(v, topic)

    for path in SCHEMA_DIR.glob("*/*.json"):
        walk(json.loads(path.read_text()), path.parent.name)
    return found


def strings_with_keys(node: Any, key: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, list):
        for v in node:
            yield from strings_with_keys(v, key)
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from strings_with_keys(v, k)


def test_an_outsider_with_every_topic_and_the_public_pages_recovers_no_id_number(world, bus, database_url,
                                                                                  schema) -> None:  # fmt: skip
    numbers = world_with_personal_data(world, 6)
    regs = world.registrations
    iid = institution_id(Filing(city_code="03", station_serial="015"))  # the lifecycle's institution
    # A plan whose contact is a mobile phone; a destruction witnessed by a named person.
    details = plan_details("2688", contact_name="王联系", contact_phone=PLAN_PHONE, registration_deadline=date(2099, 1, 1),
                           evaluation_start=date(2099, 2, 1), evaluation_end=date(2099, 2, 1))  # fmt: skip
    pid, code = regs.publish_plan(staff_of(iid), iid, details)
    world.certificates.receive_forms(staff(iid), iid, 900_001, 900_010, "SH-2026-099")
    world.certificates.spoil_form(staff(iid), iid, 900_001, "卡纸")
    world.certificates.destroy_forms(staff(iid), iid, [900_001], WITNESS)
    # A candidate acts with a token named after herself.
    form = working_years_form(77, name=TOKEN_NAME)
    numbers.append(form.id_number)
    token = bearer(database_url, schema, Role.CANDIDATE, TOKEN_NAME, id_number=form.id_number)
    with TestClient(create_app(database_url, schema)) as http:
        r = http.post("/registrations", headers=token,
                      json={"registration_code": code, "form": json.loads(form.model_dump_json())})  # fmt: skip
        assert r.status_code == 201, r.text

    bus.relay()
    eventually(lambda: position(regs, bus.schema) == regs.recorder.max_notification_id(), timeout=60)
    messages = [m for t in topic_names(bus.prefix) for m in read_topic(bus.bootstrap, t)]
    assert len(messages) == len(expected(regs))

    # The public pages: the catalogue, and the verification of every certificate.
    with TestClient(create_app(database_url, schema)) as http:
        from projections import PROJECTIONS
        from projections.store import apply_message, connect

        with connect(database_url, schema) as conn:  # the read models behind the public pages
            for m in messages:
                value = json.loads(m.value())
                for p in PROJECTIONS:
                    if value["source"].rpartition("/")[2] in p.topics:
                        apply_message(conn, p, m.topic(), m.partition(), m.offset(), value)
        pages = [http.get("/plans?limit=500").content]
        plan_ids = [p["plan_id"] for p in http.get("/plans?limit=500").json()["items"]]
        pages += [http.get(f"/plans/{p}").content for p in plan_ids]
        certs = [
            json.loads(m.value())
            for m in messages
            if json.loads(m.value())["type"] == "cn.skillcert.certificate.issued.v1"
        ]
        pages += [http.get(f"/verify/{c['data']['number']}").content for c in certs]

    corpus = b"\n".join([m.value() for m in messages] + [m.key() or b"" for m in messages] + pages)
    headers = {h for m in messages for h in (m.headers() or [])}
    assert headers == {("content-type", b"application/cloudevents+json")}
    text = corpus.decode()

    # 1. Nothing derived from an ID number without a key.
    visible = set(plan_ids) | {str(iid)} | {json.loads(m.value())["aggregateid"] for m in messages}
    for number in numbers:
        hits = [g for g in guesses(number, sorted(visible)) if g in text]
        assert not hits, f"{number}: {hits[:3]}"

    # 2. No ID number, no candidate's phone; names only where declared; the plan's contact only on the
    #    registrations topic, where it is declared.
    phones = {working_years_form(i).phone for i in range(1, 80)} - {None}
    for secret in [*numbers, *phones]:
        assert secret not in text, secret
    identity, business = declared("identity"), declared("business_contact")
    names = {working_years_form(i).name for i in range(1, 7)} | {WITNESS, TOKEN_NAME, "考生改名"}
    for m in messages:
        value = json.loads(m.value())
        topic = value["source"].rpartition("/")[2]
        for key, s in strings_with_keys(value):
            if s in names:
                assert key in identity.get(topic, set()), (topic, value["type"], key, s)
            if PLAN_PHONE in s or s == "王联系":
                assert key in business.get(topic, set()) and topic == "registrations", (topic, key)
        assert TOKEN_NAME not in (value["actorid"] + json.dumps(value["data"]["actor"], ensure_ascii=False))
    assert WITNESS not in text  # the stock topic carries no personal data
    assert PLAN_PHONE in text  # the institution's contact is published where the contract says
