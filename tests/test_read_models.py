"""The certificate registry and the correction ledger, applied as the consumer applies bus
messages; redelivery and republishing change nothing; a rebuild from the event store
equals the live tables row for row."""

from __future__ import annotations

import inspect
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import psycopg
import pytest
from psycopg import sql

import consumers.rebuild
import infra.collector
from consumers.rebuild import rebuild
from domain.certificate import Correction, LossKind
from domain.deadlines import Step
from domain.model import Role
from domain.registration import AttachmentKind
from infra.bus.envelope import envelope, published
from infra.bus.privacy import ref
from projections import PROJECTIONS
from projections.certificates import Corrections, Registry, certificate_by_number, certificates_named, certificates_of
from projections.certificates import correction_of as ledger_entry
from projections.store import apply_message, connect, create_tables
from tests.api import bearer
from tests.builders import SCOPE, attachment, working_years_form
from tests.lifecycle import (
    ASSOCIATION,
    CENTRE,
    ISSUE_DAY,
    SCORER,
    World,
    approve_correction,
    approved_cohort,
    collect,
    confirmed_exam,
    full_lifecycle,
    id_check,
    queryable_certificates,
    reject_correction,
    score,
    sit_exam,
    staff,
)

KEY = bytes(range(32))
FORM = attachment(AttachmentKind.CERTIFICATE_APPLICATION)
EVIDENCE = attachment(AttachmentKind.CORRECTION_EVIDENCE)


def certificates_in_every_state(w: World, n: int = 12) -> tuple:
    """n certificates on the query platform; then printing, handover, a proof, an approved
    and a rejected correction, and a deletion."""
    iid, cids = queryable_certificates(w, n)
    c = w.certificates
    c.receive_forms(staff(iid), iid, 1, 50, "SH-2026-001")
    for cid in cids[:6]:
        c.print(staff(iid), cid)
    collect(c, iid, cids[0])
    w.at(date(2026, 8, 3))
    c.apply_for_proof(staff(iid), cids[0], LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                      **id_check(c, cids[0]))  # fmt: skip
    c.issue_proof(staff(iid), cids[0])
    c.apply_for_correction(staff(iid), cids[1], Correction(name="更正后姓名"), "姓名录入错误", EVIDENCE)
    approve_correction(c, cids[1])
    c.apply_for_correction(staff(iid), cids[2], Correction(name="另一姓名"), "申请更正", EVIDENCE)
    reject_correction(c, cids[2], "证明材料不足")
    c.record_holder_commitment(staff(iid), cids[3], attachment(AttachmentKind.HOLDER_COMMITMENT))
    c.check_deletion(ASSOCIATION, cids[3], queryable_nationally=True)
    c.delete_data(staff(iid), cids[3], "持证人放弃证书相关待遇")
    return iid, cids


def bus_messages(app, key: bytes = KEY) -> list[dict]:
    out = []
    for n in app.recorder.select_notifications(start=1, limit=100_000):
        if published(n.topic) is not None:
            out.append(envelope(n.topic, n.id, app.mapper.decode_state(n), key))
    return out


def as_kafka_delivers(messages: list[dict], partitions: int = 3) -> list[tuple[int, dict]]:
    """Each aggregate's events in order on its partition; partitions interleaved."""
    queues: list[list[dict]] = [[] for _ in range(partitions)]
    for m in messages:
        queues[zlib.crc32(m["aggregateid"].encode()) % partitions].append(m)
    out, i = [], 0
    while any(queues):
        if queues[i % partitions]:
            out.append((i % partitions, queues[i % partitions].pop(0)))
        i += 1
    return out


def rows(conn, table: str) -> list[tuple]:
    # Ordered by the whole row: a key's first columns need not be unique (a deadline reopens).
    return conn.execute(f"SELECT * FROM {table} AS t ORDER BY t::text").fetchall()


@pytest.fixture
def conn(database_url, schema):
    c = connect(database_url, schema)
    create_tables(c, PROJECTIONS)
    yield c
    c.close()


def apply_live(conn, messages) -> None:
    offsets: dict[tuple[str, int], int] = {}
    for partition, m in as_kafka_delivers(messages):
        topic = "certificates" if m["source"].endswith("certificates") else "other"
        offset = offsets.get((topic, partition), -1) + 1
        offsets[(topic, partition)] = offset
        for p in PROJECTIONS:
            if m["source"].rpartition("/")[2] in p.topics:
                apply_message(conn, p, topic, partition, offset, m)


def test_the_registry_answers_by_number_holder_and_name_with_status_and_history(world, conn):
    iid, cids = certificates_in_every_state(world)
    apply_live(conn, bus_messages(world.registrations))
    c = world.certificates
    proofed, corrected, rejected, deleted = (c.certificate(x) for x in cids[:4])

    row = certificate_by_number(conn, proofed.number.lower())
    assert (row["status"], row["data_status"], row["delivery"]) == ("proof_issued", "queryable", "pickup")
    assert row["proof_number"] == f"{proofed.number}-Z01" and row["forms_printed"] == 1
    assert [h["event"] for h in row["history"]] == ["printed", "handed_over", "proof_applied", "proof_issued"]
    assert row["id_masked"].startswith("4403") and "*" in row["id_masked"]

    row = certificate_by_number(conn, corrected.number)
    assert (row["status"], row["corrected"], row["holder_name"], row["data_status"]) == (
        "corrected", True, "更正后姓名", "unreported")  # fmt: skip
    assert [h["event"] for h in row["history"]][-2:] == ["correction_applied", "correction_approved"]
    gone = certificate_by_number(conn, deleted.number)
    assert gone["data_status"] == "deleted" and (gone["holder_name"], gone["id_masked"]) == ("", "")
    assert deleted.holder.name not in str(gone["history"])  # the holder's data leaves the read model too
    assert certificate_by_number(conn, rejected.number)["holder_name"] == rejected.holder.name
    assert certificate_by_number(conn, "S000000000000000000000") is None

    mine = certificates_of(conn, ref(rejected.holder.id_number, KEY))
    assert [r["number"] for r in mine] == [rejected.number]
    assert [r["number"] for r in certificates_named(conn, "更正后姓名", str(iid))] == [corrected.number]
    statuses = {r[0] for r in conn.execute("SELECT status FROM certificate_registry")}
    assert statuses == {"queryable", "proof_issued", "corrected", "data_deleted"}


def test_the_ledger_shows_one_correction_per_certificate_with_its_decision(world, conn):
    _, cids = certificates_in_every_state(world)
    apply_live(conn, bus_messages(world.registrations))
    approved, rejected = (
        ledger_entry(conn, certificate_id=str(cids[1])),
        ledger_entry(conn, certificate_id=str(cids[2])),
    )
    # Profile S (000 二3): the association checked it, the skills centre decided.
    assert (approved["decision"], approved["fields"], approved["decided_by"]) == (
        "approved",
        {"name": "更正后姓名"},
        CENTRE.id,
    )
    assert approved["checked"]["queryable_nationally"] is True and approved["checked"]["checked_by"] == ASSOCIATION.id
    assert approved["report_due"] is not None and approved["number"] == world.certificates.certificate(cids[1]).number
    assert (rejected["decision"], rejected["decision_reasons"]) == ("rejected", "证明材料不足")
    assert ledger_entry(conn, certificate_id=str(cids[0])) is None
    assert conn.execute("SELECT count(*) FROM correction_ledger").fetchone()[0] == 2


def test_an_id_number_correction_reaches_the_registry_as_a_new_ref(world, conn):
    from tests.bus import world_with_personal_data

    numbers = world_with_personal_data(world, 3)
    apply_live(conn, bus_messages(world.registrations))
    corrected_number = numbers[3]  # three forms, then the corrected number
    [row] = certificates_of(conn, ref(corrected_number, KEY))
    assert row["corrected"] and certificates_of(conn, ref(working_years_form(2).id_number, KEY)) == []
    entry = ledger_entry(conn, certificate_id=str(row["certificate_id"]))
    assert entry["fields"]["id_number"]["masked"] == row["id_masked"]  # never the number itself
    assert corrected_number not in str(entry) and corrected_number not in str(row)


