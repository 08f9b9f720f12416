"""``lepton auth``: who this process acts as, keys for principals, tokens for HTTP."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from lepton.cli._app import app, console, guarded
from lepton.config import Settings
from lepton.contract.identity import MAX_TOKEN_LIFETIME_S, Principal
from lepton.runtime import identity

auth_app = typer.Typer(
    rich_markup_mode=None, help="Identity: signing keys for tenants and nodes, tokens for HTTP."
)
app.add_typer(auth_app, name="auth")


@auth_app.command("issue")
def auth_issue(
    principal: Annotated[str, typer.Argument(help="tenant:<name>, node:<id> or operator:<name>.")],
) -> None:
    """Print the signing key of a tenant, a node or an operator (needs the master key:
    LEPTON_IDENTITY_KEY, or the local stack's). Give it to them as LEPTON_SIGNING_KEY."""

    def issue() -> str:
        who = Principal.parse(principal)
        if who.kind == "service":
            raise typer.BadParameter("services derive their own keys from the master key")
        return identity.master_key(Settings()).derive(who).to_text()

    console.print(f"LEPTON_SIGNING_KEY={guarded(issue)}", highlight=False)


@auth_app.command("token")
def auth_token(
    ttl_s: Annotated[
        int,
        typer.Option("--ttl", min=1, max=MAX_TOKEN_LIFETIME_S, help="Seconds it stays valid."),
    ] = 3600,
) -> None:
    """Print a bearer token for the monitor's API and dashboard, minted from this
    process's signing key."""
    key = guarded(lambda: identity.signing_key(Settings(), identity.LOCAL_OPERATOR))
    console.print(key.token(int(time.time()) + ttl_s), highlight=False)


@auth_app.command("whoami")
def auth_whoami() -> None:
    """The principal this process acts as."""
    console.print(
        str(guarded(lambda: identity.signing_key(Settings(), identity.LOCAL_OPERATOR)).principal)
    )
