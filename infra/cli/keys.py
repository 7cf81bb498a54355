"""The master key that encrypts stored events."""

from __future__ import annotations

import typer

from infra.cli.common import cli, console, open_store
from infra.settings import get_settings

keys_cli = typer.Typer(
    help="The master key that encrypts stored events (by wrapping their data keys): make one, rotate it.",
    no_args_is_help=True,
)
cli.add_typer(keys_cli, name="keys")


@keys_cli.command("new")
def keys_new() -> None:
    """Print a new random master key (base64, AES-256) for SKILLCERT_MASTER_KEY. Nothing is stored."""
    from infra.store.keys import new_key

    print(new_key())


@keys_cli.command("status")
def keys_status() -> None:
    """The configured master key's id and, per data key, the master key that wraps it."""
    from rich.table import Table

    from infra.store.keys import status

    s = get_settings()
    url, app = open_store(s)  # refuses, naming the key, if the configured keys cannot open the store
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
    from infra.store.keys import rotate

    s = get_settings()
    url, app = open_store(s)
    master = app.mapper.cipher.master
    app.close()
    rewrapped, new = rotate(url, s.db_schema, master)
    if not rewrapped:
        # Nothing was under another master key: no old key to retire, and telling the operator to destroy "the old
        # key" here could cost them the one they use (an outsider read it so).
        console.print(f"every data key was already under master key {master.current_id}: no master key was retired "
                      f"(to retire one, run this with it in SKILLCERT_OLD_MASTER_KEYS and the new one in "
                      f"SKILLCERT_MASTER_KEY). New events go under a new data key, {new}, once each process restarts; "
                      "keep SKILLCERT_MASTER_KEY as it is.", soft_wrap=True)  # fmt: skip
        return
    console.print(f"{rewrapped} data key(s) rewrapped under master key {master.current_id}; new events go under "
                  f"data key {new} once each process restarts. Remove SKILLCERT_OLD_MASTER_KEYS and destroy the old "
                  "key.", soft_wrap=True)  # fmt: skip