def test_redelivered_and_republished_messages_change_nothing(world, conn):
    certificates_in_every_state(world)
    messages = bus_messages(world.registrations)
    apply_live(conn, messages)
    before = {t: rows(conn, t) for p in PROJECTIONS for t in p.tables}
    apply_live(conn, messages)  # the same offsets again: a consumer restarted before committing
    for p in (Registry(), Corrections()):  # the relay published it all twice: new offsets
        for offset, m in enumerate(messages, start=10_000):
            if m["source"].endswith("certificates"):
                apply_message(conn, p, "certificates", 0, offset, m)
    assert {t: rows(conn, t) for p in PROJECTIONS for t in p.tables} == before


def test_a_rebuild_from_the_event_store_equals_the_live_tables_row_for_row(world, conn, database_url, schema):
    full_lifecycle(world, 60)
    apply_live(conn, bus_messages(world.registrations))
    live = {t: rows(conn, t) for p in PROJECTIONS for t in p.tables}
    assert [t for t, r in live.items() if not r] == []  # the data set fills every table
    seen = []
    rebuild(conn, PROJECTIONS, world.registrations, KEY, progress=lambda done, total: seen.append((done, total)))
    assert {t: rows(conn, t) for p in PROJECTIONS for t in p.tables} == live
    assert seen[-1][0] == seen[-1][1] == world.registrations.recorder.max_notification_id()
    # The live consumer, running on, skips what the rebuild applied.
    apply_live(conn, bus_messages(world.registrations))
    assert {t: rows(conn, t) for p in PROJECTIONS for t in p.tables} == live


def test_the_versions_a_rebuild_swaps_in_are_the_live_consumers_whole_or_in_part(world, conn, database_url, schema):
    """The version guard after a rebuild is the one the live consumer keeps: rebuilding every projection
    puts a new table of versions in the old one's place (written before the swap, so the live consumer is
    not paused while millions of rows are copied); rebuilding some replaces theirs and keeps the others'.
    What the live consumer applies during the rebuild is in it too."""
    iid, cids = certificates_in_every_state(world)  # the last is not printed
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    versions = "SELECT * FROM projection_versions ORDER BY 1, 2"
    live = conn.execute(versions).fetchall()
    assert len({r[0] for r in live}) > 3  # several projections keep versions
    table_id = "SELECT 'projection_versions'::regclass::oid"
    before = conn.execute(table_id).fetchone()[0]

    seen: list[int] = []

    def meanwhile(done: int, total: int) -> None:
        if seen:
            return
        seen.append(done)
        with connect(database_url, schema) as other:
            world.certificates.print(staff(iid), cids[-1])  # after the rebuild read the head
            apply_live(other, bus_messages(world.registrations))
            other.commit()

    rebuild(conn, PROJECTIONS, world.registrations, KEY, progress=meanwhile)
    conn.commit()
    after_all = conn.execute(versions).fetchall()
    assert conn.execute(table_id).fetchone()[0] != before  # swapped, not copied into
    printed = [r for r in after_all if r[1] == cids[-1] and r[0] == "certificate_registry"]
    assert printed and printed[0][2] > dict(((r[0], r[1]), r[2]) for r in live)[("certificate_registry", cids[-1])]
    # The live consumer would have written the same: apply everything again, nothing changes.
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    assert conn.execute(versions).fetchall() == after_all
    one = [p for p in PROJECTIONS if p.name == "certificate_registry"]
    swapped = conn.execute(table_id).fetchone()[0]
    rebuild(conn, one, world.registrations, KEY)
    conn.commit()
    assert conn.execute(versions).fetchall() == after_all
    assert conn.execute(table_id).fetchone()[0] == swapped  # the others' rows stayed where they were
    assert shadows(conn) == []


