"""Apache Kafka for the local stack: jars from Maven Central, one KRaft node on loopback."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from lepton.devstack._process import StackError, free_port, port_is_free, spawn

__all__ = ["KafkaNode", "fetch_jars", "java_classpath", "pom_path"]

_MIN_JAVA = 17


def pom_path() -> Path:
    """``deploy/local/pom.xml`` of a checkout, or its copy inside a built wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (
        package.parent / "deploy" / "local" / "pom.xml",
        package / "devstack" / "pom.xml",
    ):
        if candidate.is_file():
            return candidate
    raise StackError(f"deploy/local/pom.xml not found next to {package}")


def _require_tool(name: str, setting: str, install_hint: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name!r} not found: {install_hint}, or set {setting}")
    return found


def check_java(java: str) -> str:
    """The Java executable, after checking it is version 17 or newer."""
    executable = _require_tool(
        java, "LEPTON_JAVA", "install Java 17+ (apt-get install openjdk-17-jre-headless)"
    )
    result = subprocess.run(
        [executable, "-version"], capture_output=True, text=True, timeout=30, check=False
    )
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if match is None or int(match.group(1)) < _MIN_JAVA:
        raise StackError(
            f"Kafka 4 needs Java {_MIN_JAVA}+; {executable} says: "
            f"{(result.stderr or result.stdout).splitlines()[:1]}"
        )
    return executable


def fetch_jars(cache_dir: Path, maven: str) -> Path:
    """Jars of the pinned pom, fetched once through Maven and reused while the pom is unchanged."""
    pom = pom_path()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    target = cache_dir / "jars" / digest
    if (target / ".complete").exists():
        return target
    executable = _require_tool(maven, "LEPTON_MAVEN", "install Maven (apt-get install maven)")
    staging = cache_dir / "jars" / f".{digest}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [
            executable,
            "--batch-mode",
            "--quiet",
            "--file",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        errors = [line for line in result.stdout.splitlines() if "[ERROR]" in line]
        first = errors[0] if errors else (result.stderr.strip().splitlines() or ["no output"])[0]
        raise StackError(
            f"Maven could not fetch Kafka's jars ({first.strip()}); check that Maven Central "
            "is reachable from this machine, or set LEPTON_KAFKA_BOOTSTRAP to an existing broker"
        )
    (staging / ".complete").touch()
    try:
        staging.rename(target)
    except OSError:  # another process finished the same download first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def java_classpath(jar_dir: Path) -> str:
    return os.pathsep.join(str(jar) for jar in sorted(jar_dir.glob("*.jar")))


def _cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding. It may
    # start with "-", so it is passed as --cluster-id=<id>, never as a separate argument.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = console
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.console.ref = console
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


@dataclass(slots=True)
class KafkaNode:
    """A single broker-and-controller KRaft node whose files live in ``home``."""

    home: Path
    broker_port: int
    controller_port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    @classmethod
    def prepare(cls, home: Path, previous: tuple[int, int] | None) -> KafkaNode:
        """Pick ports, reusing the previous ones when free so the address stays stable."""
        broker = free_port(previous[0] if previous else None)
        controller = free_port(previous[1] if previous else None)
        while controller == broker or not port_is_free(controller):
            controller = free_port()
        return cls(home=home, broker_port=broker, controller_port=controller)

    def _write_config(self) -> Path:
        data = self.home / "data"
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # A static voter set keeps working when the ports change between restarts.
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.broker_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.broker_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            # Topics are created from lepton/contract/topics.py; a typo must not create a topic.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
        }
        config = self.home / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        (self.home / "log4j2.properties").write_text(_LOG4J2)
        return config

    def _jvm(self, java: str, jar_dir: Path, heap: str) -> list[str]:
        return [
            java,
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            java_classpath(jar_dir),
        ]

    def start(self, java: str, jar_dir: Path, heap: str) -> int:
        """Format the storage on first use, then start the node; returns its process id."""
        self.home.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        jvm = self._jvm(java, jar_dir, heap)
        if not (self.home / "data" / "meta.properties").exists():
            result = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={_cluster_id()}",
                    "-c",
                    str(config),
                ],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if result.returncode != 0:
                raise StackError(
                    "formatting Kafka's storage failed: "
                    + (result.stderr or result.stdout).strip().splitlines()[-1]
                )
        return spawn([*jvm, "kafka.Kafka", str(config)], self.log_path)
