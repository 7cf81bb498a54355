"""The `skillcert` command: one module per group of commands, all on the one Typer app in common."""

from __future__ import annotations

from importlib import import_module

from infra.cli.common import cli, err

# Each module registers its commands on `cli` when imported; --help lists them in this order.
for _group in ("run", "tokens", "batch", "bus", "readmodels", "audit", "keys", "esign"):
    import_module(f"infra.cli.{_group}")

__all__ = ["cli", "main"]


def main() -> None:
    """The entry point: a key that cannot open the store is a configuration error, not a crash."""
    from infra.store.keys import KeyProblem
    from infra.store.secrets import StoreTooOld

    try:
        cli()
    except KeyProblem as e:
        err.print(f"[red]encryption key:[/red] {e}", soft_wrap=True)
        raise SystemExit(2) from None
    except StoreTooOld as e:
        err.print(f"[red]refused:[/red] {e}", soft_wrap=True)
        raise SystemExit(2) from None