def test_pages_of_open_deadlines_cut_by_postgresql_equal_every_deadline_judged_one_by_one(conn):
    """A page of open deadlines is counted, sorted and cut in PostgreSQL, the provisional ones (due next year,
    before the calendar knows it) recounted in Python and merged in: the same totals, pages and per-institution
    counts as reading every open deadline and judging each here, as the monitor did before."""
    import random
    from datetime import timedelta
    from uuid import uuid4

    from domain.deadlines import Step, add_working_days
    from projections import deadlines as monitor

    rng = random.Random(19)
    institutions = [uuid4() for _ in range(3)]
    session = uuid4()
    conn.execute(
        "INSERT INTO deadline_subjects VALUES (%s, %s, 'B0001 A 2026-04-10', NULL)", (session, institutions[0])
    )
    for k in range(400):
        subject, institution = uuid4(), rng.choice(institutions)
        label = f"{rng.choice(['S00004403', '考场 3 座', 'Zeta', 'alpha', '证书'])}{k}"  # unique: no ties to order
        conn.execute("INSERT INTO deadline_subjects VALUES (%s, %s, %s, %s)",
                     (subject, institution, label, session if k % 5 == 0 else None))  # fmt: skip
        start = date(2026, 1, 1) + timedelta(days=rng.randrange(0, 380))
        due, provisional = add_working_days(start, rng.randrange(1, 40))
        if k % 4 == 1:  # counted in calendar days: never provisional, and interleaved with those that are
            due, provisional = start + timedelta(days=rng.randrange(1, 60)), False
        elif provisional and k % 3 == 0:
            due += timedelta(days=9)  # counted before a calendar that moved it: the recount changes it
        conn.execute(
            "INSERT INTO deadlines (subject_id, step, opened_version, institution_id, label, part, start, due,"
            " provisional, closed_on) VALUES (%s, %s, 1, %s, %s, %s, %s, %s, %s, %s)",
            (subject, rng.choice(list(Step)).value, institution, label, rng.choice(["", "", "理论知识"]), start, due,
             provisional, date(2026, 6, 1) if k % 6 == 0 else None),
        )  # fmt: skip
    assert conn.execute("SELECT count(*) FROM deadlines WHERE provisional AND closed_on IS NULL").fetchone()[0] > 10

    def judged(today: date, institution=None, step=None, overdue=False) -> list[dict]:
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            everything = cur.execute(
                "SELECT d.subject_id, d.step, d.institution_id, coalesce(s.label || ' ', '') || d.label"
                " || coalesce(' ' || nullif(d.part, ''), '') AS label, d.start, d.due, d.provisional FROM deadlines d"
                " LEFT JOIN deadline_subjects s ON s.subject_id = (SELECT exam_id FROM deadline_subjects"
                " WHERE subject_id = d.subject_id) WHERE d.closed_on IS NULL"
            ).fetchall()
        rows = [monitor._with_days_left(r, today) for r in everything]
        rows = [r for r in rows if (institution is None or r["institution_id"] == institution)
                and (step is None or r["step"] == step) and (r["overdue"] or not overdue)]  # fmt: skip
        return sorted(rows, key=lambda r: (r["due"], r["label"], r["step"]))

    for today in (date(2026, 3, 2), date(2026, 12, 31), date(2027, 2, 10)):
        for institution, step, overdue in ((None, None, False), (None, None, True), (institutions[1], None, True),
                                           (None, "data_reported", False)):  # fmt: skip
            expected = judged(today, institution, step, overdue)
            for offset, limit in ((0, 50), (5, 7), (37, 20), (len(expected) // 2, 30), (len(expected) - 5, 50),
                                  (len(expected) + 10, 5)):  # fmt: skip
                got = monitor.open_deadlines(conn, today, institution_id=str(institution) if institution else None,
                                             step=step, overdue=overdue, limit=limit, offset=max(offset, 0))  # fmt: skip
                assert got == (len(expected), expected[max(offset, 0) : max(offset, 0) + limit]), (today, offset)
        summary = {str(e["institution_id"]): (e["open"], e["overdue"], e["overdue_by_step"])
                   for e in monitor.overdue_by_institution(conn, today)}  # fmt: skip
        everything = judged(today)
        for institution in institutions:
            mine = [r for r in everything if r["institution_id"] == institution]
            late = [r["step"] for r in mine if r["overdue"]]
            assert summary[str(institution)] == (len(mine), len(late), {s: late.count(s) for s in set(late)})


def test_the_audit_trail_set_based_as_a_rebuild_writes_it_equals_it_event_by_event(conn):
    """A rebuild writes the audit trail in sets (Audit.apply_many); each event must still take the
    institution it takes one at a time: its own, else its aggregate's first, known before the batch or
    from earlier in it, never from later in it, else its actor's."""
    import uuid

    from projections.audit import Audit

    def event(position, aggregate, version, institution=None, actor_institution=None, kind="registration.x"):
        data = {"originator_id": aggregate, "actor": {"id": "u", "role": "staff", "institution_id": actor_institution}}
        if institution:
            data["institution_id"] = institution
        return {"position": position, "id": str(uuid.uuid4()), "type": f"cn.skillcert.{kind}.v1",
                "aggregateid": aggregate, "aggregateversion": version, "actorid": "u", "actorrole": "staff",
                "time": f"2026-05-01T00:00:{position:02d}+00:00", "data": data}  # fmt: skip

    a, b, c, known, i1, i2, i3 = (str(uuid.uuid4()) for _ in range(7))
    before = [event(1, known, 1, institution=i3)]
    batch = [
        event(2, a, 1, actor_institution=i1),  # nothing known of a yet: its actor's
        event(3, a, 2, institution=i2),  # its own; from now on a's
        event(4, a, 3, actor_institution=i1),  # a's, from earlier in the batch
        event(5, known, 2, actor_institution=i1),  # known's, from before the batch
        event(6, b, 1),  # nothing at all
        event(7, c, 1, kind="institution.registered"),  # an institution is its own
        event(8, c, 2, institution=i1),
    ]
    audit = Audit()
    results = []
    for way in ("one by one", "set-based", "set-based, remembering from empty tables (a rebuild's)"):
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("TRUNCATE audit_events, audit_aggregates")
            if way == "one by one":
                for m in before + batch:
                    audit.apply(cur, m)
            elif way == "set-based":
                for m in before:
                    audit.apply(cur, m)
                audit.apply_many(cur, batch)
            else:
                memo: dict = {}
                audit.apply_many(cur, before, memo)
                audit.apply_many(cur, batch, memo)
        results.append((rows(conn, "audit_events"), rows(conn, "audit_aggregates")))
    assert results[0] == results[1] == results[2]
    institutions = {r[0]: str(r[8]) if r[8] else None for r in results[1][0]}
    assert institutions == {1: i3, 2: i1, 3: i2, 4: i2, 5: i3, 6: None, 7: c, 8: i1}


def applied_in_batches(
    conn, projection, messages, sizes=(None, 1, 3, 7, 2000), memo: bool = False
) -> list[dict[str, list[tuple]]]:
    """The projection's tables after applying the messages event by event (size None) and set-based
    (apply_many) in batches of each size, from empty each time; with `memo`, remembering what it wrote
    in one memo through the batches, as a rebuild does."""
    results = []
    for size in sizes:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("TRUNCATE " + ", ".join(projection.tables))
            if size is None:
                for m in messages:
                    projection.apply(cur, m)
            else:
                remembered: dict = {}
                for at in range(0, len(messages), size):
                    projection.apply_many(cur, messages[at : at + size], *([remembered] if memo else []))
        results.append({t: rows(conn, t) for t in projection.tables})
    return results


def test_the_catalogue_set_based_as_a_rebuild_writes_it_equals_it_event_by_event(world, conn):
    """A rebuild sums each batch's places taken and given back per plan into one UPDATE (Catalogue.apply_many);
    the plans must come out as applying every event alone makes them, whatever the batches' edges."""
    from infra.services.registrations import Decision
    from projections.catalogue import Catalogue
    from tests.builders import candidate, setup_plan, staff_of, working_years_form

    world.at(date(2026, 3, 2))
    reg = world.registrations
    iid, _, code = setup_plan(reg, seats=60)
    for i in range(1, 41):  # every fifth rejected, its place given back
        rid = reg.register(candidate(i), code, working_years_form(i))
        if i % 5 == 0:
            reg.review(staff_of(iid), rid, Decision.REJECTED, reasons="不符合申报条件")
    messages = [m for m in bus_messages(reg) if "evaluation_plan" in m["type"] or "institution" in m["type"]]
    assert any("seat_released" in m["type"] for m in messages) and sum("seat_taken" in m["type"] for m in messages) > 30
    results = applied_in_batches(conn, Catalogue(), messages, (None, 7, 2000))
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("name", [p.name for p in PROJECTIONS if hasattr(p, "apply_many")])
def test_every_set_based_projection_equals_itself_event_by_event_over_a_lifecycle(world, conn, name):
    """Each projection that a rebuild applies set-based (apply_many) must leave its tables as applying every
    event of a whole lifecycle alone does, whatever the batches' edges."""
    from projections import BY_NAME

    projection = BY_NAME[name]
    full_lifecycle(world, 20)
    messages = [m for m in bus_messages(world.registrations) if m["source"].rpartition("/")[2] in projection.topics]
    results = applied_in_batches(conn, projection, messages)
    if "memo" in inspect.signature(projection.apply_many).parameters:  # as a rebuild applies it
        results += applied_in_batches(conn, projection, messages, (1, 3, 7, 2000), memo=True)
    assert all(sum(len(v) for v in r.values()) > 0 for r in results)
    assert all(r == results[0] for r in results[1:])


def test_the_candidate_record_set_based_as_a_rebuild_writes_it_equals_it_event_by_event(world, conn):
    """A rebuild folds each registration's changes in a batch into one, and each sitting's attendance changes and
    scores, and makes them in a few UPDATEs (Candidates.apply_many), leaving to the event-by-event path a
    registration whose training hours are added and a sitting with a score review in the batch. The record must
    come out as applying every event alone makes it, whatever the batches' edges."""
    import copy

    from projections.candidates import Candidates

    full_lifecycle(world, 30)  # absences, score reviews upheld and changed, certificates
    messages = [m for m in bus_messages(world.registrations) if m["source"].rpartition("/")[2] in Candidates.topics]
    kinds = {m["type"].split(".")[3] for m in messages if ".sitting." in m["type"]}
    assert {"checked_in", "finished", "scores_recorded", "review_requested", "review_answered"} <= kinds
    registration = {m["type"].split(".")[3] for m in messages if ".registration." in m["type"]}
    assert {"approved", "fee_paid", "amended", "training_account_opened", "training_completed"} <= registration
    # Scores recorded again after a score review changed one (as a correction might): folded ahead of the review's
    # change, they would come out wrong; a sitting with a review in the batch is applied event by event.
    answered = next(m for m in messages if "review_answered" in m["type"] and m["data"]["outcome"] == "changed")
    recorded = next(
        m for m in messages if "scores_recorded" in m["type"] and m["aggregateid"] == answered["aggregateid"]
    )
    again = copy.deepcopy(recorded)
    again["aggregateversion"] = answered["aggregateversion"] + 1
    again["data"]["timestamp"] = answered["data"]["timestamp"]
    again["data"]["scores"] = {k: "99" for k in recorded["data"]["scores"]}
    messages.insert(messages.index(answered) + 1, again)
    results = applied_in_batches(conn, Candidates(), messages)
    assert all(r == results[0] for r in results[1:])
    assert any(r[3] is not None for r in results[0]["candidate_sittings"])  # scores were recorded


def test_every_statement_a_projection_runs_finds_its_rows_by_an_index(world, conn):
    """A statement that reads or changes rows of a read model by a column no index covers scans the whole
    table, once per event: a cost that grows with the province's history, invisible at test sizes
    (a results confirmation scanned every result in the province). Each statement the whole lifecycle
    makes is explained with sequential scans priced out: any that remains has no index to use."""
    import json

    full_lifecycle(world, 60)
    seen: dict[str, object] = {}

    class Recording:
        def __init__(self, cur):
            self.cur = cur

        def execute(self, query, params=None, **kwargs):
            text = query if isinstance(query, str) else query.as_string(conn)
            seen.setdefault(" ".join(text.split()), params)
            return self.cur.execute(query, params, **kwargs)

        def executemany(self, query, rows, **kwargs):
            for params in rows:
                self.execute(query, params)

    with conn.transaction(), conn.cursor() as cur:
        for m in bus_messages(world.registrations):
            for p in PROJECTIONS:
                if m["source"].rpartition("/")[2] in p.topics:
                    p.apply(Recording(cur), m)
    scans = {}
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        for text, params in seen.items():
            if " WHERE " not in text.upper():
                continue  # an insert of given values reads nothing
            [[plan]] = cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(text), params).fetchall()
            plan = json.dumps(plan)
            if '"Seq Scan"' in plan:
                scans[text[:120]] = [t for t in PROJECTION_TABLES if f'"Relation Name": "{t}"' in plan]
        assert len(seen) > 40  # every kind of statement the lifecycle makes, not a handful
    assert {t: tables for t, tables in scans.items() if tables} == {}


