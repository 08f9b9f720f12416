"""``lepton stack``: the local Kafka broker and PostgreSQL server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated

import typer
from rich.table import Table

from lepton import devstack
from lepton.bus import provision
from lepton.cli._app import (
    console,
    fail,
    guarded,
    say,
    stack_app,
)
from lepton.config import Settings
from lepton.contract.topics import Namespace
from lepton.runtime.database import redacted
from lepton.sdk import local


def _print_status(current: devstack.StackStatus, as_json: bool) -> None:
    if as_json:
        print(json.dumps(current.as_json()))
        return
    table = Table(show_header=False, box=None)
    table.add_row("running", "[green]yes[/green]" if current.running else "[red]no[/red]")
    table.add_row("kafka", current.kafka_bootstrap or "-")
    if current.kafka_brokers > 1:
        table.add_row("", f"{current.kafka_brokers} brokers (each also a controller)")
    if current.kafka_user:
        # Who, never the password: every actor's is in the credentials file (0600).
        table.add_row(
            "",
            f"{current.kafka_security_protocol} as {current.kafka_user} "
            f"(passwords: {current.kafka_credentials})",
        )
    url = current.database_url
    table.add_row("postgres", redacted(url) if url else "-")
    table.add_row("state", str(current.state_dir))
    table.add_row("logs", "\n".join(map(str, [*current.kafka_logs, current.postgres_log])))
    if current.note:
        table.add_row("note", current.note)
    console.print(table)


@stack_app.command("up")
def stack_up(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    brokers: Annotated[
        int | None,
        typer.Option(
            "--brokers",
            help="Kafka nodes: 1, 3 or 5, each a broker and a controller (default: "
            "LEPTON_STACK_KAFKA_BROKERS, else as many as the stack's storage holds, else 1).",
        ),
    ] = None,
) -> None:
    """Start Kafka and PostgreSQL (or report the stack already running, starting again any
    Kafka node of it that is down)."""
    settings = Settings()
    spinner = console.status("starting Kafka and PostgreSQL…")
    with contextlib.nullcontext() if as_json else spinner:
        current = guarded(lambda: devstack.up(settings, brokers))
        # The admin makes the topics and every actor's ACLs; services only find them.
        admin = guarded(lambda: devstack.local_admin(settings))
        guarded(lambda: asyncio.run(provision(admin, Namespace(settings.topic_prefix))))
    _print_status(current, as_json)


@stack_app.command("down")
def stack_down(
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Stop the services `lepton up` runs first (they finish and commit)."
        ),
    ] = False,
) -> None:
    """Stop the local stack; its data stays in the state directory. Refused while the
    services of `lepton up` run on it, unless --force."""
    settings = Settings()
    running = local.running_services(settings)
    if running and not force:
        fail(
            f"services run on this stack: {', '.join(running)}; stopping the stack under "
            "them would leave them retrying a broker and a database that are gone",
            "`lepton down` stops them first (they finish and commit); "
            "`lepton stack down --force` does both",
        )
    if running:
        say(f"--force: stopping the services first: {', '.join(running)}")
        local.stop_services(settings, say)
    stopped = guarded(lambda: devstack.down(settings))
    console.print("stack stopped" if stopped else "no stack was running")


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Where Kafka and PostgreSQL are, and whether they run."""
    _print_status(devstack.status(Settings()), as_json)
