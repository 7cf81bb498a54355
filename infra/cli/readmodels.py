"""Read models: list, rebuild (also as they stood at a moment), lag."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape

from infra.cli.common import cli, console, ensure_schema, err, open_store
from infra.settings import get_settings

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
    """Build projections' tables again from the event store beside the live ones, then swap them in.
    With --as-of or --position and --into, build them as they stood then, in a schema of their own
    (a report "as it stood on 30 June"), leaving the live ones alone."""

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from consumers.rebuild import failures, position_at, rebuild
    from infra.bus.privacy import installation_key
    from projections import BY_NAME, PROJECTIONS
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
        err.print(f"[red]--as-of:[/red] {escape(str(e))}")
        raise typer.Exit(2) from None
    if when is not None and when.tzinfo is None:
        err.print("[red]--as-of[/red] needs its offset, e.g. 2026-06-30T23:59:59+08:00")
        raise typer.Exit(2)
    chosen = [BY_NAME[n] for n in names] if names else PROJECTIONS
    url, app = open_store(s)
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
            try:
                applied = rebuild(conn, chosen, app, key, lambda done, _: progress.update(task, completed=done), until)
            except KeyboardInterrupt:
                progress.stop()
                err.print("rebuild stopped: the read models are as they were, and what it had built is dropped")
                raise typer.Exit(130) from None
            elapsed = time.monotonic() - started
        for p in chosen:
            console.print(f"{p.name}: rebuilt" + (f" in schema {into} as of position {until}" if historical else ""))
        if historical:  # recorded in the live schema: auditors list and read it (GET /snapshots, X-As-Of)
            from projections.snapshots import record

            stands_at = min(until or 0, app.recorder.max_notification_id() or 0)
            with connect(url, s.db_schema) as live:
                record(live, s.db_schema, into, stands_at, when, [p.name for p in chosen],
                       {p.name for p in chosen} >= {p.name for p in PROJECTIONS})  # fmt: skip
                live.commit()
        console.print(f"{applied} events applied in {elapsed:.1f} s ({applied / max(elapsed, 1e-9):,.0f} events/s)")
        left_out = failures(conn, chosen)
        for name, _, position, kind, error in left_out:
            err.print(
                f"[red]{name} could not apply[/red] {kind} at position {position}: {escape(str(error))}", soft_wrap=True
            )
        if left_out:
            err.print(f"{len(left_out)} event(s) left out; the rest is rebuilt. Fix the cause and rebuild again.")
            raise typer.Exit(1)
    finally:
        conn.close()
        app.close()


@projections_cli.command("lag")
def projections_lag(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """How far each projection is behind the event store (events and seconds), and its offsets."""
    from rich.table import Table

    from consumers.lag import lag
    from projections import PROJECTIONS
    from projections.store import connect, create_tables

    s = get_settings()
    url, app = open_store(s)
    with connect(url, s.db_schema) as conn:
        create_tables(conn, PROJECTIONS)
        report = lag(conn, app, PROJECTIONS)
    app.close()
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    # Names and figures are never cut (at 80 columns, as when piped, rich cut "certificate_registry" to
    # "certificat…"); the timestamps and the partitions wrap instead.
    table = Table()
    table.add_column("projection", no_wrap=True, min_width=max((len(r["projection"]) for r in report), default=10))
    table.add_column("status", no_wrap=True, min_width=7)
    table.add_column("behind", justify="right", no_wrap=True)  # events
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("last applied", overflow="fold")
    table.add_column("partitions", overflow="fold")
    for r in report:
        parts = ", ".join(f"{p['topic']}[{p['partition']}]@{p['offset']}" for p in r["partitions"])
        table.add_row(r["projection"], r["status"], str(r["events_behind"]), str(r["seconds_behind"]),
                      str(r["last_applied_at"] or "-"), parts or "-")  # fmt: skip
    console.print(table)
    for r in report:
        for stall in r["stalls"]:
            where = (
                "left out by the last rebuild" if stall["partition"] < 0 else f"retrying ({stall['attempts']} attempts)"
            )
            console.print(f"[red]{r['projection']} stalled[/red] at position {stall['position']} "
                          f"({stall['event_type']}), {where}: {stall['error']}", soft_wrap=True)  # fmt: skip