PROJECTION_TABLES = [t for p in PROJECTIONS for t in p.tables]


def test_a_rebuild_gathers_statistics_as_each_table_doubles(world, conn, monkeypatch):
    """The tables a rebuild makes have no statistics until it gathers them (autovacuum cannot see them
    before the commit), and PostgreSQL's generic plans made while a table was small scanned it whole
    once it was not: closing a deadline by a scan of every open deadline (at a province's size, most of a
    rebuild's time), closing a numbering deadline planned before any certificate existed (most of a
    cohort's). It gathers each table's statistics at every doubling of that table's size, and at the end."""
    from consumers.rebuild import _Build

    full_lifecycle(world, 60)
    analysed = []
    monkeypatch.setattr(consumers.rebuild, "ANALYSE_FROM", 8192)
    monkeypatch.setattr(consumers.rebuild, "BATCH", 20)
    monkeypatch.setattr(consumers.rebuild, "CHUNK", 20)
    gather = _Build._analyse_grown
    monkeypatch.setattr(_Build, "_analyse_grown", lambda self, cur, final=False: analysed.append(
        (final, gather(self, cur, final))) or analysed[-1][1])  # fmt: skip
    rebuild(conn, PROJECTIONS, world.registrations, KEY)
    conn.commit()
    sizes = [size for final, grown in analysed if not final for table, size in grown if table == "audit_events"]
    assert len(sizes) >= 3, analysed  # 8 kB, then at least 16 and 32
    assert all(b >= 2 * a for a, b in zip(sizes, sizes[1:], strict=False)) and sizes[0] >= 8192
    assert analysed[-1][0] and analysed[-1][1]  # the last, at the end, gathered what had grown since
    tables = [t for p in PROJECTIONS for t in p.tables]
    with_statistics = conn.execute(
        "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace AND reltuples >= 0"
        " AND relname = ANY(%s)",
        (tables,),
    ).fetchall()
    assert sorted(r[0] for r in with_statistics) == sorted(tables)
    # Of each key, not of the events it carries: no statement a projection applies looks inside JSON.
    gathered = {c for (c,) in conn.execute(
        "SELECT attname FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'audit_events'")}  # fmt: skip
    assert {"aggregate_id", "position"} <= gathered and "data" not in gathered, gathered


def test_a_rebuild_collects_garbage_less_often_while_it_runs_and_puts_the_collector_back(world, conn, monkeypatch):
    """A rebuild's batches are thousands of decoded events each, traversed by collection after collection
    at Python's default threshold: it raises the threshold while it runs, and puts it back after, also when
    it fails, and when two rebuilds overlap."""
    import gc

    from projections.audit import Audit

    full_lifecycle(world, 20)
    seen, before = [], gc.get_threshold()
    original = Audit.apply_many

    def apply_many(self, cur, messages, memo=None):
        seen.append(gc.get_threshold())
        return original(self, cur, messages, memo)

    monkeypatch.setattr(Audit, "apply_many", apply_many)
    rebuild(conn, PROJECTIONS, world.registrations, KEY)
    assert seen and all(t[0] >= infra.collector.YOUNG for t in seen), seen
    assert gc.get_threshold() == before

    def failing(self, cur, messages, memo=None):
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(Audit, "apply_many", failing)
    monkeypatch.setattr(Audit, "apply", failing)
    rebuild(conn, PROJECTIONS, world.registrations, KEY)  # each event left out and recorded, the rest built
    assert gc.get_threshold() == before
    first, second = infra.collector.collecting_less(), infra.collector.collecting_less()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)  # the first ends before the second: the threshold stays raised
    assert gc.get_threshold()[0] >= infra.collector.YOUNG
    second.__exit__(None, None, None)
    assert gc.get_threshold() == before


def test_one_event_a_projection_cannot_apply_does_not_stop_a_rebuild_and_is_shown(world, conn):
    from consumers.lag import lag
    from consumers.rebuild import failures

    certificates_in_every_state(world, 6)
    apply_live(conn, bus_messages(world.registrations))
    live = rows(conn, "certificate_registry")

    class Broken(Registry):
        def apply(self, cur, m):
            if m["type"].endswith("made_queryable.v1") and m["position"] % 2:
                raise RuntimeError("a bug in a projection")
            super().apply(cur, m)

    applied = rebuild(conn, [Broken()], world.registrations, KEY)
    conn.commit()
    left_out = failures(conn, [Registry()])
    assert left_out and all("a bug in a projection" in error for *_, error in left_out)
    assert applied > len(left_out)
    # Everything else was applied: only the odd positions' queryability is missing.
    rebuilt = rows(conn, "certificate_registry")
    assert len(rebuilt) == len(live) and rebuilt != live
    [report] = [r for r in lag(conn, world.registrations, [Registry()])]
    assert report["status"] == "stalled" and {s["position"] for s in report["stalls"]} == {
        p for _, _, p, *_ in left_out
    }

    rebuild(conn, [Registry()], world.registrations, KEY)  # the bug fixed: rebuilt whole, nothing left out
    conn.commit()
    assert rows(conn, "certificate_registry") == live and not failures(conn, [Registry()])


def test_the_lag_looks_only_after_the_events_it_found_applied_until_the_projection_is_rebuilt(world, conn):
    """/projections counted every projection's lag against the whole store, seconds at a province's size. It
    now looks only after each projection's watermark, the last position it found everything applied at and
    below; the counts equal a look at the whole store, and a rebuild as of an earlier moment (versions going
    back) is not hidden by a watermark found before it."""
    from consumers.lag import lag

    iid, cids = certificates_in_every_state(world)
    apply_live(conn, bus_messages(world.registrations))
    head = world.registrations.recorder.max_notification_id()

    def report() -> dict[str, tuple[str, int]]:
        return {r["projection"]: (r["status"], r["events_behind"]) for r in lag(conn, world.registrations, PROJECTIONS)}

    def watermarks() -> dict[str, int]:
        return dict(conn.execute("SELECT projection, position FROM projection_watermarks").fetchall())

    def whole_store() -> dict[str, tuple[str, int]]:
        conn.execute("DELETE FROM projection_watermarks")
        conn.commit()
        return report()

    rebuild(conn, PROJECTIONS, world.registrations, KEY)
    conn.commit()
    assert watermarks() == {p.name: head for p in PROJECTIONS}  # a rebuild leaves them where it applied the log to
    assert set(report().values()) == {("current", 0)} == set(whole_store().values())
    assert watermarks() == {p.name: head for p in PROJECTIONS}
    # Below its watermark it does not look again: a version that went back there (which only a rebuild
    # does) goes unseen until the watermark is dropped.
    conn.execute("UPDATE projection_versions SET version = 0 WHERE projection = 'certificate_registry'")
    conn.commit()
    assert report()["certificate_registry"] == ("current", 0)
    assert whole_store()["certificate_registry"][1] > 0
    rebuild(conn, [Registry()], world.registrations, KEY)
    conn.commit()
    assert report()["certificate_registry"] == ("current", 0)

    for cid in cids[6:9]:  # recorded, not applied
        world.certificates.print(staff(iid), cid)
    later = report()
    assert later["certificate_registry"][0] == "behind" and later["certificate_registry"][1] >= 3
    assert later == whole_store()
    assert watermarks()["certificate_registry"] == head  # the first event behind is the next after it
    apply_live(conn, bus_messages(world.registrations))
    now = world.registrations.recorder.max_notification_id()
    assert set(report().values()) == {("current", 0)} and set(watermarks().values()) == {now}

    rebuild(conn, [Registry()], world.registrations, KEY, until=head)  # the registry as it stood before the prints
    conn.commit()
    assert watermarks()["certificate_registry"] == head
    earlier = report()
    assert earlier["certificate_registry"] == later["certificate_registry"]
    assert earlier == whole_store()


