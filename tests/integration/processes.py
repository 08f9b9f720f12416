"""Services started as processes, the way a user starts them, for integration tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def service_env(bootstrap: str, database_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of a service on the test servers, under its own topic prefix."""
    return os.environ | {
        "LEPTON_KAFKA_BOOTSTRAP": bootstrap,
        "LEPTON_DATABASE_URL": database_url,
        "LEPTON_TOPIC_PREFIX": prefix,
        "LEPTON_MONITOR_PORT": "0",
        **extra,
    }


@dataclass(slots=True)
class Running:
    """A started service: its process, the log entry that said it was up, and the rest of
    its log (read as it comes, so that a full pipe never blocks the service)."""

    process: asyncio.subprocess.Process
    entry: dict[str, Any]
    rest_of_log: asyncio.Task[bytes]

    async def stop(self, timeout_s: float = 60) -> bytes:
        """SIGTERM, then the exit; returns the log written after start."""
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(timeout_s):
            await self.process.wait()
            return await self.rest_of_log

    def events(self, log: bytes) -> list[str]:
        return [json.loads(line)["event"] for line in log.splitlines() if line.startswith(b"{")]


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
