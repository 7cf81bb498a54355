"""Staff work from the command line: imports and printing, as a token's holder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.markup import escape

from infra.cli.common import cli, console, err
from infra.cli.tokens import token_store
from infra.settings import Settings, get_settings

import_cli = typer.Typer(
    help="Batch imports from CSV or XLSX: every row checked, all stored or none.", no_args_is_help=True
)
cli.add_typer(import_cli, name="import")


def _principal(s: Settings, token: str) -> Any:
    from infra.api.tokens import Refused
    from projections.store import connect

    tokens = token_store(s)  # a mistyped schema is named as such, not taken for an unknown token
    with connect(tokens.url, s.db_schema) as conn:
        try:
            return tokens.principal(conn, token)
        except Refused as e:
            err.print(f"[red]{escape(str(e))}[/red]", soft_wrap=True)
            raise typer.Exit(2) from None


def _run_import(token: str, what: str, service: Any, work: Any, left: Any = None, imported: Any = None) -> None:
    """Check every row and store all or none, as the token's holder; list every problem if refused. Interrupted
    (Ctrl-C), say what is stored: `left(svc)` tells, where it can, else that it was all or nothing."""
    from domain.errors import DomainError

    s = get_settings()
    who = _principal(s, token)
    svc = service(s.database_url or "", s.db_schema)
    try:
        with console.status(f"checking every row of the {what}"):
            n = work(svc, who.actor())
    except DomainError as e:
        problems = getattr(e, "problems", None) or [(e.field or "-", e.message)]
        repeats = [m for _, m in problems if "already registered" in m]
        # The whole list, imported before (every row of it registered, not merely every problem a repeat): one
        # sentence, not thousands
        if len(repeats) == len(problems) > 1 and imported is not None and imported(svc):
            err.print(f"[red]refused, nothing stored[/red]: every one of the {len(problems)} rows is already "
                      f"registered ({escape(repeats[0])}): this list was imported before", soft_wrap=True)  # fmt: skip
            raise typer.Exit(1) from None
        err.print(f"[red]refused, nothing stored[/red]: {len(problems)} problem(s)")
        for field, message in problems:
            # A message quotes the cell as typed: printed as text, never as rich's markup ('[/]' in a name).
            err.print(f"  {escape(field)}: {escape(message)}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        said = left(svc) if left is not None else None
        err.print(f"interrupted: {said or f'the {what} is stored whole or not at all; look before importing it again'}",
                  soft_wrap=True)  # fmt: skip
        raise typer.Exit(130) from None
    finally:
        svc.close()
    console.print(f"{n} row(s) of the {what} stored")


@import_cli.command("candidates")
def import_candidates(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV, tab-separated .txt or XLSX, one row per candidate")
    ],
    plan: Annotated[UUID, typer.Option(help="the plan the candidates register for")],
    token: Annotated[str, typer.Option(envvar="SKILLCERT_TOKEN", help="a staff API token: its holder is the actor")],
) -> None:
    """Register a candidate list (集体报名) for a plan."""
    from infra.services import imports
    from infra.services.registrations import Registrations

    content = file.read_bytes()

    def imported(svc: Registrations) -> bool:
        there, rows = imports.candidates_registered(svc, plan, content, file.name)
        return there == rows

    def left(svc: Registrations) -> str:
        there, rows = imports.candidates_registered(svc, plan, content, file.name)
        if there == 0:
            return f"nothing of the candidate list was stored (none of its {rows} rows is registered for the plan)"
        if there == rows:
            return f"all {rows} rows of the candidate list are registered for the plan: nothing to import again"
        return (f"{there} of the list's {rows} rows are registered for the plan, from before this import (it stores "
                "all or nothing)")  # fmt: skip

    _run_import(token, "candidate list", Registrations,
                lambda svc, actor: len(imports.import_candidates(svc, actor, plan, content, file.name)), left,
                imported)  # fmt: skip


@import_cli.command("scores")
def import_scores(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="CSV, tab-separated .txt or XLSX score book")
    ],
    session: Annotated[UUID, typer.Option(help="the exam session's id")],
    token: Annotated[str, typer.Option(envvar="SKILLCERT_TOKEN", help="a staff API token: its holder is the actor")],
) -> None:
    """Record a session's score book (成绩册)."""
    from infra.services import imports
    from infra.services.exams import Exams

    _run_import(token, "score book", Exams,
                lambda svc, actor: sum(imports.import_scores(svc, actor, session, file.read_bytes(), file.name)))  # fmt: skip


print_cli = typer.Typer(
    help="Print certificates on the blank stock: PDFs, each page on the next form.", no_args_is_help=True
)
cli.add_typer(print_cli, name="print")
Token = Annotated[str, typer.Option(envvar="SKILLCERT_TOKEN", help="a staff API token: its holder is the actor")]
Out = Annotated[Path, typer.Option("--out", help="the PDF to write", dir_okay=False)]


