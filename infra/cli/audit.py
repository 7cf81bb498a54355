"""For auditors: the history as it stood, the chain, signed exports."""

from __future__ import annotations

import io
import json
import signal
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Annotated
from uuid import UUID

import psycopg
import typer
from rich.markup import escape

from domain.model import Role
from infra.cli.common import cli, console, err, open_store, require, when_database_answers
from infra.settings import Settings, get_settings

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
    from infra.store import history

    s = get_settings()
    url, app = open_store(s)
    try:
        try:
            when = datetime.fromisoformat(at) if at else None
        except ValueError as e:  # only this is the option's fault
            err.print(f"[red]--at:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
        console.print_json(json.dumps(history.as_of(app, aggregate_id, when, position), default=str))
    except DomainError as e:
        err.print(f"[red]{escape(e.message)}[/red]")
        raise typer.Exit(1) from None
    finally:
        app.close()


@audit_cli.command("checkpoint")
def audit_checkpoint(
    every: Annotated[float, typer.Option(help="seconds between checkpoints; 0 records one and exits")] = 0,
) -> None:
    """Record where the hash chain stands (position and head) as an event the relay publishes on the audit
    topic: a holder of it can later show the history up to there was rewritten."""
    from eventsourcing.persistence import InterfaceError, OperationalError

    from domain.model import Actor
    from infra.store import chain
    from infra.store.signing import installation_signing_key

    s = get_settings()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop quietly on SIGTERM as on Ctrl-C
    try:
        # Recording checkpoints is running the system: it may come up before anything else has made the store.
        _, app = when_database_answers(lambda: open_store(s, create=True), "checkpoint") if every else open_store(s)
    except KeyboardInterrupt:
        return
    system = Actor(id="skillcert-audit", role=Role.SYSTEM)
    signer = installation_signing_key(app.database_url, s.db_schema, s.signing_key)
    try:
        while True:
            try:
                made = chain.record_checkpoint(app, system, signer.sign)
            except (psycopg.OperationalError, psycopg.InterfaceError, OperationalError, InterfaceError) as e:
                if not every:
                    raise
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                err.print(f"checkpoint: PostgreSQL unavailable ({reason}); trying again in 5 s", soft_wrap=True)
                time.sleep(min(every, 5.0))
                continue
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


EVENTS = "skillcert_events"  # the event store's table (infra.store.eventstore: the application's name)


def _signing_seed(s: Settings) -> bytes:
    from infra.store.secrets import installation_secret
    from infra.store.signing import NAME, installation_signing_key

    url = require(s.database_url, "SKILLCERT_DATABASE_URL")
    installation_signing_key(url, s.db_schema, s.signing_key)  # its public half, published beside it
    return installation_secret(url, s.db_schema, NAME, s.signing_key)


@audit_cli.command("public-key")
def audit_public_key() -> None:
    """The installation's public key (hex), which signs checkpoints and audit exports: give it to auditors to pin."""
    from infra.store.signing import installation_signing_key

    s = get_settings()
    print(installation_signing_key(require(s.database_url, "SKILLCERT_DATABASE_URL"), s.db_schema, s.signing_key)
          .public_hex)  # fmt: skip


@audit_cli.command("export")
def audit_export(
    institution: Annotated[UUID, typer.Option(help="the institution whose events to export")],
    start: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="first day (Shanghai)")],
    end: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="last day (Shanghai), inclusive")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="the package to write (.zip)")],
) -> None:
    """A signed package of the institution's events in the period, verifiable offline (audit verify-export)."""
    from consumers.lag import lag
    from infra.store.export import NotExported, export
    from projections.audit import Audit
    from projections.store import connect

    s = get_settings()
    url, app = open_store(s)
    table = app.recorder.events_table_name
    if institution not in app.repository:  # a mistyped id would give a signed package of nothing, looking valid
        app.close()
        err.print(f"[red]nothing exported:[/red] no institution {institution} in this store (schema {s.db_schema})",
                  soft_wrap=True)  # fmt: skip
        raise typer.Exit(2)
    try:
        with connect(url, s.db_schema) as conn, console.status("verifying the history, then exporting"):
            trail = None
            if conn.execute("SELECT to_regclass('audit_events')").fetchone()[0] is not None:
                [trail] = lag(conn, app, [Audit()])  # before the export's own walk: its head is at least this
            package = export(conn, s.db_schema, table, app.mapper.decode_bytes, _signing_seed(s), institution,
                             start.date(), end.date(), s.timezone,
                             trail_through=trail["applied_through"] if trail else None)  # fmt: skip
    except NotExported as e:
        err.print(f"[red]nothing exported:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1 if e.broken else 2) from None
    finally:
        app.close()
    out.write_bytes(package)
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(package)).read("manifest.json"))
    through = manifest["complete_through"]
    if not manifest.get("events"):
        err.print(f"[yellow]the package holds no events: institution {institution} recorded none from {start.date()} "
                  f"to {end.date()}[/yellow]", soft_wrap=True)  # fmt: skip
    console.print(f"written {out} ({len(package):,} bytes), complete through log position {through:,}; verify "
                  f"with: skillcert audit verify-export {out} --public-key <the installation's key>", soft_wrap=True)  # fmt: skip
    if trail and trail["events_behind"]:
        err.print(f"[yellow]the audit trail was {trail['events_behind']:,} events behind"
                  f"{' and stalled' if trail['stalls'] else ''}: events after position {through:,} are not in this "
                  "package; export again once it has caught up (skillcert projections lag)[/yellow]", soft_wrap=True)  # fmt: skip


