"""A private Lepton for one chaos matrix: its own Kafka and PostgreSQL (``lepton.devstack``
in a temporary state directory, loopback, free ports) and every service as a real process
with its own credentials, as ``lepton up`` starts them.

What the faults need from it: a service's process (to signal), its ``/healthz``, its
resident memory sampled from ``/proc``, and the broker or the database stopped and started
again on the same port. Who brings a dead service back is :class:`Supervision`'s business,
the one place to change once ``lepton up`` supervises its services itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from lepton import devstack
from lepton.config import KafkaAccess, Settings
from lepton.devstack._process import free_port, port_holder, port_is_free

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BIN = Path(sys.executable).parent
# The settings a service may inherit from the harness's environment: where the jars and
# Java are. Every other LEPTON_* variable is the harness's to choose (a test session's
# LEPTON_IDENTITY_KEY, say, belongs to another stack).
_INHERITED = ("LEPTON_CACHE_DIR", "LEPTON_JAVA", "LEPTON_MAVEN", "LEPTON_KAFKA_HEAP")
HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str  # "scheduler", "trainer-node-1", ...
    command: tuple[str, ...]

    @property
    def actor(self) -> str:
        return self.command[0].removeprefix("lepton-")


# As lepton.sdk.local.LOCAL_SERVICES starts them: two trainers of different sizes.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("scheduler", ("lepton-scheduler",)),
    ServiceSpec("ingest", ("lepton-ingest",)),
    ServiceSpec("evaluator", ("lepton-evaluator",)),
    ServiceSpec("monitor", ("lepton-monitor",)),
    ServiceSpec(
        "trainer-node-1",
        ("lepton-trainer", "--node-id", "node-1", "--cpus", "1", "--memory", "2048"),
    ),
    ServiceSpec(
        "trainer-node-2",
        ("lepton-trainer", "--node-id", "node-2", "--cpus", "2", "--memory", "4096"),
    ),
)


@dataclass(slots=True)
class Process:
    """One service: its current process, its fixed health port (stable across restarts,
    so that a restarted service is probed where it was), its log and its RSS peak."""

    spec: ServiceSpec
    health_port: int
    log_path: Path
    env: dict[str, str]
    popen: asyncio.subprocess.Process | None = None
    starts: int = 0
    expected_exit: bool = False  # the harness stopped or killed it on purpose
    unexpected_exits: list[int] = field(default_factory=list)  # their exit codes
    peak_rss_mib: float = 0.0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.returncode is None

    async def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = await asyncio.create_subprocess_exec(
                str(BIN / self.spec.command[0]),
                *self.spec.command[1:],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env | {"LEPTON_HEALTH_PORT": str(self.health_port)},
            )
        self.starts += 1
        self.expected_exit = False

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.returncode is None:
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.expected_exit = True
            self.popen.send_signal(sig)

    async def healthy(self) -> bool:
        """Its /healthz answers 200 (and the process runs)."""
        if not self.alive:
            return False
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        return await asyncio.to_thread(_answers_200, url)

    def sample_rss(self) -> float:
        """The process's resident memory now (MiB), its children (training workers) aside."""
        if self.pid is None:
            return 0.0
        try:
            rss = psutil.Process(self.pid).memory_info().rss / 2**20
        except psutil.Error:
            return 0.0
        self.peak_rss_mib = max(self.peak_rss_mib, rss)
        return rss

    def last_error(self) -> str | None:
        """The newest error its log holds (why it exited, when it exited on its own)."""
        return self.newest_line('"level": "error"', '"level": "critical"')

    def newest_line(self, *naming: str) -> str | None:
        """The newest non-blank line of its log holding any of ``naming`` (any line when
        none is given), cut to 300 characters."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return None
        return next(
            (
                line[:300]
                for line in reversed(lines)
                if line.strip() and (not naming or any(text in line for text in naming))
            ),
            None,
        )


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as answer:  # loopback
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class Supervision:
    """Brings a service back after it exits, as ``lepton up``'s supervisor does (the
    harness runs each service as a process of its own, to signal and measure it; the
    supervisor itself is proven in tests/integration/test_supervision.py)."""

    def __init__(self, services: list[Process]) -> None:
        self.services = services
        self.restarts: dict[str, int] = {}

    def note(self) -> str:
        return "services restarted by the harness 1 s after they exit, as lepton up's supervisor"

    async def watch(self, restart_delay_s: float = 1.0) -> None:
        """Forever: a service whose process ended is recorded (unexpected unless the
        harness ended it) and started again."""
        while True:
            for service in self.services:
                if service.popen is None or service.popen.returncode is None:
                    continue
                if not service.expected_exit:
                    service.unexpected_exits.append(service.popen.returncode)
                await asyncio.sleep(restart_delay_s)
                await service.start()
                self.restarts[service.spec.name] = self.restarts.get(service.spec.name, 0) + 1
            await asyncio.sleep(0.2)


@dataclass(slots=True)
class Stack:
    """The private stack: settings, the admin's access, every service."""

    settings: Settings
    root: Path
    identity_key: str
    services: list[Process]
    supervision: Supervision

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def kafka(self) -> KafkaAccess:
        return devstack.endpoints(self.settings).kafka

    def service(self, name: str) -> Process:
        return next(s for s in self.services if s.spec.name == name)

    def trainers(self) -> list[Process]:
        return [s for s in self.services if s.spec.actor == "trainer"]

    async def all_healthy(self) -> bool:
        answers = await asyncio.gather(*(s.healthy() for s in self.services))
        return all(answers)

    # ------------------------------------------------ the servers, stopped and restarted

    def _state(self) -> dict[str, object]:
        state: dict[str, object] = json.loads((self.settings.state_dir / "stack.json").read_text())
        return state

    def stop_broker(self) -> None:
        devstack.stop_process(int(str(self._state()["kafka_pid"])))

    def start_broker(self) -> str | None:
        """Kafka again on its ports; None, or why that is impossible ("blocked: ...")."""
        try:
            devstack.start_brokers(self.settings, [1])
        except devstack.StackError as exc:  # a port taken meanwhile, say
            return f"blocked: {exc}"
        return None

    def stop_database(self) -> None:
        devstack.postgres(self.settings).stop()

    def start_database(self) -> str | None:
        node = devstack.postgres(self.settings)
        if not port_is_free(node.port):
            return f"blocked: PostgreSQL port {node.port} taken by {port_holder(node.port)}"
        node.start()
        return None


