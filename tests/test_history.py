"""As-of replay for auditors: what the system knew about one aggregate at a moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from domain.model import Role
from infra.api import create_app
from infra.services.registrations import Decision
from infra.store.history import as_of
from tests.api import bearer
from tests.builders import L2_CONDITION, L2_EVIDENCE, candidate, setup_plan, staff_of, working_years_form


def moment() -> datetime:
    time.sleep(0.01)  # events on either side are recorded strictly before and after
    now = datetime.now(UTC)
    time.sleep(0.01)
    return now


def test_a_registration_as_it_stood_before_and_after_each_decision(service, database_url, schema):
    before_anything = moment()
    iid, _, code = setup_plan(service)
    rid = service.register(candidate(1), code, working_years_form(1))
    submitted = moment()
    service.review(staff_of(iid), rid, Decision.RETURNED, "补充社保证明")
    returned = moment()
    service.resubmit(candidate(1), rid, working_years_form(1))
    service.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
    position_when_returned = service.recorder.max_notification_id() - 2  # resubmitted and approved came after

    then = as_of(service, rid, at=submitted)
    assert (then["version"], then["current_version"], then["state"]["status"]) == (1, 4, "submitted")
    assert then["last_event"]["type"] == "Submitted" and then["last_event"]["actor_id"] == "candidate-1"
    at_return = as_of(service, rid, at=returned)
    assert (at_return["version"], at_return["state"]["status"]) == (2, "returned")
    assert at_return["last_event"]["actor_role"] == "institution_staff"
    assert as_of(service, rid, position=position_when_returned)["state"]["status"] == "returned"
    now = as_of(service, rid)
    assert (now["version"], now["state"]["status"]) == (4, "approved")

    with TestClient(create_app(database_url, schema)) as http:
        auditor = bearer(database_url, schema, Role.AUDITOR, "auditor-sun")
        r = http.get(f"/aggregates/{rid}", params={"at": returned.isoformat()}, headers=auditor)
        assert r.status_code == 200 and r.json()["state"]["status"] == "returned", r.text
        early = http.get(f"/aggregates/{rid}", params={"at": before_anything.isoformat()}, headers=auditor)
        assert early.status_code == 404 and "did not exist yet" in early.json()["detail"]
        both = http.get(f"/aggregates/{rid}", params={"at": returned.isoformat(), "position": 3}, headers=auditor)
        assert both.status_code == 422 and both.json()["errors"][0]["field"] == "at"
        naive = http.get(f"/aggregates/{rid}", params={"at": "2026-06-30T12:00:00"}, headers=auditor)
        assert naive.status_code == 422 and "offset" in naive.json()["detail"]
        staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
        assert http.get(f"/aggregates/{rid}", headers=staff).status_code == 403

    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema}
    done = subprocess.run([sys.executable, "-m", "infra.cli", "audit", "state", str(rid), "--at",
                           (returned + timedelta(microseconds=1)).isoformat()], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"]["status"] == "returned"


def test_read_models_rebuilt_as_they_stood_at_a_moment_into_a_schema_of_their_own(service, database_url, schema):
    import psycopg
    from psycopg import sql

    iid, _, code = setup_plan(service)
    rid = service.register(candidate(1), code, working_years_form(1))
    service.review(staff_of(iid), rid, Decision.RETURNED, "补充社保证明")
    returned = moment()
    position = service.recorder.max_notification_id()
    service.resubmit(candidate(1), rid, working_years_form(1))
    service.review(staff_of(iid), rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)

    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema}
    cli = [sys.executable, "-m", "infra.cli", "projections", "rebuild"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=120)

    live = run("candidates")
    assert live.returncode == 0, live.stderr
    reports = {"by_time": ("--as-of", returned.isoformat()), "by_position": ("--position", str(position))}
    try:
        for suffix, option in reports.items():
            done = run("candidates", *option, "--into", f"{schema}_{suffix}")
            assert done.returncode == 0 and f"as of position {position}" in done.stdout, done.stdout + done.stderr
        with psycopg.connect(database_url) as c:
            status = "SELECT status FROM {}.candidate_registrations WHERE registration_id = %s"
            for suffix in reports:
                then = c.execute(sql.SQL(status).format(sql.Identifier(f"{schema}_{suffix}")), (rid,)).fetchone()[0]
                assert then == "returned"
            assert c.execute(sql.SQL(status).format(sql.Identifier(schema)), (rid,)).fetchone()[0] == "approved"
        same = run("candidates", "--position", "3", "--into", schema)
        assert same.returncode == 2 and "other than the live one" in same.stderr

        # Every read model as of that moment: recorded, listed for auditors, read through the API.
        whole = run("--as-of", returned.isoformat(), "--into", f"{schema}_whole")
        assert whole.returncode == 0, whole.stderr
        from fastapi.testclient import TestClient

        from infra.api import create_app

        with TestClient(create_app(database_url, schema)) as http:
            auditor = bearer(database_url, schema, Role.AUDITOR, "auditor-sun")
            listed = {x["name"]: x for x in http.get("/snapshots", headers=auditor).json()}
            assert listed[f"{schema}_whole"]["position"] == position and listed[f"{schema}_whole"]["complete"]
            assert datetime.fromisoformat(listed[f"{schema}_whole"]["as_of"]) == returned
            assert not listed[f"{schema}_by_time"]["complete"]  # only the candidates read model
            path = f"/registrations/{rid}"
            assert http.get(path, headers=auditor).json()["status"] == "approved"
            then = http.get(path, headers={**auditor, "X-As-Of": f"{schema}_whole"})
            assert then.status_code == 200 and then.json()["status"] == "returned", then.text
            assert http.get(path, headers=auditor).json()["status"] == "approved"  # the pooled connection is live again
            staff = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-li", iid)
            assert http.get(path, headers={**staff, "X-As-Of": f"{schema}_whole"}).status_code == 403
            assert http.get(path, headers={**auditor, "X-As-Of": f"{schema}_by_time"}).status_code == 404
            assert http.get(path, headers={**auditor, "X-As-Of": "nothing"}).status_code == 404
            long = http.get(path, headers={**auditor, "X-As-Of": "x" * 20_000})  # was echoed back whole in the 404
            assert long.status_code == 422 and len(long.content) < 1000, long.text
            assert http.get("/snapshots", headers=staff).status_code == 403
            # Their lag is against the live store: what was recorded after that moment is behind.
            lags = http.get("/projections", headers={**auditor, "X-As-Of": f"{schema}_whole"})
            assert lags.status_code == 200, lags.text
            candidates = next(r for r in lags.json() if r["projection"] == "candidates")
            assert candidates["status"] == "behind" and candidates["events_behind"] >= 2, candidates
    finally:
        with psycopg.connect(database_url, autocommit=True) as c:
            for suffix in (*reports, "whole"):
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{schema}_{suffix}")))


def test_an_event_stamped_early_by_a_skewed_clock_does_not_make_a_version_skipped(service, monkeypatch):
    """What an outsider found: an event's time is its writer's clock when it was made, not when it was stored. With
    clocks apart, a later version can carry an earlier time: the replay kept versions 1 and 3 and left 2 out. The
    history as of a moment now ends at the first event past it."""
    import eventsourcing.domain

    iid, _, code = setup_plan(service)
    rid = service.register(candidate(1), code, working_years_form(1))
    submitted = moment()
    service.review(staff_of(iid), rid, Decision.RETURNED, "补充社保证明")
    # Another worker, its clock behind, resubmits: version 3 is stamped before version 2.
    monkeypatch.setattr(eventsourcing.domain.CanCreateTimestamp, "create_timestamp", staticmethod(lambda: submitted))
    service.resubmit(candidate(1), rid, working_years_form(1))
    monkeypatch.undo()
    then = as_of(service, rid, at=submitted)
    assert (then["version"], then["state"]["status"]) == (1, "submitted")


def test_every_kind_of_aggregate_a_lifecycle_makes_can_be_rebuilt_by_an_auditor(world, database_url, schema):
    """What an outside review found: an auditor rebuilding a blank stock got a 500 (its serials, domain.ranges.Ranges,
    had no JSON form), where the registrations and certificates it had been tried on worked. Every aggregate of a
    whole lifecycle, of every kind, is rebuilt over HTTP now."""
    from psycopg import sql

    from tests.lifecycle import full_lifecycle

    life = full_lifecycle(world, 50)
    # A batch print's job (domain.printing.PrintJob), which the lifecycle's one-by-one prints make none of.
    from uuid import uuid4

    from domain.printing import PrintJob
    from tests.lifecycle import staff

    job = PrintJob.book(staff(life.iid), uuid4(), [(life.cids[0], 10_000_001), (life.cids[1], 10_000_002)])
    job.finish(staff(life.iid))
    world.certificates.save(job)
    with world.registrations.recorder.datastore.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute(sql.SQL("SELECT DISTINCT ON (topic) originator_id, topic FROM {} ORDER BY topic").format(
            sql.Identifier(schema, world.registrations.recorder.events_table_name)))  # fmt: skip
        firsts = {row["topic"].rpartition(".")[0]: row["originator_id"] for row in cur.fetchall()}
    assert len(firsts) >= 10 and any("BlankStock" in kind for kind in firsts), firsts
    assert any("PrintJob" in kind for kind in firsts), firsts
    auditor = bearer(database_url, schema, Role.AUDITOR, "auditor-zhao")
    with TestClient(create_app(database_url, schema)) as http:
        for kind, aggregate_id in firsts.items():
            r = http.get(f"/aggregates/{aggregate_id}", headers=auditor)
            assert r.status_code == 200 and r.json()["state"], (kind, r.text[:300])
        stock = next(a for kind, a in firsts.items() if "BlankStock" in kind)
        used = http.get(f"/aggregates/{stock}", headers=auditor).json()["state"]["used"]
    assert used and all(len(run) == 2 and run[0] <= run[1] for run in used)  # its runs of serials
