"""The bus: the relay and the published contract."""

from __future__ import annotations

import logging
import signal
import threading

import typer
from rich.markup import escape

from infra.cli.common import cli, console, open_store, require, when_database_answers
from infra.settings import get_settings

relay_cli = typer.Typer(help="The outbox relay: event store -> Kafka.", no_args_is_help=True)
cli.add_typer(relay_cli, name="relay")


@relay_cli.command("run")
def relay_run() -> None:
    """Publish the notification log to Kafka. One relay is active at a time; another waits."""
    from infra.bus.kafka import topics_from
    from infra.bus.privacy import installation_key
    from infra.bus.relay import Relay

    s = get_settings()
    bootstrap = require(s.kafka_bootstrap, "SKILLCERT_KAFKA_BOOTSTRAP")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s relay %(levelname)s %(message)s")
    url, app = when_database_answers(lambda: open_store(s, create=True), "relay")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    key = when_database_answers(lambda: installation_key(url, s.db_schema, s.pseudonym_key), "relay")
    relay = Relay(app, url, s.db_schema, bootstrap, s.topic_prefix, key, s.relay_batch_size,
                  s.relay_message_timeout_ms, topics_from(s))  # fmt: skip
    relay.run(stop)
    app.close()


@relay_cli.command("status")
def relay_status(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """The relay's position, the event store's head and the lag between them."""
    from infra.bus.relay import status

    s = get_settings()
    url, app = open_store(s)
    st = status(app, url, s.db_schema)
    app.close()
    if as_json:
        console.print_json(data=st)
        return
    from rich.table import Table

    table = Table(show_header=False)
    for k, v in st.items():
        table.add_row(k.replace("_", " "), "— (none yet)" if v is None else str(v))
    console.print(table)


@relay_cli.command("republish")
def relay_republish(
    after: int = typer.Option(..., "--from", help="republish every event after this position (0: everything)"),
) -> None:
    """Republish history: for a new or wiped broker, or a subscriber that needs to bootstrap.
    Subscribers deduplicate by event id, so what they already have is harmless."""
    from infra.bus.relay import RewindRefused, request_republish

    s = get_settings()
    url, app = open_store(s)
    try:
        console.print(request_republish(app, url, s.db_schema, after), soft_wrap=True)
    except RewindRefused as e:
        console.print(f"[red]refused:[/red] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        app.close()


@cli.command()
def schemas(write: bool = typer.Option(False, "--write", help="regenerate the files under schemas/")) -> None:
    """Check (or --write) the bus contract: the JSON Schemas and the AsyncAPI document against the
    domain models, and each type's sample message (from a lifecycle run) against its schema, strictly."""
    from infra.bus import schemas as contract

    if write:
        try:
            changed = contract.write()
        except contract.BreakingChange as e:
            console.print(f"[red]refused:[/red] {escape(str(e))}")
            raise typer.Exit(2) from None
        console.print(f"{len(changed)} file(s) written" + "".join(f"\n  {p}" for p in changed))
        return
    problems = contract.differences() + contract.sample_problems()
    for p in problems:
        console.print(f"[red]{p}[/red]", soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    n = len(contract.generate())
    console.print(
        f"{n} schemas and {contract.ASYNCAPI} match the models; {n} sample messages validate strictly", soft_wrap=True
    )
