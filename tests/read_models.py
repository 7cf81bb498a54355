"""What every read model must say after tests.lifecycle.full_lifecycle, checked through the
queries admins, candidates and auditors use; shared by the in-process and the broker tests."""

from __future__ import annotations

from datetime import date
from typing import Any

from domain.certificate import certificate_id
from domain.exam import sitting_id
from infra.bus.privacy import ref
from projections import PROJECTIONS, candidates, catalogue, deadlines, statistics, stock
from projections import certificates as registry
from projections.audit import trail
from tests.builders import working_years_form
from tests.lifecycle import ISSUE_DAY, Lifecycle, World

AFTER = date(2026, 10, 9)  # the day after the lifecycle's stocktake


def all_rows(conn: Any) -> dict[str, list[tuple]]:
    """Every table of every projection, rows in a stable order."""
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for p in PROJECTIONS for t in p.tables}


def check_read_models(conn: Any, w: World, life: Lifecycle, key: bytes) -> None:
    n = len(life.rids)
    certs = w.certificates
    # Plan catalogue: every seat taken.
    plan = catalogue.get_plan(conn, str(life.pid), date(2026, 3, 2))
    assert (plan["seats_taken"], plan["seats_left"]) == (n, 0)

    # Candidate record: candidate 7 failed theory, asked for a review and was changed to a pass.
    [seven] = candidates.registrations_of(conn, ref(working_years_form(7).id_number, key))
    assert (seven["status"], seven["condition"], seven["fee"]["receipt_number"]) == ("approved", "2.1", "R2026000007")
    assert seven["training"]["hours"] == "64" and seven["exam"]["attendance"] == "finished"
    assert seven["scores"]["理论知识"] == "60.5" and seven["review"]["理论知识"]["outcome"] == "changed"
    assert seven["passed"] and seven["results_confirmed"]
    number = life.numbers[life.rids[6]]
    assert life.deleted == certificate_id(life.rids[6])  # and later gave up the certificate's benefits
    assert (seven["certificate"]["number"], seven["certificate"]["data_status"]) == (number, "deleted")
    assert seven["certificate"]["delivery"] == "pickup"
    absent = candidates.get_registration(conn, str(life.rids[49]))
    assert absent["exam"]["attendance"] == "absent" and absent["passed"] is False and absent["certificate"] is None, (
        absent
    )

    # Certificate registry and correction ledger.
    corrected = registry.certificate_by_number(conn, certs.certificate(life.corrected).number)
    assert (corrected["corrected"], corrected["holder_name"], corrected["forms_printed"]) == (True, "考生改名", 2)
    assert (corrected["status"], corrected["data_status"]) == ("handed_over", "queryable")  # reported, reprinted
    assert registry.certificate_by_number(conn, certs.certificate(life.lost).number)["proof_number"] == life.proof
    assert registry.certificate_by_number(conn, certs.certificate(life.deleted).number)["data_status"] == "deleted"
    assert registry.correction_of(conn, certificate_id=str(life.corrected))["decision"] == "approved"
    assert registry.correction_of(conn, certificate_id=str(life.refused))["decision"] == "rejected"
    assert conn.execute("SELECT count(*) FROM correction_ledger").fetchone()[0] == 2

    # The disqualified holder (001 承诺): the record says so, the scores are gone, the certificate is void.
    number = certs.certificate(life.revoked).number
    gone = candidates.get_registration(conn, str(certs.certificate(life.revoked).registration_id))
    assert (gone["status"], gone["decision_reasons"], gone["condition"]) == (
        "disqualified", "工作年限证明系伪造（单位核实回函）", "2.1")  # fmt: skip
    assert (gone["scores"], gone["passed"], gone["scores_cancelled"]) == (None, False, gone["decision_reasons"])
    assert gone["certificate"]["status"] == "revoked" and gone["reviews"][-1]["decision"] == "disqualified"
    void = registry.certificate_by_number(conn, number)
    assert void["status"] == "revoked" and void["history"][-1]["event"] == "revoked"

    # Audit trail: every event of candidate 7's registration, in order, with its actors.
    _, events = trail(conn, aggregate_id=str(life.rids[6]), limit=100)
    assert [e["aggregate_version"] for e in events] == list(range(1, len(events) + 1))
    assert {e["actor_role"] for e in events} == {"candidate", "institution_staff"}

    # Deadline monitor: the lifecycle met every deadline; the session's are closed, on time.
    assert deadlines.open_deadlines(conn, AFTER) == (0, [])
    session = {r["step"]: r for r in deadlines.deadlines_of(conn, str(life.exam_id))}
    assert set(session) == {"scores_published", "review_window", "certificate_number"}
    assert session["certificate_number"]["closed_on"] == ISSUE_DAY and not session["certificate_number"]["late"]
    review = deadlines.deadlines_of(conn, str(sitting_id(life.rids[6])))
    assert [(r["step"], r["late"]) for r in review] == [("review_answered", False)]
    returned = deadlines.deadlines_of(conn, str(certificate_id(life.passed[0])))
    assert [r["step"] for r in returned].count("returned_data_corrected") == 1
    # The provincial centre's 30 working days (twice: reported, returned, reported again) and the
    # ministry centre's 15 (000 证书数据报备), tracked like the institution's own.
    assert [r["closed_by"] for r in returned if r["step"] == "centre_reviewed"] == [
        "certificate.data_returned", "certificate.data_accepted"]  # fmt: skip
    accepted = {r["step"]: r for r in deadlines.deadlines_of(conn, str(certificate_id(life.passed[2])))}
    centre, ministry = accepted["centre_reviewed"], accepted["ministry_queryable"]
    assert (centre["start"], centre["closed_on"], centre["late"]) == (date(2026, 5, 20), date(2026, 6, 1), False)
    # Accepted on Monday 1 June: 15 working days, the Dragon Boat Festival (19 June) not among them.
    assert (ministry["start"], ministry["due"], ministry["closed_on"]) == (
        date(2026, 6, 1),
        date(2026, 6, 23),
        date(2026, 7, 1),
    )
    assert ministry["late"] is True

    # Blank stock ledger.
    books = stock.ledger(conn, str(life.iid))
    used = len(life.passed) + 1  # the corrected certificate was reprinted
    assert (books["received"], books["used"], books["spoiled"], books["destroyed"]) == (300, used, 2, 2)
    assert (books["in_stock"], books["last_discrepancy"], books["last_stocktake_period"]) == (
        300 - used - 2,
        0,
        "2026-H2",
    )
    assert books["used_per_level"] == [{"level": 2, "used": used}]
    assert {(d["level"], d["forms"]) for d in books["demand"]} == {(2, 250), (3, 40)}
    printed = stock.form(conn, str(life.iid), life.reprint_form)
    assert printed["certificate_number"] == certs.certificate(life.corrected).number

    # Statistics.
    [month] = statistics.issued(conn, institution_id=str(life.iid))
    # Two of April's certificates are void since: one revoked (its holder disqualified), one given up (data deleted).
    assert (month["month"], month["level"], month["issued"], month["void"]) == ("2026-04", 2, len(life.passed), 2)
    [rate] = statistics.pass_rates(conn, institution_id=str(life.iid))
    sat = n - len(life.absent)
    passes = len(life.passed) - 1  # the disqualified candidate's scores were cancelled
    assert (rate["sat"], rate["passed"], rate["disqualified"], float(rate["pass_rate"])) == (
        sat, passes, 1, round(passes / sat, 4)
    )  # fmt: skip
