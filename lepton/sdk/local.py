"""Lepton's services on this machine, under a supervisor: what ``lepton up``, ``lepton
down`` and ``lepton status`` do. The supervisor (:mod:`lepton.sdk.supervisor`) restarts a
service that fails; its state, its log and each service's log are in the state
directory's ``services/``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lepton.bus import provision
from lepton.contract.topics import Namespace
from lepton.errors import ConfigError, LeptonError
from lepton.extras import require
from lepton.runtime import endpoints
from lepton.sdk.supervisor import (
    PLAN_FILE,
    READY_LINE,
    Policy,
    ServiceState,
    SupervisorState,
    read_state,
    stack_fingerprint,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from lepton.config import Settings

__all__ = [
    "LOCAL_HEALTH_PORTS",
    "LOCAL_SERVICES",
    "describe",
    "duration",
    "inbox",
    "running_services",
    "start_services",
    "start_supervisor",
    "status",
    "stop_services",
]

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

# The port of each one's /livez, /healthz and /metrics (LEPTON_HEALTH_PORT, on loopback
# unless LEPTON_HEALTH_HOST says otherwise): fixed, so that a probe or Prometheus finds a
# service where it was before a restart (deploy/prometheus/prometheus.yml scrapes these;
# a test keeps the two alike). The monitor's is for probes: it is scraped on its metrics
# port (LEPTON_MONITOR_METRICS_PORT). LEPTON_HEALTH_PORT given to `lepton up` applies to
# every service instead: 0 gives each a free port.
LOCAL_HEALTH_PORTS: dict[str, int] = {
    "scheduler": 9101,
    "ingest": 9102,
    "evaluator": 9103,
    "monitor": 9104,
    "trainer-node-1": 9110,
    "trainer-node-2": 9111,
}

# How long `lepton up` waits for the supervisor to have started every service.
_READY_TIMEOUT_S = 30.0
# How long `lepton down` gives the supervisor beyond each service's grace to drain.
_STOP_MARGIN_S = 10.0


def inbox(settings: Settings) -> Path:
    """Where local files for ingest go when the services run on this machine."""
    directory = settings.state_dir / "inbox"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def ingest_roots(settings: Settings, configured: str | None) -> list[str]:
    """The directories a local ingest service may read: the state directory's inbox and
    the directory the services start in (`lepton demo` and the quick start use them), and
    the ones LEPTON_INGEST_ROOTS adds (a JSON list, as the ingest service reads it)."""
    roots = [str(inbox(settings)), str(Path.cwd())]
    if configured:
        try:
            added = json.loads(configured)
        except ValueError:
            raise ConfigError(
                f"LEPTON_INGEST_ROOTS is not a JSON list: {configured[:80]!r}",
                hint='write it as a JSON list of directories, e.g. ["/data/in"]',
            ) from None
        if not isinstance(added, list) or not all(isinstance(root, str) for root in added):
            raise ConfigError(
                "LEPTON_INGEST_ROOTS must be a JSON list of directories",
                hint='e.g. ["/data/in"]',
            )
        roots += added
    return list(dict.fromkeys(roots))  # each once, in order


def _service_dir(settings: Settings) -> Path:
    return settings.state_dir / "services"


def status(settings: Settings) -> tuple[SupervisorState | None, bool]:
    """What the supervisor last wrote, and whether it is running now."""
    from lepton.devstack import is_alive

    current = read_state(_service_dir(settings))
    return current, current is not None and not current.stopped and is_alive(current.pid)


def running_services(settings: Settings) -> list[str]:
    """The services of ``lepton up`` whose process is alive."""
    from lepton.devstack import is_alive

    current = read_state(_service_dir(settings))
    if current is None:
        return []
    return [name for name, service in current.services.items() if is_alive(service.pid)]


def describe(service: ServiceState, now: float | None = None) -> str:
    """One line of what a service is doing, for ``lepton up`` and ``lepton down``."""
    now = now or time.time()
    if service.state == "running" and service.started_at is not None:
        restarts = f", {service.restarts} restarts" if service.restarts else ""
        return f"running (pid {service.pid}, up {duration(now - service.started_at)}{restarts})"
    exited = f", last exit {service.last_exit}" if service.last_exit else ""
    return f"{service.state}{exited}" + (f": {service.note}" if service.note else "")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def start_services(settings: Settings, say: Callable[[str], None]) -> None:
    """Create the topics and run every service under a supervisor, or report the ones
    running; ``say`` is told what happened to each. Services that stopped or crash-looped
    are started again; services started against another stack (its addresses or
    credentials changed since) are restarted. Needs the stack (local or configured)."""
    require("server", "lepton up")
    where = endpoints.resolve(settings, "admin")
    names = Namespace(settings.topic_prefix)
    asyncio.run(provision(where.kafka, names))
    with _one_at_a_time(settings, say):
        _supervise(settings, say)


def _supervise(settings: Settings, say: Callable[[str], None]) -> None:
    directory = _service_dir(settings)
    current, alive = status(settings)
    if current is not None and alive:
        fingerprint = stack_fingerprint(settings)
        stale = [
            name
            for name, service in current.services.items()
            if service.state == "running" and service.stack != fingerprint
        ]
        if not stale:
            _report_running(current, say)
            return
        say(
            f"{', '.join(stale)}: started against another stack (its addresses or credentials "
            "changed since): restarting the services"
        )
        _stop_supervisor(settings, current, say)
    elif current is not None:
        _stop_leftovers(current)
    env: dict[str, str] = {}
    roots = ingest_roots(settings, os.environ.get("LEPTON_INGEST_ROOTS"))
    env["LEPTON_INGEST_ROOTS"] = json.dumps(roots)
    say(f"ingest reads local files under: {', '.join(roots)}")
    if settings.kafka_access() is None and "LEPTON_MONITOR_BROKER_LOG" not in os.environ:
        from lepton import devstack

        # The local brokers log their refusals there; the monitor puts them on lepton.audit.
        logs = devstack.status(settings).kafka_denials_logs
        env["LEPTON_MONITOR_BROKER_LOG"] = os.pathsep.join(map(str, logs))
    (directory / PLAN_FILE).write_text(json.dumps(_plan(), indent=1) + "\n")
    started = start_supervisor(directory, env)
    for name, service in started.services.items():
        say(f"{name}: started (pid {service.pid}, log {directory / f'{name}.log'})")


@contextlib.contextmanager
def _one_at_a_time(settings: Settings, say: Callable[[str], None]) -> Iterator[None]:
    """One ``lepton up`` or ``down`` at a time per state directory (two at once would start
    two supervisors), waiting for another at most as long as it may take."""
    from lepton.devstack import exclusive

    bound = _READY_TIMEOUT_S + Policy().stop_grace_s + _STOP_MARGIN_S
    lock = _service_dir(settings) / ".lock"
    with exclusive(lock, bound, "another `lepton up` or `down`", say):
        yield


def _plan() -> dict[str, list[str]]:
    bin_dir = Path(sys.executable).parent
    fixed_ports = "LEPTON_HEALTH_PORT" not in os.environ
    plan = {}
    for name, command in LOCAL_SERVICES.items():
        executable = bin_dir / command[0]
        if not executable.exists():
            raise LeptonError(f"{executable} not found", "run `make install`")
        # The supervisor runs command lines with its own environment: env(1) gives each
        # service its own port.
        port = ["env", f"LEPTON_HEALTH_PORT={LOCAL_HEALTH_PORTS[name]}"] if fixed_ports else []
        plan[name] = [*port, str(executable), *command[1:]]
    return plan


def _report_running(current: SupervisorState, say: Callable[[str], None]) -> None:
    """Services already supervised: say how each is; start again those that stopped."""
    revived = [s for s in current.services.values() if s.state in ("stopped", "crash loop")]
    for name, service in current.services.items():
        if service in revived:
            say(f"{name}: {describe(service)}; starting it again")
        else:
            say(f"{name}: already {describe(service)}")
    if revived:
        os.kill(current.pid, signal.SIGHUP)  # the supervisor starts them again


def start_supervisor(
    directory: Path, env: dict[str, str], policy: Policy | None = None
) -> SupervisorState:
    """Start the supervisor of ``directory``'s plan, detached, and return once it has
    started every service."""
    with (directory / "supervisor.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                *("-m", "lepton.sdk.supervisor", str(directory)),
                *(policy.arguments() if policy else ()),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # it outlives `lepton up`
            env={**os.environ, **env},
        )
    assert process.stdout is not None
    readable, _, _ = select.select([process.stdout], [], [], _READY_TIMEOUT_S)
    line = process.stdout.readline().decode().strip() if readable else ""
    process.stdout.close()
    started = read_state(directory)
    if line != READY_LINE or started is None or started.pid != process.pid:
        tail = (directory / "supervisor.log").read_text(errors="replace").strip().splitlines()
        if process.poll() is None:
            process.kill()
        raise LeptonError(
            f"the supervisor did not start the services within {_READY_TIMEOUT_S:.0f} s"
            + (f": {tail[-1]}" if tail else ""),
            f"see {directory / 'supervisor.log'}",
        )
    return started


def _stop_supervisor(
    settings: Settings, current: SupervisorState, say: Callable[[str], None]
) -> None:
    """SIGTERM the supervisor, which stops every service, and wait for it (bounded)."""
    from lepton.devstack import wait_gone

    bound = Policy().stop_grace_s + _STOP_MARGIN_S
    say(f"waiting up to {bound:.0f} s for the services to finish, commit and stop")
    with contextlib.suppress(ProcessLookupError):
        os.kill(current.pid, signal.SIGTERM)
    if not wait_gone(current.pid, bound):
        say(f"the supervisor did not stop within {bound:.0f} s: killing it and its services")
        os.kill(current.pid, signal.SIGKILL)
        _stop_leftovers(current)
    final = read_state(_service_dir(settings)) or current
    for name, service in final.services.items():
        if current.services[name].pid is not None:
            say(f"{name}: {describe(service)}")


def _stop_leftovers(current: SupervisorState) -> None:
    """Services of a supervisor that is gone (they stop with it; any that did not, now)."""
    from lepton.devstack import stop_process

    for service in current.services.values():
        stop_process(service.pid)


def stop_services(settings: Settings, say: Callable[[str], None]) -> list[str]:
    """Stop the supervisor and with it every service (SIGTERM: they finish, commit and
    close; SIGKILL after the grace); returns the names of those that were running."""
    with _one_at_a_time(settings, say):
        return _unsupervise(settings, say)


def _unsupervise(settings: Settings, say: Callable[[str], None]) -> list[str]:
    current, alive = status(settings)
    running = running_services(settings)
    if current is None:
        return []
    if alive:
        _stop_supervisor(settings, current, say)
    else:
        _stop_leftovers(current)
    return running
