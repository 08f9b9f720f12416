"""The ``lepton`` command line: a thin layer over the SDK (:class:`lepton.LeptonClient`).

One module a command group; :mod:`lepton.cli._app` holds the root command and how every
command reports a failure (one line and a hint; a traceback only with ``--debug``).
"""

from __future__ import annotations

# Imported for the commands they register on the root command.
from lepton.cli import (  # noqa: F401
    access,
    auth,
    contract,
    data,
    jobs,
    models,
    scheduling,
    services,
    stack,
    tail,
)
from lepton.cli._app import app
from lepton.runtime import tracing

__all__ = ["app", "main"]


def main() -> None:
    # With an OTLP endpoint (and the SDK) set, what a command submits starts its trace
    # here; the provider sends its spans when the process exits.
    tracing.configure("lepton-cli")
    app()
