"""Electronic certificates: the signing authority's trust material, revoking an institution's key, and
verifying a signed certificate offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from infra.cli.common import cli, console, err, require_store
from infra.settings import get_settings

esign_cli = typer.Typer(help="Electronic certificates: the signing authority and institutions' keys.",
                        no_args_is_help=True)  # fmt: skip
cli.add_typer(esign_cli, name="esign")


def _service():  # type: ignore[no-untyped-def]
    from infra.services.certificates import Certificates

    s = get_settings()
    return Certificates(require_store(s), s.db_schema)  # a mistyped schema is refused, not made a store


@esign_cli.command("trust")
def esign_trust(
    out: Annotated[Path, typer.Option("--out", file_okay=False, help="directory for authority.pem and crl.der")],
) -> None:
    """Write what a verifier needs offline: the authority's certificate (the trust anchor) and its current
    revocation list. Publish both; `skillcert verify-pdf` and pyHanko's own validator take them."""
    from infra.services import ecert

    svc = _service()
    try:
        authority = ecert.authority(svc)
        out.mkdir(parents=True, exist_ok=True)
        (out / "authority.pem").write_text(authority.certificate_pem)
        (out / "crl.der").write_bytes(authority.crl())
    finally:
        svc.close()
    console.print(f"written {out / 'authority.pem'} and {out / 'crl.der'}")


@esign_cli.command("revoke")
def esign_revoke(
    institution: Annotated[UUID, typer.Option(help="the institution whose key is revoked")],
    serial: Annotated[str, typer.Option(help="the signing certificate's serial (hex), from its events")],
    reason: Annotated[str, typer.Option(help="why: lost, compromised, superseded…")],
) -> None:
    """Revoke an institution's signing key (as the provincial centre) and certify it a new one. What the
    revoked key signed no longer verifies as good once verifiers have the new CRL (esign trust)."""
    from domain.model import Actor, Role
    from infra.services import ecert

    svc = _service()
    try:
        new = ecert.revoke(svc, Actor(id="system:esign", role=Role.PROVINCIAL_CENTRE), institution, serial, reason)
    finally:
        svc.close()
    console.print(f"revoked {serial}; the institution signs with {new} from now on")


@cli.command("verify-pdf")
def verify_pdf(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="an electronic certificate (PDF)")],
    trust: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="the authority's certificate (PEM)")],
    crl: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="its revocation list (DER)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Offline, no database: is the file signed, by whom and when, unaltered since, by a key the authority
    certified and (with --crl) has not revoked? Exit status 0 good, 1 not good, 2 when the trust anchor or
    the CRL is not what it should be (a CRL the authority did not sign is refused)."""
    from infra.services.ecert import BadTrustMaterial, verify

    try:
        checked = verify(file.read_bytes(), trust.read_bytes(), crl.read_bytes() if crl else None)
    except BadTrustMaterial as e:
        err.print(f"[red]cannot verify:[/red] {e}", soft_wrap=True)
        raise typer.Exit(2) from None
    if as_json:
        print(json.dumps({"good": checked.good, "signed": checked.signed, "intact": checked.intact,
                          "whole_file": checked.whole_file, "trusted": checked.trusted, "revoked": checked.revoked,
                          "revocation_checked": checked.revocation_checked, "signer": checked.signer,
                          "signer_serial": checked.signer_serial, "signed_at": checked.signed_at.isoformat()
                          if checked.signed_at else None, "number": checked.number, "problems": checked.problems},
                         ensure_ascii=False))  # fmt: skip
    else:
        verdict = "[red]NOT good[/red]"
        if checked.good:
            verdict = "[green]good[/green]" + ("" if checked.revocation_checked else " (revocation not checked)")
        console.print(f"certificate {checked.number or '?'}: {verdict}", soft_wrap=True)
        if checked.signed:
            console.print(f"  signed by {checked.signer} (key {checked.signer_serial}) at {checked.signed_at}",
                          soft_wrap=True)  # fmt: skip
        for p in checked.problems:
            console.print(f"  {p}", soft_wrap=True)
        if checked.signed and not checked.revocation_checked:
            err.print("  revocation not checked: give --crl (skillcert esign trust writes it)")
    if not checked.good:
        raise typer.Exit(1)
