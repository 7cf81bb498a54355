"""Issue certificates for a cohort: results confirmed -> numbers -> issuance, timed, next to a
raw psycopg COPY of the same number of rows into a table shaped like the event store's.

    python -m benchmarks.issuance                 # embedded PostgreSQL, 10,000 candidates, 3 runs
    python -m benchmarks.issuance --database-url postgresql://postgres@127.0.0.1/test

The cohort is 50 plans of 200 candidates (one exam session each), built untimed through the
domain's own aggregates and saved in bulk. The timed part is what an institution does after the
exams: the provincial centre confirms each session, then the institution issues certificates
through the Certificates service, which numbers them from one gapless counter.
"""

from __future__ import annotations

import statistics
import tempfile
import time as clock
import uuid
from datetime import date, time, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import typer
from psycopg import sql
from rich.console import Console
from rich.table import Table
from stdnum.cn import ric

from domain.certnumber import parse
from domain.eligibility import Evidence
from domain.exam import ExamSession, Room, Sitting, Subject
from domain.institution import DeadlineProfile, Filing, Institution, ScopeEntry
from domain.levels import Level
from domain.model import Actor, Role
from domain.plan import CODE_ALPHABET, EvaluationPlan, PlanDetails
from domain.registration import AttachmentKind, PlanSummary, Registration, RegistrationForm
from infra.services import samples
from infra.services.base import Service
from infra.services.certificates import CHUNK, Certificates

console = Console(width=120)
CENTRE = Actor(id="centre-bench", role=Role.PROVINCIAL_CENTRE)
EXAM_DAY, ISSUE_DAY = date(2026, 4, 10), date(2026, 4, 29)

SCOPE = [ScopeEntry(occupation="人工智能训练师", job=None, levels=list(Level))]  # what the plans are filed for


class Clock:
    def __init__(self, today: date) -> None:
        self.today = today

    def __call__(self) -> date:
        return self.today


def _form(k: int) -> RegistrationForm:
    born = date(1990, 1, 1) + timedelta(days=k % 3000)
    serial = 100 + k // 3000
    base = f"440305{born:%Y%m%d}{serial:03d}"
    number = base + ric.calc_check_digit(base + "0")
    att = [samples.attachment(kind) for kind in (AttachmentKind.DIPLOMA, AttachmentKind.CHSI_RECORD,
                                                 AttachmentKind.SOCIAL_SECURITY, AttachmentKind.PRIOR_CERTIFICATE)]  # fmt: skip
    return RegistrationForm(
        name=f"考生{k}", id_number=number, gender="男" if serial % 2 else "女", date_of_birth=born,
        education="大学本科", years_in_occupation=8, candidate_source="本企业职工", labour_relation="本企业职工",
        work_unit="深圳市某某科技有限公司", basis="working_years", attachments=att, declaration_accepted=True,
        holds_prior_certificate=True,  # the level-3 certificate condition 2.1 rests on
    )  # fmt: skip


