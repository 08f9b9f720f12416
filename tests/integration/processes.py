"""Services started as processes, the way a user starts them, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from lepton.config import KafkaAccess

BIN = Path(sys.executable).parent


def lepton_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``lepton <args>`` in a process of its own, with ``env`` over this one's environment."""
    return subprocess.run(
        [sys.executable, "-m", "lepton", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
        check=False,
    )


def service_env(kafka: KafkaAccess, database_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a service on the test servers, under its own topic prefix."""
    return os.environ | {
        **kafka.environment(),
        "LEPTON_DATABASE_URL": database_url,
        "LEPTON_TOPIC_PREFIX": prefix,
        "LEPTON_MONITOR_PORT": "0",
        "LEPTON_MONITOR_METRICS_PORT": "0",
        **extra,
    }


def data_service_env(
    kafka: KafkaAccess, database_url: str, prefix: str, root: Path
) -> dict[str, str]:
    """``service_env`` for services that read data files under ``root`` and write their
    artifacts to ``root / "artifacts"``."""
    return service_env(
        kafka,
        database_url,
        prefix,
        LEPTON_INGEST_ROOTS=json.dumps([str(root)]),
        LEPTON_ARTIFACT_ROOT=str(root / "artifacts"),
    )


@dataclass(slots=True)
class Service:
    """A service started as a user starts it: its log read as it comes (so that a full
    pipe never blocks it), every line kept as written and each JSON one parsed."""

    name: str
    process: asyncio.subprocess.Process
    entries: list[dict[str, Any]] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)  # as written, JSON or not
    entry: dict[str, Any] = field(default_factory=dict)  # the one ``start`` waited for
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def launch(cls, command: list[str], env: dict[str, str]) -> Service:
        """Start ``command`` and return at once (see :func:`start` to wait until it is up)."""
        process = await asyncio.create_subprocess_exec(
            *command, stderr=asyncio.subprocess.PIPE, env=env, limit=2**24
        )
        started = cls(Path(command[0]).name, process)
        started._reader = asyncio.create_task(started._read())
        return started

    async def _read(self) -> None:
        # Ends when every process writing to this stderr has ended: the service and any
        # process it started that inherited it (the scheduler's heartbeat digester).
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    self.entries.append(entry)
            self._changed.set()
        self._changed.set()  # the log ended: waiters should look

    def tail(self, count: int = 40) -> str:
        """The last ``count`` lines of its log, for a failure to quote."""
        return b"".join(self.lines[-count:]).decode(errors="replace")

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
                            f"for {what}: {self.tail(5)}"
                        )
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self.name}: no {what} within {timeout_s} s") from None

    async def event(self, name: str, timeout_s: float = 90) -> dict[str, Any]:
        return await self.until(lambda entry: entry.get("event") == name, timeout_s, name)

    def logged(self, name: str) -> list[dict[str, Any]]:
        return [entry for entry in self.entries if entry.get("event") == name]

    def events(self) -> list[str]:
        """The name of every event logged so far, in order."""
        return [str(entry.get("event")) for entry in self.entries]

    def raw_lines(self) -> list[bytes]:
        """The lines it wrote that are not a JSON object: a raw library line breaks log
        shipping."""
        return [line for line in self.lines if line.strip() and not line.startswith(b"{")]

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
                f"{self.process.returncode}): {self.tail(5)}"
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

    async def log_ended(self) -> None:
        """Return once its log has ended (it and every process that inherited it exited).
        A waiter that gives up (a timeout) leaves the log being read."""
        if self._reader is not None:
            await asyncio.wait([self._reader])

    async def kill(self) -> int:
        """SIGKILL, no goodbye; its exit status."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        return await self.process.wait()

    async def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, then its exit status once its log has ended (a child that inherited
        the log is given 10 s more). A service still running after ``timeout_s`` is killed,
        and the failure quotes its last log lines (what it was doing when it did not
        stop)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):  # it exited just now
                self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                code = await self.process.wait()
        except TimeoutError:
            await self.kill()
            raise AssertionError(
                f"{self.name} (pid {self.process.pid}) still running {timeout_s:.0f} s after "
                f"SIGTERM; its last log lines:\n{self.tail()}"
            ) from None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.log_ended()
        return code


async def stop_all(services: Iterable[Service]) -> list[int]:
    """Stop each of ``services`` (one that already ended is only waited for), in order,
    every one even when an earlier one failed to stop (a test's teardown must not leave
    the rest running); then raise the first failure, if any. Returns each one's exit
    status."""
    codes: list[int] = []
    failures: list[BaseException] = []
    for service in services:
        try:
            codes.append(await service.stop())
        except AssertionError as failure:
            failures.append(failure)
    if failures:
        raise failures[0]
    return codes


async def start(
    command: list[str], env: dict[str, str], until: str = "health", timeout_s: float = 90
) -> Service:
    """Start ``command`` and return once it logged the event ``until`` (its
    :attr:`Service.entry`); a service that does not is killed."""
    service = await Service.launch(command, env)
    try:
        service.entry = await service.event(until, timeout_s)
    except BaseException:
        await service.kill()
        raise
    return service


@asynccontextmanager
async def running(
    commands: list[tuple[list[str], str]],
    env: dict[str, str],
    database_for: Callable[[str], str],
) -> AsyncIterator[list[Service]]:
    """Start each ``(command, until)`` in order, each service (``lepton-<actor>``) with its
    own PostgreSQL login, and stop every one started on the way out, even when a later one
    failed to start. Once the body succeeded, every line each service wrote (its training
    processes' included) must be a JSON object: a raw library line breaks log shipping."""
    started: list[Service] = []
    try:
        for command, until in commands:
            actor = Path(command[0]).name.removeprefix("lepton-")
            own = env | {"LEPTON_DATABASE_URL": database_for(actor)}
            started.append(await start(command, own, until))
        yield started
    finally:
        await stop_all(started)
    for service in started:
        raw = service.raw_lines()
        assert not raw, f"{service.name} wrote lines that are not JSON: {raw[:3]}"
