"""The `skillcert` command: one module per group of commands, all on the one Typer app in common."""

from __future__ import annotations

from importlib import import_module

from infra.cli.common import cli, err

# Each module registers its commands on `cli` when imported; --help lists them in this order.
for _group in ("run", "tokens", "batch", "bus", "readmodels", "audit", "keys", "esign"):
    import_module(f"infra.cli.{_group}")

__all__ = ["cli", "main"]


def main() -> None:
    """The entry point: a key that cannot open the store, a database that does not answer, a command the domain refuses
    are said in a sentence, not a traceback of fifty lines (an operator on call reads them)."""
    import psycopg
    from eventsourcing.persistence import InterfaceError, OperationalError
    from rich.markup import escape

    from domain.errors import DomainError
    from infra.store.keys import KeyProblem
    from infra.store.secrets import StoreTooOld

    try:
        cli()
    except KeyProblem as e:
        err.print(f"[red]encryption key:[/red] {escape(str(e))}", soft_wrap=True)
        raise SystemExit(2) from None
    except StoreTooOld as e:
        err.print(f"[red]refused:[/red] {escape(str(e))}", soft_wrap=True)
        raise SystemExit(2) from None
    except DomainError as e:
        err.print(f"[red]refused:[/red] {escape(e.message)}", soft_wrap=True)
        raise SystemExit(2) from None
    except (psycopg.OperationalError, psycopg.InterfaceError, OperationalError, InterfaceError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        err.print(f"[red]PostgreSQL unavailable:[/red] {escape(reason)}. Is the server up, and SKILLCERT_DATABASE_URL "
                  "right?", soft_wrap=True)  # fmt: skip
        raise SystemExit(3) from None
