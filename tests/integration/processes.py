"""Services started as processes, the way a user starts them, for integration tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
class Running:
    """A started service: its process, the log entry that said it was up, and the rest of
    its log (read as it comes, so that a full pipe never blocks the service)."""

    process: asyncio.subprocess.Process
    entry: dict[str, Any]
    rest_of_log: asyncio.Task[bytes]

    async def stop(self, timeout_s: float = 60) -> bytes:
        """SIGTERM, then the exit; returns the log written after start. A service still
        running after ``timeout_s`` is killed, and the failure quotes its last log lines
        (what it was doing when it did not stop)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            tail = b"\n".join((await self.rest_of_log).splitlines()[-40:])
            raise AssertionError(
                f"pid {self.process.pid} still running {timeout_s:.0f} s after SIGTERM; "
                f"its last log lines:\n{tail.decode(errors='replace')}"
            ) from None
        return await self.rest_of_log

    def events(self, log: bytes) -> list[str]:
        return [json.loads(line)["event"] for line in log.splitlines() if line.startswith(b"{")]


async def stop_all(services: Iterable[Running]) -> list[bytes]:
    """Stop each of ``services`` in order, every one even when an earlier one failed to
    stop (a test's teardown must not leave the rest running); then raise the first
    failure, if any. Returns each service's log after start."""
    logs: list[bytes] = []
    failures: list[BaseException] = []
    for service in services:
        try:
            logs.append(await service.stop())
        except (AssertionError, OSError) as failure:
            failures.append(failure)
    if failures:
        raise failures[0]
    return logs


async def start(
    command: list[str], env: dict[str, str], until: str = "health", timeout_s: float = 90
) -> Running:
    """Start ``command`` and return once it logged the event ``until``."""
    process = await asyncio.create_subprocess_exec(
        *command, stderr=asyncio.subprocess.PIPE, env=env
    )
    assert process.stderr is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = await process.stderr.readline()
            assert line, f"{command[0]} exited early with {await process.wait()}"
            try:
                entry = json.loads(line) if line.startswith(b"{") else {}
            except ValueError:
                continue
            if entry.get("event") == until:
                break
    return Running(process, entry, asyncio.create_task(process.stderr.read()))


@asynccontextmanager
async def running(
    commands: list[tuple[list[str], str]],
    env: dict[str, str],
    database_for: Callable[[str], str],
) -> AsyncIterator[list[Running]]:
    """Start each ``(command, until)`` in order, each service (``lepton-<actor>``) with its
    own PostgreSQL login, and stop every one started on the way out, even when a later one
    failed to start. Once the body succeeded, every line each service wrote (its training
    processes' included) must be a JSON object: a raw library line breaks log shipping."""
    started: list[Running] = []
    logs: list[bytes] = []
    try:
        for command, until in commands:
            actor = Path(command[0]).name.removeprefix("lepton-")
            own = env | {"LEPTON_DATABASE_URL": database_for(actor)}
            started.append(await start(command, own, until))
        yield started
    finally:
        logs = await stop_all(started)
    for (command, _), log in zip(commands, logs, strict=True):
        raw = [line for line in log.splitlines() if line.strip() and not line.startswith(b"{")]
        assert not raw, f"{Path(command[0]).name} wrote lines that are not JSON: {raw[:3]}"
