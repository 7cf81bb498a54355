"""An institution that faked or improperly issued certificates (004 第十条: 各评价机构及其相应的工作人员，在证书核发过程中
弄虚作假，徇私舞弊，滥发证书的，除宣布其所发证书无效外，视情节轻重，暂停或取消评价业务): its certificates declared void,
its evaluation business suspended, reinstated or withdrawn, and what it can no longer do meanwhile, raced against the
steps that would otherwise slip past it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import date
from threading import Barrier, Event
from uuid import uuid4

import pytest

from domain.certificate import Certificate, certificate_id
from domain.errors import Conflict, Forbidden, InvalidInput
from domain.institution import Institution, Standing
from domain.model import Actor, Role
from domain.plan import EvaluationPlan
from tests.builders import candidate, plan_details, working_years_form
from tests.lifecycle import (
    CENTRE,
    HR,
    ISSUE_DAY,
    TICKETS_OPEN,
    approved_cohort,
    confirmed_exam,
    queryable_certificates,
    staff,
)
from tests.test_disqualification import _hours, _rooms
from tests.test_read_models import conn  # noqa: F401 (fixture)

FRAUD = "省鉴定中心督查：该机构伪造考试记录滥发证书（粤鉴督〔2026〕12号）"
SHENZHEN = Actor(id="sz-centre-he", role=Role.PROVINCIAL_CENTRE, jurisdiction="03")  # where the test institution is
GUANGZHOU = Actor(id="gz-centre-wu", role=Role.PROVINCIAL_CENTRE, jurisdiction="01")


def stored(w) -> int:
    return w.registrations.recorder.max_notification_id() or 0


def standing(w, iid) -> Standing:
    return w.registrations.get(Institution, iid, "institution").standing


def test_only_a_centre_for_the_institution_may_suspend_it_and_a_reason_is_required(world):
    iid, pid, rids = approved_cohort(world, 1)
    reg = world.registrations
    before = stored(world)
    for who in (staff(iid), candidate(1), HR, GUANGZHOU, Actor(id="auditor-x", role=Role.AUDITOR)):
        with pytest.raises(Forbidden):
            reg.suspend_institution(who, iid, FRAUD)
    with pytest.raises(InvalidInput, match="reasons"):
        reg.suspend_institution(CENTRE, iid, "  ")
    with pytest.raises(Conflict, match="not suspended"):
        reg.reinstate_institution(CENTRE, iid, "复查")
    assert stored(world) == before  # nothing refused was stored

    reg.suspend_institution(SHENZHEN, iid, FRAUD)  # the city's centre, for an institution filed in its city
    assert standing(world, iid) is Standing.SUSPENDED
    with pytest.raises(Conflict, match="already suspended"):
        reg.suspend_institution(CENTRE, iid, FRAUD)
    reg.reinstate_institution(CENTRE, iid, "整改验收合格")
    assert standing(world, iid) is Standing.ACTIVE
    reg.withdraw_institution(CENTRE, iid, FRAUD)
    assert standing(world, iid) is Standing.WITHDRAWN
    for act in (reg.reinstate_institution, reg.suspend_institution, reg.withdraw_institution):
        with pytest.raises(Conflict):
            act(CENTRE, iid, FRAUD)


def test_a_suspended_institution_publishes_no_plan_and_takes_no_registration_until_reinstated(world):
    iid, pid, rids = approved_cohort(world, 2, seats=10)
    reg = world.registrations
    code = reg.get(EvaluationPlan, pid, "plan").registration_code
    reg.suspend_institution(CENTRE, iid, FRAUD)
    before = stored(world)
    with pytest.raises(Conflict, match="suspended"):
        reg.publish_plan(staff(iid), iid, plan_details("2502"))
    # A registration is refused however it arrives: alone, and in a batch (a second worker's cached plan).
    with pytest.raises(Conflict, match="suspended"):
        reg.register(candidate(7), code, working_years_form(7))
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda i: _outcome(reg.register, candidate(i), code, working_years_form(i)),
                                 range(8, 12)))  # fmt: skip
    assert all(isinstance(o, Conflict) and "suspended" in o.message for o in outcomes), outcomes
    assert stored(world) == before
    reg.reinstate_institution(CENTRE, iid, "整改验收合格")
    assert reg.register(candidate(7), code, working_years_form(7))
    reg.publish_plan(staff(iid), iid, plan_details("2502"))


def _outcome(act, *args):
    try:
        return act(*args)
    except Exception as e:  # noqa: BLE001 - what the caller is told
        return e


def test_a_suspended_institution_schedules_no_exam_and_issues_no_ticket(world):
    iid, pid, rids = approved_cohort(world, 3)
    world.at(TICKETS_OPEN)
    exam = world.exams.schedule(staff(iid), pid, "A", date(2026, 4, 10), *_hours(), "考点", _rooms())
    world.registrations.suspend_institution(CENTRE, iid, FRAUD)
    before = stored(world)
    with pytest.raises(Conflict, match="suspended"):
        world.exams.schedule(staff(iid), pid, "B", date(2026, 4, 10), *_hours(), "考点", _rooms())
    with pytest.raises(Conflict, match="suspended"):
        world.exams.issue_tickets(staff(iid), exam)
    assert stored(world) == before
    world.registrations.reinstate_institution(CENTRE, iid, "整改验收合格")
    assert len(world.exams.issue_tickets(staff(iid), exam)) == 3


def test_a_withdrawn_institution_issues_no_certificate_paper_or_electronic(world):
    iid, pid, rids, exam = confirmed_exam(world, 4)
    world.at(ISSUE_DAY)
    [first] = world.certificates.issue(staff(iid), exam, [rids[0]])
    world.registrations.withdraw_institution(CENTRE, iid, FRAUD)
    before = stored(world)
    with pytest.raises(Conflict, match="withdrawn"):
        world.certificates.issue(staff(iid), exam)
    with pytest.raises(Conflict, match="withdrawn"):
        world.certificates.issue_cohort(staff(iid), [exam])
    from infra.services import ecert

    with pytest.raises(Conflict, match="withdrawn"):
        ecert.issue_electronic(world.certificates, staff(iid), certificate_id(first), "https://cert.example.cn")
    assert stored(world) == before
    # What it issued before stays valid until declared void.
    assert world.certificates.certificate(certificate_id(first)).printable


def test_the_centre_declares_certificates_void_all_or_none(world):
    iid, cids = queryable_certificates(world, 5, photos=False)
    certs = world.certificates
    before = stored(world)
    for who in (staff(iid), HR, GUANGZHOU, candidate(1)):
        with pytest.raises(Forbidden):
            certs.invalidate(who, iid, cids[:2], FRAUD)
    with pytest.raises(InvalidInput, match="reasons"):
        certs.invalidate(CENTRE, iid, cids[:2], " ")
    # Another institution's certificate, or none at all, in the list: nothing is revoked, each is named.
    stranger = certificate_id(uuid4())
    with pytest.raises(InvalidInput) as refused:
        certs.invalidate(CENTRE, iid, [cids[0], stranger], FRAUD)
    assert [m for _, m in refused.value.problems] == [f"{stranger} is not a certificate issued by " + _name(world, iid)]
    assert stored(world) == before

    done = certs.invalidate(SHENZHEN, iid, cids[:3], FRAUD)
    numbers = [certs.certificate(c).number for c in cids]
    assert done == {"revoked": numbers[:3], "void_already": []}
    for c in cids[:3]:
        cert: Certificate = certs.certificate(c)
        assert cert.revoked == world.clock.today and not cert.printable
    assert certs.certificate(cids[3]).printable
    # Again, with one more: the void ones are named, the new one revoked.
    assert certs.invalidate(CENTRE, iid, cids[2:4], FRAUD) == {"revoked": [numbers[3]], "void_already": [numbers[2]]}
    with pytest.raises(InvalidInput, match="revoked"):
        certs.report_data(staff(iid), [cids[0]])


def _name(w, iid) -> str:
    return w.registrations.get(Institution, iid, "institution").name


@pytest.mark.parametrize("round_", range(3))
def test_issuance_racing_a_suspension_either_comes_first_or_issues_nothing(world, round_):
    """Both at once, from threads: the certificates are all issued and stored before the suspension, or none is."""
    iid, pid, rids, exam = confirmed_exam(world, 6)
    world.at(ISSUE_DAY)
    start = Barrier(2)

    def issue():
        start.wait()
        return _outcome(world.certificates.issue, staff(iid), exam)

    def suspend():
        start.wait()
        return _outcome(world.registrations.suspend_institution, CENTRE, iid, FRAUD)

    with ThreadPoolExecutor(2) as pool:
        issuing, suspending = pool.submit(issue), pool.submit(suspend)
        issued, suspended = issuing.result(), suspending.result()
    assert suspended is None
    positions = _positions(world, iid, [certificate_id(r) for r in rids])
    if isinstance(issued, Conflict):
        assert "suspended" in issued.message and positions["certificates"] == []
    else:
        assert len(issued) == len(rids) and max(positions["certificates"]) < positions["suspended"]


def test_a_suspension_saved_while_certificates_are_being_numbered_waits_for_them(world, monkeypatch):
    """The worst interleaving, forced: issuance has found the institution active and is numbering when the
    suspension is asked for. The suspension waits for the issuance to be stored (the institution's lock), so no
    certificate is stored after it in the log; without the lock it would be saved in between."""
    iid, pid, rids, exam = confirmed_exam(world, 6)
    world.at(ISSUE_DAY)
    numbering, suspended = Event(), Event()
    number = world.certificates._number

    def slow_number(*args, **kwargs):
        numbering.set()
        suspended.wait(1.5)  # the suspension, given the time to be saved if nothing holds it back
        return number(*args, **kwargs)

    monkeypatch.setattr(world.certificates, "_number", slow_number)

    def suspend():
        numbering.wait(10)
        world.registrations.suspend_institution(CENTRE, iid, FRAUD)
        suspended.set()

    with ThreadPoolExecutor(1) as pool:
        suspending = pool.submit(suspend)
        issued = world.certificates.issue(staff(iid), exam)
        suspending.result()
    positions = _positions(world, iid, [certificate_id(r) for r in rids])
    assert len(issued) == len(rids) and positions["suspended"] is not None
    assert max(positions["certificates"]) < positions["suspended"]


def _positions(world, iid, cids) -> dict:
    """Where in the log the suspension and the certificates' issuance were stored."""
    table = f'"{world.registrations.schema}"."{world.registrations.recorder.events_table_name}"'
    with world.registrations.recorder.datastore.cursor() as cur:
        cur.execute(f"SELECT notification_id FROM {table} WHERE originator_id = %s AND topic LIKE %s",
                    (iid, "%Institution.Suspended"))  # fmt: skip
        suspended = [r["notification_id"] if isinstance(r, dict) else r[0] for r in cur.fetchall()]
        cur.execute(f"SELECT notification_id FROM {table} WHERE originator_id = ANY(%s) AND originator_version = 1",
                    (cids,))  # fmt: skip
        issued = [r["notification_id"] if isinstance(r, dict) else r[0] for r in cur.fetchall()]
    return {"suspended": suspended[0] if suspended else None, "certificates": sorted(issued)}


def test_over_http_the_catalogue_shows_a_suspension_and_a_certificate_declared_void_verifies_as_revoked(
    world,
    conn,  # noqa: F811
    database_url,
    schema,
):
    from fastapi.testclient import TestClient

    from infra.api import create_app
    from tests.api import as_json, bearer
    from tests.test_read_models import KEY, apply_live, bus_messages

    iid, cids = queryable_certificates(world, 3, photos=False)
    far = {"registration_deadline": date(2030, 1, 1), "evaluation_start": date(2030, 2, 1),
           "evaluation_end": date(2030, 2, 1)}  # fmt: skip
    pid, code = world.registrations.publish_plan(staff(iid), iid, plan_details("2602", **far))
    number = world.certificates.certificate(cids[0]).number

    def caught_up() -> None:
        apply_live(conn, bus_messages(world.registrations))
        conn.commit()

    caught_up()
    centre = bearer(database_url, schema, Role.PROVINCIAL_CENTRE, "centre-wang")
    institution_staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex())) as http:
        assert http.get(f"/plans/{pid}").json()["registration_open"] is True
        refused = http.post(f"/institutions/{iid}/suspension", json={"reasons": FRAUD}, headers=institution_staff)
        assert refused.status_code == 403
        assert http.post(f"/institutions/{iid}/suspension", json={"reasons": FRAUD}, headers=centre).status_code == 204
        again = http.post(f"/institutions/{iid}/suspension", json={"reasons": FRAUD}, headers=centre)
        assert again.status_code == 409 and "already suspended" in again.json()["detail"]
        registering = http.post("/registrations", headers=institution_staff,
                                json={"registration_code": code, "form": as_json(working_years_form(9))})  # fmt: skip
        assert registering.status_code == 409 and "suspended" in registering.json()["detail"], registering.text
        caught_up()
        plan = http.get(f"/plans/{pid}").json()
        assert (plan["registration_open"], plan["institution_standing"]) == (False, "suspended")
        assert [p["plan_id"] for p in http.get("/plans?registration_open=true").json()["items"]] == []
        listed = http.get("/institutions?standing=suspended").json()
        assert [(i["institution_id"], i["standing_since"]) for i in listed["items"]] == [
            (str(iid), date.today().isoformat())]  # fmt: skip

        voiding = http.post(f"/institutions/{iid}/invalidation", headers=centre,
                            json={"certificates": [number, "S000044012015262000001"], "reasons": FRAUD})  # fmt: skip
        assert voiding.status_code == 404  # a number not in the registry: nothing revoked
        voiding = http.post(f"/institutions/{iid}/invalidation", headers=centre,
                            json={"certificates": [number], "reasons": FRAUD})  # fmt: skip
        assert voiding.status_code == 200 and voiding.json() == {"revoked": [number], "void_already": []}
        caught_up()
        verified = http.get(f"/verify/{number}", headers={"accept": "application/json"}).json()
        assert (verified["status"], verified["void_because"], verified["holder_name"]) == ("revoked", "revoked", None)

        assert (
            http.post(f"/institutions/{iid}/reinstatement", json={"reasons": "整改合格"}, headers=centre).status_code
            == 204
        )
        caught_up()
        assert http.get(f"/plans/{pid}").json()["registration_open"] is True
        registering = http.post("/registrations", headers=institution_staff,
                                json={"registration_code": code, "form": as_json(working_years_form(9))})  # fmt: skip
        assert registering.status_code == 201, registering.text