def test_a_set_based_batch_that_fails_is_applied_one_by_one_and_the_rest_still_comes_out_right(
    world, conn, monkeypatch
):
    """The audit trail's set-based write in a rebuild remembers which institution each aggregate was first
    recorded with. A batch that fails is rolled back and applied event by event, around that memory: from
    then on the trail must look its aggregates up again, or their later events take their actors'
    institution instead (a candidate's own actions, none)."""
    from consumers.rebuild import failures
    from projections.audit import Audit

    certificates_in_every_state(world, 6)
    messages = bus_messages(world.registrations)
    apply_live(conn, messages)
    live = (rows(conn, "audit_events"), rows(conn, "audit_aggregates"))
    # An aggregate first recorded with its institution, whose later events (without one) an actor of no or
    # another institution caused: the batch of that first event is the one that fails.
    first: dict[str, tuple[int, str]] = {}
    telling = []
    for m in messages:
        own, actors = m["data"].get("institution_id"), (m["data"].get("actor") or {}).get("institution_id")
        if own and m["aggregateid"] not in first:
            first[m["aggregateid"]] = (m["position"], own)
        elif not own and m["aggregateid"] in first and actors != first[m["aggregateid"]][1]:
            if m["position"] > first[m["aggregateid"]][0] + 40:  # in a later batch
                telling.append(first[m["aggregateid"]][0])
    assert telling
    monkeypatch.setattr(consumers.rebuild, "BATCH", 20)
    failed = []

    class Flaky(Audit):
        def apply_many(self, cur, messages, memo=None):
            if not failed and any(m["position"] == telling[0] for m in messages):
                failed.append([m["position"] for m in messages])
                raise RuntimeError("the database hiccuped")
            super().apply_many(cur, messages, memo)

    applied = rebuild(conn, [Flaky()], world.registrations, KEY)
    conn.commit()
    assert failed and applied == len(live[0]) and not failures(conn, [Audit()])
    assert (rows(conn, "audit_events"), rows(conn, "audit_aggregates")) == live


def test_a_rebuild_stopped_part_way_leaves_the_old_tables(world, conn):
    certificates_in_every_state(world, 6)
    apply_live(conn, bus_messages(world.registrations))
    live = rows(conn, "certificate_registry")

    def interrupted(done: int, total: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C while it runs

    with pytest.raises(KeyboardInterrupt):
        rebuild(conn, [Registry()], world.registrations, KEY, interrupted)
    conn.rollback()
    assert rows(conn, "certificate_registry") == live
    with psycopg.connect(conn.info.dsn) as other:  # nothing half-built became visible
        other.execute(f"SET search_path TO {conn.execute('SHOW search_path').fetchone()[0]}")
        assert len(other.execute("SELECT * FROM certificate_registry").fetchall()) == len(live)
    assert shadows(conn) == []  # what it had built is gone


def shadows(conn) -> list[str]:
    """The schema a rebuild of this connection's read models builds in, if it exists."""
    from consumers.rebuild import shadow_of

    name = shadow_of(conn.execute("SELECT current_schema()").fetchone()[0])
    return [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname = %s", (name,))]


def test_a_worker_starting_drops_what_a_killed_rebuild_left_half_built(world, conn, schema):
    from consumers.rebuild import bring_up_to_date, shadow_of

    certificates_in_every_state(world, 4)
    rebuild(conn, PROJECTIONS, world.registrations, KEY)
    half_built = sql.Identifier(shadow_of(schema))
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(half_built))
    conn.execute(sql.SQL("CREATE TABLE {}.candidate_registrations AS SELECT * FROM candidate_registrations").format(
        half_built))  # fmt: skip
    conn.commit()
    assert shadows(conn) and bring_up_to_date(conn, PROJECTIONS, world.registrations, KEY) == []
    assert shadows(conn) == []


def test_a_worker_starting_after_an_upgrade_rebuilds_the_audit_trail_that_copied_every_event(world, conn):
    """Version 2 of the trail held each event's data (json); version 3 indexes the store and keeps only the number
    an event names. An installation upgraded from 2 has its trail rebuilt when a worker starts, nothing else."""
    from consumers.rebuild import bring_up_to_date

    certificates_in_every_state(world, 4)
    rebuild(conn, PROJECTIONS, world.registrations, KEY)
    built = rows(conn, "audit_events")
    others = {t: rows(conn, t) for p in PROJECTIONS if p.name != "audit_trail" for t in p.tables}
    conn.execute("ALTER TABLE audit_events DROP COLUMN number, ADD COLUMN data json NOT NULL DEFAULT '{}'")
    conn.execute("UPDATE projection_schemas SET version = 2 WHERE projection = 'audit_trail'")
    conn.commit()
    assert bring_up_to_date(conn, PROJECTIONS, world.registrations, KEY) == ["audit_trail"]
    columns = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema ="
                                          " current_schema() AND table_name = 'audit_events' ORDER BY ordinal_position")]  # fmt: skip
    assert columns[-2:] == ["at", "number"] and "data" not in columns
    assert rows(conn, "audit_events") == built and {t: rows(conn, t) for t in others} == others
    assert bring_up_to_date(conn, PROJECTIONS, world.registrations, KEY) == []  # once


def test_during_a_rebuild_readers_and_the_live_consumer_go_on_and_what_it_applies_is_swapped_in(
    world, conn, database_url, schema
):
    """The new tables are built beside the old ones: a reader is answered from the old tables meanwhile (it
    used to wait for the whole rebuild), the live consumer goes on applying, and what it applied after the
    rebuild read the log's head is in the tables swapped in."""
    iid, cids = certificates_in_every_state(world)
    assert len(cids) > 6  # the last was never printed
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    live = rows(conn, "certificate_registry")
    seen: list[int] = []

    def meanwhile(done: int, total: int) -> None:
        if seen:
            return
        with connect(database_url, schema) as other:
            other.execute("SET statement_timeout = '3s'")  # waiting on the rebuild fails the test, not hangs it
            seen.append(len(rows(other, "certificate_registry")))
            world.certificates.print(staff(iid), cids[-1])  # recorded after the rebuild read the head
            apply_live(other, bus_messages(world.registrations))
            other.commit()

    rebuild(conn, PROJECTIONS, world.registrations, KEY, progress=meanwhile)
    assert seen == [len(live)]
    printed = "SELECT forms_printed FROM certificate_registry WHERE certificate_id = %s"
    assert conn.execute(printed, (cids[-1],)).fetchone()[0] == 1
    swapped_in = {t: rows(conn, t) for p in PROJECTIONS for t in p.tables}
    rebuild(conn, PROJECTIONS, world.registrations, KEY)  # the same log, rebuilt with nothing running
    assert {t: rows(conn, t) for p in PROJECTIONS for t in p.tables} == swapped_in
    assert shadows(conn) == []


def test_a_rebuilds_swap_waits_for_the_batch_the_live_consumer_is_applying_and_both_commit(
    world, conn, database_url, schema
):
    """What an outsider found: the swap made sure of the bookkeeping tables' columns with ALTER TABLE, which locks
    the table of offsets whole even when nothing changes, and then waited for the consumer's batch, which waited to
    record its offsets: PostgreSQL ended the deadlock by aborting the swap, and the whole rebuild was thrown away."""
    certificates_in_every_state(world, 4)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    names = [p.name for p in PROJECTIONS]
    with (
        connect(database_url, schema) as consumer,
        psycopg.connect(database_url, autocommit=True) as watching,
        ThreadPoolExecutor(1) as pool,
    ):
        try:
            # A batch being applied (projections.store.apply_batch): its versions locked first, its offsets last.
            consumer.execute("SELECT * FROM projection_versions WHERE projection = ANY(%s) FOR UPDATE", (names,))
            rebuilt = pool.submit(rebuild, connect(database_url, schema), PROJECTIONS, world.registrations, KEY)
            swap = f'LOCK TABLE "{schema}"."projection_versions"%'
            waits = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
            deadline = time.monotonic() + 60
            while not watching.execute(waits, (swap,)).fetchone()[0]:
                assert time.monotonic() < deadline and not rebuilt.done(), "the swap never waited for the batch"
                time.sleep(0.05)
            consumer.execute('INSERT INTO projection_offsets (projection, topic, partition, "offset") '
                             "VALUES ('candidates', 'other', 0, 1000) ON CONFLICT (projection, topic, partition) "
                             'DO UPDATE SET "offset" = EXCLUDED."offset"')  # fmt: skip
            consumer.commit()
        finally:
            consumer.rollback()  # a failure above lets the rebuild go on, not hang the test
        assert rebuilt.result(timeout=60) > 0


