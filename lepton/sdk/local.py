"""Lepton's services on this machine, in the background: what ``lepton up`` and ``lepton
down`` do. Their logs and pid files are in the state directory's ``services/``."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lepton.bus import provision
from lepton.contract.topics import Namespace
from lepton.errors import LeptonError
from lepton.runtime import endpoints

if TYPE_CHECKING:
    from collections.abc import Callable

    from lepton.config import Settings

__all__ = ["LOCAL_SERVICES", "inbox", "start_services", "stop_services"]

# The services started on this machine, with their command lines.
LOCAL_SERVICES: dict[str, list[str]] = {
    "scheduler": ["lepton-scheduler"],
    "ingest": ["lepton-ingest"],
    "evaluator": ["lepton-evaluator"],
    "monitor": ["lepton-monitor"],
    # Two compute nodes of different sizes, each a declared slice of this machine.
    "trainer-node-1": ["lepton-trainer", "--node-id", "node-1", "--cpus", "1", "--memory", "2048"],
    "trainer-node-2": [
        "lepton-trainer",
        *("--node-id", "node-2", "--cpus", "2", "--memory", "4096", "--label", "size=large"),
    ],
}


def inbox(settings: Settings) -> Path:
    """Where local files for ingest go when the services run on this machine."""
    directory = settings.state_dir / "inbox"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _service_dir(settings: Settings) -> Path:
    return settings.state_dir / "services"


def _service_pid(settings: Settings, name: str) -> int | None:
    try:
        return int((_service_dir(settings) / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


def start_services(settings: Settings, say: Callable[[str], None]) -> None:
    """Create the topics and start every service not running yet; ``say`` is told what
    happened to each. Needs the stack (local or configured) to answer."""
    # The services run on this machine, so the local stack's process helpers (psutil) are
    # imported here only: the rest of the SDK works without the development stack.
    from lepton.devstack import is_alive, spawn, status

    where = endpoints.resolve(settings, "admin")
    names = Namespace(settings.topic_prefix)
    asyncio.run(provision(where.kafka, names))
    directory = _service_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env: dict[str, str] = {}
    if "LEPTON_INGEST_ROOTS" not in os.environ:
        # Locally, ingest may read the state directory's inbox and the directory the
        # services start in; set LEPTON_INGEST_ROOTS to choose others.
        roots = [str(inbox(settings)), str(Path.cwd())]
        env["LEPTON_INGEST_ROOTS"] = json.dumps(roots)
        say(f"ingest reads local files under: {', '.join(roots)}")
    if settings.kafka_access() is None and "LEPTON_MONITOR_BROKER_LOG" not in os.environ:
        # The local broker logs its refusals there; the monitor puts them on lepton.audit.
        env["LEPTON_MONITOR_BROKER_LOG"] = str(status(settings).kafka_denials_log)
    for name, command in LOCAL_SERVICES.items():
        if is_alive(_service_pid(settings, name)):
            say(f"{name}: already running")
            continue
        executable = bin_dir / command[0]
        program = str(executable) if executable.exists() else shutil.which(command[0])
        if program is None:
            raise LeptonError(f"{command[0]} not found", "run `make install`")
        pid = spawn([program, *command[1:]], directory / f"{name}.log", env)
        (directory / f"{name}.pid").write_text(str(pid))
        say(f"{name}: started (pid {pid}, log {directory / f'{name}.log'})")


def stop_services(settings: Settings) -> list[str]:
    """Stop the services :func:`start_services` started (SIGTERM: they finish, commit and
    close); the names of those that were running."""
    from lepton.devstack import is_alive, stop_process

    stopped = []
    for name in LOCAL_SERVICES:
        pid = _service_pid(settings, name)
        if is_alive(pid):
            stop_process(pid)
            stopped.append(name)
        (_service_dir(settings) / f"{name}.pid").unlink(missing_ok=True)
    return stopped