@audit_cli.command("verify-export")
def audit_verify_export(
    package: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="an audit export package")],
    public_key: Annotated[str, typer.Option(help="the installation's public key (hex), as pinned by the auditor")],
) -> None:
    """Offline, no database: the signature, the events file's digest, every event's links in both chains."""
    from infra.store.export import verify_package

    check = verify_package(package.read_bytes(), public_key)
    if not check.ok:
        console.print(f"[red]not verified[/red]: {escape(check.problem)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"verified: {check.events} events, signed by {public_key}", soft_wrap=True)


@audit_cli.command("verify")
def audit_verify(
    against: Annotated[
        list[str] | None,
        typer.Option(help="POSITION:HEAD of a checkpoint held outside the store (from the bus); repeatable"),
    ] = None,
    public_key: Annotated[
        str | None, typer.Option(help="the installation's public key (hex) the checkpoints must be signed with")
    ] = None,
) -> None:
    """Walk the whole history, recompute every hash link (log and aggregate), compare with every checkpoint,
    report the first break. Needs no key and only reads: a read-only database role will do.
    Exit status: 0 intact, 1 broken, 2 could not verify."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from infra.store import chain

    try:
        heads = {int(p): bytes.fromhex(h) for p, h in (a.split(":", 1) for a in against or [])}
        if any(len(h) != 32 for h in heads.values()) or (public_key and len(bytes.fromhex(public_key)) != 32):
            raise ValueError
    except ValueError:
        err.print("[red]could not verify:[/red] --against takes POSITION:HEAD (64 hex characters), --public-key 64 hex")
        raise typer.Exit(2) from None
    s = get_settings()
    url = require(s.database_url, "SKILLCERT_DATABASE_URL")
    started = time.monotonic()
    try:
        with psycopg.connect(url, connect_timeout=10) as conn:
            conn.read_only = True  # an auditor's check writes nothing, whatever the role may do
            if conn.execute("SELECT to_regclass(%s)", (f'"{s.db_schema}".{EVENTS}',)).fetchone()[0] is None:
                raise LookupError(f"there is no event store in schema {s.db_schema}")
            conn.commit()
            # A progress line only for a person at a terminal: a script reads one line, or none.
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True,
                          disable=not err.is_terminal) as bar:  # fmt: skip
                task = bar.add_task("verifying")
                verdict = chain.verify(conn, s.db_schema, EVENTS,
                                       lambda n: bar.update(task, description=f"{n:,} events"), heads, public_key)  # fmt: skip
    except (psycopg.Error, LookupError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        err.print(f"[red]could not verify:[/red] {escape(reason)}", soft_wrap=True)
        raise typer.Exit(2) from None
    elapsed = time.monotonic() - started
    for c in verdict.checkpoints:
        console.print(f"compared with the checkpoint for {c.describe()}", soft_wrap=True)
    for first, last in verdict.unused:
        span = f"position {first}" if first == last else f"positions {first}–{last}"
        console.print(f"{span}: never used (a transaction that was rolled back takes positions and keeps none)",
                      soft_wrap=True)  # fmt: skip
    for note in verdict.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    if not verdict.intact:
        console.print(f"[red]broken at position {verdict.broken_at}[/red]: {escape(verdict.problem)}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"intact: {verdict.events:,} events up to position {verdict.head_position}, head "
                  f"{verdict.head.hex()} ({elapsed:.1f} s)", soft_wrap=True)  # fmt: skip


@audit_cli.command("report")
def audit_report(
    start: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="first day (Shanghai)")],
    end: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="last day (Shanghai), inclusive")],
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="directory for report.pdf and report.csv")],
    institution: Annotated[UUID | None, typer.Option(help="one institution (default: all)")] = None,
) -> None:
    """A report in Chinese for reading: who did what to which registration or certificate and when (times in
    the installation's zone), counts per event type, every correction, deletion and spoiled form, the hash
    chain's state and its last checkpoint. report.csv holds every event; report.pdf the same for reading.
    Only reads: a read-only database role will do."""
    from certgen.report import render
    from infra.services.report import COLUMNS, gather
    from infra.services.sheets import write_csv

    s = get_settings()
    url = require(s.database_url, "SKILLCERT_DATABASE_URL")
    if end < start:
        err.print("[red]--to is before --from[/red]")
        raise typer.Exit(2)
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, console.status("walking the chain, reading the trail"):
            conn.read_only = True
            conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(s.db_schema)))
            report = gather(conn, s.db_schema, EVENTS, institution, start.date(), end.date(), s.timezone)
    except (psycopg.Error, LookupError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        err.print(f"[red]no report:[/red] {escape(reason)}", soft_wrap=True)
        raise typer.Exit(2) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.csv").write_bytes(write_csv(COLUMNS, report.rows))
    (out / "report.pdf").write_bytes(render(
        scope=report.institution, first=report.first, last=report.last, zone=report.zone, made_at=report.made_at,
        chain=report.chain, counts=report.counts, columns=COLUMNS, corrections=report.corrections,
        deletions=report.deletions, spoiled=report.spoiled, rows=report.rows,
    ))  # fmt: skip
    console.print(f"{len(report.rows):,} events of {escape(report.institution)} from {report.first} to {report.last}: "
                  f"{out / 'report.pdf'}, {out / 'report.csv'}", soft_wrap=True)  # fmt: skip
