"""The evaluation scope filed with the HR department (备案的评价范围, 004 §8, §11 二(2)): an
institution evaluates and certifies only the occupations, jobs and levels filed for it. Only the
provincial centre files and amends the scope, as events; a plan outside it is refused at
publication, and no certificate outside it is ever issued, also when the scope was narrowed after
the plan was published."""

from __future__ import annotations

from datetime import date, time

import pytest
from fastapi.testclient import TestClient

from domain.errors import Conflict, Forbidden, InvalidInput
from domain.exam import Room
from domain.institution import DeadlineProfile, Filing, Institution, ScopeEntry
from domain.levels import Level
from domain.model import Role
from infra.api import create_app
from tests.api import as_json, bearer
from tests.builders import ADMIN, plan_details, staff_of
from tests.lifecycle import CENTRE, EXAM_DAY, HR, ISSUE_DAY, TICKETS_OPEN, approved_cohort, confirmed_exam, staff

WELDING = ScopeEntry(occupation="焊工", job="电焊", levels=[Level.THREE, Level.FOUR])
AI = ScopeEntry(occupation="人工智能训练师", job=None, levels=[Level.TWO, Level.THREE])


def stored(service) -> int:  # type: ignore[no-untyped-def]
    return service.recorder.max_notification_id() or 0


@pytest.fixture
def filed(service):  # type: ignore[no-untyped-def]
    return service.register_institution(
        ADMIN, "佛山市焊接技能评价中心", Filing(city_code="06", station_serial="021"), DeadlineProfile.S, [WELDING, AI]
    )


def test_a_plan_outside_the_filed_scope_is_refused_naming_what_lies_outside(service, filed) -> None:
    before = stored(service)
    for overrides, field, words in (
        ({"occupation": "中式烹调师"}, "occupation", "not in"),
        ({"occupation": "焊工", "job": "气焊", "level": Level.THREE}, "job", "电焊"),
        ({"occupation": "焊工", "job": None, "level": Level.THREE}, "job", "电焊"),
        ({"occupation": "焊工", "job": "电焊", "level": Level.TWO}, "level", "三级/高级工、四级/中级工"),
        ({"level": Level.FIVE}, "level", "二级/技师、三级/高级工"),
    ):
        with pytest.raises(InvalidInput) as e:
            service.publish_plan(staff_of(filed), filed, plan_details("2801", **overrides))
        assert e.value.problems[0][0] == field and words in e.value.problems[0][1], (overrides, e.value.problems)
    assert stored(service) == before
    service.publish_plan(staff_of(filed), filed, plan_details("2801", occupation="焊工", job="电焊", level=Level.FOUR))
    service.publish_plan(staff_of(filed), filed, plan_details("2802", level=Level.TWO))


def test_an_institution_with_no_scope_filed_publishes_nothing(service) -> None:
    bare = service.register_institution(
        ADMIN, "未备案中心", Filing(city_code="06", station_serial="022"), DeadlineProfile.S
    )
    with pytest.raises(Conflict, match="no evaluation scope filed"):
        service.publish_plan(staff_of(bare), bare, plan_details("2803"))


def test_only_the_provincial_centre_amends_the_scope_as_an_event(service, filed) -> None:
    before = stored(service)
    for who in (staff_of(filed), HR, staff_of(filed).model_copy(update={"role": Role.AUDITOR})):
        with pytest.raises(Forbidden):
            service.amend_scope(who, filed, [WELDING], "自行调整")
    with pytest.raises(InvalidInput, match="reason"):
        service.amend_scope(CENTRE, filed, [WELDING], " ")
    with pytest.raises(InvalidInput, match="appears once"):
        service.amend_scope(CENTRE, filed, [WELDING, WELDING], "重复")
    assert stored(service) == before
    service.amend_scope(CENTRE, filed, [WELDING], "粤人社评备〔2026〕12号：撤销人工智能训练师")
    assert stored(service) == before + 1
    assert service.get(Institution, filed, "institution").scope == [WELDING]
    with pytest.raises(InvalidInput, match="not in"):
        service.publish_plan(staff_of(filed), filed, plan_details("2804", level=Level.TWO))


def test_no_certificate_is_issued_outside_the_scope_even_after_it_narrowed(world) -> None:
    iid, _, rids, exam_id = confirmed_exam(world, 3)  # 人工智能训练师, level 2: in the test scope
    world.registrations.amend_scope(CENTRE, iid, [WELDING], "撤销人工智能训练师二级")
    world.at(ISSUE_DAY)
    before = stored(world.certificates)
    with pytest.raises(InvalidInput, match="not in"):
        world.certificates.issue(staff(iid), exam_id)
    assert stored(world.certificates) == before  # nothing numbered, nothing issued
    world.registrations.amend_scope(CENTRE, iid, [WELDING, AI], "恢复")
    assert len(world.certificates.issue(staff(iid), exam_id)) == 3


def test_no_exam_is_scheduled_for_a_plan_the_scope_stopped_covering(world) -> None:
    """What an outside reading found: the scope was checked at publication and at issuance only, so candidates of a
    plan whose occupation was struck from the scope sat its exam, to be refused their certificates at the end."""
    iid, pid, rids = approved_cohort(world, 2)
    world.registrations.amend_scope(CENTRE, iid, [WELDING], "撤销人工智能训练师二级")
    world.at(TICKETS_OPEN)
    before = stored(world.exams)
    with pytest.raises(Conflict, match="outside the evaluation scope as amended since it was published"):
        world.exams.schedule(staff(iid), pid, "A", EXAM_DAY, time(9), time(11), "南山考点", [Room(name="301", seats=2)])
    assert stored(world.exams) == before
    world.registrations.amend_scope(CENTRE, iid, [WELDING, AI], "恢复")
    world.exams.schedule(staff(iid), pid, "A", EXAM_DAY, time(9), time(11), "南山考点", [Room(name="301", seats=2)])


def test_the_api_files_the_scope_with_the_institution_and_only_the_centre_amends_it(world, database_url, schema):
    centre = bearer(database_url, schema, Role.PROVINCIAL_CENTRE, "centre-wang")
    body = {"name": "佛山市焊接技能评价中心", "filing": {"city_code": "06", "station_serial": "031"}, "profile": "S"}
    with TestClient(create_app(database_url, schema, today=lambda: date(2026, 3, 2))) as http:
        r = http.post("/institutions", json=body, headers=centre)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "scope"
        r = http.post("/institutions", json=body | {"scope": [as_json(WELDING)]}, headers=centre)
        assert r.status_code == 201, r.text
        iid = r.json()["id"]
        staff_token = bearer(database_url, schema, Role.INSTITUTION_STAFF, "staff-fs", iid)
        plan = as_json(plan_details("2901", occupation="焊工", job="电焊", level=Level.TWO))
        r = http.post(f"/institutions/{iid}/plans", json=plan, headers=staff_token)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "level", r.text
        amended = {
            "scope": [as_json(WELDING.model_copy(update={"levels": [Level.TWO, Level.THREE]}))],
            "reason": "新增二级",
        }
        assert http.put(f"/institutions/{iid}/scope", json=amended, headers=staff_token).status_code == 403
        assert http.put(f"/institutions/{iid}/scope", json=amended, headers=centre).status_code == 204
        assert http.post(f"/institutions/{iid}/plans", json=plan, headers=staff_token).status_code == 201
