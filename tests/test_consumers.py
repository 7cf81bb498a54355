"""Every read model after a whole lifecycle: applied in-process as the consumer applies bus
messages, and through the real broker by the faust worker, which is killed mid-stream and
restarted; either way the tables equal a rebuild from the event store row for row."""

from __future__ import annotations

import re
import signal
import threading
import time
from uuid import uuid4

import psycopg
from confluent_kafka import Consumer, TopicPartition

from consumers.lag import lag
from consumers.rebuild import rebuild
from domain.model import Role
from infra.bus.privacy import installation_key
from projections import PROJECTIONS
from projections.store import apply_batch, connect, create_tables, record_stall
from tests.api import bearer
from tests.bus import Bus, eventually
from tests.lifecycle import ISSUE_DAY, confirmed_exam, full_lifecycle, id_check, queryable_certificates, staff
from tests.read_models import all_rows, check_read_models
from tests.test_read_models import KEY, apply_live, as_kafka_delivers, bus_messages


def test_every_read_model_answers_for_a_whole_lifecycle(world, database_url, schema):
    life = full_lifecycle(world, 60)
    with connect(database_url, schema) as conn:
        create_tables(conn, PROJECTIONS)
        apply_live(conn, bus_messages(world.registrations))
        check_read_models(conn, world, life, KEY)