def test_a_sessions_numbering_deadline_closes_when_its_last_certificate_is_applied_beside_its_confirmation(
    world, conn, database_url, schema
):
    """What an outsider found: the exams and certificates topics are applied by two agents, each on a connection of
    its own. The confirmation opened the session's numbering deadline while the last certificate was being counted:
    each closing statement ran before it could see the other's change, and the deadline stayed open for ever, an
    institution shown overdue that was not."""
    from projections.deadlines import Deadlines

    iid, _, _, exam_id = confirmed_exam(world, 2)
    world.at(ISSUE_DAY)
    world.certificates.issue(staff(iid), exam_id)
    messages = bus_messages(world.registrations)
    [at] = [i for i, m in enumerate(messages) if m["type"].endswith("exam_session.results_confirmed.v1")
            and m["subject"] == str(exam_id)]  # fmt: skip
    apply_live(conn, messages[:at])
    conn.commit()
    monitor = Deadlines()
    later = [m for m in messages[at + 1 :] if m["source"].rpartition("/")[2] in monitor.topics]
    assert sum(m["type"].endswith("certificate.issued.v1") for m in later) == 2
    with connect(database_url, schema) as exams, connect(database_url, schema) as certificates:
        monitor.apply(exams.cursor(), messages[at])  # the exams agent's batch, not yet committed

        def the_certificates_agent() -> None:
            for m in later:
                monitor.apply(certificates.cursor(), m)
            certificates.commit()

        with ThreadPoolExecutor(1) as pool:
            counting = pool.submit(the_certificates_agent)
            time.sleep(0.5)
            exams.commit()
            counting.result(timeout=30)
    numbering = "SELECT closed_on FROM deadlines WHERE subject_id = %s AND step = %s"
    assert conn.execute(numbering, (exam_id, Step.CERTIFICATE_NUMBER)).fetchone()[0] == ISSUE_DAY


def test_a_session_nobody_passed_owes_no_certificate_numbers_and_is_never_overdue_for_them(world, conn):
    """What an outsider found: a session where every candidate failed or was absent had its numbering deadline
    marked closed by a certificate but given no day, so it stayed open, and ten working days on was overdue with
    nothing owed."""
    from projections.deadlines import open_deadlines

    _, _, _, exam_id = confirmed_exam(world, 2, absent_every=1)
    apply_live(conn, bus_messages(world.registrations))
    numbering = "SELECT closed_on, closed_by, late FROM deadlines WHERE subject_id = %s AND step = %s"
    closed_on, closed_by, late = conn.execute(numbering, (exam_id, Step.CERTIFICATE_NUMBER)).fetchone()
    assert closed_on is not None and closed_by == "exam_session.results_confirmed" and late is None
    _, still_open = open_deadlines(conn, date(2027, 1, 4), step=str(Step.CERTIFICATE_NUMBER))
    assert str(exam_id) not in {str(d["subject_id"]) for d in still_open}


def test_a_worker_of_an_older_release_neither_applies_to_nor_rebuilds_read_models_a_newer_one_built(world, conn):
    """What an outsider found: during an upgrade, a worker still on the older release went on applying its older
    rules to the tables a newer worker had rebuilt, and restarted, rebuilt them back to its own version (and the newer
    worker's next start forward again). It now refuses both, shown as a stall until it is upgraded."""
    from consumers.rebuild import bring_up_to_date
    from projections.store import NewerReadModels, apply_batch

    queryable_certificates(world, 2)
    messages = [m for m in bus_messages(world.registrations) if m["source"].endswith("/registrations")]
    projections = [p for p in PROJECTIONS if "registrations" in p.topics]
    newer = projections[0]
    conn.execute(
        "INSERT INTO projection_schemas VALUES (%s, %s, now()) ON CONFLICT (projection) DO UPDATE"
        " SET version = EXCLUDED.version",
        (newer.name, newer.version + 1),
    )  # a newer worker rebuilt it
    conn.commit()
    with pytest.raises(NewerReadModels, match=f"{newer.name} is at version {newer.version + 1}"):
        apply_batch(conn, projections, "registrations", [(0, i, m) for i, m in enumerate(messages)])
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM projection_versions").fetchone()[0] == 0  # nothing applied
    with pytest.raises(NewerReadModels, match="upgrade this worker"):
        bring_up_to_date(conn, PROJECTIONS, world.registrations, KEY)
    conn.rollback()
    assert conn.execute("SELECT version FROM projection_schemas WHERE projection = %s",
                        (newer.name,)).fetchone()[0] == newer.version + 1  # not rebuilt back  # fmt: skip


def test_a_rebuild_waiting_for_another_holds_no_snapshot_and_clears_the_stalls_of_what_it_rebuilt(
    world, conn, database_url, schema
):
    """What an outsider found: a second worker waiting for the rebuild's lock waited in one statement, holding a
    snapshot that kept vacuum from every table for the whole of the first one's rebuild. And a live stall of a
    rebuilt projection outlived the swap, showing it stalled on tables that no longer were."""
    from projections.store import record_stall

    certificates_in_every_state(world, 4)
    apply_live(conn, bus_messages(world.registrations))
    record_stall(conn, [Registry()], "certificates", 0, 7, None, "RuntimeError: a bug since fixed")
    conn.commit()
    first = psycopg.connect(database_url, autocommit=True)  # another worker, rebuilding
    first.execute("SELECT pg_advisory_lock(hashtext('skillcert-rebuild'), hashtext(%s))", (schema,))
    with ThreadPoolExecutor(1) as pool, connect(database_url, schema) as waiting:
        try:
            rebuilt = pool.submit(rebuild, waiting, [Registry()], world.registrations, KEY)
            time.sleep(1.0)  # it waits for the first
            xmin = "SELECT backend_xmin FROM pg_stat_activity WHERE pid = %s"
            held = []
            for _ in range(20):  # a snapshot held for the wait's whole length, or only while it tries now and then
                held.append(first.execute(xmin, (waiting.info.backend_pid,)).fetchone()[0] is not None)
                time.sleep(0.05)
            assert not rebuilt.done()
            assert sum(held) <= 10, held  # waiting in one statement held it in every sample
        finally:
            first.close()  # the first is done (or the test failed): the waiting one goes on, not hangs the test
        assert rebuilt.result(timeout=60) > 0
    assert (
        conn.execute("SELECT count(*) FROM projection_stalls WHERE projection = 'certificate_registry'").fetchone()[0]
        == 0
    )


def test_a_rebuild_of_one_projection_keeps_the_offsets_the_consumer_resumes_from(world, conn):
    """What an outsider found: the swap forgot the rebuilt projection's offsets, so at the next start every projection
    reading its topics read them again from their first message (a province's exams and certificates, after the
    deadline monitor's upgrade), the new events queued behind. Every message at or before them is in the new tables."""
    from projections.deadlines import Deadlines
    from projections.store import resume_at

    certificates_in_every_state(world, 4)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    offsets = 'SELECT topic, partition, "offset" FROM projection_offsets WHERE projection = %s ORDER BY 1, 2'
    before = conn.execute(offsets, ("deadline_monitor",)).fetchall()
    readers = [p for p in PROJECTIONS if "certificates" in p.topics]
    resumed = resume_at(conn, readers, "certificates", None)
    assert before and resumed
    rebuild(conn, [Deadlines()], world.registrations, KEY)
    assert conn.execute(offsets, ("deadline_monitor",)).fetchall() == before
    assert resume_at(conn, readers, "certificates", None) == resumed


