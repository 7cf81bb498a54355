"""What every command shares: the Typer app, the consoles, the store from the settings."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
import typer
from psycopg import sql
from rich.console import Console

from infra.settings import Settings

T = TypeVar("T")


def _no_type_for_flags() -> None:
    """typer 0.29's help prints `<bool>` beside every flag, as if it took a value: show flags bare."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: object) -> str | None:
        return None if self.is_flag else shown(self, ctx)  # type: ignore[arg-type]

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_type_for_flags()
cli = typer.Typer(help="skillcert: occupational skill level certification back end.", no_args_is_help=True)
# Piped or logged (a file, `make run`'s log, a pager), rich took 80 columns: tables broke their cells over lines and a
# checkpoint's hash went to a line of its own. Wide there, unless COLUMNS says otherwise; a terminal's own width.
_WIDTH = None if "COLUMNS" in os.environ else 200
console = Console(width=_WIDTH if not sys.stdout.isatty() else None)
err = Console(stderr=True, width=_WIDTH if not sys.stderr.isatty() else None)


def require(value: str | None, var: str) -> str:
    if not value:
        console.print(f"[red]{var} is not set[/red] (or use `skillcert up`, which starts embedded servers)"
                      + _up_gone(), soft_wrap=True)  # fmt: skip
        raise typer.Exit(2)
    return value


def _up_gone() -> str:
    """What a second shell is told when the `skillcert up` it relied on is gone (killed: its record of where its
    servers are is left behind, naming a process that no longer runs)."""
    import json

    from infra.settings import RUN_FILE, get_settings

    s = get_settings()
    try:
        run = json.loads((s.data_dir / RUN_FILE).read_text())
    except (OSError, ValueError):
        return ""
    return (
        f"; the `skillcert up` that ran on {s.data_dir.resolve()} (pid {run.get('pid')}, since "
        f"{run.get('started_at', '?')}) is gone, killed or crashed: start it again with `skillcert up`"
    )


def when_database_answers(attempt: Callable[[], T], what: str, patience: float = 300.0) -> T:
    """For the long-running processes' start: PostgreSQL may be starting or restarting, as it
    does under compose or after a crash. Try again with backoff, one line each time, rather than
    exit; give up after `patience` seconds."""
    from eventsourcing.persistence import InterfaceError, OperationalError

    deadline, wait = time.monotonic() + patience, 1.0
    while True:
        try:
            return attempt()
        except (psycopg.OperationalError, psycopg.InterfaceError, OperationalError, InterfaceError) as e:
            if time.monotonic() > deadline:
                raise
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            err.print(f"{what}: PostgreSQL unavailable ({reason}); trying again in {wait:.0f} s", soft_wrap=True)
            time.sleep(wait)
            wait = min(wait * 2, 10.0)


def when_broker_answers(bootstrap: str, config: dict[str, Any], what: str, patience: float = 300.0) -> bool:
    """For the worker's start: faust's client gives up at once on a broker that does not answer (a traceback and exit
    1 within two seconds), where the relay and the API wait. Wait for it too, one line each time, with backoff; False
    when interrupted (Ctrl-C, SIGTERM) or after `patience` seconds."""
    import signal

    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    quiet = logging.getLogger("skillcert.broker-check")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False  # librdkafka's own lines about the refused connection: ours says it once
    try:
        client = AdminClient({**config, "bootstrap.servers": bootstrap, "logger": quiet})
        deadline, wait = time.monotonic() + patience, 1.0
        while not stop.is_set():
            try:
                client.list_topics(timeout=2)
                return True
            except KafkaException as e:
                if time.monotonic() > deadline:
                    return False
                err.print(f"{what}: the broker at {bootstrap} does not answer ({e.args[0].str() if e.args else e}); "
                          f"trying again in {wait:.0f} s", soft_wrap=True)  # fmt: skip
                stop.wait(wait)
                wait = min(wait * 2, 10.0)
        return False
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def ensure_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def open_store(s: Settings, create: bool = False) -> tuple[str, Any]:
    """The event store in the settings' schema. Only a process that runs the system (`create`) makes one where
    there is none: a command that looks at the store, pointed at a mistyped schema, made an empty store there
    and reported every read model current."""
    from infra.store.eventstore import SkillcertApplication

    url = require_store(s) if not create else require(s.database_url, "SKILLCERT_DATABASE_URL")
    ensure_schema(url, s.db_schema)
    return url, SkillcertApplication(url, s.db_schema)


def require_store(s: Settings) -> str:
    """The database URL, once its schema is known to hold an event store; else exit 2, naming the schemas that do."""
    from infra.store.eventstore import SkillcertApplication

    url = require(s.database_url, "SKILLCERT_DATABASE_URL")
    schema, events = s.db_schema, f"{SkillcertApplication.name}_events"
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, events).as_string(conn),)).fetchone()[0]:
            return url
        held = [r[0] for r in conn.execute(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = %s ORDER BY 1", (events,))]  # fmt: skip
    shown = ", ".join(held[:10]) + (f" and {len(held) - 10} more" if len(held) > 10 else "")
    where = f"the schemas holding one: {shown}" if held else "this database holds none yet (`skillcert up`)"
    err.print(f"[red]no event store in schema {schema!r}[/red] (SKILLCERT_DB_SCHEMA); {where}", soft_wrap=True)
    raise typer.Exit(2)
