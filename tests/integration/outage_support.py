"""Outages for integration tests: a stack of a test module's own, whose broker and
database a test stops and starts again on the same ports, and services as processes
whose log and ``/healthz`` a test watches.

The session's stack (tests/conftest.py) is shared by every test and must stay up, so a
module that takes servers away starts its own. One server is restarted, the other left
running, with the devstack's own parts on the ports the stack recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from lepton import devstack
from lepton.devstack import _read_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from lepton.config import Actor, Settings


@dataclass(slots=True)
class OwnStack:
    """A local stack (``lepton.devstack``) in its own state directory."""

    settings: Settings

    def _state(self) -> dict[str, Any]:
        state = _read_state(self.settings)
        assert state is not None, "the module's stack is not running"
        return state

    def env(self, actor: Actor, prefix: str, **extra: str) -> dict[str, str]:
        """A service's environment on this stack: its own database login, the Kafka
        admin's access (as every service in a test has: the test's topics are not in the
        ACLs), this stack's identity key, and the test's topic prefix."""
        return os.environ | {
            **devstack.endpoints(self.settings).kafka.environment(),
            "LEPTON_DATABASE_URL": devstack.endpoints(self.settings, actor).database_url,
            "LEPTON_IDENTITY_KEY": devstack.identity_key(self.settings),
            "LEPTON_TOPIC_PREFIX": prefix,
            "LEPTON_MONITOR_PORT": "0",
            "LEPTON_MONITOR_METRICS_PORT": "0",
            "LEPTON_HEALTH_CHECK_INTERVAL_S": "0.5",
            **extra,
        }

    def kill_kafka(self) -> None:
        """SIGKILL the broker, as a crash would."""
        os.killpg(self._state()["kafka_pid"], signal.SIGKILL)

    def start_kafka(self) -> None:
        """Start the broker again on its ports; returns once it answers."""
        devstack.start_brokers(self.settings, [1])

    def stop_postgres(self) -> None:
        """Stop PostgreSQL (fast shutdown: every session is cut)."""
        devstack.postgres(self.settings).stop()

    def start_postgres(self) -> None:
        node = devstack.postgres(self.settings)
        assert node.port == self._state()["postgres_port"], "the database's port was taken"
        node.start()


@dataclass(slots=True)
class ServiceProcess:
    """A service started as a user starts it, its JSON log lines kept as they come."""

    name: str
    process: asyncio.subprocess.Process
    entries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # as written, JSON or not
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, command: list[str], env: dict[str, str]) -> ServiceProcess:
        process = await asyncio.create_subprocess_exec(
            *command, stderr=asyncio.subprocess.PIPE, env=env, limit=2**24
        )
        started = cls(os.path.basename(command[0]), process)
        started._reader = asyncio.create_task(started._read())
        return started

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                self.entries.append(json.loads(line))
                self._changed.set()
        self._changed.set()  # the process ended: waiters should look

    async def until(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float = 90, what: str = ""
    ) -> dict[str, Any]:
        """The first log entry (logged already or to come) that satisfies ``predicate``."""
        checked = 0
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    for entry in self.entries[checked:]:
                        if predicate(entry):
                            return entry
                    checked = len(self.entries)
                    if self._reader is not None and self._reader.done():
                        raise AssertionError(
                            f"{self.name} exited ({await self.process.wait()}) while waiting "
                            f"for {what}: {b''.join(self.lines[-5:]).decode(errors='replace')}"
                        )
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {what} within {timeout_s} s") from None

    async def event(self, name: str, timeout_s: float = 90) -> dict[str, Any]:
        return await self.until(lambda entry: entry.get("event") == name, timeout_s, name)

    def logged(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry.get("event") == name]

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: its status code and answer."""
        url = self.logged("health")[0]["url"]
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.get(url)
        except httpx.TransportError as exc:
            raise AssertionError(
                f"{self.name} does not answer /healthz ({exc!r}; exit status "
                f"{self.process.returncode}): {b''.join(self.lines[-5:]).decode(errors='replace')}"
            ) from None
        return answer.status_code, answer.json()

    async def health_becomes(self, code: int, timeout_s: float = 60) -> dict[str, Any]:
        """Poll ``/healthz`` until it answers ``code``; returns that answer."""
        last: tuple[int, dict[str, Any]] | None = None
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    last = await self.health()
                    if last[0] == code:
                        return last[1]
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: /healthz did not answer {code} within {timeout_s} s: {last}"
            ) from None

    async def metric_reaches(self, name: str, least: float, timeout_s: float = 60) -> None:
        """Poll ``/metrics`` (beside ``/healthz``) until the gauge ``name`` is ``least`` or
        more."""
        url = self.logged("health")[0]["url"].removesuffix("healthz") + "metrics"
        seen = None
        try:
            async with (
                asyncio.timeout(timeout_s),
                httpx.AsyncClient(timeout=5, follow_redirects=True) as client,
            ):
                while True:
                    for line in (await client.get(url)).text.splitlines():
                        if line.startswith(f"{name} "):
                            seen = float(line.split()[1])
                    if seen is not None and seen >= least:
                        return
                    await asyncio.sleep(0.2)
        except TimeoutError:
            raise AssertionError(f"{self.name}: {name} is {seen}, not {least}+") from None

    async def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM and the exit status (SIGKILL if it does not end in time)."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                code = await self.process.wait()
        except TimeoutError:
            self.process.kill()
            code = await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 10)
        return code
