"""The `skillcert` command."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import psycopg
import typer
from psycopg import sql
from rich.console import Console

from domain.model import Role
from infra.settings import Settings, get_settings

cli = typer.Typer(help="skillcert: occupational skill level certification back end.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def _require(value: str | None, var: str) -> str:
    if not value:
        console.print(f"[red]{var} is not set[/red] (or use `skillcert up`, which starts embedded servers)")
        raise typer.Exit(2)
    return value


def ensure_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


relay_cli = typer.Typer(help="The outbox relay: event store -> Kafka.", no_args_is_help=True)
cli.add_typer(relay_cli, name="relay")


def _store(s: Settings) -> tuple[str, Any]:
    from infra.eventstore import SkillcertApplication

    url = _require(s.database_url, "SKILLCERT_DATABASE_URL")
    ensure_schema(url, s.db_schema)
    return url, SkillcertApplication(url, s.db_schema)


@relay_cli.command("run")
def relay_run() -> None:
    """Publish the notification log to Kafka. One relay is active at a time; another waits."""
    from infra.envelope import topic_names
    from infra.kafka import ensure_topics
    from infra.privacy import installation_key
    from infra.relay import Relay

    s = get_settings()
    bootstrap = _require(s.kafka_bootstrap, "SKILLCERT_KAFKA_BOOTSTRAP")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(levelname)s %(message)s")
    url, app = _store(s)
    ensure_topics(bootstrap, topic_names(s.topic_prefix), s.topic_partitions)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    key = installation_key(url, s.db_schema, s.pseudonym_key)
    Relay(app, url, s.db_schema, bootstrap, s.topic_prefix, key, s.relay_batch_size, s.relay_message_timeout_ms).run(
        stop
    )
    app.close()


@relay_cli.command("status")
def relay_status(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The relay's position, the event store's head and the lag between them."""
    from infra.relay import status

    s = get_settings()
    url, app = _store(s)
    st = status(app, url, s.db_schema)
    app.close()
    if as_json:
        console.print_json(data=st)
        return
    from rich.table import Table

    table = Table(show_header=False)
    for k, v in st.items():
        table.add_row(k, str(v))
    console.print(table)


