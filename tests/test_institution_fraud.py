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
from infra.services.base import shanghai_today
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
    from infra.services.credentials import Credentials

    world.certificates.report_data(staff(iid), [certificate_id(first)])  # the centre's process goes on
    world.certificates.accept_data(CENTRE, [certificate_id(first)])
    world.certificates.make_queryable(CENTRE, [certificate_id(first)])
    with pytest.raises(Conflict, match="withdrawn"):  # nor a signed credential, another electronic form of it
        Credentials(world.certificates, "https://cert.example.cn").issue(certificate_id(first))
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
    assert refused.value.problems == [
        ("certificates.1", f"{stranger} is not a certificate issued by " + _name(world, iid))
    ]
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
    from domain.errors import StandingChanging

    if isinstance(issued, (Conflict, StandingChanging)):  # refused as suspended, or as the suspension was waiting
        assert ("suspended" in issued.message or "changing" in issued.message) and positions["certificates"] == []
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
        # The candidates' own records say why nothing more happens there.
        rid = world.certificates.certificate(cids[1]).registration_id
        record = http.get(f"/registrations/{rid}", headers=institution_staff).json()
        assert record["institution_standing"] == "suspended", record
        assert [p["plan_id"] for p in http.get("/plans?registration_open=true").json()["items"]] == []
        listed = http.get("/institutions?standing=suspended").json()
        assert [(i["institution_id"], i["standing_since"]) for i in listed["items"]] == [
            (str(iid), shanghai_today().isoformat())]  # fmt: skip
        # Its deadlines run on (the work is owed), and the centre reading what is overdue sees why they may be.
        [owed] = [r for r in http.get("/deadlines/overdue", headers=centre).json()["items"]
                  if r["institution_id"] == str(iid)]  # fmt: skip
        assert owed["open"] > 0 and (owed["institution_standing"], owed["standing_since"]) == (
            "suspended", shanghai_today().isoformat()), owed  # fmt: skip

        unknown = ["S000044012015262000001", "S000044012015262000002"]
        voiding = http.post(f"/institutions/{iid}/invalidation", headers=centre,
                            json={"certificates": [number, *unknown], "reasons": FRAUD})  # fmt: skip
        assert voiding.status_code == 422  # numbers not in the registry: each named, nothing revoked
        assert [e["field"] for e in voiding.json()["errors"]] == ["certificates.1", "certificates.2"], voiding.text
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
        assert http.get(f"/registrations/{rid}", headers=institution_staff).json()["institution_standing"] == "active"
        [owed] = http.get("/deadlines/overdue", headers=institution_staff).json()["items"]
        assert (owed["institution_standing"], owed["standing_since"]) == ("active", shanghai_today().isoformat()), owed
        registering = http.post("/registrations", headers=institution_staff,
                                json={"registration_code": code, "form": as_json(working_years_form(9))})  # fmt: skip
        assert registering.status_code == 201, registering.text


def test_the_catalogue_shows_the_standing_whichever_worker_commits_first(world, conn, database_url, schema):  # noqa: F811
    """Two workers on different partitions at once: one applies the suspension and has not committed when the
    other inserts a plan of the institution and commits. The plan shows closed all the same (the standing is read
    from the institution's row when asked, not copied onto its plans); a redelivered older change undoes no
    newer one, on the workers' path (a pipeline) too."""
    from projections.catalogue import Catalogue, get_plan
    from projections.store import connect
    from tests.test_read_models import bus_messages

    iid, pid, rids = approved_cohort(world, 1)
    world.registrations.suspend_institution(CENTRE, iid, FRAUD)
    messages = bus_messages(world.registrations)
    registered = [m for m in messages if m["type"].endswith("institution.registered.v1")]
    suspended = [m for m in messages if m["type"].endswith("institution.suspended.v1")]
    published = [m for m in messages if m["type"].endswith("evaluation_plan.published.v1")]
    catalogue = Catalogue()
    with conn.cursor() as cur:
        catalogue.apply(cur, registered[0])
    conn.commit()
    other = connect(database_url, schema)
    try:
        with conn.cursor() as a, other.cursor() as b:
            catalogue.apply(a, suspended[0])  # worker A, not committed yet
            catalogue.apply(b, published[0])  # worker B, committed first
            other.commit()
        conn.commit()
    finally:
        other.close()
    day = date(2026, 3, 2)
    assert (get_plan(conn, str(pid), day)["institution_standing"], get_plan(conn, str(pid), day)["registration_open"]
            ) == ("suspended", False)  # fmt: skip
    world.registrations.reinstate_institution(CENTRE, iid, "整改合格")
    reinstated = [m for m in bus_messages(world.registrations) if m["type"].endswith("institution.reinstated.v1")]
    with conn.cursor() as cur, conn.pipeline():
        for m in [*reinstated, *suspended]:  # the reinstatement, then the suspension delivered again
            catalogue.apply(cur, m)
    conn.commit()
    assert get_plan(conn, str(pid), day)["registration_open"] is True


