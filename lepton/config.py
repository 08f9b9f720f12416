"""Every Lepton setting, declared once, with its environment variable and what it does.

Values come from the environment (``LEPTON_*``) or a ``.env`` file in the working
directory. When ``kafka_bootstrap`` or ``database_url`` is unset, the CLI and the services
use the local stack that ``lepton stack up`` started (its address and each actor's
credentials are in the state directory), so nothing needs configuring to try Lepton on
one machine.

:class:`KafkaAccess` is how every Kafka client connects: the brokers and the security
(SASL, TLS); it alone turns them into librdkafka's and aiokafka's settings.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from lepton.errors import ConfigError

__all__ = [
    "ACTORS",
    "Actor",
    "Endpoints",
    "KafkaAccess",
    "SaslMechanism",
    "SecurityProtocol",
    "Settings",
    "kafka_user",
    "read_client_properties",
]

# Who a process acts as. Each service has its own Kafka principal and PostgreSQL role, so
# each is granted exactly what it reads and writes; "client" is the SDK and the CLI, acting
# for a tenant or an operator; "admin" creates topics, roles and credentials (the stack).
Actor = Literal["scheduler", "ingest", "trainer", "evaluator", "monitor", "client", "admin"]
ACTORS: tuple[Actor, ...] = get_args(Actor)


def kafka_user(actor: Actor) -> str:
    """The SASL user an actor is, on the local stack and in the ACLs Lepton writes out."""
    return f"lepton-{actor}"


SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
SaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]
_SASL: frozenset[str] = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
_TLS: frozenset[str] = frozenset({"SASL_SSL", "SSL"})


@dataclass(frozen=True, slots=True)
class KafkaAccess:
    """How to reach a Kafka cluster and prove who is asking: the one place that turns a
    bootstrap address and security settings into a client's configuration.

    ``password`` never appears in ``repr`` (nor in any message of Lepton's); ``str`` is the
    address with the protocol and user, for messages.
    """

    bootstrap: str
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None  # PEM: the CAs that signed the brokers' certificates
    ssl_certfile: Path | None = None  # PEM: this client's certificate (mutual TLS)
    ssl_keyfile: Path | None = None  # PEM: its private key

    def __post_init__(self) -> None:
        if self.security_protocol not in get_args(SecurityProtocol):
            raise ConfigError(
                f"unknown Kafka security protocol {self.security_protocol!r}",
                "one of " + ", ".join(get_args(SecurityProtocol)),
            )
        if self.sasl_mechanism not in get_args(SaslMechanism):
            raise ConfigError(
                f"unknown SASL mechanism {self.sasl_mechanism!r}",
                "one of " + ", ".join(get_args(SaslMechanism)),
            )
        if self.sasl and (not self.username or self.password is None):
            raise ConfigError(
                f"Kafka security protocol {self.security_protocol} needs a user name and a "
                "password",
                "set LEPTON_KAFKA_SASL_USERNAME and LEPTON_KAFKA_SASL_PASSWORD, or "
                "LEPTON_KAFKA_CLIENT_PROPERTIES",
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError(
                "a Kafka client key file was given without its certificate",
                "set LEPTON_KAFKA_SSL_CERTFILE too",
            )

    @property
    def sasl(self) -> bool:
        """Whether the client authenticates with a user name and password."""
        return self.security_protocol in _SASL

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted."""
        return self.security_protocol in _TLS

    @property
    def principal(self) -> str:
        """The Kafka principal the brokers see: ``User:<name>`` (ANONYMOUS without SASL)."""
        return f"User:{self.username if self.sasl else 'ANONYMOUS'}"

    def _login(self) -> tuple[str, str]:
        # __post_init__ checked that a SASL protocol comes with both.
        assert self.username is not None
        assert self.password is not None
        return self.username, self.password.get_secret_value()

    def __str__(self) -> str:
        who = f" as {self.username}" if self.sasl else ""
        return f"{self.bootstrap} ({self.security_protocol}{who})"

    def librdkafka(self) -> dict[str, str]:
        """Settings of a librdkafka (confluent-kafka) client: producer, consumer, admin."""
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"], config["sasl.password"] = self._login()
        if self.tls:
            for key, path in (
                ("ssl.ca.location", self.ssl_cafile),
                ("ssl.certificate.location", self.ssl_certfile),
                ("ssl.key.location", self.ssl_keyfile or self.ssl_certfile),
            ):
                if path is not None:
                    config[key] = str(path)
        return config

    def aiokafka(self) -> dict[str, Any]:
        """Keyword arguments of an aiokafka client (producer, consumer, admin)."""
        arguments: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.sasl:
            arguments["sasl_mechanism"] = self.sasl_mechanism
            arguments["sasl_plain_username"], arguments["sasl_plain_password"] = self._login()
        if self.tls:
            arguments["ssl_context"] = self.ssl_context()
        return arguments

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that verifies the brokers (and the host name) against the CA file,
        else the system's CAs, and presents the client certificate when there is one."""
        context = ssl.create_default_context(
            cafile=str(self.ssl_cafile) if self.ssl_cafile else None
        )
        if self.ssl_certfile is not None:
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return context

    def java_properties(self) -> str:
        """The same access as a Java client's ``.properties`` (Kafka's own tools:
        ``kafka-acls.sh --command-config``, the perf tests). Holds the password."""
        lines = [
            f"bootstrap.servers={self.bootstrap}",
            f"security.protocol={self.security_protocol}",
        ]
        if self.sasl:
            user, password = self._login()
            module = _LOGIN_MODULES[self.sasl_mechanism]
            lines += [
                f"sasl.mechanism={self.sasl_mechanism}",
                f"sasl.jaas.config={module} required "
                f"username={_jaas_quoted(user)} password={_jaas_quoted(password)};",
            ]
        if self.tls and self.ssl_cafile is not None:
            lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={self.ssl_cafile}"]
        return "".join(f"{line}\n" for line in lines)

    def settings(self) -> dict[str, str]:
        """The :class:`Settings` fields that give this access, as text (JSON for a helper
        process, ``Settings(**access.settings())``). Holds the password in clear."""
        given = {
            "kafka_bootstrap": self.bootstrap,
            "kafka_security_protocol": self.security_protocol,
            "kafka_sasl_mechanism": self.sasl_mechanism,
            "kafka_sasl_username": self.username,
            "kafka_sasl_password": self.password.get_secret_value() if self.password else None,
            "kafka_ssl_cafile": self.ssl_cafile,
            "kafka_ssl_certfile": self.ssl_certfile,
            "kafka_ssl_keyfile": self.ssl_keyfile,
        }
        return {name: str(value) for name, value in given.items() if value is not None}

    def environment(self) -> dict[str, str]:
        """The ``LEPTON_KAFKA_*`` variables that give this access to another process."""
        return {f"LEPTON_{name.upper()}": value for name, value in self.settings().items()}


_LOGIN_MODULES: dict[str, str] = {
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
}


def _jaas_quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PROPERTY = re.compile(r"([^=:\s]+)\s*[=:]?\s*(.*)", re.DOTALL)


def _java_properties(text: str) -> dict[str, str]:
    """``key=value`` (or ``key: value``) lines of a Java ``.properties`` file, with ``#``
    and ``!`` comments and a trailing backslash continuing a line."""
    found: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        match = _PROPERTY.match(logical)
        if match is not None:
            found[match[1]] = match[2].strip()
        logical = ""
    return found


_JAAS_OPTION = re.compile(r'(username|password)\s*=\s*"((?:[^"\\]|\\.)*)"')


def read_client_properties(path: Path) -> dict[str, Any]:
    """The :class:`Settings` fields a Java client's ``.properties`` file gives: what an
    operator of a secured cluster already has (``security.protocol``, ``sasl.mechanism``,
    ``sasl.jaas.config`` with ``username`` and ``password``, ``ssl.truststore.location``
    and ``ssl.keystore.location`` of PEM files, ``bootstrap.servers``)."""
    try:
        properties = _java_properties(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read the Kafka client properties {path}: {exc.strerror}",
            "check LEPTON_KAFKA_CLIENT_PROPERTIES",
        ) from None
    found: dict[str, Any] = {}
    if "bootstrap.servers" in properties:
        found["kafka_bootstrap"] = properties["bootstrap.servers"]
    if "security.protocol" in properties:
        found["kafka_security_protocol"] = properties["security.protocol"].upper()
    if "sasl.mechanism" in properties:
        found["kafka_sasl_mechanism"] = properties["sasl.mechanism"].upper()
    for option, value in _JAAS_OPTION.findall(properties.get("sasl.jaas.config", "")):
        unquoted = re.sub(r"\\(.)", r"\1", value)
        if option == "username":
            found["kafka_sasl_username"] = unquoted
        else:
            found["kafka_sasl_password"] = SecretStr(unquoted)
    for store, fields in (
        ("truststore", ("kafka_ssl_cafile",)),
        ("keystore", ("kafka_ssl_certfile", "kafka_ssl_keyfile")),
    ):
        location = properties.get(f"ssl.{store}.location")
        if location is None:
            continue
        kind = properties.get(f"ssl.{store}.type", "").upper()
        if kind != "PEM" and not location.lower().endswith((".pem", ".crt")):
            raise ConfigError(
                f"{path}: ssl.{store}.location {location} is not a PEM file",
                f"Lepton's clients read PEM: convert the {store} (keytool -exportcert / "
                "openssl pkcs12) and set ssl." + store + ".type=PEM",
            )
        for name in fields:
            found[name] = Path(location)
    return found


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where Kafka and PostgreSQL are, and how to sign in to them (see
    :func:`lepton.runtime.endpoints.resolve`)."""

    kafka: KafkaAccess
    database_url: str


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "lepton"


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "lepton"


class Settings(BaseSettings):
    """Lepton's configuration. Each field reads the environment variable ``LEPTON_<NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="LEPTON_", env_file=".env", extra="ignore", frozen=True
    )

    env: Literal["development", "production"] = Field(
        default="development",
        description="LEPTON_ENV: `production` makes a service refuse to start on an insecure "
        "configuration (the local stack, a missing key, an unauthenticated listener), "
        "naming each setting to fix.",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="LEPTON_KAFKA_BOOTSTRAP: host:port[,host:port] of an existing Kafka "
        "cluster. Unset: the local stack's broker.",
    )
    kafka_security_protocol: SecurityProtocol | None = Field(
        default=None,
        description="LEPTON_KAFKA_SECURITY_PROTOCOL: PLAINTEXT, SASL_PLAINTEXT, SASL_SSL or "
        "SSL. Unset: the client properties file's, else PLAINTEXT.",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None,
        description="LEPTON_KAFKA_SASL_MECHANISM: SCRAM-SHA-512 (unset), SCRAM-SHA-256 or PLAIN.",
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="LEPTON_KAFKA_SASL_USERNAME: the SASL user this process is."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="LEPTON_KAFKA_SASL_PASSWORD: its password. Never logged."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="LEPTON_KAFKA_SSL_CAFILE: PEM file of the CAs that signed the brokers' "
        "certificates. Unset: the system's CAs.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None,
        description="LEPTON_KAFKA_SSL_CERTFILE: PEM certificate of this client (mutual TLS).",
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None,
        description="LEPTON_KAFKA_SSL_KEYFILE: PEM private key of that certificate (unset: "
        "in the certificate file).",
    )
    kafka_client_properties: Path | None = Field(
        default=None,
        description="LEPTON_KAFKA_CLIENT_PROPERTIES: a Java client .properties file "
        "(bootstrap.servers, security.protocol, sasl.mechanism, sasl.jaas.config, PEM "
        "ssl.truststore/keystore.location); the LEPTON_KAFKA_* settings win over it.",
    )
    stack_kafka_tls: bool = Field(
        default=False,
        description="LEPTON_STACK_KAFKA_TLS: the local stack's broker listens with TLS "
        "(SASL_SSL, a CA and certificate made at `lepton stack up`) instead of SASL_PLAINTEXT.",
    )
    stack_kafka_brokers: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="LEPTON_STACK_KAFKA_BROKERS: Kafka nodes of the local stack, 1, 3 or 5 "
        "(each a broker and a controller), as `lepton stack up --brokers` sets it. Unset: as many "
        "as its storage was formatted with, else one.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="LEPTON_DATABASE_URL: postgresql:// URL of an existing PostgreSQL "
        "database. Unset: the local stack's server. Never logged.",
    )
    identity_key: SecretStr | None = Field(
        default=None,
        description="LEPTON_IDENTITY_KEY: the master key (32 bytes, base64url) from which "
        "every tenant's, node's and service's signing key is derived; services hold it to "
        "verify who wrote a record. Unset: the local stack's. Never logged.",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        description="LEPTON_SIGNING_KEY: this client's or trainer node's own key, "
        "`<kind>:<name>:<key>` as `lepton auth issue` prints it; every record it writes is "
        "signed with it. Unset: derived from the identity key when this process holds it "
        "(a service, or an operator of the local stack). Never logged.",
    )
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="LEPTON_STATE_DIR: where the local stack keeps its data, logs and "
        "process ids, and where `lepton up` writes service logs.",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="LEPTON_CACHE_DIR: where Kafka's and Avro's jars from Maven Central are "
        "cached between runs.",
    )
    java: str = Field(
        default="java", description="LEPTON_JAVA: the Java (17 or newer) that runs Kafka."
    )
    maven: str = Field(
        default="mvn", description="LEPTON_MAVEN: the Maven that fetches Kafka's jars."
    )
    kafka_heap: str = Field(
        default="768m",
        description="LEPTON_KAFKA_HEAP: the local broker's JVM heap (-Xmx); modest, because "
        "the broker shares small machines with the services. Unset, each node of a local "
        "cluster gets 512m.",
    )
    topic_prefix: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]*$",
        description="LEPTON_TOPIC_PREFIX: put before every topic and consumer-group name, so "
        "that several installations (or test runs) share one Kafka cluster.",
    )
    client_id: str = Field(
        default="lepton",
        description="LEPTON_CLIENT_ID: Kafka client id prefix, seen in broker logs and metrics.",
    )
    connect_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="LEPTON_CONNECT_TIMEOUT_S: how long a service tries to reach Kafka or "
        "PostgreSQL at start before it gives up with a clear error.",
    )
    health_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="LEPTON_HEALTH_HOST: address a service's /livez, /healthz and /metrics "
        "listen on. They need no credential and name no tenant's work; loopback by default "
        "so that nothing is exposed by accident, 0.0.0.0 where a probe or a scraper comes "
        "from another host (a Kubernetes pod).",
    )
    health_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="LEPTON_HEALTH_PORT: port of a service's /livez, /healthz and /metrics; "
        "0 picks a free one (written to the service log as `health`).",
    )
    health_check_interval_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="LEPTON_HEALTH_CHECK_INTERVAL_S: how often a service asks Kafka and "
        "PostgreSQL for a trivial answer; /healthz answers 503 with the reason while either "
        "does not give one.",
    )
    log_level: str = Field(default="info", description="LEPTON_LOG_LEVEL: debug, info, warning.")
    monitor_url: str = Field(
        default="http://127.0.0.1:8765",
        pattern=r"^https?://",
        description="LEPTON_MONITOR_URL: the monitor's JSON API, from which the SDK and the "
        "CLI list nodes, jobs and models (the read model built from every topic).",
    )
    schema_registry_url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="LEPTON_SCHEMA_REGISTRY_URL: a Confluent-compatible schema registry "
        "(e.g. Apicurio's `/apis/ccompat/v7`) where `lepton contract register` put the "
        "schemas. Set: services also read registry-framed events (`00` + schema id). Unset: "
        "single-object encoding only.",
    )
    schema_registry_username: str | None = Field(
        default=None,
        description="LEPTON_SCHEMA_REGISTRY_USERNAME: HTTP basic user for the schema registry.",
    )
    schema_registry_password: SecretStr | None = Field(
        default=None,
        description="LEPTON_SCHEMA_REGISTRY_PASSWORD: its password. Never logged.",
    )
    schema_registry_write: bool = Field(
        default=False,
        description="LEPTON_SCHEMA_REGISTRY_WRITE: services write registry framing instead of "
        "single-object encoding (needs LEPTON_SCHEMA_REGISTRY_URL, and every reader of "
        "Lepton's topics in registry mode).",
    )

    def kafka_access(self) -> KafkaAccess | None:
        """The configured Kafka access: the client properties file, overridden by the
        ``LEPTON_KAFKA_*`` settings given; None when neither names a bootstrap address
        (the local stack's, with the actor's own credentials, is used then)."""
        given: dict[str, Any] = {}
        if self.kafka_client_properties is not None:
            given = read_client_properties(self.kafka_client_properties)
        given.update(
            (name, value) for name in _KAFKA_FIELDS if (value := getattr(self, name)) is not None
        )
        if given.get("kafka_bootstrap") is None:
            return None
        return KafkaAccess(
            bootstrap=given["kafka_bootstrap"],
            security_protocol=given.get("kafka_security_protocol", "PLAINTEXT"),
            sasl_mechanism=given.get("kafka_sasl_mechanism", "SCRAM-SHA-512"),
            username=given.get("kafka_sasl_username"),
            password=given.get("kafka_sasl_password"),
            ssl_cafile=given.get("kafka_ssl_cafile"),
            ssl_certfile=given.get("kafka_ssl_certfile"),
            ssl_keyfile=given.get("kafka_ssl_keyfile"),
        )


_KAFKA_FIELDS = (
    "kafka_bootstrap",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
)