@relay_cli.command("republish")
def relay_republish(
    after: int = typer.Option(..., "--from", help="republish every event after this position (0: everything)"),
) -> None:
    """Republish history: for a new or wiped broker, or a subscriber that needs to bootstrap.
    Subscribers deduplicate by event id, so what they already have is harmless."""
    from infra.relay import RewindRefused, request_republish

    s = get_settings()
    url, app = _store(s)
    try:
        console.print(request_republish(app, url, s.db_schema, after), soft_wrap=True)
    except RewindRefused as e:
        console.print(f"[red]refused:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        app.close()


@cli.command()
def schemas(write: bool = typer.Option(False, "--write", help="regenerate the files under schemas/")) -> None:
    """Check (or --write) the committed JSON Schemas of the bus against the domain models."""
    from infra import schemas as contract

    if write:
        try:
            changed = contract.write()
        except contract.BreakingChange as e:
            console.print(f"[red]refused:[/red] {e}")
            raise typer.Exit(2) from None
        console.print(f"{len(changed)} schema file(s) written" + "".join(f"\n  {p}" for p in changed))
        return
    problems = contract.differences()
    for p in problems:
        console.print(f"[red]{p}[/red]")
    if problems:
        raise typer.Exit(1)
    console.print(f"{len(contract.generate())} schemas match the models")


projections_cli = typer.Typer(help="Read models: list them, rebuild them from the event store.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")


@projections_cli.command("list")
def projections_list() -> None:
    """Every projection, the topics it reads and the tables it owns."""
    from projections import PROJECTIONS

    for p in PROJECTIONS:
        console.print(f"[bold]{p.name}[/bold]  topics: {', '.join(p.topics)}  tables: {', '.join(p.tables)}")


@projections_cli.command("rebuild")
def projections_rebuild(
    names: list[str] = typer.Argument(None, help="projections to rebuild (default: all)"),  # noqa: B008
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="only history up to this time (ISO 8601, offset)")
    ] = None,
    position: Annotated[int | None, typer.Option(help="only history up to this log position")] = None,
    into: Annotated[str | None, typer.Option(help="schema for an as-of rebuild; the live read models stay")] = None,
) -> None:
    """Drop projections' tables and build them again from the event store, in one pass and one transaction.
    With --as-of or --position and --into, build them as they stood then, in a schema of their own
    (a report "as it stood on 30 June"), leaving the live ones alone."""
    from datetime import datetime

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from infra.privacy import installation_key
    from projections import BY_NAME, PROJECTIONS
    from projections.rebuild import position_at, rebuild
    from projections.store import connect

    unknown = [n for n in names or [] if n not in BY_NAME]
    if unknown:
        console.print(f"[red]no projection named {', '.join(unknown)}[/red]; there are: {', '.join(BY_NAME)}")
        raise typer.Exit(2)
    s = get_settings()
    historical = as_of is not None or position is not None
    if historical and (as_of is not None and position is not None or not into or into == s.db_schema):
        err.print(
            "[red]an as-of rebuild takes --as-of or --position, and --into a schema other than the live one[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        when = datetime.fromisoformat(as_of) if as_of else None
    except ValueError as e:
        err.print(f"[red]--as-of:[/red] {e}")
        raise typer.Exit(2) from None
    if when is not None and when.tzinfo is None:
        err.print("[red]--as-of[/red] needs its offset, e.g. 2026-06-30T23:59:59+08:00")
        raise typer.Exit(2)
    chosen = [BY_NAME[n] for n in names] if names else PROJECTIONS
    url, app = _store(s)
    key = installation_key(url, s.db_schema, s.pseudonym_key)
    until = position_at(app, when) if when is not None else position
    if into:
        ensure_schema(url, into)
    conn = connect(url, into or s.db_schema)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as progress:
            total = min(app.recorder.max_notification_id() or 0, until if until is not None else 2**62)
            task = progress.add_task(", ".join(p.name for p in chosen), total=total)
            started = time.monotonic()
            applied = rebuild(conn, chosen, app, key, lambda done, _: progress.update(task, completed=done), until)
            elapsed = time.monotonic() - started
        for p in chosen:
            console.print(f"{p.name}: rebuilt" + (f" in schema {into} as of position {until}" if historical else ""))
        console.print(f"{applied} events applied in {elapsed:.1f} s ({applied / max(elapsed, 1e-9):,.0f} events/s)")
    finally:
        conn.close()
        app.close()


@projections_cli.command("lag")
def projections_lag(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """How far each projection is behind the event store (events and seconds), and its offsets."""
    from rich.table import Table

    from projections import PROJECTIONS
    from projections.lag import lag
    from projections.store import connect, create_tables

    s = get_settings()
    url, app = _store(s)
    with connect(url, s.db_schema) as conn:
        create_tables(conn, PROJECTIONS)
        report = lag(conn, app, PROJECTIONS)
    app.close()
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    table = Table("projection", "events behind", "seconds behind", "last applied", "partitions")
    for r in report:
        parts = ", ".join(f"{p['topic']}[{p['partition']}]@{p['offset']}" for p in r["partitions"])
        table.add_row(r["projection"], str(r["events_behind"]), str(r["seconds_behind"]),
                      str(r["last_applied_at"] or "-"), parts or "-")  # fmt: skip
    console.print(table)


@cli.command()
def consumers() -> None:
    """Run the faust-streaming worker that keeps the read models current."""
    from consumers.projector import run_worker
    from infra.envelope import topic_names
    from infra.kafka import ensure_topics

    s = get_settings()
    url, bootstrap = (
        _require(s.database_url, "SKILLCERT_DATABASE_URL"),
        _require(s.kafka_bootstrap, "SKILLCERT_KAFKA_BOOTSTRAP"),
    )
    ensure_schema(url, s.db_schema)
    # Whichever starts first, relay or worker: a topic the worker's subscription made the broker
    # auto-create would have the broker's default partitions, not ours.
    ensure_topics(bootstrap, topic_names(s.topic_prefix), s.topic_partitions)
    sys.argv = [sys.argv[0]]  # faust's worker reads the command line
    run_worker(s, url, bootstrap)


@cli.command()
def api() -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from infra.api import create_app

    s = get_settings()
    url = _require(s.database_url, "SKILLCERT_DATABASE_URL")
    ensure_schema(url, s.db_schema)
    app = create_app(url, s.db_schema, s.timezone, s.pseudonym_key, s.verify_rate_limit, public_url=s.public_url)
    uvicorn.run(app, host=s.api_host, port=s.api_port, log_level="warning")


tokens_cli = typer.Typer(help="API tokens: create, list, revoke. Only a token's hash is stored.", no_args_is_help=True)
cli.add_typer(tokens_cli, name="tokens")


def _tokens(s: Settings) -> Any:
    from infra.tokens import Tokens

    url = _require(s.database_url, "SKILLCERT_DATABASE_URL")
    ensure_schema(url, s.db_schema)
    tokens = Tokens(url, s.db_schema)
    tokens.create_table()
    return tokens


@tokens_cli.command("create")
def tokens_create(
    role: Annotated[Role, typer.Option(help="staff act for one institution, candidates for themselves")],
    name: Annotated[str, typer.Option(help="the holder; it is the actor on every event the token causes")],
    institution: Annotated[UUID | None, typer.Option(help="institution_staff: the institution's id")] = None,
    id_number: Annotated[
        str | None, typer.Option(help="candidate: their ID number (kept only as a keyed hash)")
    ] = None,
) -> None:
    """Create a token and print it once (stdout). Give it to its holder: it cannot be shown again."""
    from domain.errors import DomainError
    from domain.institution import Institution
    from infra.privacy import installation_key, ref
    from infra.registrations import Registrations

    s = get_settings()
    tokens = _tokens(s)
    url = s.database_url
    assert url
    try:
        if institution is not None:
            svc = Registrations(url, s.db_schema)
            try:
                svc.get(Institution, institution, "institution")
            finally:
                svc.close()
        candidate_ref = (
            ref(id_number.strip().upper(), installation_key(url, s.db_schema, s.pseudonym_key)) if id_number else None
        )
        token_id, token = tokens.create(name, role, institution, candidate_ref)
    except DomainError as e:
        err.print(f"[red]refused:[/red] {e.message}")
        raise typer.Exit(2) from None
    err.print(f"token {token_id} for {name} ({role.value}); keep it secret, it is shown only now")
    print(token)


@tokens_cli.command("list")
def tokens_list() -> None:
    """Every token: id, holder, role, scope, created and revoked (never the secret)."""
    from rich.table import Table

    table = Table("id", "name", "role", "institution", "candidate", "created", "revoked")
    for t in _tokens(get_settings()).list():
        table.add_row(t["id"], t["name"], t["role"], str(t["institution_id"] or "-"),
                      "yes" if t["bound_to_candidate"] else "-", f"{t['created_at']:%Y-%m-%d %H:%M}",
                      f"{t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "-")  # fmt: skip
    console.print(table)


@tokens_cli.command("revoke")
def tokens_revoke(token_id: str = typer.Argument(..., help="the id shown by `tokens list` (skc_<id>_…)")) -> None:
    """Revoke a token: every request with it is refused from now on."""
    if not _tokens(get_settings()).revoke(token_id):
        err.print(f"[red]no live token {token_id}[/red]")
        raise typer.Exit(2)
    console.print(f"token {token_id} revoked")


import_cli = typer.Typer(
    help="Batch imports from CSV or XLSX: every row checked, all stored or none.", no_args_is_help=True
)
cli.add_typer(import_cli, name="import")


def _principal(s: Settings, token: str) -> Any:
    from projections.store import connect

    tokens = _tokens(s)
    with connect(_require(s.database_url, "SKILLCERT_DATABASE_URL"), s.db_schema) as conn:
        who = tokens.principal(conn, token)
    if who is None:
        err.print("[red]the token is unknown or revoked[/red]")
        raise typer.Exit(2)
    return who


def _run_import(token: str, what: str, service: Any, work: Any) -> None:
    """Check every row and store all or none, as the token's holder; list every problem if refused."""
    from domain.errors import DomainError

    s = get_settings()
    who = _principal(s, token)
    svc = service(s.database_url or "", s.db_schema)
    try:
        with console.status(f"checking every row of the {what}"):
            n = work(svc, who.actor())
    except DomainError as e:
        problems = getattr(e, "problems", None) or [(e.field or "-", e.message)]
        err.print(f"[red]refused, nothing stored[/red]: {len(problems)} problem(s)")
        for field, message in problems:
            err.print(f"  {field}: {message}", soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        svc.close()
    console.print(f"{n} row(s) of the {what} stored")


@import_cli.command("candidates")
def import_candidates(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or XLSX, one row per candidate")],
    plan: Annotated[UUID, typer.Option(help="the plan the candidates register for")],
    token: Annotated[str, typer.Option(envvar="SKILLCERT_TOKEN", help="a staff API token: its holder is the actor")],
) -> None:
    """Register a candidate list (集体报名) for a plan."""
    from infra import imports
    from infra.registrations import Registrations

    _run_import(token, "candidate list", Registrations,
                lambda svc, actor: len(imports.import_candidates(svc, actor, plan, file.read_bytes(), file.name)))  # fmt: skip


@import_cli.command("scores")
def import_scores(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or XLSX score book")],
    session: Annotated[UUID, typer.Option(help="the exam session's id")],
    token: Annotated[str, typer.Option(envvar="SKILLCERT_TOKEN", help="a staff API token: its holder is the actor")],
) -> None:
    """Record a session's score book (成绩册)."""
    from infra import imports
    from infra.exams import Exams

    _run_import(token, "score book", Exams,
                lambda svc, actor: imports.import_scores(svc, actor, session, file.read_bytes(), file.name))  # fmt: skip


print_cli = typer.Typer(
    help="Print certificates on the blank stock: PDFs, each page on the next form.", no_args_is_help=True
)
cli.add_typer(print_cli, name="print")
Token = Annotated[str, typer.Option(envvar="SKILLCERT_TOKEN", help="a staff API token: its holder is the actor")]
Out = Annotated[Path, typer.Option("--out", help="the PDF to write", dir_okay=False)]


def _print(token: str, out: Path, choose: Any) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from certgen.printing import print_certificates
    from domain.errors import DomainError
    from infra.certificates import Certificates

    s = get_settings()
    who = _principal(s, token)
    svc = Certificates(s.database_url or "", s.db_schema)
    try:
        ids = choose(svc)
        with Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
            task = bar.add_task("pages", total=len(ids))
            content = print_certificates(svc, who.actor(), ids, s.public_url, lambda n: bar.update(task, completed=n))
    except DomainError as e:
        err.print(f"[red]refused, nothing printed:[/red] {e.message}")
        raise typer.Exit(1) from None
    finally:
        svc.close()
    out.write_bytes(content)
    console.print(f"{len(ids)} certificate(s) booked on blank forms and written to {out}")


@print_cli.command("session")
def print_session(session: Annotated[UUID, typer.Option(help="the exam session's id")], out: Out, token: Token) -> None:
    """Every certificate of a session that awaits a print."""
    from certgen.printing import to_print

    _print(token, out, lambda svc: to_print(svc, session))


@print_cli.command("plan")
def print_plan(plan: Annotated[UUID, typer.Option(help="the plan's id")], out: Out, token: Token) -> None:
    """Every certificate of a plan that awaits a print, whichever session its holder sat."""
    from certgen.printing import plan_to_print

    _print(token, out, lambda svc: plan_to_print(svc, plan))


@print_cli.command("certificates")
def print_named(
    numbers: Annotated[list[str], typer.Argument(help="certificate numbers")], out: Out, token: Token
) -> None:
    """These certificates: a reprint after a spoiled print."""
    _print(token, out, lambda svc: [_by_number(svc, n) for n in numbers])


def _by_number(svc: Any, number: str) -> UUID:
    """A certificate's id from its number, through the registry (which follows the bus)."""
    from domain.errors import NotFound
    from projections import certificates as registry
    from projections.store import connect

    with connect(get_settings().database_url or "", svc.schema) as c:
        row = registry.certificate_by_number(c, number)
    if row is None:
        raise NotFound(f"no certificate {number} in the registry (yet)")
    return row["certificate_id"]


@print_cli.command("spoiled")
def print_spoiled(
    number: Annotated[str, typer.Argument(help="the certificate number")],
    form: Annotated[int, typer.Option(help="the form serial the spoiled print is on")],
    reason: Annotated[str, typer.Option(help="how it was spoiled, e.g. 卡纸")],
    token: Token,
) -> None:
    """Record a spoiled print; print the certificate again afterwards (`print certificates`)."""
    from domain.errors import DomainError
    from infra.certificates import Certificates

    s = get_settings()
    who = _principal(s, token)
    svc = Certificates(s.database_url or "", s.db_schema)
    try:
        svc.spoil_print(who.actor(), _by_number(svc, number), form, reason)
    except DomainError as e:
        err.print(f"[red]refused:[/red] {e.message}")
        raise typer.Exit(1) from None
    finally:
        svc.close()
    console.print(f"form NO. {form:08d} recorded spoiled; certificate {number} awaits a print")


keys_cli = typer.Typer(
    help="The master key that encrypts stored events (by wrapping their data keys): make one, rotate it.",
    no_args_is_help=True,
)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("new")
def keys_new() -> None:
    """Print a new random master key (base64, AES-256) for SKILLCERT_MASTER_KEY. Nothing is stored."""
    from infra.keys import new_key

    print(new_key())


@keys_cli.command("status")
def keys_status() -> None:
    """The configured master key's id and, per data key, the master key that wraps it."""
    from rich.table import Table

    from infra.keys import status

    s = get_settings()
    url, app = _store(s)  # refuses, naming the key, if the configured keys cannot open the store
    cipher = app.mapper.cipher
    app.close()
    out = Table("data key", "wrapped under master key", "created")
    for k in status(url, s.db_schema):
        current = " (current)" if k["master_key_id"] == cipher.master.current_id else ""
        out.add_row(str(k["data_key"]), k["master_key_id"] + current, k["created_at"])
    console.print(f"master key {cipher.master.current_id}; new events are written under data key {cipher.current}")
    console.print(out)


@keys_cli.command("rotate")
def keys_rotate() -> None:
    """Rewrap every data key under SKILLCERT_MASTER_KEY (the new key) and start a new data key.
    Run with the previous key in SKILLCERT_OLD_MASTER_KEYS; afterwards it opens nothing."""
    from infra.keys import rotate

    s = get_settings()
    url, app = _store(s)
    master = app.mapper.cipher.master
    app.close()
    rewrapped, new = rotate(url, s.db_schema, master)
    console.print(f"{rewrapped} data key(s) rewrapped under master key {master.current_id}; new events go under "
                  f"data key {new} once each process restarts. Remove SKILLCERT_OLD_MASTER_KEYS and destroy the old "
                  "key.", soft_wrap=True)  # fmt: skip


audit_cli = typer.Typer(help="For auditors: the history as it stood at any moment.", no_args_is_help=True)
cli.add_typer(audit_cli, name="audit")


@audit_cli.command("state")
def audit_state(
    aggregate_id: Annotated[UUID, typer.Argument(help="a registration, certificate, plan, stock, session… id")],
    at: Annotated[str | None, typer.Option(help="as of this time, ISO 8601 with offset")] = None,
    position: Annotated[int | None, typer.Option(help="as of this notification log position")] = None,
) -> None:
    """One aggregate as its events up to a time or a log position made it, and the last event applied."""
    from datetime import datetime

    from domain.errors import DomainError
    from infra import history

    s = get_settings()
    url, app = _store(s)
    try:
        when = datetime.fromisoformat(at) if at else None
        console.print_json(json.dumps(history.as_of(app, aggregate_id, when, position), default=str))
    except ValueError as e:
        err.print(f"[red]--at:[/red] {e}")
        raise typer.Exit(2) from None
    except DomainError as e:
        err.print(f"[red]{e.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        app.close()


@audit_cli.command("checkpoint")
def audit_checkpoint(
    every: Annotated[float, typer.Option(help="seconds between checkpoints; 0 records one and exits")] = 0,
) -> None:
    """Record where the hash chain stands (position and head) as an event the relay publishes on the audit
    topic: a holder of it can later show the history up to there was rewritten."""
    from domain.model import Actor
    from infra import chain

    s = get_settings()
    _, app = _store(s)
    system = Actor(id="skillcert-audit", role=Role.SYSTEM)
    try:
        while True:
            made = chain.record_checkpoint(app, system)
            if made is None:
                console.print("nothing new to checkpoint (no events since the last checkpoint, or none at all)")
            else:
                console.print(f"checkpoint at position {made.position}: {made.log_hash}")
            if not every:
                return
            time.sleep(every)
    except KeyboardInterrupt:
        pass
    finally:
        app.close()


def _signing_seed(s: Settings) -> bytes:
    from infra.privacy import installation_secret

    return installation_secret(_require(s.database_url, "SKILLCERT_DATABASE_URL"), s.db_schema, "signing_key",
                               s.signing_key)  # fmt: skip


@audit_cli.command("public-key")
def audit_public_key() -> None:
    """The installation's public key for audit exports (hex): give it to auditors to pin."""
    from infra.export import public_key_hex

    print(public_key_hex(_signing_seed(get_settings())))


@audit_cli.command("export")
def audit_export(
    institution: Annotated[UUID, typer.Option(help="the institution whose events to export")],
    start: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="first day (Shanghai)")],
    end: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="last day (Shanghai), inclusive")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="the package to write (.zip)")],
) -> None:
    """A signed package of the institution's events in the period, verifiable offline (audit verify-export)."""
    from infra.export import export
    from projections.store import connect

    s = get_settings()
    url, app = _store(s)
    table = app.recorder.events_table_name
    with connect(url, s.db_schema) as conn, console.status("exporting"):
        package = export(conn, s.db_schema, table, app.mapper.decode_bytes, _signing_seed(s), institution, start.date(),
                         end.date(), s.timezone)  # fmt: skip
    app.close()
    out.write_bytes(package)
    console.print(f"written {out} ({len(package):,} bytes); verify with: skillcert audit verify-export {out} "
                  f"--public-key <the installation's key>", soft_wrap=True)  # fmt: skip