def service_env(settings: Settings, identity_key: str, root: Path) -> dict[str, str]:
    """What every service is started with: the private stack's state directory (each then
    connects with its own Kafka user and PostgreSQL login) and its master key."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_") or k in _INHERITED}
    return kept | {
        "LEPTON_STATE_DIR": str(settings.state_dir),
        "LEPTON_IDENTITY_KEY": identity_key,
        "LEPTON_INGEST_ROOTS": json.dumps([str(root / "inbox")]),
        "LEPTON_ARTIFACT_ROOT": str(root / "artifacts"),
        "LEPTON_MONITOR_PORT": "0",
        "LEPTON_MONITOR_METRICS_PORT": "0",
        "LEPTON_LOG_LEVEL": "info",
    }


@contextlib.asynccontextmanager
async def private_servers(root: Path) -> AsyncIterator[tuple[Settings, str]]:
    """Kafka and PostgreSQL in ``root/stack``, stopped on the way out whatever happened.
    (In a thread: the devstack runs event loops of its own.)"""
    settings = Settings(state_dir=root / "stack")
    await asyncio.to_thread(devstack.up, settings)
    try:
        yield settings, devstack.identity_key(settings)
    finally:
        await asyncio.to_thread(devstack.down, settings)


async def start_services(settings: Settings, identity_key: str, root: Path) -> Stack:
    """Provision the topics and ACLs, then start every service and wait until each
    answers /healthz (bounded: a service that never does is reported by name)."""
    from lepton.bus import provision
    from lepton.contract.topics import Namespace

    (root / "inbox").mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(parents=True, exist_ok=True)
    await provision(devstack.endpoints(settings).kafka, Namespace())
    env = service_env(settings, identity_key, root)
    services = [
        Process(spec, free_port(), root / "logs" / f"{spec.name}.log", env) for spec in SERVICES
    ]
    for service in services:
        await service.start()
    stack = Stack(settings, root, identity_key, services, Supervision(services))
    await until_healthy(stack, 180, "every service to answer /healthz after start")
    return stack


async def until_healthy(stack: Stack, timeout_s: float, what: str) -> float:
    """Seconds until every service answers 200; TimeoutError naming the others."""
    began = time.monotonic()
    deadline = began + timeout_s
    while time.monotonic() < deadline:
        if await stack.all_healthy():
            return time.monotonic() - began
        await asyncio.sleep(0.5)
    sick = [s.spec.name for s in stack.services if not await s.healthy()]
    raise TimeoutError(f"waited {timeout_s:.0f} s for {what}; not healthy: {', '.join(sick)}")


async def sample_memory(stack: Stack, every_s: float = 0.5) -> None:
    """Forever: each service's RSS, so each keeps its peak."""
    while True:
        for service in stack.services:
            service.sample_rss()
        await asyncio.sleep(every_s)


async def stop_services(stack: Stack) -> None:
    for service in stack.services:
        service.signal(signal.SIGCONT)  # a paused one could not stop
        service.signal(signal.SIGTERM)
    for service in stack.services:
        if service.popen is not None:
            try:
                await asyncio.wait_for(service.popen.wait(), 30)
            except TimeoutError:
                service.signal(signal.SIGKILL)
                await service.popen.wait()
