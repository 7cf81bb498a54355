"""What every command shares: the Typer app, the consoles, the store from the settings."""

from __future__ import annotations

from typing import Any

import psycopg
import typer
from psycopg import sql
from rich.console import Console

from infra.settings import Settings

cli = typer.Typer(help="skillcert: occupational skill level certification back end.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


def require(value: str | None, var: str) -> str:
    if not value:
        console.print(f"[red]{var} is not set[/red] (or use `skillcert up`, which starts embedded servers)")
        raise typer.Exit(2)
    return value


def ensure_schema(database_url: str, schema: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))


def open_store(s: Settings) -> tuple[str, Any]:
    from infra.store.eventstore import SkillcertApplication

    url = require(s.database_url, "SKILLCERT_DATABASE_URL")
    ensure_schema(url, s.db_schema)
    return url, SkillcertApplication(url, s.db_schema)
