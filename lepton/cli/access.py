"""``lepton contract acls``: the Kafka ACLs of lepton/contract/topics.py, for an operator."""

from __future__ import annotations

import asyncio
import shlex
from itertools import groupby
from typing import TYPE_CHECKING, Annotated

import typer

from lepton.cli._app import console, contract_app, guarded
from lepton.config import Settings
from lepton.contract.topics import Namespace, grants

if TYPE_CHECKING:
    from lepton.contract.topics import Grant


def kafka_acls_lines(found: list[Grant], principal: str) -> list[str]:
    """``kafka-acls.sh`` commands that create ``found``, one per principal and resource;
    ``principal`` is a format with ``{actor}`` (``User:lepton-{actor}``)."""
    lines = []

    def resource(grant: Grant) -> tuple[str, str, str, bool]:
        return grant.actor, grant.resource, grant.name, grant.prefixed

    for (actor, kind, name, prefixed), same in groupby(sorted(found, key=resource), resource):
        words = [
            "kafka-acls.sh",
            "--bootstrap-server",
            "$BOOTSTRAP",
            "--command-config",
            "admin.properties",
            "--add",
            "--allow-principal",
            principal.format(actor=actor),
        ]
        for grant in same:
            # kafka-acls.sh spells them Read, Write, Describe, DescribeConfigs.
            words += ["--operation", grant.operation.title().replace("_", "")]
        if prefixed:
            words += ["--resource-pattern-type", "prefixed"]
        words += [f"--{kind}", name]
        lines.append(shlex.join(words).replace("'$BOOTSTRAP'", "$BOOTSTRAP"))
    return lines


@contract_app.command("acls")
def contract_acls(
    principal: Annotated[
        str,
        typer.Option(help="Each actor's Kafka principal, with {actor} for its name."),
    ] = "User:lepton-{actor}",
    apply: Annotated[
        bool,
        typer.Option(
            "--apply",
            help="Create the topics and make the ACLs so on the configured cluster, "
            "connected as its admin (the LEPTON_KAFKA_* settings).",
        ),
    ] = False,
) -> None:
    """The Kafka ACLs each Lepton actor needs, under LEPTON_TOPIC_PREFIX: `kafka-acls.sh`
    lines for an operator of an existing cluster (or --apply them)."""
    settings = Settings()
    names = Namespace(settings.topic_prefix)
    found = grants(names)
    if apply:
        from lepton.bus import provision
        from lepton.runtime import endpoints

        def run() -> list[str]:
            kafka = settings.kafka_access() or endpoints.resolve(settings, "admin").kafka
            return asyncio.run(provision(kafka, names))

        created = guarded(run)
        console.print(f"{len(created)} topics created; {len(found)} ACLs in place")
        return
    print("# As a super user; the admin (a super user) also creates the topics: `lepton up`.")
    for line in kafka_acls_lines(found, principal):
        print(line)
