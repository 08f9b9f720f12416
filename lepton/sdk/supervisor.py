"""The supervisor of the services ``lepton up`` runs on this machine.

``lepton up`` starts it detached, as ``python -m lepton.sdk.supervisor <services dir>``;
it starts each service of ``plan.json`` in that directory, in a process group of its own,
and then:

- a service that exits with a failure (a status other than 0, or a signal) is started
  again after an exponential backoff (1 s, doubling, at most 20 s); its leftover
  processes (a trainer's job worker, the scheduler's digester) are killed first;
- a service that fails :attr:`Policy.crash_limit` times in a row, each time within
  :attr:`Policy.stable_after_s` of its start, is crash-looping: it stays down, and
  ``lepton status`` says so, until ``lepton up`` asks for it again (SIGHUP);
- a service that exits with status 0 (told to stop, it drained and committed) is not
  restarted;
- SIGTERM (``lepton down``) stops every service (SIGTERM to it, then SIGKILL to its group
  after :attr:`Policy.stop_grace_s`) and then the supervisor.

What it knows is in ``supervisor.json`` beside the plan, rewritten (atomically) at each
change: ``lepton status`` reads it. Each service is started with the parent-death signal
set, so that services never outlive their supervisor unsupervised.

Our own rather than supervisord or circus: the whole of what ``lepton up`` needs is this
module, with no daemon configuration language and no control socket; its state is a JSON
file the CLI reads; and the deploy manifests rely on the platform's restart policy instead.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from lepton.config import Settings
from lepton.errors import LeptonError
from lepton.runtime import endpoints

__all__ = [
    "PLAN_FILE",
    "STATE_FILE",
    "Policy",
    "ServiceState",
    "SupervisorState",
    "read_state",
    "stack_fingerprint",
]

PLAN_FILE = "plan.json"
STATE_FILE = "supervisor.json"
READY_LINE = "ready"

State = Literal["running", "backing off", "stopping", "stopped", "crash loop"]

_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_PR_SET_PDEATHSIG = 1
_KILLED_EXIT_S = 10.0  # a process SIGKILL-ed is gone at once, unless stuck in the kernel


@dataclass(frozen=True, slots=True)
class Policy:
    """When a failed service is started again, and when the supervisor gives up on it."""

    backoff_first_s: float = 1.0
    backoff_max_s: float = 20.0
    # Failures in a row, each within stable_after_s of the start, that make a crash loop.
    crash_limit: int = 6
    stable_after_s: float = 60.0
    # How long a service has to drain and commit after SIGTERM before SIGKILL.
    stop_grace_s: float = 30.0

    def arguments(self) -> list[str]:
        """The supervisor's command-line options for this policy."""
        return [
            *("--backoff-first", str(self.backoff_first_s)),
            *("--backoff-max", str(self.backoff_max_s)),
            *("--crash-limit", str(self.crash_limit)),
            *("--stable-after", str(self.stable_after_s)),
            *("--stop-grace", str(self.stop_grace_s)),
        ]

    def backoff(self, failures: int) -> float:
        """The pause before the next start after ``failures`` failures in a row (≥ 1)."""
        return float(min(self.backoff_max_s, self.backoff_first_s * 2 ** (failures - 1)))


@dataclass(slots=True)
class ServiceState:
    """One service as the supervisor sees it (times are Unix seconds)."""

    name: str
    state: State = "stopped"
    pid: int | None = None
    started_at: float | None = None
    restarts: int = 0  # starts after the first one
    failures: int = 0  # failed runs in a row, each shorter than the policy's stable run
    last_exit: str | None = None  # "status 1", "signal SIGKILL"
    last_exit_at: float | None = None
    next_start_at: float | None = None
    stack: str | None = None  # stack_fingerprint() when it was started
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class SupervisorState:
    """``supervisor.json``: the supervisor's pid and every service's state."""

    pid: int
    started_at: float
    services: dict[str, ServiceState] = field(default_factory=dict)
    stopped: bool = False  # it stopped (lepton down) and wrote its last state

    def as_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "started_at": self.started_at,
            "stopped": self.stopped,
            "services": {name: s.as_json() for name, s in self.services.items()},
        }