def test_a_table_of_offsets_from_before_positions_gets_the_columns_it_lacks(conn):
    conn.execute("ALTER TABLE projection_offsets DROP COLUMN position, DROP COLUMN log_id")
    conn.commit()
    create_tables(conn, PROJECTIONS)
    columns = "SELECT attname FROM pg_attribute WHERE attrelid = 'projection_offsets'::regclass AND NOT attisdropped"
    assert {"position", "applied_at", "log_id"} <= {name for (name,) in conn.execute(columns).fetchall()}


def test_a_rebuild_creates_the_readers_indexes_once_its_tables_are_full(world, conn, database_url, schema):
    """Indexes only readers use are sorted once at the end of a rebuild rather than grown row by row; the
    tables it swaps in have every index a fresh start makes, and readers' queries use them."""
    full_lifecycle(world, 20)

    def indexes(c: psycopg.Connection, where: str) -> list[tuple[str, str]]:
        return c.execute(
            "SELECT indexname, replace(indexdef, schemaname || '.', '') FROM pg_indexes WHERE schemaname = %s"
            " AND tablename = ANY(%s) ORDER BY 1",
            (where, PROJECTION_TABLES),
        ).fetchall()

    fresh = indexes(conn, schema)
    for_readers = {"audit_events_actor", "deadlines_open", "certificate_registry_name"}
    assert for_readers <= {n for n, _ in fresh}
    during: list[set[str]] = []

    def look(done: int, total: int) -> None:
        with psycopg.connect(database_url) as other:  # what the build has committed
            during.append({n for n, _ in indexes(other, consumers.rebuild.shadow_of(schema))})

    rebuild(conn, PROJECTIONS, world.registrations, KEY, progress=look)
    conn.commit()
    assert during and all("audit_events_pkey" in names and not names & for_readers for names in during)
    assert indexes(conn, schema) == fresh
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SET LOCAL enable_seqscan = off")
        [[plan]] = cur.execute("EXPLAIN (FORMAT JSON) SELECT * FROM audit_events WHERE actor_id = 'x'").fetchall()
    assert "audit_events_actor" in str(plan)


def test_a_rebuild_commits_as_it_goes(world, conn, database_url, schema, monkeypatch):
    """Committed every CHUNK events, so PostgreSQL can prune what each UPDATE leaves behind: in one transaction,
    ten million events grew the database past 36 GB (benchmarks.province)."""
    import consumers.rebuild

    full_lifecycle(world, 30)
    monkeypatch.setattr(consumers.rebuild, "BATCH", 50)
    monkeypatch.setattr(consumers.rebuild, "CHUNK", 100)
    committed: list[int] = []

    def look(done: int, total: int) -> None:
        with psycopg.connect(database_url) as other:  # sees only what was committed
            shadow = consumers.rebuild.shadow_of(schema)
            committed.append(other.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(shadow, "audit_events"))).fetchone()[0])  # fmt: skip

    applied = rebuild(conn, PROJECTIONS, world.registrations, KEY, progress=look)
    assert committed == sorted(committed) and 0 < committed[-1] < applied and len(set(committed)) > 2
    assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == applied