def _print(token: str, out: Path, choose: Any) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from domain.errors import DomainError
    from infra.services.certificates import Certificates
    from infra.services.printing import print_certificates, return_abandoned

    s = get_settings()
    who = _principal(s, token)
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        err.print(f"[red]cannot write {escape(str(out))}[/red]: nothing booked")  # rather than book, fail and give back
        raise typer.Exit(2)
    svc = Certificates(s.database_url or "", s.db_schema)
    staged: list[Path] = []
    try:
        if back := return_abandoned(svc):  # a print killed before its PDF was made: its certificates await one again
            err.print(f"{len(back)} form(s) booked by a print that stopped before its PDF was made are back in stock: "
                      + ", ".join(f"NO. {form:08d} ({number})" for number, form in back[:10])
                      + (" …" if len(back) > 10 else ""), soft_wrap=True)  # fmt: skip
        ids = choose(svc)
        with Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), console=console) as bar:
            task = bar.add_task("pages", total=len(ids))
            # The file is written before the booking stands: a file that cannot be written puts the forms back.
            print_certificates(svc, who.actor(), ids, s.public_url, lambda n: bar.update(task, completed=n),
                               lambda content: _stage(out, content, staged))  # fmt: skip
    except DomainError as e:
        err.print(f"[red]refused, nothing printed:[/red] {e.message}")
        raise typer.Exit(1) from None
    except OSError as e:
        err.print(f"[red]{escape(str(e))}[/red]: nothing printed, the forms are back in stock")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("[red]interrupted[/red]: nothing printed, the forms are back in stock")
        raise typer.Exit(130) from None
    finally:
        for partial in staged:
            partial.unlink(missing_ok=True)
        svc.close()
    console.print(f"{len(ids)} certificate(s) booked on blank forms and written to {out}")


def _stage(out: Path, content: bytes, staged: list[Path]) -> Any:
    """Write the PDF beside `out` and answer the rename that puts it in place, done once the print job is finished:
    killed while writing (a full disk, a slow share), no file is there, and the forms come back with the lease. A
    pipe or a device (`lp`'s standard input) cannot be written aside: it is written once the job is finished, so
    that no printer receives a whole PDF on forms the ledger then gives back as blank (an outside review killed the
    CLI the moment its pipe's reader had the PDF). Killed while writing to it, the forms stay booked: record them
    not made (`skillcert print not-made`)."""
    if out.exists() and not out.is_file():
        return lambda: out.write_bytes(content)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    staged.append(partial)
    with partial.open("wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    return lambda: os.replace(partial, out)


@print_cli.command("session")
def print_session(session: Annotated[UUID, typer.Option(help="the exam session's id")], out: Out, token: Token) -> None:
    """Every certificate of a session that awaits a print."""
    from infra.services.printing import to_print

    _print(token, out, lambda svc: to_print(svc, session))


@print_cli.command("plan")
def print_plan(plan: Annotated[UUID, typer.Option(help="the plan's id")], out: Out, token: Token) -> None:
    """Every certificate of a plan that awaits a print, whichever session its holder sat."""
    from infra.services.printing import plan_to_print

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


@print_cli.command("not-made")
def print_not_made(
    numbers: Annotated[list[str], typer.Argument(help="certificate numbers")],
    reason: Annotated[str, typer.Option(help="why the prints never came out, e.g. 文件未送达打印机")],
    token: Token,
) -> None:
    """Prints booked and never made (the PDF never reached the printer): each form back in stock, blank, and each
    certificate awaiting a print again. A print that came out wrong is `print spoiled` instead."""
    from domain.errors import DomainError, InvalidInput
    from domain.text import normalise, problem
    from infra.services.certificates import Certificates

    s = get_settings()
    who = _principal(s, token)
    svc = Certificates(s.database_url or "", s.db_schema)
    try:
        if why := problem(reason, multiline=True):
            raise InvalidInput([("--reason", why)])
        returned = svc.print_not_made(who.actor(), [_by_number(svc, n) for n in numbers], normalise(reason))
    except DomainError as e:
        err.print(f"[red]refused:[/red] {escape(e.message)}")
        raise typer.Exit(1) from None
    finally:
        svc.close()
    for number, form in returned:
        console.print(f"form NO. {form:08d} back in stock; certificate {escape(number)} awaits a print")


@print_cli.command("spoiled")
def print_spoiled(
    number: Annotated[str, typer.Argument(help="the certificate number")],
    form: Annotated[int, typer.Option(help="the form serial the spoiled print is on")],
    reason: Annotated[str, typer.Option(help="how it was spoiled, e.g. 卡纸")],
    token: Token,
) -> None:
    """Record a spoiled print; print the certificate again afterwards (`print certificates`)."""
    from domain.errors import DomainError, InvalidInput
    from domain.text import normalise, problem
    from infra.services.certificates import Certificates

    s = get_settings()
    who = _principal(s, token)
    svc = Certificates(s.database_url or "", s.db_schema)
    try:
        if why := problem(reason, multiline=True):  # the API's rule for typed text, here too
            raise InvalidInput([("--reason", why)])
        svc.spoil_print(who.actor(), _by_number(svc, number), form, normalise(reason))
    except DomainError as e:
        err.print(f"[red]refused:[/red] {e.message}")
        raise typer.Exit(1) from None
    finally:
        svc.close()
    console.print(f"form NO. {form:08d} recorded spoiled; certificate {number} awaits a print")