def read_state(directory: Path) -> SupervisorState | None:
    """What the supervisor last wrote in ``directory``; None if it never ran there."""
    try:
        raw = json.loads((directory / STATE_FILE).read_text())
        return SupervisorState(
            pid=int(raw["pid"]),
            started_at=float(raw["started_at"]),
            stopped=bool(raw["stopped"]),
            services={name: ServiceState(**s) for name, s in raw["services"].items()},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stack_fingerprint(settings: Settings) -> str | None:
    """A digest of where the services find Kafka and PostgreSQL and with which credentials
    (none of them recoverable from it): a service started under another one is stale. None
    when there is no stack to find."""
    try:
        where = endpoints.resolve(settings, "admin")
    except LeptonError:
        return None
    kafka = where.kafka
    password = kafka.password.get_secret_value() if kafka.password else ""
    seen = "\0".join((kafka.bootstrap, kafka.username or "", password, where.database_url))
    return hashlib.sha256(seen.encode()).hexdigest()[:16]


def _exit_text(status: int) -> str:
    if status < 0:
        try:
            return f"signal {signal.Signals(-status).name}"
        except ValueError:
            return f"signal {-status}"
    return f"status {status}"


def _in_child() -> None:
    """Runs in each service's process before exec."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())  # the supervisor's mask is not theirs
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # the supervisor gone, the service stops


def _kill_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class Supervisor:
    """Starts, watches and restarts the services of a plan; see the module's docstring."""

    def __init__(self, directory: Path, plan: dict[str, list[str]], policy: Policy) -> None:
        self.directory = directory
        self.plan = plan
        self.policy = policy
        self.settings = Settings()
        self.started_at = time.time()
        self.services = {name: ServiceState(name) for name in plan}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._run_began: dict[str, float] = {}  # monotonic start of each running service

    # --- state ------------------------------------------------------------------------

    def write(self, *, stopped: bool = False) -> None:
        state = SupervisorState(os.getpid(), self.started_at, self.services, stopped)
        staging = self.directory / f".{STATE_FILE}.{os.getpid()}"
        staging.write_text(json.dumps(state.as_json(), indent=1) + "\n")
        staging.replace(self.directory / STATE_FILE)

    def say(self, event: str, **fields: Any) -> None:
        """One JSON line on the supervisor's log (its standard error)."""
        line = {"time": time.time(), "event": event, **fields}
        print(json.dumps(line), file=sys.stderr, flush=True)

    # --- starting and reaping -----------------------------------------------------------

    def start(self, name: str) -> None:
        service = self.services[name]
        try:
            with (self.directory / f"{name}.log").open("ab") as log:
                process = subprocess.Popen(
                    self.plan[name],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_in_child,  # the supervisor is single-threaded
                )
        except OSError as exc:  # a program gone, no processes or files left: a failed run
            service.last_exit, service.last_exit_at = f"not started: {exc}", time.time()
            self._failed(name, 0.0)
            return
        self.processes[name] = process
        self._run_began[name] = time.monotonic()
        service.state, service.pid, service.started_at = "running", process.pid, time.time()
        service.next_start_at, service.note = None, ""
        service.stack = stack_fingerprint(self.settings)
        self.say("started", service=name, pid=process.pid, restarts=service.restarts)

    def reap(self) -> None:
        """Take note of every service that exited, and decide what follows."""
        for name, process in list(self.processes.items()):
            status = process.poll()
            if status is None:
                continue
            del self.processes[name]
            _kill_group(process.pid, signal.SIGKILL)  # what it left behind goes with it
            service = self.services[name]
            ran_s = time.monotonic() - self._run_began.pop(name)
            service.pid, service.last_exit, service.last_exit_at = (
                None,
                _exit_text(status),
                time.time(),
            )
            if service.state == "stopping" or status == 0:
                service.state = "stopped"
                if status == 0:
                    service.note = "stopped cleanly"
                self.say("stopped", service=name, exit=service.last_exit)
                continue
            self._failed(name, ran_s)

    def _failed(self, name: str, ran_s: float) -> None:
        """A run that failed after ``ran_s``: back off, or give up on a crash loop."""
        service = self.services[name]
        service.failures = service.failures + 1 if ran_s < self.policy.stable_after_s else 1
        if service.failures >= self.policy.crash_limit:
            service.state = "crash loop"
            service.note = (
                f"gave up after {service.failures} failures in a row, each within "
                f"{self.policy.stable_after_s:.0f} s of its start: see {name}.log; "
                "`lepton up` starts it again"
            )
            self.say("crash loop", service=name, exit=service.last_exit)
            return
        pause = self.policy.backoff(service.failures)
        service.state, service.next_start_at = "backing off", time.time() + pause
        service.note = f"failed ({service.last_exit}) after {ran_s:.1f} s; restart in {pause:.0f} s"
        self.say("failed", service=name, exit=service.last_exit, ran_s=ran_s, backoff_s=pause)

    def start_due(self) -> None:
        now = time.time()
        for name, service in self.services.items():
            if service.state == "backing off" and (service.next_start_at or 0) <= now:
                service.restarts += 1
                self.start(name)

    def revive(self) -> None:
        """SIGHUP (``lepton up``): start again the services that stopped or crash-looped."""
        for name, service in self.services.items():
            if service.state in ("stopped", "crash loop"):
                service.failures = 0
                service.restarts += 1
                self.start(name)

    def next_wake_s(self) -> float | None:
        due = [s.next_start_at for s in self.services.values() if s.state == "backing off"]
        return max(0.0, min(t for t in due if t is not None) - time.time()) if due else None

    # --- stopping ---------------------------------------------------------------------

    def stop_all(self) -> None:
        """SIGTERM every service, wait up to the grace, SIGKILL the groups of those left.

        The service alone is told, not its group: it stops its own helpers in order (the
        scheduler's digester, told by its own SIGTERM, would fail the scheduler)."""
        for name, process in self.processes.items():
            self.services[name].state = "stopping"
            process.send_signal(signal.SIGTERM)
        for service in self.services.values():
            if service.state == "backing off":
                service.state, service.next_start_at = "stopped", None
        self.write()
        deadline = time.monotonic() + self.policy.stop_grace_s
        while self.processes and (left := deadline - time.monotonic()) > 0:
            signal.sigtimedwait({signal.SIGCHLD}, left)
            self.reap()
        for name, process in self.processes.items():
            self.say("killed", service=name, after_s=self.policy.stop_grace_s)
            self.services[
                name
            ].note = f"killed: not stopped {self.policy.stop_grace_s:.0f} s after SIGTERM"
            _kill_group(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(_KILLED_EXIT_S)
        self.reap()

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        for name in self.plan:
            self.start(name)
        self.write()
        print(READY_LINE, flush=True)  # lepton up waits for this line
        while True:
            wake = self.next_wake_s()
            # An event (a child exited, a request) or the next start that is due.
            info = (
                signal.sigwaitinfo(_SIGNALS)
                if wake is None
                else signal.sigtimedwait(_SIGNALS, wake)
            )
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self.say("stopping", services=sorted(self.processes))
                self.stop_all()
                self.write(stopped=True)
                return
            self.reap()
            if info is not None and info.si_signo == signal.SIGHUP:
                self.revive()
            self.start_due()
            self.write()


def main() -> None:
    parser = argparse.ArgumentParser(description="Supervise the services of `lepton up`.")
    parser.add_argument("directory", type=Path, help="the state directory's services/")
    defaults = Policy()
    parser.add_argument("--backoff-first", type=float, default=defaults.backoff_first_s)
    parser.add_argument("--backoff-max", type=float, default=defaults.backoff_max_s)
    parser.add_argument("--crash-limit", type=int, default=defaults.crash_limit)
    parser.add_argument("--stable-after", type=float, default=defaults.stable_after_s)
    parser.add_argument("--stop-grace", type=float, default=defaults.stop_grace_s)
    args = parser.parse_args()
    policy = Policy(
        args.backoff_first, args.backoff_max, args.crash_limit, args.stable_after, args.stop_grace
    )
    plan: dict[str, list[str]] = json.loads((args.directory / PLAN_FILE).read_text())
    Supervisor(args.directory, plan, policy).run()


if __name__ == "__main__":
    main()
