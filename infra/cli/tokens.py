"""API tokens."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.markup import escape

from domain import text
from domain.model import Role
from infra.cli.common import cli, console, err, require_store
from infra.settings import Settings, get_settings

tokens_cli = typer.Typer(
    help="API tokens: create, list, rotate, revoke. Only a token's hash is stored; each expires.", no_args_is_help=True
)
Days = Annotated[int | None, typer.Option("--days", help="days the token is valid (default SKILLCERT_TOKEN_DAYS, 90)")]
cli.add_typer(tokens_cli, name="tokens")


def token_store(s: Settings) -> Any:
    from infra.api.tokens import Tokens

    # Tokens belong to an installation: on a mistyped schema, say there is no store there rather than
    # make one, with a token nobody's API reads.
    tokens = Tokens(require_store(s), s.db_schema)
    tokens.create_table()
    return tokens


# The roles a token is made for, as --help lists them: the system acts through no token (infra.api.tokens.ROLES, not
# imported here: infra.api would load FastAPI for every command).
Issued = StrEnum("Issued", {r.name: r.value for r in Role if r is not Role.SYSTEM})  # type: ignore[misc]


@tokens_cli.command("create")
def tokens_create(
    role: Annotated[Issued, typer.Option(help="staff act for one institution, candidates for themselves")],
    name: Annotated[str, typer.Option(help="the holder; it is the actor on every event the token causes")],
    institution: Annotated[UUID | None, typer.Option(help="institution_staff: the institution's id")] = None,
    id_number: Annotated[
        str | None, typer.Option(help="candidate: their ID number (kept only as a keyed hash)")
    ] = None,
    days: Days = None,
    jurisdiction: Annotated[
        str | None,
        typer.Option(
            help="hr_department (required) or a city's skills centre: the region it acts for, a city code of "
            "004 table 2 (03 Shenzhen, 01 Guangzhou, …; 00 the province)"
        ),
    ] = None,
) -> None:
    """Create a token and print it once (stdout). Give it to its holder: it cannot be shown again."""
    from domain.errors import DomainError, InvalidInput
    from domain.institution import Institution
    from infra.bus.privacy import installation_key, ref
    from infra.services.registrations import Registrations

    role = Role(role.value)  # type: ignore[assignment]
    s = get_settings()
    tokens = token_store(s)
    url = s.database_url
    assert url
    try:
        if institution is not None:
            svc = Registrations(url, s.db_schema)
            try:
                svc.get(Institution, institution, "institution")
            finally:
                svc.close()
        id_number = text.id_number(id_number) if id_number is not None else None
        if id_number is not None and (why := id_number_problem(id_number)):
            raise InvalidInput([("id_number", why)])
        candidate_ref = ref(id_number, installation_key(url, s.db_schema, s.pseudonym_key)) if id_number else None
        token_id, token = tokens.create(name, role, institution, candidate_ref, s.token_days if days is None else days,
                                        jurisdiction=jurisdiction)  # fmt: skip
    except DomainError as e:
        err.print(f"[red]refused:[/red] {escape(e.message)}")
        raise typer.Exit(2) from None
    err.print(f"token {token_id} for {escape(name)} ({role.value}), valid {s.token_days if days is None else days} days; keep it secret, it is "
              "shown only now", soft_wrap=True)  # fmt: skip
    print(token)


@tokens_cli.command("rotate")
def tokens_rotate(
    token_id: Annotated[str, typer.Argument(help="the id shown by `tokens list`")], days: Days = None
) -> None:
    """Revoke a token (expired or not) and print its successor, for the same holder, role and scope."""
    from domain.errors import DomainError

    s = get_settings()
    try:
        new_id, token = token_store(s).rotate(token_id, s.token_days if days is None else days)
    except DomainError as e:
        err.print(f"[red]refused:[/red] {escape(e.message)}")
        raise typer.Exit(2) from None
    err.print(f"token {token_id} revoked; its successor {new_id} is valid {s.token_days if days is None else days} days and shown only "
              "now", soft_wrap=True)  # fmt: skip
    print(token)


@tokens_cli.command("list")
def tokens_list() -> None:
    """Every token: id, holder, role, scope, created, expires, revoked (never the secret)."""
    from rich.table import Table

    table = Table("id", "name", "role", "institution", "candidate", "created", "expires", "revoked")
    for t in token_store(get_settings()).list():
        table.add_row(t["id"], t["name"], t["role"], str(t["institution_id"] or "-"),
                      "yes" if t["bound_to_candidate"] else "-", f"{t['created_at']:%Y-%m-%d %H:%M}",
                      f"{t['expires_at']:%Y-%m-%d %H:%M}" if t["expires_at"] else "-",
                      f"{t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "-")  # fmt: skip
    console.print(table)


@tokens_cli.command("revoke")
def tokens_revoke(token_id: str = typer.Argument(..., help="the id shown by `tokens list` (skc_<id>_…)")) -> None:
    """Revoke a token: every request with it is refused from now on."""
    if not token_store(get_settings()).revoke(token_id):
        err.print(f"[red]no live token {token_id}[/red]")
        raise typer.Exit(2)
    console.print(f"token {token_id} revoked")


def id_number_problem(number: str) -> str | None:
    """Why this is no ID number a registration could carry: a token bound to it would never match its candidate.
    Only what no ID number of any type is: the registration form takes 5 to 30 characters of any ID type (passports,
    permits, the foreigners' permanent residence ID), and checks the format of mainland resident ID cards only; so
    here an 18-character number of the resident ID's shape is held to its check digit, which every such card
    carries, and nothing else to a format."""
    from stdnum.cn import ric

    n = number.strip().upper()
    if not 5 <= len(n) <= 30 or any(ch.isspace() or not ch.isprintable() for ch in n):
        return f"{number.strip()!r} is no ID number: 5 to 30 characters, no spaces, as on the registration form"
    if len(n) == 18 and n[:17].isdigit() and n[17] in "0123456789X" and ric.calc_check_digit(n[:17] + "0") != n[17]:
        return f"{n}: its check digit is wrong (it would be {ric.calc_check_digit(n[:17] + '0')})"
    return None