@audit_cli.command("verify-export")
def audit_verify_export(
    package: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="an audit export package")],
    public_key: Annotated[str, typer.Option(help="the installation's public key (hex), as pinned by the auditor")],
) -> None:
    """Offline, no database: the signature, the events file's digest, every event's links in both chains."""
    from infra.export import verify_package

    check = verify_package(package.read_bytes(), public_key)
    if not check.ok:
        console.print(f"[red]not verified[/red]: {check.problem}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"verified: {check.events} events, signed by {public_key}", soft_wrap=True)


@audit_cli.command("verify")
def audit_verify(
    against: Annotated[
        list[str] | None,
        typer.Option(help="POSITION:HEAD of a checkpoint held outside the store (from the bus); repeatable"),
    ] = None,
) -> None:
    """Walk the whole history, recompute every hash link (log and aggregate), report the first broken one."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from infra import chain
    from projections.store import connect

    try:
        heads = {int(p): bytes.fromhex(h) for p, h in (a.split(":", 1) for a in against or [])}
    except ValueError:
        err.print("[red]--against[/red] takes POSITION:HEAD, the head as 64 hex characters")
        raise typer.Exit(2) from None
    s = get_settings()
    url, app = _store(s)
    table = app.recorder.events_table_name
    total = app.recorder.max_notification_id() or 0
    started = time.monotonic()
    with connect(url, s.db_schema) as conn, Progress(SpinnerColumn(), TextColumn("{task.description}")) as bar:
        task = bar.add_task(f"verifying {total:,} events")
        verdict = chain.verify(conn, s.db_schema, table, app.mapper.decode_bytes,
                               lambda n: bar.update(task, description=f"{n:,} of {total:,}"), heads)  # fmt: skip
    app.close()
    elapsed = time.monotonic() - started
    if not verdict.intact:
        console.print(f"[red]broken at position {verdict.broken_at}[/red]: {verdict.problem}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"intact: {verdict.events:,} events, head {verdict.head.hex()} ({elapsed:.1f} s)")


@cli.command()
def demo() -> None:
    """Load the sample scenario (an institution; plans open for registration with reviewed
    registrations; a spring 2026 plan through to certificates) and make a token per role."""
    from infra import demo as scenario
    from infra.privacy import installation_key
    from infra.registrations import Registrations
    from infra.service import shanghai_today

    s = get_settings()
    url = _require(s.database_url, "SKILLCERT_DATABASE_URL")
    ensure_schema(url, s.db_schema)
    service = Registrations(url, s.db_schema)
    with console.status("loading the sample scenario"):
        scenario.load(service, shanghai_today(s.timezone), url, s.db_schema)
    service.close()
    made = scenario.tokens(url, s.db_schema, installation_key(url, s.db_schema, s.pseudonym_key))
    s.data_dir.mkdir(parents=True, exist_ok=True)
    env = s.data_dir / "demo-tokens.env"
    env.write_text("".join(f"export {role.upper()}='Authorization: Bearer {t}'\n" for role, t in made.items()))
    env.chmod(0o600)
    console.print(f"sample scenario loaded; a token per role in {env} (source it for the README's tour)")


def _reset_bus_positions(url: str, schema: str) -> None:
    """A fresh in-memory broker has no history: republish it all, and forget old offsets."""
    with psycopg.connect(url, autocommit=True) as conn:
        for table, stmt in (("relay_position", "UPDATE {} SET position = 0"), ("projection_offsets", "DELETE FROM {}")):
            if conn.execute("SELECT to_regclass(%s)", (f"{schema}.{table}",)).fetchone()[0]:
                conn.execute(sql.SQL(stmt).format(sql.Identifier(schema, table)))


@cli.command()
def up() -> None:
    """Start everything: PostgreSQL and the broker (embedded unless configured), relay, consumers, API, demo data."""
    from infra.embedded import Broker, start_postgres

    s = get_settings()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM as on Ctrl-C
    pg_server, broker = None, None
    children: list[subprocess.Popen[bytes]] = []
    try:
        url = s.database_url
        if not url:
            with console.status("starting embedded PostgreSQL"):
                pg_server, url = start_postgres(s.data_dir)
            console.print(f"PostgreSQL (embedded): data in {s.data_dir.resolve() / 'pg'}")
        bootstrap = s.kafka_bootstrap
        if not bootstrap:
            broker = Broker(s.kafka_port)
            bootstrap = broker.bootstrap
            console.print(f"Kafka-protocol broker (embedded Tansu, in memory): {bootstrap}")
        ensure_schema(url, s.db_schema)
        if broker is not None:
            _reset_bus_positions(url, s.db_schema)
        env = {**os.environ, "SKILLCERT_DATABASE_URL": url, "SKILLCERT_KAFKA_BOOTSTRAP": bootstrap}
        # Create the event store table once, before three processes race to.
        from infra.eventstore import SkillcertApplication

        SkillcertApplication(url, s.db_schema).close()
        if not s.master_key:
            from infra.keys import KEY_FILE

            console.print(f"Stored events are encrypted under the master key in {s.data_dir.resolve() / KEY_FILE}: "
                          "back it up apart from the database", soft_wrap=True)  # fmt: skip
        checkpoints = ["audit", "checkpoint", "--every", str(s.checkpoint_every)]
        for command in (["relay", "run"], ["consumers"], ["api"], checkpoints):
            children.append(subprocess.Popen([sys.executable, "-m", "infra.cli", *command], env=env))
        subprocess.run([sys.executable, "-m", "infra.cli", "demo"], env=env, check=True)
        _wait_for_api(s, children)
        base = f"http://{s.api_host}:{s.api_port}"
        console.print(f"\n[bold green]skillcert is up[/bold green] in {time.monotonic() - started:.1f} s")
        console.print(f"  API:  {base}\n  docs: {base}/docs\n  try:  curl '{base}/plans'")
        console.print("Ctrl-C stops everything.")
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
        console.print("[red]a process stopped unexpectedly; shutting down[/red]")
    except KeyboardInterrupt:
        console.print("\nstopping…")
    finally:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                c.wait(15)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
        if broker is not None:
            broker.stop()
        if pg_server is not None:
            pg_server.cleanup()
        console.print("stopped.")


def _wait_for_api(s: Settings, children: list[subprocess.Popen[bytes]]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            raise RuntimeError("a process exited during start-up")
        try:
            if httpx.get(f"http://{s.api_host}:{s.api_port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not answer within 60 s")


def main() -> None:
    """The entry point: a key that cannot open the store is a configuration error, not a crash."""
    from infra.keys import KeyProblem

    try:
        cli()
    except KeyProblem as e:
        err.print(f"[red]encryption key:[/red] {e}", soft_wrap=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
