"""``lepton contract``: the published event contract."""

from __future__ import annotations

from typing import Annotated

import typer

from lepton.cli._app import (
    console,
    contract_app,
    guarded,
    say,
)
from lepton.config import Settings
from lepton.contract.topics import Namespace


@contract_app.command("vectors")
def contract_vectors(
    write: Annotated[bool, typer.Option("--write", help="Rewrite schemas/vectors/.")] = False,
) -> None:
    """Check (or rewrite) the golden test vectors against the codec."""
    from lepton.contract.vectors import write_vectors

    if write:
        for path in write_vectors():
            console.print(f"wrote {path}")
    else:
        console.print("use --write to regenerate; `make test` checks them")


@contract_app.command("register")
def contract_register(
    registry: Annotated[
        str | None,
        typer.Option(
            "--registry",
            help="The registry's Confluent-compatible API, e.g. "
            "http://host:8080/apis/ccompat/v7 (default: LEPTON_SCHEMA_REGISTRY_URL).",
        ),
    ] = None,
) -> None:
    """Register every schema and its history in a schema registry, as subjects
    `<topic>-value` (under LEPTON_TOPIC_PREFIX) with the contract's compatibility
    (BACKWARD_TRANSITIVE). Safe to run again: it registers only what is missing."""
    from lepton.contract.registry import SchemaRegistry, SubjectRegistered, register_contract

    settings = Settings()

    def run() -> list[SubjectRegistered]:
        with SchemaRegistry.from_settings(settings, registry) as client:
            return register_contract(client, Namespace(settings.topic_prefix))

    done = guarded(run)
    for subject in done:
        ids = ", ".join(str(schema_id) for schema_id in subject.ids)
        say(
            f"{subject.subject}: ids {ids}; {subject.added} added; "
            f"compatibility {subject.compatibility}"
        )
    added = sum(subject.added for subject in done)
    say(f"{len(done)} subjects, {added} versions added")
