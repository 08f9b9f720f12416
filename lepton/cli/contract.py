"""``lepton contract``: the published event contract."""

from __future__ import annotations

from typing import Annotated

import typer

from lepton.cli._app import (
    console,
    contract_app,
)


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
