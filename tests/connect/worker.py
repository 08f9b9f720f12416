"""A real Kafka Connect standalone worker with Lepton's converter, for tests and the
benchmark: the converter built by Maven from ``deploy/connect``, the worker's classpath
(``deploy/connect/worker/pom.xml``) and Debezium's JDBC sink (``deploy/connect/jdbc/``)
fetched from Maven Central once, the worker started on loopback with no fixed port."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from lepton.config import KafkaAccess, Settings
from lepton.devstack._kafka import check_java, fetch_jars
from tests.maven import package

CONNECT = Path(__file__).resolve().parents[2] / "deploy" / "connect"
CONVERTER = "dev.lepton.connect.LeptonConverter"
_LISTENING = re.compile(r"REST server listening at (http://[^\s,]+?)/?,")


@dataclass(frozen=True, slots=True)
class ConnectJars:
    """What a worker runs: its classpath and its plugin path."""

    worker: Path  # connect-runtime, connect-json, connect-file, log4j
    converter: Path  # plugin directory: Lepton's converter and Apache Avro
    interceptor: Path  # the signing interceptor's jar, for the worker's classpath
    jdbc: Path  # plugin directory: Debezium's JDBC sink and the PostgreSQL driver


def build_converter(maven: str) -> Path:
    """``mvn package`` of ``deploy/connect`` (its Java tests included): offline first, which
    works once Maven's cache holds every artifact, else online. Returns the plugin directory."""
    package(CONNECT / "pom.xml", maven)
    return CONNECT / "target" / "plugin" / "lepton-connect"


def connect_jars(settings: Settings | None = None) -> ConnectJars:
    settings = settings or Settings()
    cache = settings.cache_dir
    return ConnectJars(
        worker=fetch_jars(cache, settings.maven, CONNECT / "worker" / "pom.xml"),
        converter=build_converter(shutil.which(settings.maven) or settings.maven),
        interceptor=CONNECT / "target" / "classpath",
        jdbc=fetch_jars(cache, settings.maven, CONNECT / "jdbc" / "pom.xml"),
    )


