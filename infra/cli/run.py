"""Running the system: everything at once (up), or each process on its own."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import typer

from infra.cli.common import cli, console, ensure_schema, err, require, when_broker_answers, when_database_answers
from infra.settings import RUN_FILE, Settings, get_settings, running
from infra.supervisor import Supervisor


@cli.command()
def consumers() -> None:
    """Run the faust-streaming worker that keeps the read models current."""
    from consumers.projector import run_worker
    from infra.bus.kafka import client_config

    s = get_settings()
    url, bootstrap = (
        require(s.database_url, "SKILLCERT_DATABASE_URL"),
        require(s.kafka_bootstrap, "SKILLCERT_KAFKA_BOOTSTRAP"),
    )
    when_database_answers(lambda: ensure_schema(url, s.db_schema), "consumers")
    if not when_broker_answers(bootstrap, client_config(s), "consumers"):
        err.print("consumers: stopped before the broker answered; nothing was consumed")
        raise typer.Exit(3)
    # The topics are the relay's to create: until it has, the worker waits for them.
    sys.argv = [sys.argv[0]]  # faust's worker reads the command line
    when_database_answers(lambda: run_worker(s, url, bootstrap), "consumers")


@cli.command()
def api() -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    import uvicorn

    from infra.api import create_app

    s = get_settings()
    url = require(s.database_url, "SKILLCERT_DATABASE_URL")
    when_database_answers(lambda: ensure_schema(url, s.db_schema), "api")
    # The client's address is the peer's unless the peer is a trusted proxy (infra/api/verify.py), so
    # uvicorn must not rewrite it from X-Forwarded-For itself.
    common: dict[str, Any] = dict(host=s.api_host, port=s.api_port, log_level="warning", proxy_headers=False,
                                  timeout_graceful_shutdown=5)  # fmt: skip
    if s.api_workers > 1:  # each worker process builds its own app (infra.api.from_settings)
        uvicorn.run("infra.api:from_settings", factory=True, workers=s.api_workers, **common)
        return
    app = create_app(url, s.db_schema, s.timezone, s.pseudonym_key, s.verify_rate_limit, public_url=s.public_url,
                     trusted_proxies=s.trusted_proxies)  # fmt: skip
    uvicorn.run(app, **common)


@cli.command()
def demo(
    print_tokens: bool = typer.Option(
        False, "--print-tokens", help="write the tokens' env file to stdout (a container's data dir is not kept)"
    ),
) -> None:
    """Load the sample scenario (an institution; plans open for registration with reviewed
    registrations; a spring 2026 plan through to certificates) and make a token per role."""
    from infra.bus.privacy import installation_key
    from infra.services import demo as scenario
    from infra.services.base import shanghai_today
    from infra.services.registrations import Registrations

    s = get_settings()
    url = require(s.database_url, "SKILLCERT_DATABASE_URL")
    ensure_schema(url, s.db_schema)
    service = Registrations(url, s.db_schema)
    with (err if print_tokens else console).status("loading the sample scenario"):
        scenario.load(service, shanghai_today(s.timezone), url, s.db_schema,
                      installation_key(url, s.db_schema, s.pseudonym_key))  # fmt: skip
    service.close()
    if print_tokens:
        made = scenario.tokens(url, s.db_schema, installation_key(url, s.db_schema, s.pseudonym_key), {})
        print("".join(f"export {role.upper()}='Authorization: Bearer {t}'\n" for role, t in made.items()), end="")
        return
    s.data_dir.mkdir(parents=True, exist_ok=True)
    env = s.data_dir / "demo-tokens.env"
    kept = dict(re.findall(r"^export (\w+)='Authorization: Bearer (skc_[\w-]+)'$", env.read_text(), re.M)) \
        if env.exists() else {}  # fmt: skip
    kept = {role.lower(): token for role, token in kept.items()}
    made = scenario.tokens(url, s.db_schema, installation_key(url, s.db_schema, s.pseudonym_key), kept)
    if made != kept:
        env.write_text("".join(f"export {role.upper()}='Authorization: Bearer {t}'\n" for role, t in made.items()))
        env.chmod(0o600)
        console.print(f"sample scenario loaded; a token per role in {env}, valid {scenario.DEMO_TOKEN_DAYS} days "
                      "(source it for the README's tour)", soft_wrap=True)  # fmt: skip
    else:
        console.print(f"sample scenario loaded; the tokens in {env} still open the API", soft_wrap=True)


@cli.command()
def up() -> None:
    """Start everything: PostgreSQL and the broker (embedded unless configured), relay, consumers, API, demo data."""
    from infra.embedded import Broker, port_taken, postgres_running, restart_postgres, start_postgres

    s = get_settings()
    started = time.monotonic()
    if (other := running(s.data_dir)) is not None:
        console.print(f"[red]skillcert up is already running on {s.data_dir.resolve()} (pid {other['pid']}, since "
                      f"{other.get('started_at', '?')}). Stop it first (Ctrl-C in its terminal, or kill "
                      f"{other['pid']}); the skillcert commands of any other shell reach it as it is.[/red]",
                      soft_wrap=True)  # fmt: skip
        raise typer.Exit(2)
    # Before anything starts: a port already answered is another skillcert (or another service), and
    # sharing its broker would mix two systems' events.
    taken = [f"{what} port {port} (set {var})" for what, port, var, wanted in (
        ("the API's", s.api_port, "SKILLCERT_API_PORT", True),
        ("the embedded broker's", s.kafka_port, "SKILLCERT_KAFKA_PORT", not s.kafka_bootstrap),
    ) if wanted and port_taken(s.api_host if "API" in what else "127.0.0.1", port)]  # fmt: skip
    if taken:
        console.print(f"[red]already in use: {'; '.join(taken)}. Is another `skillcert up` running? "
                      "Stop it, or give this one other ports.[/red]", soft_wrap=True)  # fmt: skip
        raise typer.Exit(2)
    run_file = s.data_dir / RUN_FILE
    record: dict[str, Any] = {"pid": os.getpid(), "started_at": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    s.data_dir.mkdir(parents=True, exist_ok=True)
    _write_run_file(run_file, record)
    failed = False
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop cleanly on SIGTERM as on Ctrl-C
    # And on SIGINT, even where it was ignored when `up` started: a shell starts a job put in the background (`&`)
    # with SIGINT ignored, and Python then leaves it so; `kill -INT` did nothing (an outside review waited 30 s).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    pg_server, broker = None, None
    children = Supervisor({}, lambda line: console.print(line, soft_wrap=True))
    try:
        url = s.database_url
        if not url:
            with console.status("starting embedded PostgreSQL"):
                pg_server, url = start_postgres(s.data_dir)
            console.print(f"PostgreSQL (embedded): data in {s.data_dir.resolve() / 'pg'}")
        bootstrap = s.kafka_bootstrap
        if not bootstrap:
            # In memory, with a new cluster id each time: the relay sees a new broker and publishes
            # everything again, and the consumers see that their offsets counted another log.
            broker = Broker(s.kafka_port)
            bootstrap = broker.bootstrap
            console.print(f"Kafka-protocol broker (embedded Tansu, in memory): {bootstrap}")
        ensure_schema(url, s.db_schema)
        # Where the servers are, for the commands of a second shell (infra.settings.running).
        record |= {"database_url": url, "kafka_bootstrap": bootstrap, "api": f"http://{s.api_host}:{s.api_port}",
                   "schema": s.db_schema}  # fmt: skip
        _write_run_file(run_file, record)
        children.env = {**os.environ, "SKILLCERT_DATABASE_URL": url, "SKILLCERT_KAFKA_BOOTSTRAP": bootstrap}
        # Create the event store table once, before three processes race to.
        from infra.store.eventstore import SkillcertApplication

        SkillcertApplication(url, s.db_schema).close()
        if not s.master_key:
            from infra.store.keys import KEY_FILE

            console.print(f"Stored events are encrypted under the master key in {s.data_dir.resolve() / KEY_FILE}: "
                          "back it up apart from the database", soft_wrap=True)  # fmt: skip
        children.start("relay", "relay", "run")
        children.start("consumers", "consumers")
        children.start("api", "api")
        children.start("checkpoints", "audit", "checkpoint", "--every", str(s.checkpoint_every))
        if subprocess.run([sys.executable, "-m", "infra.cli", "demo"], env=children.env).returncode:
            raise RuntimeError("the sample scenario could not be loaded (see above)")
        # A first checkpoint of the chain with the sample data in it, rather than an hour from now.
        subprocess.run([sys.executable, "-m", "infra.cli", "audit", "checkpoint"], env=children.env,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        _wait_for_api(s, children)
        base = f"http://{s.api_host}:{s.api_port}"
        console.print(f"\n[bold green]skillcert is up[/bold green] in {time.monotonic() - started:.1f} s")
        console.print(f"  API:  {base}\n  docs: {base}/docs\n  try:  curl '{base}/plans'")
        console.print("Ctrl-C stops everything.")
        while (why := children.watch()) is None:
            time.sleep(0.5)
            # The embedded servers are ours to keep running too. The broker comes back empty, with
            # a new cluster id: the relay republishes and the consumers start over on the new log.
            if broker is not None and (code := broker.exited()) is not None:
                console.print(f"the embedded broker exited (code {code}); starting a new, empty one", soft_wrap=True)
                broker = _restarted_broker(s.kafka_port)
            if pg_server is not None and not postgres_running(pg_server):
                console.print("the embedded PostgreSQL stopped; starting it again", soft_wrap=True)
                restart_postgres(pg_server)
                console.print("the embedded PostgreSQL is back; the processes reconnect by themselves", soft_wrap=True)
        console.print(f"[red]{why}; stopping everything[/red]", soft_wrap=True)
        failed = True
    except RuntimeError as e:  # a server or process that could not start: said in one line
        console.print(f"[red]{e}; stopping[/red]", soft_wrap=True)
        failed = True
    except KeyboardInterrupt:
        console.print("\nstopping…")
    finally:
        children.stop(["api", "consumers", "checkpoints", "relay"])
        if broker is not None:
            broker.stop()
            console.print("broker stopped")
        if pg_server is not None:
            pg_server.cleanup()
            console.print("PostgreSQL stopped")
        run_file.unlink(missing_ok=True)
        console.print("stopped.")
    if failed:
        raise typer.Exit(1)


def _write_run_file(path: Any, record: dict[str, Any]) -> None:
    import json

    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.chmod(0o600)
    partial.replace(path)


def _restarted_broker(port: int) -> Any:
    from infra.embedded import Broker

    for attempt in range(10):  # the dead one's port may take a moment to be free
        try:
            return Broker(port)
        except RuntimeError:
            if attempt == 9:
                raise
            time.sleep(1)


def _wait_for_api(s: Settings, children: Supervisor) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not children.alive():
            raise RuntimeError("a process exited during start-up")
        try:
            if httpx.get(f"http://{s.api_host}:{s.api_port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the API did not answer within 60 s")