def test_the_rebuild_command_shows_progress_and_refuses_an_unknown_name(world, conn, database_url, schema):
    import os
    import subprocess
    import sys

    certificates_in_every_state(world, 6)
    apply_live(conn, bus_messages(world.registrations))
    live = rows(conn, "certificate_registry")
    conn.commit()  # a reader's open transaction would hold the rebuild's DROP, as any reader's would
    env = {**os.environ, "SKILLCERT_DATABASE_URL": database_url, "SKILLCERT_DB_SCHEMA": schema,
           "SKILLCERT_PSEUDONYM_KEY": KEY.hex()}  # fmt: skip
    cli = [sys.executable, "-m", "infra.cli", "projections", "rebuild"]
    done = subprocess.run([*cli, "certificate_registry"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    issued = sum(1 for m in bus_messages(world.registrations) if m["source"].endswith("certificates"))
    assert "certificate_registry: rebuilt" in done.stdout and f"{issued} events applied" in done.stdout
    assert rows(conn, "certificate_registry") == live
    wrong = subprocess.run([*cli, "certificates"], env=env, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and "no projection named certificates" in wrong.stdout
    # A mistyped schema: the commands that look at the store say there is none there, and make nothing.
    typo = f"{schema}_typo"
    printing = ["print", "session", "--session", str(uuid.uuid4()), "--out", "/dev/null", "--token", "skc_x"]
    for command in (
        ["projections", "lag"],
        ["projections", "rebuild"],
        ["relay", "status"],
        ["keys", "status"],
        printing,
        ["tokens", "create", "--role", "auditor", "--name", "auditor-sun"],
        ["tokens", "list"],
        ["esign", "trust", "--out", "/tmp"],
    ):
        looked = subprocess.run([sys.executable, "-m", "infra.cli", *command], env={**env, "SKILLCERT_DB_SCHEMA": typo},
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert looked.returncode == 2 and f"no event store in schema '{typo}'" in looked.stderr, looked.stderr
        assert "the schemas holding one: " in looked.stderr  # where there is one (ours, and others')
    assert conn.execute("SELECT to_regnamespace(%s)", (typo,)).fetchone()[0] is None


def test_the_api_serves_the_registry_and_the_ledger(world, conn, database_url, schema):
    from fastapi.testclient import TestClient

    from infra.api import create_app

    iid, cids = certificates_in_every_state(world, 6)
    apply_live(conn, bus_messages(world.registrations))
    conn.commit()
    corrected = world.certificates.certificate(cids[1])
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex())) as http:
        http.headers.update(bearer(database_url, schema, Role.AUDITOR, "auditor-sun"))
        got = http.get(f"/certificates/{corrected.number}").json()
        assert (got["status"], got["holder_name"]) == ("corrected", "更正后姓名")
        assert http.get(f"/certificates/{corrected.number}/correction").json()["decision"] == "approved"
        by_holder = http.get("/certificates", params={"holder_id_number": corrected.holder.id_number}).json()["items"]
        assert [c["number"] for c in by_holder] == [corrected.number]
        by_name = http.get("/certificates", params={"name": "更正后姓名", "institution_id": str(iid)}).json()["items"]
        assert [c["number"] for c in by_name] == [corrected.number]
        missing = http.get("/certificates/S000000000000000000000")
        assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
        vague = http.get("/certificates")
        assert vague.status_code == 422 and vague.json()["errors"][0]["field"] == "holder_id_number"
        assert http.get(f"/certificates/{world.certificates.certificate(cids[0]).number}/correction").status_code == 404


def test_the_audit_trail_by_aggregate_actor_and_institution_in_a_time_range(world, conn, service):
    from datetime import UTC, datetime, timedelta

    from domain.institution import DeadlineProfile, Filing
    from projections.audit import trail
    from tests.builders import ADMIN, candidate, plan_details, staff_of

    iid, cids = certificates_in_every_state(world, 6)
    world.at(date(2026, 3, 2))
    other_iid = service.register_institution(  # another institution, with one candidate
        ADMIN, "广州市技能评价中心", Filing(city_code="01", station_serial="007"), DeadlineProfile.S, SCOPE
    )
    _, other_code = service.publish_plan(staff_of(other_iid), other_iid, plan_details("2502", seats=5))
    service.register(candidate(99), other_code, working_years_form(99))
    messages = bus_messages(world.registrations)
    apply_live(conn, messages)

    cid = cids[1]
    total, page = trail(conn, aggregate_id=str(cid))
    own = [m for m in messages if m["aggregateid"] == str(cid)]
    assert total == len(own) and [e["aggregate_version"] for e in page] == list(range(1, len(own) + 1))
    assert [e["actor_id"] for e in page][-1] == CENTRE.id and page[-1]["actor_role"] == "provincial_centre"
    assert [e["actor_id"] for e in page][-2] == ASSOCIATION.id and page[-2]["actor_role"] == "association"

    # The trail keeps the number a certificate's issue names (the audit report's fallback), not the event.
    issued = [e for e in page if e["type"].startswith("cn.skillcert.certificate.issued.")]
    assert [e["number"] for e in issued] == [world.certificates.certificate(cid).number] and "data" not in page[0]

    total, page = trail(conn, actor_id=ASSOCIATION.id)
    assert total == 3 and sorted(e["type"].rpartition(".")[0].rpartition(".")[2] for e in page) == [
        "correction_checked", "correction_checked", "deletion_checked"]  # fmt: skip

    # Everything of the first institution, a page at a time; the candidates' own actions included.
    seen, after = [], 0
    while True:
        total, page = trail(conn, institution_id=str(iid), after=after, limit=50)
        if not page:
            break
        seen += page
        after = page[-1]["position"]
    assert total == len(seen) and len({e["event_id"] for e in seen}) == len(seen)
    assert any(e["actor_role"] == "candidate" for e in seen)
    other_total, other = trail(conn, institution_id=str(other_iid))
    assert other_total == 6  # registered, its key certified, its sample filed, a plan, a seat taken, a registration
    assert total + other_total == len(messages)
    # A time range: nothing before the first event, everything up to now.
    first = min(datetime.fromisoformat(m["time"]) for m in messages)
    assert trail(conn, institution_id=str(iid), until=first)[0] == 0
    assert trail(conn, institution_id=str(iid), since=first, until=datetime.now(UTC) + timedelta(minutes=1))[0] == total

    from fastapi.testclient import TestClient

    from infra.api import create_app

    conn.commit()
    url, search_path = conn.info.dsn, conn.execute("SHOW search_path").fetchone()[0]
    with TestClient(create_app(url, search_path)) as http:
        http.headers.update(bearer(url, search_path, Role.AUDITOR, "auditor-sun"))
        page = http.get("/audit", params={"institution_id": str(other_iid), "limit": 3}).json()
        # registered, its key certified, its sample filed, a plan published, a registration
        assert page["total"] == 6 and len(page["items"]) == 3 and page["next_after"] == page["items"][-1]["position"]
        rest = http.get("/audit", params={"institution_id": str(other_iid), "after": page["next_after"]}).json()
        assert len(rest["items"]) == 3 and rest["next_after"] is None
        # Each event's data, read from the store, is what the bus carries (pseudonymised with the installation's key).
        carried = {m["position"]: m["data"] for m in bus_messages(world.registrations, http.app.state.key)}
        assert all(e["data"] == carried[e["position"]] for e in page["items"] + rest["items"])
        assert any("id_number" in e["data"].get("form", {}) for e in rest["items"])  # the registration
        assert http.get("/audit", params={"limit": 0}).status_code == 422
        # The event types by the glossary's names: Chinese when asked first, the type's own words otherwise.
        zh = http.get("/audit", params={"institution_id": str(other_iid)},
                      headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}).json()["items"]  # fmt: skip
        en = http.get("/audit", params={"institution_id": str(other_iid)},
                      headers={"Accept-Language": "en-GB, zh;q=0.5"}).json()["items"]  # fmt: skip
        assert zh[0]["type"] == "cn.skillcert.institution.registered.v1" and zh[0]["label"] == "评价机构备案登记"
        assert en[0]["label"] == "institution registered"


def test_the_deadline_monitor_shows_the_review_window_a_late_publication_extended(world, conn):
    """Scores published late extend the candidates' review window (ExamSession.publish_scores): the monitor shows the
    window as it now runs, once, and not the one that closed before the scores were out."""
    from projections.deadlines import open_deadlines

    iid, pid, rids = approved_cohort(world, 1)
    exam = sit_exam(world, iid, pid, rids)
    world.at(date(2026, 4, 13)).exams.record_scores(staff(iid, SCORER), exam, {rids[0]: score(1)})
    world.at(date(2026, 4, 27)).exams.publish_scores(staff(iid), exam)
    closes = world.exams.repository.get(exam).review_window.due
    assert closes > date(2026, 4, 27)
    apply_live(conn, bus_messages(world.registrations))
    windows = conn.execute(
        "SELECT due, closed_on, closed_by, late FROM deadlines WHERE subject_id = %s AND step = %s ORDER BY due",
        (exam, Step.REVIEW_WINDOW),
    ).fetchall()
    assert windows == [
        (date(2026, 4, 24), date(2026, 4, 27), "exam_session.scores_published", None),
        (closes, None, None, None),
    ]
    _, shown = open_deadlines(conn, date(2026, 4, 28), step=str(Step.REVIEW_WINDOW))
    assert [(str(d["subject_id"]), d["due"], d["overdue"]) for d in shown] == [(str(exam), closes, False)]


def test_a_correction_closes_the_deadlines_it_supersedes_and_refiled_demand_replaces_the_year(world, conn):
    """What an outsider found: deadlines a correction made moot (the centre's review of the data reported before, the
    first print's hand-over) stayed open, were shown overdue, and closed late when the new steps came round; the
    stock ledger counted a spoiled print as a form used, and kept a level a refiled demand no longer asked for."""
    from domain.levels import Level
    from projections.deadlines import open_deadlines
    from projections.stock import ledger

    iid, cids = queryable_certificates(world, 2)
    c = world.certificates
    world.at(date(2026, 7, 2))
    c.file_demand(staff(iid), iid, 2026, {Level.TWO: 250, Level.THREE: 40})
    c.receive_forms(staff(iid), iid, 1, 10, "SH-1")
    first = c.print(staff(iid), cids[0])
    c.spoil_print(staff(iid), cids[0], first, "卡纸")
    c.print(staff(iid), cids[0])
    c.print(staff(iid), cids[1])
    c.file_demand(staff(iid), iid, 2026, {Level.TWO: 260})
    c.apply_for_correction(staff(iid), cids[1], Correction(name="更正后姓名"), "姓名录入错误", EVIDENCE)
    approve_correction(c, cids[1])  # before its hand-over: the first print's deadline is moot
    apply_live(conn, bus_messages(world.registrations))
    physical = conn.execute("SELECT closed_by, late FROM deadlines WHERE subject_id = %s AND step = 'physical_certificate'",
                            (cids[1],)).fetchall()  # fmt: skip
    assert physical == [("certificate.correction_approved", None)], physical
    _, overdue = open_deadlines(conn, date(2026, 12, 31), overdue=True)
    assert {(str(r["subject_id"]), r["step"]) for r in overdue} == {(str(cids[0]), "physical_certificate"),
                                                                     (str(cids[1]), "data_reported")}  # fmt: skip
    books = ledger(conn, str(iid))
    assert [(r["level"], r["used"]) for r in books["used_per_level"]] == [(2, 2)]  # the spoiled print is no form used
    assert [(r["level"], r["forms"]) for r in books["demand"]] == [(2, 260)]


def test_a_name_typed_as_it_reads_finds_the_certificate_stored_with_a_variant_or_another_middle_dot(world, conn):
    """What an outside review found: a holder registered as 葛 U+E0100 亮 (a variation selector: the certificate prints
    葛亮) or 阿卜杜·热合曼 was not found by 葛亮, by 阿卜杜・热合曼, nor by a name with a space around it. The name's
    index answers first; a name it does not find is looked for among the institution's certificates as a reader
    tells names apart (domain.text.name_key)."""
    iid, cids = queryable_certificates(world, 3)
    c = world.certificates
    for cid, name in zip(cids[:2], ["葛\U000e0100亮", "阿卜杜·热合曼"], strict=True):
        c.apply_for_correction(staff(iid), cid, Correction(name=name), "姓名录入错误", EVIDENCE)
        approve_correction(c, cid)
    apply_live(conn, bus_messages(world.registrations))
    numbers = [c.certificate(cid).number for cid in cids]
    assert [r["number"] for r in certificates_named(conn, "葛亮", str(iid))] == [numbers[0]]
    assert [r["number"] for r in certificates_named(conn, "阿卜杜・热合曼", str(iid))] == [numbers[1]]
    assert [r["number"] for r in certificates_named(conn, "阿卜杜‧热合曼", str(iid))] == [numbers[1]]
    assert certificates_named(conn, "葛明", str(iid)) == []
    assert certificates_named(conn, "葛亮", str(uuid.uuid4())) == []  # another institution's: none
