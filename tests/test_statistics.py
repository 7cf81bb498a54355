"""Statistics as the provincial centre reads them: how many certificates a month issued and how many of those stand
no longer (revoked, or their data deleted), however much later that happened; how many candidates had their scores
cancelled. Live, redelivered, rebuilt and read from an older version's tables."""

from __future__ import annotations

from datetime import date

from consumers.rebuild import rebuild
from projections import PROJECTIONS, statistics
from tests.lifecycle import ASSOCIATION, CENTRE, queryable_certificates, staff
from tests.test_read_models import KEY, apply_live, bus_messages, conn, rows  # noqa: F401 (conn: a fixture)


def test_a_certificate_void_later_counts_against_the_month_it_was_issued_in_once(world, conn):  # noqa: F811
    iid, cids = queryable_certificates(world, 6)
    certs = world.certificates
    numbers = {cid: certs.certificate(cid).number for cid in cids}
    world.at(date(2026, 9, 14))  # months after April's issue
    certs.record_holder_commitment(staff(iid), cids[0], _attachment("HOLDER_COMMITMENT"))
    certs.check_deletion(ASSOCIATION, cids[0], queryable_nationally=True)
    certs.delete_data(staff(iid), cids[0], "持证人放弃证书相关待遇")
    world.at(date(2026, 10, 9))
    outcome = certs.invalidate(CENTRE, iid, cids[:3], "滥发证书（省中心核查）")  # the given-up one is void already
    assert (outcome["revoked"], outcome["void_already"]) == ([numbers[cids[1]], numbers[cids[2]]], [numbers[cids[0]]])

    messages = bus_messages(world.certificates)
    apply_live(conn, messages)
    apply_live(conn, messages)  # delivered again: counted once
    [april] = statistics.issued(conn, institution_id=str(iid))
    assert (april["month"], april["issued"], april["void"]) == ("2026-04", 6, 3)
    assert statistics.issued(conn, year=2026, level=april["level"]) == [april]  # no row for the months they fell void
    live = {t: rows(conn, t) for t in statistics.Statistics.tables}

    rebuild(conn, [p for p in PROJECTIONS if p.name == "statistics"], world.certificates, KEY)
    assert {t: rows(conn, t) for t in statistics.Statistics.tables} == live


def test_cancelled_scores_are_counted_per_plan_and_a_pass_they_undo_is_not(world, conn):  # noqa: F811
    from tests.lifecycle import full_lifecycle

    life = full_lifecycle(world, 20)
    apply_live(conn, bus_messages(world.registrations))
    [rate] = statistics.pass_rates(conn, institution_id=str(life.iid))
    sat = 20 - len(life.absent)
    assert (rate["sat"], rate["passed"], rate["disqualified"]) == (sat, len(life.passed) - 1, 1)


def test_the_statistics_answer_from_version_1s_tables_while_a_worker_rebuilds_them(world, conn):  # noqa: F811
    """After an upgrade the API reads version 1's tables until the worker has rebuilt version 2 and swapped it in:
    they answer, with what version 1 did not count as not known (null), rather than fail on the columns they lack."""
    iid, _ = queryable_certificates(world, 2)
    apply_live(conn, bus_messages(world.certificates))
    conn.execute("ALTER TABLE stats_issued DROP COLUMN void")
    conn.execute("ALTER TABLE stats_exams DROP COLUMN cancelled, DROP COLUMN absent_ids")
    conn.commit()
    [april] = statistics.issued(conn, institution_id=str(iid))
    assert (april["issued"], april["void"]) == (2, None)
    [rate] = statistics.pass_rates(conn, institution_id=str(iid))
    assert (rate["passed"], rate["disqualified"]) == (2, None)


def _attachment(kind: str):  # noqa: ANN202
    from domain.registration import AttachmentKind
    from tests.builders import attachment

    return attachment(AttachmentKind[kind])


def test_a_returned_report_counts_again_once_reported_again_and_only_who_sat_counts_as_disqualified(world, conn):  # noqa: F811
    """What an outside review found: a report the centre returned stayed among the unconfirmed pass rates with its
    rejected figures, and went stale as candidates were disqualified meanwhile; a disqualified candidate who was
    absent counted among the disqualified of those who sat. By hand: 8 candidates, 2 absent, 6 sat; 3 disqualified,
    one of them absent; passes left: 3."""
    from tests.lifecycle import CONFIRM_DAY, REPORT_DAY, approved_cohort, score_and_publish, sit_exam

    iid, pid, rids = approved_cohort(world, 8)
    absent = frozenset({rids[2], rids[5]})
    exam_id = sit_exam(world, iid, pid, rids, absent)
    score_and_publish(world, iid, exam_id, rids, absent)
    world.at(REPORT_DAY)
    world.exams.report_results(staff(iid), exam_id)
    world.registrations.disqualify(CENTRE, rids[2], "学历证书造假")  # absent
    world.registrations.disqualify(CENTRE, rids[0], "工作年限证明造假")  # a pass, reported
    world.at(CONFIRM_DAY)
    world.exams.return_results(CENTRE, exam_id, "成绩册缺少考评员签字")
    world.registrations.disqualify(CENTRE, rids[1], "社保证明造假")  # a pass, while the report is returned
    apply_live(conn, bus_messages(world.registrations))
    assert statistics.pass_rates(conn, institution_id=str(iid), confirmed_only=False) == []  # returned: not counted
    world.at(date(2026, 4, 30))
    world.exams.report_results(staff(iid), exam_id)
    world.at(date(2026, 5, 6))
    world.exams.confirm_results(CENTRE, exam_id)
    apply_live(conn, bus_messages(world.registrations))
    [rate] = statistics.pass_rates(conn, institution_id=str(iid))
    assert (rate["candidates"], rate["absent"], rate["sat"], rate["passed"], rate["disqualified"]) == (8, 2, 6, 3, 2)
    live = {t: rows(conn, t) for t in statistics.Statistics.tables}
    rebuild(conn, [p for p in PROJECTIONS if p.name == "statistics"], world.registrations, KEY)
    assert {t: rows(conn, t) for t in statistics.Statistics.tables} == live