def _code(p: int) -> str:
    return "BENCH" + "".join(CODE_ALPHABET[p // 31**i % 31] for i in (2, 1, 0))


def build_cohort(app: Service, plans: int, per_plan: int) -> tuple[Actor, list[uuid.UUID]]:
    """Institution, plans, approved registrations, sessions sat, scored, published and reported."""
    system = Actor(id="bench", role=Role.SYSTEM)
    samples.hold(app.attachments)  # the scans the forms refer to
    institution = Institution.register(
        system, "深圳市技能人才评价示范中心", Filing(city_code="03", station_serial="015"), DeadlineProfile.S, SCOPE
    )
    staff = Actor(id="staff-bench", role=Role.INSTITUTION_STAFF, institution_id=institution.id)
    app.save(institution)
    evidence = Evidence(
        years_in_occupation=8, prior_level=3, years_since_prior=5, insured_work_unit="深圳市某某科技有限公司"
    )
    exams = []
    for p in range(plans):
        details = PlanDetails(
            plan_number=f"B{p:04d}", name="人工智能训练师认定", occupation="人工智能训练师", level=Level.TWO,
            max_registrations=per_plan, evaluation_start=EXAM_DAY, evaluation_end=EXAM_DAY,
            registration_deadline=date(2026, 3, 20), exam_location="深圳", contact_name="李老师",
            contact_phone="0755-88886666", supervising_region="深圳市",
        )  # fmt: skip
        plan = EvaluationPlan.publish(staff, institution.id, institution.name, details, _code(p))
        summary = PlanSummary(plan_number=details.plan_number, plan_name=details.name, institution_name=institution.name,
                              occupation=details.occupation, job=None, level=Level.TWO)  # fmt: skip
        registrations = []
        for k in range(per_plan):
            r = Registration.submit(staff, plan.id, institution.id, summary, _form(p * per_plan + k), app.id_key)
            plan.take_seat(staff, r.id, date(2026, 3, 2))
            r.approve(staff, "2.1", evidence, date(2026, 3, 10))
            r.pay_fee(staff, f"R{p:04d}{k:05d}", Decimal("380"))
            registrations.append(r)
        _save_in_parts(app, registrations)
        app.save(plan)
        session = ExamSession.schedule(
            staff, institution.id, DeadlineProfile.S, plan.id, details, "A", EXAM_DAY, time(9), time(11, 30), "深圳", [Room(name=f"R{i}", seats=50) for i in range(per_plan // 50 + 1)],
        )  # fmt: skip
        seats = session.assign_seats(staff, [r.id for r in registrations], date(2026, 4, 3))
        sittings = [Sitting.issue_ticket(staff, session, a) for a in seats]
        for s in sittings:
            s.check_in(staff, EXAM_DAY)
            s.check_identity(staff, EXAM_DAY)
            s.sign_in(staff, EXAM_DAY, s.seat, True)
            s.start(staff, EXAM_DAY)
            s.finish(staff, EXAM_DAY)
        session.close_day(staff, EXAM_DAY)
        scores = {Subject.THEORY: Decimal(80), Subject.SKILLS: Decimal(75), Subject.COMPREHENSIVE: Decimal(70)}
        for s in sittings:
            s.record_scores(staff, session, scores)
        session.publish_scores(staff, date(2026, 4, 13))
        holders = {r.id: r.holder for r in registrations}
        session.report_results(
            staff, date(2026, 4, 27), [s.result(session.subjects, holders[s.registration_id]) for s in sittings]
        )
        _save_in_parts(app, sittings)
        app.save(session)
        exams.append(session.id)
    return staff, exams


def _save_in_parts(app: Service, aggregates: list, size: int = 50) -> None:
    # Setup only: small transactions, because one very large save can stall in psycopg's
    # pipeline mode over a unix socket (the embedded server's only listener); see README.
    for i in range(0, len(aggregates), size):
        app.save(*aggregates[i : i + size])


def one_run(url: str, plans: int, per_plan: int, chunk: int) -> tuple[int, float, int, float]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    today = Clock(date(2026, 4, 28))
    app = Certificates(url, schema, today=today)
    try:
        with console.status(f"building a cohort of {plans * per_plan} in {schema}"):
            staff, exams = build_cohort(app, plans, per_plan)
        start_position = app.recorder.max_notification_id() or 0
        started = clock.perf_counter()
        for exam in exams:  # the provincial centre confirms each session's results
            session = app.get(ExamSession, exam, "exam session")
            session.confirm_results(CENTRE, today())
            app.save(session)
        today.today = ISSUE_DAY
        issued = app.issue_cohort(staff, exams, chunk)
        elapsed = clock.perf_counter() - started
        events = (app.recorder.max_notification_id() or 0) - start_position
        assert len(issued) == plans * per_plan
        assert sorted(parse(n).serial for n in issued.values()) == list(range(1, len(issued) + 1))
        copy_rows, copy_elapsed = raw_copy(url, schema, app, events)
        return events, elapsed, copy_rows, copy_elapsed
    finally:
        app.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def raw_copy(url: str, schema: str, app: Service, rows: int) -> tuple[int, float]:
    """The same number of rows, with a real Issued event's payload, by COPY into a table shaped
    like the events table (primary key included), in one transaction."""
    last = app.recorder.max_notification_id() or 0
    [sample] = app.recorder.select_notifications(start=last, limit=1)
    state, topic = bytes(sample.state), sample.topic
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL(
            "CREATE TABLE {}.copy_baseline (originator_id uuid NOT NULL, originator_version bigint NOT NULL, "
            "topic text, state bytea, notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        ).format(sql.Identifier(schema)))  # fmt: skip
        conn.commit()
        ids = [uuid.uuid4() for _ in range(rows)]
        started = clock.perf_counter()
        with conn.cursor() as cur, cur.copy(sql.SQL(
            "COPY {}.copy_baseline (originator_id, originator_version, topic, state) FROM STDIN"
        ).format(sql.Identifier(schema))) as copy:  # fmt: skip
            for i in ids:
                copy.write_row((i, 1, topic, state))
        conn.commit()
        return rows, clock.perf_counter() - started


def main(
    database_url: str = typer.Option("", help="PostgreSQL to use; empty starts an embedded one"),
    plans: int = typer.Option(50, help="plans (one exam session each)"),
    per_plan: int = typer.Option(200, help="candidates per plan"),
    runs: int = typer.Option(3, help="repetitions; medians are reported"),
    chunk: int = typer.Option(CHUNK, help="certificates per transaction"),
) -> None:
    server = None
    if not database_url:
        from infra.embedded import start_postgres

        server, database_url = start_postgres(Path(tempfile.mkdtemp(prefix="skillcert-bench-")))
    try:
        results = [one_run(database_url, plans, per_plan, chunk) for _ in range(runs)]
    finally:
        if server is not None:
            server.cleanup()
    table = Table(title=f"Certificate issuance for {plans * per_plan} candidates ({plans} sessions)")
    for col in ("run", "domain events", "seconds", "events/s", "COPY rows", "COPY s", "rows/s", "COPY ÷ domain"):
        table.add_column(col, justify="right")
    rates, copy_rates = [], []
    for i, (events, secs, rows, copy_secs) in enumerate(results, 1):
        rates.append(events / secs)
        copy_rates.append(rows / copy_secs)
        table.add_row(str(i), str(events), f"{secs:.2f}", f"{rates[-1]:,.0f}", str(rows), f"{copy_secs:.3f}",
                      f"{copy_rates[-1]:,.0f}", f"{copy_rates[-1] / rates[-1]:.1f}×")  # fmt: skip
    table.add_row("median", "", "", f"{statistics.median(rates):,.0f}", "", "", f"{statistics.median(copy_rates):,.0f}",
                  f"{statistics.median(c / r for c, r in zip(copy_rates, rates, strict=True)):.1f}×")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    typer.run(main)