def test_the_public_catalogue_answers_from_the_tables_before_the_upgrade_while_a_worker_rebuilds(world, conn):  # noqa: F811
    """After an upgrade the API reads version 1's tables until the worker has rebuilt version 2 and swapped it in:
    the plans and the institutions answer (every institution active), rather than fail on the columns they lack."""
    from projections.catalogue import Catalogue, get_plan, institutions, search_plans
    from tests.test_read_models import bus_messages

    iid, pid, rids = approved_cohort(world, 1)
    catalogue = Catalogue()
    with conn.cursor() as cur:
        for m in bus_messages(world.registrations):
            if m["type"].endswith(("institution.registered.v1", "evaluation_plan.published.v1")):
                catalogue.apply(cur, m)
        cur.execute("ALTER TABLE catalogue_institutions DROP COLUMN standing, DROP COLUMN standing_since,"
                    " DROP COLUMN version")  # fmt: skip
    conn.commit()
    day = date(2026, 3, 2)
    assert get_plan(conn, str(pid), day)["registration_open"] is True
    assert [p["plan_id"] for p in search_plans(conn, today=day, open_only=True)[1]] == [pid]
    [listed] = institutions(conn, standing=None, city_code=None, limit=10, offset=0)[1]
    assert (listed["institution_id"], listed["standing"], listed["standing_since"]) == (iid, "active", None)
    from projections.candidates import get_registration, registrations_of

    get_registration(conn, str(rids[0]))  # a candidate's own record, which reads the standing too, answers
    registrations_of(conn, "no-such-ref")


