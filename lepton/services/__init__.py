"""The five services, one package each: an app factory (``app.create_app``, no work at
import time), pure decision logic in modules of its own, thin I/O around it. A service
imports lepton's layers below the SDK and never another service (``tests/unit/test_layers.py``).

The functions below are the console scripts (``lepton-scheduler``…): each checks that the
``[server]`` extra is installed before importing its service, so that an SDK-only install
says what to install instead of failing on an import."""

from __future__ import annotations

import importlib
import sys

from lepton.extras import MissingExtra, require
from lepton.runtime import early_stop

__all__ = ["evaluator", "ingest", "monitor", "scheduler", "trainer"]


def _run(service: str) -> None:
    # Before the seconds of imports below: a stop meanwhile ends the process cleanly.
    early_stop.remember_stops()
    try:
        require("server", f"lepton-{service}")
    except MissingExtra as error:
        sys.exit(f"{error}\nhint: {error.hint}")
    importlib.import_module(f"lepton.services.{service}.app").main()


def scheduler() -> None:
    _run("scheduler")


def ingest() -> None:
    _run("ingest")


def evaluator() -> None:
    _run("evaluator")


def monitor() -> None:
    _run("monitor")


def trainer() -> None:
    _run("trainer")