def test_the_catalogue_shows_the_standing_whichever_partition_is_read_first(world, conn):  # noqa: F811
    """A plan published before the suspension, its message read after it (plans and institutions are on different
    partitions): its registration shows closed all the same; a redelivered older change does not undo a newer."""
    from projections.catalogue import Catalogue, get_plan
    from tests.test_read_models import bus_messages

    iid, pid, rids = approved_cohort(world, 1)
    world.registrations.suspend_institution(CENTRE, iid, FRAUD)
    messages = bus_messages(world.registrations)
    published = [m for m in messages if m["type"].endswith("evaluation_plan.published.v1")]
    standing = [m for m in messages if m["type"].startswith("cn.skillcert.institution.")]
    catalogue = Catalogue()
    with conn.cursor() as cur:
        for m in [*standing, *published, *standing[-1:]]:  # the suspension first, then the plan, then again
            catalogue.apply(cur, m)
    conn.commit()
    assert get_plan(conn, str(pid), date(2026, 3, 2))["institution_standing"] == "suspended"
    assert get_plan(conn, str(pid), date(2026, 3, 2))["registration_open"] is False
    world.registrations.reinstate_institution(CENTRE, iid, "整改合格")
    later = [m for m in bus_messages(world.registrations) if m["type"].endswith("institution.reinstated.v1")]
    with conn.cursor() as cur:
        for m in [*later, *standing[-1:]]:  # the reinstatement, then the suspension delivered again
            catalogue.apply(cur, m)
    conn.commit()
    assert get_plan(conn, str(pid), date(2026, 3, 2))["registration_open"] is True