def properties(values: dict[str, str]) -> str:
    """A Java ``.properties`` text (values escaped as Java reads them)."""

    def escaped(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\n", "\\n")

    return "".join(f"{name}={escaped(value)}\n" for name, value in values.items())


def client_settings(kafka: KafkaAccess) -> dict[str, str]:
    """The worker's Kafka access, for its own clients and, prefixed, for its connectors'
    consumers, producers and admin clients (Connect does not pass its own on to them)."""
    own = dict(line.split("=", 1) for line in kafka.java_properties().splitlines() if "=" in line)
    every = dict(own)
    for prefix in ("consumer.", "producer.", "admin."):
        every.update(
            {prefix + name: value for name, value in own.items() if name != "bootstrap.servers"}
        )
    return every


def jdbc_url(database_url: str, schema: str) -> str:
    """``postgresql://user:pw@host:port/db`` as a JDBC URL (without credentials) in ``schema``."""
    parts = urlsplit(database_url)
    # reWriteBatchedInserts: the driver sends a batch as multi-row statements, not one by one.
    return (
        f"jdbc:postgresql://{parts.hostname}:{parts.port}{parts.path}"
        f"?currentSchema={schema}&reWriteBatchedInserts=true"
    )


@dataclass(frozen=True, slots=True)
class Warehouse:
    """A PostgreSQL schema a JDBC sink owns, and its login."""

    schema: str
    user: str
    password: str


async def create_warehouse(database_url: str) -> Warehouse:
    """A schema and a login of its own for a sink, made as the superuser ``database_url``."""
    name = f"connect_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(24)
    connection = await asyncpg.connect(database_url)
    try:
        # DDL takes no parameters: the name is hex digits and the password URL-safe
        # characters, both made here.
        await connection.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        await connection.execute(f"CREATE SCHEMA {name} AUTHORIZATION {name}")
    finally:
        await connection.close()
    return Warehouse(name, name, password)


async def drop_warehouse(database_url: str, warehouse: Warehouse) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(f"DROP SCHEMA {warehouse.schema} CASCADE")
        await connection.execute(f"DROP ROLE {warehouse.user}")
    finally:
        await connection.close()


def jdbc_sink(topic: str, table: str, warehouse: Warehouse, database_url: str) -> dict[str, str]:
    """Debezium's JDBC sink from ``topic`` into ``table`` of the warehouse."""
    return {
        "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
        "topics": topic,
        "connection.url": jdbc_url(database_url, warehouse.schema),
        "connection.username": warehouse.user,
        "connection.password": warehouse.password,
        # Kafka's coordinates are the primary key and rows are upserted: a record delivered
        # again after a restart overwrites its own row, so nothing is lost or doubled.
        "insert.mode": "upsert",
        "primary.key.mode": "kafka",
        "schema.evolution": "basic",
        "collection.name.format": table,
    }


JOB_EVENT_KINDS = ["queued", "assigned", "started", "progress", "succeeded", "failed", "requeued"]


def job_events(count: int, base_ms: int = 1_767_225_600_000) -> list[dict[str, Any]]:
    """Job events of every shape (with and without node, progress, reasons), each unique
    by job id and time."""
    kinds = JOB_EVENT_KINDS
    return [
        {
            "job_id": f"job-{n // len(kinds)}",
            "kind": kinds[n % len(kinds)],
            "tenant": "acme" if n % 2 else "globex",
            "node_id": f"node-{n % 3}" if n % len(kinds) else None,
            "lease_epoch": n if n % len(kinds) else None,
            "worker_index": None,
            "attempt": n % 2,
            "reason": "out of memory" if kinds[n % len(kinds)] == "failed" else None,
            "field": None,
            "progress_percent": 12.5 if kinds[n % len(kinds)] == "progress" else None,
            "stage": "searching" if kinds[n % len(kinds)] == "progress" else None,
            "error_type": None,
            "model_id": None,
            "time": base_ms + n,
        }
        for n in range(count)
    ]


@dataclass(slots=True)
class Worker:
    """A running standalone worker."""

    process: subprocess.Popen[bytes]
    log: Path
    _url: str | None = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self, timeout_s: float = 120) -> str:
        """The REST API's address, once the worker has logged it."""
        deadline = time.monotonic() + timeout_s
        while self._url is None:
            found = _LISTENING.search(self.log_text())
            if found:
                self._url = found.group(1)
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"the worker exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not start its REST server:\n{self.tail()}")
            time.sleep(0.2)
        return self._url

    def status(self, connector: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(
                f"{self.url()}/connectors/{connector}/status", timeout=10
            ) as answer:
                found: dict[str, Any] = json.load(answer)
                return found
        except urllib.error.HTTPError as error:
            return {"error": error.code}

    def check(self, *connectors: str) -> None:
        """Raises with the task's trace if a connector or one of its tasks failed."""
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited ({self.process.returncode}):\n{self.tail()}")
        for name in connectors:
            status = self.status(name)
            states = [status.get("connector", {}), *status.get("tasks", [])]
            failed = [state.get("trace", "") for state in states if state.get("state") == "FAILED"]
            if failed:
                raise RuntimeError(f"connector {name} failed:\n{failed[0][:4000]}")

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def stop(self, timeout_s: float = 60) -> None:
        """SIGTERM: the worker commits its offsets and stops its tasks."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


def start_worker(
    jars: ConnectJars,
    kafka: KafkaAccess,
    home: Path,
    connectors: dict[str, dict[str, str]],
    *,
    heap: str = "512m",
) -> Worker:
    """A standalone worker as ``kafka`` running ``connectors`` (name -> settings), its files
    (configs, offsets, log) in ``home``. The same ``home`` again resumes from its offsets."""
    home.mkdir(parents=True, exist_ok=True)
    # plugin.path names directories of plugins, each plugin a directory of its jars.
    plugins = home / "plugins"
    plugins.mkdir(exist_ok=True)
    for name, target in (("lepton-connect", jars.converter), ("jdbc-sink", jars.jdbc)):
        if not (plugins / name).exists():
            (plugins / name).symlink_to(target, target_is_directory=True)
    worker_config = {
        **client_settings(kafka),
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": CONVERTER,
        # Lepton's headers are bytes (a signature, ids): the default SimpleHeaderConverter
        # guesses types from them and reads a signature starting with "[" as a list without
        # a schema, on which Debezium's JDBC sink fails.
        "header.converter": "org.apache.kafka.connect.converters.ByteArrayConverter",
        "offset.storage.file.filename": str(home / "offsets"),
        "offset.flush.interval.ms": "1000",
        "plugin.path": str(plugins),
        # Every plugin here declares itself (META-INF/services): scanning each jar's classes
        # instead took about 7 s a jar on two shared cores.
        "plugin.discovery": "service_load",
        "listeners": "http://127.0.0.1:0",
    }
    (home / "worker.properties").write_text(properties(worker_config))
    files = []
    for name, settings in connectors.items():
        path = home / f"{name}.properties"
        path.write_text(properties({"name": name, **settings}))
        path.chmod(0o600)  # holds keys and passwords
        files.append(str(path))
    (home / "worker.properties").chmod(0o600)
    log = home / f"connect.{time.time_ns()}.log"  # each start its own: a restart finds its own port
    log4j = home / "log4j2.properties"
    log4j.write_text(
        properties(
            {
                "status": "warn",
                "appender.file.type": "File",
                "appender.file.name": "file",
                "appender.file.fileName": str(log),
                "appender.file.append": "true",
                "appender.file.layout.type": "PatternLayout",
                "appender.file.layout.pattern": "%d [%t] %-5p %c - %m%n",
                "rootLogger.level": "info",
                "rootLogger.appenderRef.file.ref": "file",
            }
        )
    )
    java = check_java(Settings().java)
    process = subprocess.Popen(
        [
            java,
            f"-Xmx{heap}",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            f"{jars.worker}/*:{jars.interceptor}/*",
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(home / "worker.properties"),
            *files,
        ],
        stdout=subprocess.DEVNULL,
        stderr=(home / "stderr.log").open("ab"),
        start_new_session=True,
    )
    return Worker(process, log)