def test_two_workers_applying_one_partition_at_once_apply_each_event_once(world, database_url, schema):
    """While a rebalance moves a partition, the worker losing it may still be applying a batch its new
    owner read too. Two threads apply every batch at the same moment, as those two workers would; the
    read models end as one sequential application leaves them (counters counted once, not twice)."""
    full_lifecycle(world, 60)
    messages = bus_messages(world.registrations)
    batches: list[tuple[str, list]] = []
    offsets: dict[tuple[str, int], int] = {}
    for partition, m in as_kafka_delivers(messages):
        topic = m["source"].rpartition("/")[2]
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        if not batches or batches[-1][0] != topic or len(batches[-1][1]) == 20:
            batches.append((topic, []))
        batches[-1][1].append((partition, offset, m))
    for_topic = {t: [p for p in PROJECTIONS if t in p.topics] for t, _ in batches}
    barrier, errors, retried = threading.Barrier(2), [], []

    def worker() -> None:
        with connect(database_url, schema) as conn:
            for topic, batch in batches:
                barrier.wait()
                for _ in range(5):  # as the Applier does: a failed batch is tried again
                    try:
                        apply_batch(conn, for_topic[topic], topic, batch)
                        break
                    except psycopg.Error as e:
                        retried.append(repr(e))
                else:
                    errors.append(topic)

    with connect(database_url, schema) as conn:
        create_tables(conn, PROJECTIONS)
        conn.commit()
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not retried, (errors, retried[:3])
    once = f"{schema}_once"
    with psycopg.connect(database_url, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {once}")
    try:
        with connect(database_url, once) as c:
            create_tables(c, PROJECTIONS)
            for topic, batch in batches:
                apply_batch(c, for_topic[topic], topic, batch)
            sequential = all_rows(c)
        with connect(database_url, schema) as c:
            raced = all_rows(c)
        assert sum(map(len, sequential.values())) > 500
        differ = {t: (len(set(raced[t]) - set(sequential[t])), len(set(sequential[t]) - set(raced[t])))
                  for t in sequential if raced[t] != sequential[t]}  # fmt: skip
        assert differ == {}
    finally:
        with psycopg.connect(database_url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {once} CASCADE")


def test_a_batch_applied_on_one_partition_leaves_the_stall_of_another_shown(world, database_url, schema):
    """What an outsider found: with two workers, every batch one applied on its partitions deleted the stall the
    other had recorded on its own, so /projections showed a partition stuck behind a bad message as current."""
    queryable_certificates(world, 3)
    by_partition: dict[int, list] = {}
    for partition, m in as_kafka_delivers(bus_messages(world.registrations)):
        if m["source"].endswith("/registrations"):
            by_partition.setdefault(partition, []).append(m)
    stuck, going = sorted(by_partition)[:2]
    projections = [p for p in PROJECTIONS if "registrations" in p.topics]
    stalls = "SELECT partition FROM projection_stalls WHERE topic = 'registrations'"
    with connect(database_url, schema) as conn:
        create_tables(conn, PROJECTIONS)
        record_stall(conn, projections, "registrations", stuck, 0, by_partition[stuck][0], "RuntimeError: a bug")
        apply_batch(conn, projections, "registrations", [(going, i, m) for i, m in enumerate(by_partition[going])])
        assert {p for (p,) in conn.execute(stalls).fetchall()} == {stuck}  # still shown
        apply_batch(conn, projections, "registrations", [(stuck, i, m) for i, m in enumerate(by_partition[stuck])])
        assert conn.execute(stalls).fetchall() == []  # applied at last: no longer stuck


def test_a_batch_that_loses_a_deadlock_is_applied_again_whole(world, database_url, schema, caplog):
    """What an outsider found: batches of two topics, or of two partitions, take some rows in their messages' order
    (a session's count of certificates, a month's statistics) and can deadlock. The one PostgreSQL aborted was taken
    apart and applied a message a transaction, silently. Here another transaction holds the session's count and then
    waits for the batch's partition: the batch loses the deadlock, and is applied again whole once the other is done."""
    from consumers.projector import Applier
    from infra.bus.relay import ensure_position_table

    iid, _, _, exam_id = confirmed_exam(world, 2)
    world.at(ISSUE_DAY)
    world.certificates.issue(staff(iid), exam_id)
    messages = bus_messages(world.registrations)
    issued = [m for m in messages if m["type"].endswith("certificate.issued.v1")]
    projections = [p for p in PROJECTIONS if "certificates" in p.topics]
    with connect(database_url, schema) as conn:
        create_tables(conn, PROJECTIONS)
        ensure_position_table(conn, schema)
        apply_live(conn, [m for m in messages if m not in issued])  # the session's results: its count's row
        conn.commit()
    applier = Applier(database_url, schema, "certificates", projections, world.certificates, KEY, threading.Event())
    sizes: list[int] = []
    whole = applier._apply

    def counted(batch):  # type: ignore[no-untyped-def]
        sizes.append(len(batch))
        return whole(batch)

    applier._apply = counted  # type: ignore[method-assign]
    with connect(database_url, schema) as other, psycopg.connect(database_url, autocommit=True) as watching:
        other.execute("SET deadlock_timeout = '10s'")  # the batch, waiting first, is the one PostgreSQL aborts
        other.execute("SELECT 1 FROM deadline_numbering WHERE exam_id = %s FOR UPDATE", (exam_id,))
        applying = threading.Thread(target=applier.apply, args=([(0, i, m) for i, m in enumerate(issued)],))
        applying.start()
        waits = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
        deadline = time.monotonic() + 30
        while not watching.execute(waits, ("%deadline_numbering%",)).fetchone()[0]:
            assert time.monotonic() < deadline, "the batch never waited for the session's count"
            time.sleep(0.05)
        other.execute("SELECT pg_advisory_xact_lock(hashtext('apply:certificates'), 0)")  # the batch's partition
        other.commit()
        applying.join(30)
    assert sizes == [len(issued)] * 2, sizes  # whole, then whole again; not message by message
    assert "lost a deadlock" in caplog.text
    with connect(database_url, schema) as conn:
        assert conn.execute("SELECT count(*) FROM certificate_registry").fetchone()[0] == len(issued)
        assert conn.execute("SELECT count(*) FROM projection_stalls").fetchone()[0] == 0


def caught_up(conn, app) -> bool:
    # The worker makes its tables when it starts, which it does once the broker answers: until then, not caught up.
    if conn.execute("SELECT to_regclass('projection_versions')").fetchone()[0] is None:
        return False
    return all(r["events_behind"] == 0 for r in lag(conn, app, PROJECTIONS))


def rebuilt_equals(database_url, schema, app, live) -> None:
    with connect(database_url, schema) as c:
        rebuild(c, PROJECTIONS, app, installation_key(database_url, schema))
        rebuilt = all_rows(c)
        differ = {
            t: (set(live[t]) - set(rebuilt[t]), set(rebuilt[t]) - set(live[t])) for t in live if live[t] != rebuilt[t]
        }
        assert differ == {}  # live rows missing from the rebuild, rebuilt rows missing from live


def test_through_the_broker_every_read_model_is_built_and_equals_a_rebuild(
    world, database_url, schema, bootstrap, tmp_path
):
    bus = Bus(database_url, schema, bootstrap, tmp_path)
    try:
        bus.relay()
        bus.consumers()
        life = full_lifecycle(world, 60)
        app = world.registrations
        with connect(database_url, schema) as conn:
            eventually(lambda: caught_up(conn, app), timeout=180, every=0.5)
            check_read_models(conn, world, life, installation_key(database_url, schema))
            report = {r["projection"]: r for r in lag(conn, app, PROJECTIONS)}
            assert all(r["partitions"] and r["seconds_behind"] == 0 for r in report.values())
            live = all_rows(conn)
            conn.commit()
        lagged = bus.cli("projections", "lag", "--json")
        assert lagged.returncode == 0 and '"events_behind": 0' in lagged.stdout
        # Piped, at 80 columns: every projection named in full, each with its figures on its line.
        table = bus.cli("projections", "lag").stdout
        for p in PROJECTIONS:
            assert re.search(rf"│ {p.name} +│ current +│ +0 │", table), table
        bus.stop_all()  # the worker stops; the rebuild works alone
        rebuilt_equals(database_url, schema, app, live)
    finally:
        bus.stop_all()


def committed_offsets(bootstrap: str, group: str, topics: list[str]) -> dict[tuple[str, int], int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(3)]
        return {(tp.topic, tp.partition): tp.offset for tp in c.committed(parts, timeout=10)}
    finally:
        c.close()


def test_a_worker_killed_mid_stream_and_restarted_applies_everything_exactly_once(
    world, database_url, schema, bootstrap, tmp_path
):
    bus = Bus(database_url, schema, bootstrap, tmp_path)
    try:
        worker = bus.consumers()
        with connect(database_url, schema, autocommit=True) as conn:
            ready = "SELECT count(*) FROM projection_schemas"
            eventually(lambda: conn.execute("SELECT to_regclass('projection_schemas')").fetchone()[0]
                       and conn.execute(ready).fetchone()[0] == len(PROJECTIONS), timeout=60)  # fmt: skip
            full_lifecycle(world, 200)  # with no relay yet: a backlog the relay publishes at once
            app = world.registrations
            bus.relay()

            def applied() -> int:
                return conn.execute("SELECT coalesce(sum(version), 0) FROM projection_versions").fetchone()[0]

            eventually(lambda: applied() > 500, timeout=120, every=0.02)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            stored = {
                (t, p): o
                for t, p, o in conn.execute('SELECT DISTINCT ON (topic, partition) topic, partition, max("offset")'
                                            " OVER (PARTITION BY topic, partition) FROM projection_offsets").fetchall()
            }  # fmt: skip
            behind = {r["projection"]: r["events_behind"] for r in lag(conn, app, PROJECTIONS)}
            assert sum(behind.values()) > 0, "killed too late: nothing was left to apply"
            topics = [bus.topic(c) for c in ("registrations", "exams", "certificates", "stock")]
            committed = committed_offsets(bootstrap, f"{bus.prefix}projections", topics)
            # Kafka will redeliver what the worker applied after its last commit.
            redelivered = [k for k, o in committed.items() if k in stored and o <= stored[k]]
            assert redelivered, (committed, stored)
            bus.consumers()
            started = time.monotonic()
            eventually(lambda: caught_up(conn, app), timeout=180, every=0.5)
            print(f"caught up {time.monotonic() - started:.1f} s after the restart")
            live = all_rows(conn)
        bus.stop_all()
        rebuilt_equals(database_url, schema, app, live)
    finally:
        bus.stop_all()


def test_the_deadline_monitor_shows_what_is_open_and_overdue_per_institution(world, database_url, schema):
    """Three certificates on the query platform since 1 July; one handed over on 2 July and reported lost the same
    day, its proof not yet issued; the other two not yet handed over."""
    from datetime import date

    from domain.certificate import LossKind
    from domain.registration import AttachmentKind
    from projections.deadlines import open_deadlines, overdue_by_institution
    from tests.builders import attachment
    from tests.lifecycle import collect, queryable_certificates, staff

    iid, cids = queryable_certificates(world, 3)
    world.at(date(2026, 7, 2))
    world.certificates.receive_forms(staff(iid), iid, 1, 10, "SH-1")
    world.certificates.print(staff(iid), cids[0])
    collect(world.certificates, iid, cids[0])
    world.certificates.apply_for_proof(staff(iid), cids[0], LossKind.LOST, attachment(AttachmentKind.PROOF_APPLICATION),
                                       **id_check(world.certificates, cids[0]))  # fmt: skip
    with connect(database_url, schema) as conn:
        create_tables(conn, PROJECTIONS)
        apply_live(conn, bus_messages(world.registrations))
        total, rows = open_deadlines(conn, date(2026, 7, 2))
        steps = sorted(r["step"] for r in rows)
        assert steps == ["loss_proof"] + ["physical_certificate"] * 2
        proof = next(r for r in rows if r["step"] == "loss_proof")
        # 5 working days after Thursday 2 July (profile S counts 10): due 16 July.
        assert (proof["due"], proof["unit"], proof["days_left"], proof["overdue"]) == (
            date(2026, 7, 16),
            "working_days",
            10,
            False,
        )
        assert open_deadlines(conn, date(2026, 7, 15), overdue=True)[0] == 0  # physical: due 15 July
        assert open_deadlines(conn, date(2026, 7, 16), overdue=True)[0] == 2
        late_total, late = open_deadlines(conn, date(2026, 7, 20), overdue=True)  # Monday after
        assert late_total == 3 and {r["days_left"] for r in late if r["step"] == "loss_proof"} == {-2}
        [summary] = overdue_by_institution(conn, date(2026, 7, 20))
        assert summary["institution_id"] == iid and summary["overdue_by_step"] == {
            "physical_certificate": 2,
            "loss_proof": 1,
        }
        assert open_deadlines(conn, date(2026, 7, 20), institution_id=str(uuid4()), overdue=True) == (0, [])


def test_the_api_serves_deadlines_stock_statistics_and_lag(world, database_url, schema):
    from fastapi.testclient import TestClient

    from infra.api import create_app

    life = full_lifecycle(world, 60)
    with connect(database_url, schema) as conn:
        create_tables(conn, PROJECTIONS)
        apply_live(conn, bus_messages(world.registrations))
        conn.commit()
    with TestClient(create_app(database_url, schema, pseudonym_key=KEY.hex())) as http:
        http.headers.update(bearer(database_url, schema, Role.AUDITOR, "auditor-sun"))
        books = http.get(f"/institutions/{life.iid}/stock").json()
        assert (books["received"], books["spoiled"], books["last_discrepancy"]) == (300, 2, 0)
        assert books["demand"] and all(d["late"] is False for d in books["demand"]), books["demand"]  # filed in January
        form = http.get(f"/institutions/{life.iid}/stock/forms/{life.reprint_form}").json()
        assert form["certificate_number"] == world.certificates.certificate(life.corrected).number
        # A form received and not used is in stock; one never received is a 404 saying so (an outside review could
        # not tell the two apart: both were 404 "neither used nor spoiled").
        unused = http.get(f"/institutions/{life.iid}/stock/forms/10000299")
        assert unused.status_code == 200 and unused.json()["status"] == "in_stock", unused.text
        unknown = http.get(f"/institutions/{life.iid}/stock/forms/10000301")
        assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
        assert "never received form NO. 10000301" in unknown.json()["detail"], unknown.text
        [month] = http.get("/statistics/issued", params={"institution_id": str(life.iid), "year": 2026}).json()["items"]
        assert month["issued"] == len(life.passed)
        [rate] = http.get("/statistics/pass-rates").json()["items"]
        assert rate["passed"] == len(life.passed) - 1  # one disqualified: scores cancelled
        assert http.get("/deadlines", params={"institution_id": str(life.iid)}).json()["total"] == 0
        wrong = http.get("/deadlines", params={"step": "coffee_break"})
        assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "query.step"
        lags = http.get("/projections").json()
        assert {r["projection"] for r in lags} == {p.name for p in PROJECTIONS}
        assert all(r["events_behind"] == 0 for r in lags)
