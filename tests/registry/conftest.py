"""A real schema registry for these tests: Apicurio Registry (its in-memory distribution),
assembled by Maven from Maven Central (``server/pom.xml``) and started on loopback on a free
port for the session."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from lepton.config import Settings
from tests.maven import package

SERVER = Path(__file__).parent / "server"
RUNNER = SERVER / "target" / "apicurio-registry-server-1-runner.jar"
SERDE = Path(__file__).parent / "serde"
_LISTENING = re.compile(r"Listening on: (http://127\.0\.0\.1:\d+)")
START_TIMEOUT_S = 120


def built(project: Path, output: Path) -> Path:
    """``output`` of the Maven ``project``, built unless it is newer than its sources."""
    sources = [project / "pom.xml", *(project / "src").rglob("*")]
    if output.exists() and all(output.stat().st_mtime > p.stat().st_mtime for p in sources):
        return output
    package(project / "pom.xml")
    return output


@dataclass(frozen=True)
class RegistryServer:
    base: str  # http://127.0.0.1:<port>
    log: Path

    @property
    def url(self) -> str:
        """Its Confluent-compatible API, which Lepton and registry-aware clients use."""
        return f"{self.base}/apis/ccompat/v7"


@contextmanager
def running_registry(log: Path, port: int = 0) -> Iterator[RegistryServer]:
    """A registry process on loopback (``port`` 0: a free one), stopped at the end."""
    jar = built(SERVER, RUNNER)
    java = Settings().java
    process = subprocess.Popen(
        [
            java,
            "-Xmx384m",
            "-Dquarkus.http.host=127.0.0.1",
            f"-Dquarkus.http.port={port}",
            "-jar",
            str(jar),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    found: list[str] = []
    listening = threading.Event()

    def copy_output() -> None:
        # Drains the pipe for the process's whole life (a full pipe would stall it).
        assert process.stdout is not None
        with log.open("w", encoding="utf-8") as out:
            for line in process.stdout:
                out.write(line)
                out.flush()
                match = _LISTENING.search(line)
                if match and not listening.is_set():
                    found.append(match[1])
                    listening.set()
        listening.set()  # it ended: the wait below reports that

    reader = threading.Thread(target=copy_output, daemon=True)
    reader.start()
    try:
        listening.wait(START_TIMEOUT_S)
        assert found, f"the registry did not start in {START_TIMEOUT_S} s; see {log}"
        yield RegistryServer(found[0], log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(10)


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    with running_registry(tmp_path_factory.mktemp("registry") / "registry.log") as server:
        yield server


class Serde:
    """Apicurio Registry's own Avro serializer and deserializer (``serde/``): a
    registry-aware client as another system would run it."""

    def __init__(self, classpath: str) -> None:
        self.classpath = classpath

    def run(
        self, mode: str, registry: RegistryServer, topic: str, lines: list[str], *extra: str
    ) -> list[str]:
        done = subprocess.run(
            [
                Settings().java,
                "-cp",
                self.classpath,
                "RegistrySerde",
                mode,
                registry.base,
                topic,
                *extra,
            ],
            input="".join(f"{line}\n" for line in lines),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, f"RegistrySerde {mode} failed:\n{done.stderr[-4000:]}"
        return done.stdout.splitlines()


@pytest.fixture(scope="session")
def serde() -> Serde:
    classpath = built(SERDE, SERDE / "target" / "classpath.txt").read_text(encoding="utf-8")
    return Serde(os.pathsep.join([str(SERDE / "target" / "classes"), classpath.strip()]))
