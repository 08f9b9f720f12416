"""Apache Kafka for the local stack: jars from Maven Central, KRaft nodes on loopback.

One node by default; ``lepton stack up --brokers 3`` (or 5) makes a cluster of that many
*combined* nodes, each a broker and a voter of the controller quorum. Kafka's documentation
finds combined nodes "simpler to operate for small use cases like a development
environment" and advises against them in critical deployments, where the controllers run
apart: a local cluster is the first case, and three more JVMs for separate controllers
would cost these small machines more than what they would show. A quorum of three
survives the loss of any one node, controller or not, as three separate controllers would.

Secure by default: the only client listener is SASL (SCRAM-SHA-512) over plain TCP, or
over TLS with ``LEPTON_STACK_KAFKA_TLS``; the StandardAuthorizer denies whatever no ACL
allows. Each actor (:data:`lepton.config.ACTORS`) has its own principal ``lepton-<actor>``
with a random password, created when the storage is formatted (SCRAM credentials must
exist before a KRaft broker starts); ``lepton-admin`` is the super user the broker itself
connects as. The passwords live in ``kafka/credentials.json`` (0600, in a 0700 directory).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from lepton.config import ACTORS, KafkaAccess
from lepton.devstack._process import StackError, spawn, write_private
from lepton.devstack._tls import broker_tls

if TYPE_CHECKING:
    from lepton.config import Actor, SaslMechanism

__all__ = ["KafkaNode", "fetch_jars", "java_classpath", "new_cluster_id", "pom_path", "principal"]

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


def fetch_jars(cache_dir: Path, maven: str, pom: Path | None = None) -> Path:
    """Jars of the pinned pom (``deploy/local/pom.xml`` unless another is given), fetched
    once through Maven and reused while the pom is unchanged."""
    pom = pom or pom_path()
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


def new_cluster_id() -> str:
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

# The broker's refusals, for the monitor to publish on lepton.audit
# (lepton/services/monitor/broker_denials.py reads this layout): the authorizer's denials (logged
# at INFO, allowed requests below it), and from the network Selector the failed SASL
# authentications (INFO: "Failed authentication with /<address> (<reason>)") and the
# connections it closed before any authentication (WARN: "Unexpected error from …", a
# client speaking PLAINTEXT to the SASL listener), which also still reach the console. One
# line each: UTC with milliseconds, line breaks in a message escaped, an exception as its
# one-line message; rolled over by size so a client retrying in a loop cannot fill the disk.
_DENIALS_LOG4J2 = """\
appender.denials.type = RollingFile
appender.denials.name = denials
appender.denials.fileName = {path}
appender.denials.filePattern = {path}.%i
appender.denials.layout.type = PatternLayout
appender.denials.layout.alwaysWriteExceptions = false
appender.denials.layout.pattern = %d{{yyyy-MM-dd'T'HH:mm:ss.SSS'Z'}}{{UTC}} %c %enc{{%m}}{{CRLF}}\
%notEmpty{{ [%enc{{%ex{{short.message}}}}{{CRLF}}]}}%n
appender.denials.policies.type = Policies
appender.denials.policies.size.type = SizeBasedTriggeringPolicy
appender.denials.policies.size.size = 10MB
appender.denials.strategy.type = DefaultRolloverStrategy
appender.denials.strategy.max = 2
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = info
logger.authorizer.additivity = false
logger.authorizer.appenderRef.denials.ref = denials
logger.network.name = org.apache.kafka.common.network.Selector
logger.network.level = info
logger.network.additivity = false
logger.network.appenderRef.console.ref = console
logger.network.appenderRef.console.level = warn
logger.network.appenderRef.denials.ref = denials
logger.network.appenderRef.denials.filter.refused.type = RegexFilter
logger.network.appenderRef.denials.filter.refused.regex = \
.*(Failed (re-)?authentication with|Unexpected error from) .*
logger.network.appenderRef.denials.filter.refused.onMatch = ACCEPT
logger.network.appenderRef.denials.filter.refused.onMismatch = DENY
"""


_MECHANISM: SaslMechanism = "SCRAM-SHA-512"
_SCRAM_MODULE = "org.apache.kafka.common.security.scram.ScramLoginModule"
_PLAIN_MODULE = "org.apache.kafka.common.security.plain.PlainLoginModule"


def principal(actor: Actor) -> str:
    """The SASL user an actor is on the local broker (``lepton-scheduler``, …)."""
    return f"lepton-{actor}"


def _jaas(module: str, user: str, password: str, *, accepts: bool = False) -> str:
    # Passwords are URL-safe base64: nothing in them needs quoting.
    accepted = f' user_{user}="{password}"' if accepts else ""
    return f'{module} required username="{user}" password="{password}"{accepted};'


@dataclass(slots=True)
class KafkaNode:
    """A broker-and-controller KRaft node whose files live in ``home``: alone, or node
    ``node_id`` of a cluster whose voters listen on ``voters`` (controller ports, by node
    id from 1) and whose shared files (credentials, TLS, cluster id) are in ``shared``."""

    home: Path
    broker_port: int
    controller_port: int
    tls: bool = False
    # A benchmark's broker only (bench.bus): PLAINTEXT and SASL_SSL listeners on these
    # ports beside the usual one, to measure what authentication and TLS cost.
    bench_ports: tuple[int, int] | None = None
    node_id: int = 1
    voters: tuple[int, ...] = ()  # empty: this node is the cluster
    shared: Path | None = None  # None: ``home``

    @property
    def size(self) -> int:
        """Nodes in this node's cluster."""
        return len(self.voters) or 1

    @property
    def _shared(self) -> Path:
        return self.shared or self.home

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    @property
    def log_path(self) -> Path:
        return self.home / "kafka.log"

    @property
    def denials_log_path(self) -> Path:
        """The broker's refusals (ACL denials, failed authentications), one per line."""
        return self.home / "denials.log"

    @property
    def credentials_path(self) -> Path:
        return self._shared / "credentials.json"

    @property
    def formatted(self) -> bool:
        return (self.home / "data" / "meta.properties").exists()

    @property
    def protocol(self) -> str:
        return "SASL_SSL" if self.tls else "SASL_PLAINTEXT"

    def access(self, actor: Actor) -> KafkaAccess:
        """How ``actor`` connects to this node: its own user and password."""
        try:
            passwords: dict[str, str] = json.loads(self.credentials_path.read_text())
            password = passwords[principal(actor)]
        except (OSError, ValueError, KeyError):
            raise StackError(
                f"no Kafka credentials for {actor} in {self.credentials_path}: "
                "`lepton stack down`, remove that directory and `lepton stack up` again"
            ) from None
        return KafkaAccess(
            bootstrap=self.bootstrap,
            security_protocol="SASL_SSL" if self.tls else "SASL_PLAINTEXT",
            sasl_mechanism=_MECHANISM,
            username=principal(actor),
            password=SecretStr(password),
            ssl_cafile=self._shared / "tls" / "ca.pem" if self.tls else None,
        )

    def bench_access(self) -> dict[str, KafkaAccess]:
        """The admin's access through each listener of a benchmark's broker, by protocol."""
        assert self.bench_ports is not None
        admin = self.access("admin")
        plain, secure = self.bench_ports
        return {
            "PLAINTEXT": KafkaAccess(f"127.0.0.1:{plain}"),
            admin.security_protocol: admin,
            "SASL_SSL": dataclasses.replace(
                admin,
                bootstrap=f"127.0.0.1:{secure}",
                security_protocol="SASL_SSL",
                ssl_cafile=self._shared / "tls" / "ca.pem",
            ),
        }

    def _credentials(self, formatted: bool) -> dict[str, str]:
        """Every principal's password: read back, or made for a storage about to be formatted."""
        if self.credentials_path.exists():
            passwords: dict[str, str] = json.loads(self.credentials_path.read_text())
            return passwords
        if formatted:
            raise StackError(
                f"Kafka's data in {self.home} predates authentication (no credentials.json): "
                "remove that directory (its topics are lost) and run `lepton stack up` again"
            )
        passwords = {principal(actor): secrets.token_urlsafe(24) for actor in ACTORS}
        write_private(self.credentials_path, json.dumps(passwords).encode())
        return passwords

    def _write_config(self, passwords: dict[str, str]) -> Path:
        data = self.home / "data"
        admin = principal("admin")
        password = passwords[admin]
        listener = self.protocol
        voters = self.voters or (self.controller_port,)
        # Internal topics as replicated as the cluster allows; with three replicas or more,
        # a write needs two of them (acks=all), so one lost node loses nothing acknowledged.
        replicas = str(min(3, self.size))
        in_sync = "2" if self.size >= 3 else "1"
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            # A static voter set: every node knows the others' kept ports.
            "controller.quorum.voters": ",".join(
                f"{node}@127.0.0.1:{port}" for node, port in enumerate(voters, start=1)
            ),
            "listeners": f"CLIENTS://127.0.0.1:{self.broker_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"CLIENTS://127.0.0.1:{self.broker_port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "CLIENTS",
            # No PLAINTEXT listener: clients authenticate with SCRAM; the controller
            # listener takes PLAIN (SCRAM credentials live in the metadata the controller
            # serves, so they cannot authenticate the controller itself).
            "listener.security.protocol.map": f"CLIENTS:{listener},CONTROLLER:SASL_PLAINTEXT",
            "listener.name.clients.sasl.enabled.mechanisms": _MECHANISM,
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": _MECHANISM,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.clients.scram-sha-512.sasl.jaas.config": _jaas(
                _SCRAM_MODULE, admin, password
            ),
            "listener.name.controller.plain.sasl.jaas.config": _jaas(
                _PLAIN_MODULE, admin, password, accepts=True
            ),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{admin}",
            "log.dirs": str(data),
            "num.partitions": "1",
            # Topics are created from lepton/contract/topics.py; a typo must not create a topic.
            "auto.create.topics.enable": "false",
            "default.replication.factor": replicas,
            "min.insync.replicas": in_sync,
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": in_sync,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": in_sync,
            "group.initial.rebalance.delay.ms": "0",
        }
        if self.bench_ports is not None:
            plain, secure = self.bench_ports
            properties["listeners"] += f",PLAIN://127.0.0.1:{plain},SECURE://127.0.0.1:{secure}"
            properties["advertised.listeners"] += (
                f",PLAIN://127.0.0.1:{plain},SECURE://127.0.0.1:{secure}"
            )
            properties["listener.security.protocol.map"] += ",PLAIN:PLAINTEXT,SECURE:SASL_SSL"
            properties["listener.name.secure.sasl.enabled.mechanisms"] = _MECHANISM
            properties["listener.name.secure.scram-sha-512.sasl.jaas.config"] = _jaas(
                _SCRAM_MODULE, admin, password
            )
            # The unauthenticated listener is the baseline being measured, on a throwaway
            # loopback broker: whoever comes through it may do anything.
            properties["super.users"] += ";User:ANONYMOUS"
        if self.tls or self.bench_ports is not None:
            tls = broker_tls(self._shared / "tls")
            properties |= {
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(tls.keystore),
                # The broker is its own client on the inter-broker listener.
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(tls.ca_file),
            }
        config = self.home / "server.properties"
        # It holds the admin's password: 0600, like the credentials.
        write_private(
            config, "".join(f"{key}={value}\n" for key, value in properties.items()).encode()
        )
        (self.home / "log4j2.properties").write_text(
            _LOG4J2 + _DENIALS_LOG4J2.format(path=self.denials_log_path)
        )
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

    def start(self, java: str, jar_dir: Path, heap: str, cluster_id: str | None = None) -> int:
        """Format the storage on first use (with every principal's SCRAM credential, under
        ``cluster_id``, which a cluster's nodes share; a new one alone), then start the
        node; returns its process id."""
        for directory in {self.home, self._shared}:
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o700)
        formatted = self.formatted
        passwords = self._credentials(formatted)
        config = self._write_config(passwords)
        jvm = self._jvm(java, jar_dir, heap)
        if not formatted:
            scram = [
                f"--add-scram={_MECHANISM}=[name={user},password={password}]"
                for user, password in passwords.items()
            ]
            result = subprocess.run(
                [
                    *jvm,
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id or new_cluster_id()}",
                    "-c",
                    str(config),
                    *scram,
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
