"""What one command costs as an aggregate's history grows: a registration into a plan with no seat
taken next to one into a plan with 100,000 taken, a serial number allocated from a counter with
no allocation next to one with 100,000 behind it, and an admission ticket issued in an exam session
with no seat taken next to one with 100,000 seats given one ticket at a time.

    python -m benchmarks.plan_size                  # embedded PostgreSQL, 100,000 events, 3 runs
    python -m benchmarks.plan_size --events 20000 --database-url postgresql://postgres@127.0.0.1/test

Each big aggregate is built untimed through the domain (the plan takes its seats, the counter
allocates one number at a time, the session seats one candidate per event) and saved in parts, taking
its snapshots as it goes. The timed part is the service's own command (Registrations.register; the
counter loaded, allocated and saved; Exams.issue_tickets for one approved, fee-paid registration), 50
times against the big aggregate and 50 times against the empty one, interleaved; the figure is the
median of each, and the ratio big / empty. Run 3 times; medians of the runs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from datetime import date, timedelta
from datetime import time as clock
from decimal import Decimal
from pathlib import Path

import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table
from stdnum.cn import ric

from domain.certificate import SerialCounter, counter_id
from domain.exam import ExamSession, Room
from domain.institution import DeadlineProfile, Filing, Institution
from domain.levels import Level
from domain.model import Actor, Role
from domain.plan import EvaluationPlan, plan_id
from domain.registration import AttachmentKind, RegistrationForm
from infra.services import samples
from infra.services.exams import Exams
from infra.services.registrations import Decision, Registrations
from infra.store.eventstore import SNAPSHOT_EVERY
from tests.builders import L2_CONDITION, L2_EVIDENCE, SCOPE, plan_details

console = Console(width=120)
SYSTEM = Actor(id="bench", role=Role.SYSTEM)
TIMED = 50


def _form(k: int) -> RegistrationForm:
    born = date(1990, 1, 1) + timedelta(days=k % 7000)  # the area code 440305 exists from 1990
    base = f"440305{born:%Y%m%d}{100 + k // 7000:03d}"
    return RegistrationForm(
        name=f"考生{k}", id_number=base + ric.calc_check_digit(base + "0"), gender="男" if (100 + k // 7000) % 2 else "女",
        date_of_birth=born, education="大学本科", years_in_occupation=8, candidate_source="本企业职工",
        labour_relation="本企业职工", work_unit="深圳市某某科技有限公司", basis="working_years", declaration_accepted=True,
        attachments=[samples.attachment(k) for k in (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD,
                                                     AttachmentKind.SOCIAL_SECURITY, AttachmentKind.PRIOR_CERTIFICATE)],
        holds_prior_certificate=True,  # the level-3 certificate L2_CONDITION rests on
    )  # fmt: skip


def one_run(url: str, events: int) -> dict[str, float]:
    schema = f"bench_size_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    svc = Registrations(url, schema, today=lambda: date(2026, 3, 2))
    try:
        samples.hold(svc.attachments)
        iid = svc.register_institution(SYSTEM, "深圳市技能人才评价示范中心", Filing(city_code="03", station_serial="015"),
                                       DeadlineProfile.S, SCOPE)  # fmt: skip
        staff = Actor(id="staff-bench", role=Role.INSTITUTION_STAFF, institution_id=iid)
        seats = min(100_000, events + 2 * TIMED)  # the most a plan takes (PlanDetails.max_registrations)
        _, empty_code = svc.publish_plan(staff, iid, plan_details("EMPTY", seats=seats))
        _, big_code = svc.publish_plan(staff, iid, plan_details("BIG", seats=seats))
        big = svc.get(EvaluationPlan, plan_id(iid, "BIG"), "plan")
        with console.status(f"{events:,} seats taken in plan BIG, {events:,} numbers allocated, untimed"):
            for start in range(0, events, 5000):
                for _ in range(start, min(events, start + 5000)):
                    big.take_seat(staff, uuid.uuid4(), date(2026, 3, 2))  # holders need not exist to be counted
                svc.save(big)
            institution = svc.get(Institution, iid, "institution")
            big_counter = SerialCounter.open(staff, iid, institution.filing.prefix, 2026, Level.ONE)
            for start in range(0, events, 5000):
                for _ in range(start, min(events, start + 5000)):
                    big_counter.allocate(staff, 1)
                svc.save(big_counter)
            svc.save(SerialCounter.open(staff, iid, institution.filing.prefix, 2026, Level.TWO))
            # Exam sessions: one with every seat but the timed ones taken, one ticket per event.
            exams = Exams(url, schema, today=lambda: date(2026, 4, 3))
            rooms = [Room(name=f"R{n:03d}", seats=500) for n in range(seats // 500 + 1)]
            sessions = {}
            for name in ("EMPTY", "BIG"):
                plan = svc.get(EvaluationPlan, plan_id(iid, name), "plan")
                sessions[name] = exams.schedule(
                    staff, plan.id, "A", date(2026, 4, 10), clock(9), clock(11), "深圳", rooms
                )
            session = exams.get(ExamSession, sessions["BIG"], "exam session")
            for start in range(0, events, 5000):
                for _ in range(start, min(events, start + 5000)):
                    session.assign_seats(staff, [uuid.uuid4()], date(2026, 4, 3))  # tickets need not exist to seat
                exams.save(session)
            # The candidates timed: registered, approved and fee-paid in each plan, untimed.
            ticketed: dict[str, list[uuid.UUID]] = {"EMPTY": [], "BIG": []}
            for name, code in (("EMPTY", empty_code), ("BIG", big_code)):
                for i in range(TIMED):
                    rid = svc.register(staff, code, _form((700_000 if name == "BIG" else 800_000) + i))
                    svc.review(staff, rid, Decision.APPROVED, condition=L2_CONDITION, evidence=L2_EVIDENCE)
                    svc.pay_fee(staff, rid, f"R{name}{i:05d}", Decimal("380"))
                    ticketed[name].append(rid)
        timings: dict[str, list[float]] = {"register, empty plan": [], "register, big plan": [],
                                           "allocate, new counter": [], "allocate, big counter": [],
                                           "ticket, empty session": [], "ticket, big session": []}  # fmt: skip
        for i in range(TIMED):
            for label, code, k in (("register, empty plan", empty_code, 500_000 + i),
                                   ("register, big plan", big_code, 600_000 + i)):  # fmt: skip
                started = time.perf_counter()
                svc.register(staff, code, _form(k))
                timings[label].append(time.perf_counter() - started)
            for label, level in (("allocate, new counter", Level.TWO), ("allocate, big counter", Level.ONE)):
                started = time.perf_counter()
                counter = svc.get(SerialCounter, counter_id(iid, 2026, level), "counter")
                counter.allocate(staff, 1)
                svc.save(counter)
                timings[label].append(time.perf_counter() - started)
            for label, name in (("ticket, empty session", "EMPTY"), ("ticket, big session", "BIG")):
                started = time.perf_counter()
                exams.issue_tickets(staff, sessions[name], [ticketed[name][i]])
                timings[label].append(time.perf_counter() - started)
        exams.close()
        return {label: statistics.median(t) * 1000 for label, t in timings.items()}
    finally:
        svc.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main(
    database_url: str = typer.Option(None, help="a running PostgreSQL; default: an embedded one"),
    events: int = typer.Option(
        99_900, help="seats taken in the big plan (a plan has at most 100,000), numbers allocated by the big counter"
    ),
    runs: int = typer.Option(3),
) -> None:
    server = None
    if database_url is None:
        from infra.embedded import start_postgres

        server, database_url = start_postgres(Path(tempfile.mkdtemp(prefix="skillcert-bench-")))
    try:
        results = [one_run(database_url, events) for _ in range(runs)]
    finally:
        if server is not None:
            server.cleanup()
    table = Table(title=f"one command against an aggregate with {events:,} events (snapshots every {SNAPSHOT_EVERY})")
    pairs = (("register", "register, empty plan", "register, big plan"),
             ("allocate", "allocate, new counter", "allocate, big counter"),
             ("ticket", "ticket, empty session", "ticket, big session"))  # fmt: skip
    table.add_column("run", justify="right")
    for what, _, _ in pairs:
        for column in (f"{what}: empty ms", "big ms", "ratio"):
            table.add_column(column, justify="right")
    ratios = []
    for n, r in enumerate(results, 1):
        ratios.append([r[big] / r[empty] for _, empty, big in pairs])
        cells = [f"{x}" for (_, empty, big), q in zip(pairs, ratios[-1], strict=True)
                 for x in (f"{r[empty]:.1f}", f"{r[big]:.1f}", f"{q:.2f}")]  # fmt: skip
        table.add_row(str(n), *cells)
    table.add_row("median", *[x for k in range(len(pairs))
                              for x in ("", "", f"{statistics.median(q[k] for q in ratios):.2f}")])  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