def test_while_suspended_no_registration_is_approved_or_resubmitted_no_sitting_begins_and_nothing_is_handed_out(
    world,
):
    from domain.certificate import Delivery
    from domain.registration import AttachmentKind
    from infra.services.registrations import Decision
    from tests.builders import L2_CONDITION, L2_EVIDENCE, attachment
    from tests.lifecycle import collect

    iid, cids = queryable_certificates(world, 4)
    world.at(date(2026, 7, 2))
    world.certificates.receive_forms(staff(iid), iid, 1, 20, "SH-2026-0702")
    world.certificates.print(staff(iid), cids[0])
    reg = world.registrations
    world.at(date(2026, 3, 2))  # a second plan: one registration returned, one waiting, both paid
    pid, code = reg.publish_plan(staff(iid), iid, plan_details("2502", seats=5))
    returned, waiting = (reg.register(candidate(i), code, working_years_form(i)) for i in (21, 22))
    reg.review(staff(iid), returned, Decision.RETURNED, reasons="缺少工作年限证明")
    reg.suspend_institution(CENTRE, iid, FRAUD)
    before = stored(world)
    with pytest.raises(Conflict, match="suspended"):
        reg.resubmit(candidate(21), returned, working_years_form(21))
    with pytest.raises(Conflict, match="suspended"):
        reg.review(staff(iid), waiting, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    certs = world.certificates
    with pytest.raises(Conflict, match="suspended"):
        certs.print(staff(iid), cids[1])
    with pytest.raises(Conflict, match="suspended"):
        certs.print_many(staff(iid), [cids[1], cids[2]])
    with pytest.raises(Conflict, match="suspended"):
        collect(certs, iid, cids[0])
    with pytest.raises(Conflict, match="suspended"):
        certs.hand_over(staff(iid), cids[0], Delivery.MAIL, attachment(AttachmentKind.CERTIFICATE_APPLICATION),
                        "SF0000000001")  # fmt: skip
    assert stored(world) == before
    # A return or a rejection frees the candidate; the centre's own steps go on.
    reg.review(staff(iid), waiting, Decision.REJECTED, reasons="机构暂停评价业务，请另行报名")
    reg.reinstate_institution(CENTRE, iid, "整改合格")
    collect(certs, iid, cids[0])


def test_no_sitting_begins_while_suspended(world):
    iid, pid, rids = approved_cohort(world, 2)
    from tests.lifecycle import EXAM_DAY

    world.at(TICKETS_OPEN)
    exam = world.exams.schedule(staff(iid), pid, "A", EXAM_DAY, *_hours(), "考点", _rooms())
    world.exams.issue_tickets(staff(iid), exam)
    world.at(EXAM_DAY)
    world.exams.check_in(candidate(1), rids[0])  # begun before: it goes on
    world.registrations.suspend_institution(CENTRE, iid, FRAUD)
    with pytest.raises(Conflict, match="suspended"):
        world.exams.check_in(candidate(2), rids[1])
    world.exams.check_identity(staff(iid, "proctor-liu"), rids[0])


def test_an_electronic_certificate_signed_as_the_suspension_is_saved_is_not_recorded_after_it(world, monkeypatch):
    """The signing takes a while and holds no lock: a suspension saved meanwhile is seen as the certificate is to be
    recorded, under the institution's lock, and the certificate refused (without that, the log had the suspension,
    then the certificate)."""
    from domain.errors import NotEvaluating
    from infra.services import ecert

    iid, cids = queryable_certificates(world, 1)
    signing, suspended = Event(), Event()
    sign = ecert.sign

    def slow_sign(*args, **kwargs):
        signing.set()
        suspended.wait(10)
        return sign(*args, **kwargs)

    monkeypatch.setattr(ecert, "sign", slow_sign)

    def suspend():
        signing.wait(10)
        world.registrations.suspend_institution(CENTRE, iid, FRAUD)
        suspended.set()

    with ThreadPoolExecutor(1) as pool:
        suspending = pool.submit(suspend)
        with pytest.raises(NotEvaluating, match="suspended"):
            ecert.issue_electronic(world.certificates, staff(iid), cids[0], "https://cert.example.cn")
        suspending.result()
    table = f'"{world.registrations.schema}"."{world.registrations.recorder.events_table_name}"'
    with world.registrations.recorder.datastore.cursor() as cur:
        cur.execute(f"SELECT topic FROM {table} WHERE originator_id = ANY(%s) ORDER BY notification_id DESC LIMIT 1",
                    ([iid, cids[0]],))  # fmt: skip
        assert cur.fetchone()["topic"].endswith("Institution.Suspended")
    assert world.certificates.certificate(cids[0]).electronic is None


def test_twelve_electronic_certificates_signed_at_once_all_go_through(world):
    """Each holds the institution's lock only to record its file: held through the signing, 8 signings took the
    pool's 8 lock connections and each waited for another to store its file, until the pool's timeout (503)."""
    from infra.services import ecert

    iid, cids = queryable_certificates(world, 12)
    with ThreadPoolExecutor(12) as pool:
        done = list(pool.map(lambda c: _outcome(ecert.issue_electronic, world.certificates, staff(iid), c,
                                                "https://cert.example.cn"), cids))  # fmt: skip
    assert all(isinstance(d, bytes) for d in done), [d for d in done if not isinstance(d, bytes)]


def test_while_a_suspension_waits_the_institutions_acts_are_refused_at_once_and_others_go_on(
    world, database_url, monkeypatch
):
    """A long act of institution A (a batch print, stood in for by a session holding A's lock shared) and the
    centre's suspension of A waiting for it: A's new acts are refused at once, 503 with Retry-After (StandingChanging),
    rather than each waiting with one of the process's few lock connections, which starved institution B's acts
    too. The suspension goes in once the long act ends, and waits longer than a command's lock timeout for it."""
    import time

    import psycopg

    from domain.errors import StandingChanging
    from domain.institution import DeadlineProfile, Filing
    from infra.services.base import institution_lock
    from infra.services.exams import scoring_lock
    from tests.builders import ADMIN, SCOPE

    iid, cids = queryable_certificates(world, 2)
    exam = world.certificates.certificate(cids[0]).exam_id
    world.at(date(2026, 7, 2))
    world.certificates.receive_forms(staff(iid), iid, 1, 20, "SH-2026-0702")
    other = world.registrations.register_institution(
        ADMIN, "广州市技能评价中心", Filing(city_code="01", station_serial="007"), DeadlineProfile.S, SCOPE
    )
    with psycopg.connect(database_url, autocommit=False) as long_act:
        long_act.execute("SELECT pg_advisory_xact_lock_shared(%s, %s)", institution_lock(iid))
        with ThreadPoolExecutor(1) as pool:
            suspending = pool.submit(world.registrations.suspend_institution, CENTRE, iid, FRAUD)
            time.sleep(0.5)  # the suspension is waiting now
            started = time.monotonic()
            for _ in range(10):  # more than the pool's connections
                with pytest.raises(StandingChanging):
                    world.certificates.print(staff(iid), cids[0])
            world.registrations.publish_plan(staff(other), other, plan_details("2602"))  # B is not held up
            assert time.monotonic() - started < 5
            # An act that also needs a lock of its own held by another (issuance: its sessions' scoring locks) is
            # refused at once too, not after waiting for that lock: the shared one is tried first.
            with psycopg.connect(database_url, autocommit=False) as scoring:
                scoring.execute("SELECT pg_advisory_xact_lock(%s, %s)", scoring_lock(exam))
                started = time.monotonic()
                with pytest.raises(StandingChanging):
                    world.certificates.issue(staff(iid), exam)
                assert time.monotonic() - started < 3
            long_act.rollback()  # the long act ends
            suspending.result(timeout=30)
    assert standing(world, iid) is Standing.SUSPENDED


def test_a_list_imported_as_the_suspension_is_saved_is_refused_whole(world, monkeypatch):
    """An import decides for seconds and may wait for the plan's lock: the standing is read again as it is saved."""
    from contextlib import contextmanager

    from domain.errors import NotEvaluating

    iid, pid, rids = approved_cohort(world, 1, seats=10)
    reg = world.registrations
    plan_lock = reg._plan_lock

    @contextmanager
    def suspended_meanwhile(plan_id):
        reg.suspend_institution(CENTRE, iid, FRAUD)  # saved while the list waited for the plan's lock
        with plan_lock(plan_id):
            yield

    monkeypatch.setattr(reg, "_plan_lock", suspended_meanwhile)
    rows = [(n, working_years_form(30 + n), []) for n in range(1, 4)]
    before = stored(world)
    with pytest.raises(NotEvaluating, match="suspended"):
        reg.register_many(staff(iid), pid, rows)
    assert stored(world) == before + 1  # the suspension alone
