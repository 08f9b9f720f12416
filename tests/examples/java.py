"""Building the Java examples with Maven, and running one as a process the tests wait on."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.maven import package

# What `mvn -f examples/pom.xml package` makes, by example.
JARS = {
    "usage": Path("streams/target/lepton-usage.jar"),
    "submit": Path("java-producer/target/lepton-submit.jar"),
}


def build_examples(examples: Path, maven: str) -> dict[str, Path]:
    """Builds every example: offline when Maven's local repository already holds what they
    need (CI after the first run), else from Maven Central."""
    if shutil.which(maven) is None or shutil.which("java") is None:
        pytest.fail("the Java examples need Java 17+ and Maven (LEPTON_MAVEN) on PATH")
    package(examples / "pom.xml", maven)
    return {name: examples / jar for name, jar in JARS.items()}


@dataclass
class JavaProcess:
    """A running example whose output (stdout and stderr, interleaved) is read as it comes,
    so that a full pipe never blocks it."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    def output(self) -> str:
        return "\n".join(self.lines)

    @classmethod
    @contextlib.asynccontextmanager
    async def started(
        cls, command: list[str], env: dict[str, str], *, until: str, timeout_s: float = 120
    ) -> AsyncIterator[JavaProcess]:
        """Starts ``command``, returns once a line of its output contains ``until``, and
        stops it (SIGTERM, then SIGKILL after 30 s) on the way out."""
        process = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        running = cls(process)
        seen = asyncio.Event()

        async def read() -> None:
            assert process.stdout is not None
            async for raw in process.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                running.lines.append(line)
                if until in line:
                    seen.set()

        running._reader = asyncio.create_task(read())
        try:
            waits = [asyncio.create_task(process.wait()), asyncio.create_task(seen.wait())]
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
            assert seen.is_set(), (
                f"{command[-1]} exited with {process.returncode} before {until!r}:\n"
                + running.output()[-4000:]
            )
            yield running
        finally:
            await running.stop()

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(30):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
