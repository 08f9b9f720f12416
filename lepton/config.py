"""Every Lepton setting, declared once, with its environment variable and what it does.

Values come from the environment (``LEPTON_*``) or a ``.env`` file in the working
directory. When ``kafka_bootstrap`` or ``database_url`` is unset, the CLI and the services
use the local stack that ``lepton stack up`` started (its address is in the state
directory), so nothing needs configuring to try Lepton on one machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Actor", "Endpoints", "Settings"]

# Who a process acts as. Each service has its own Kafka principal and PostgreSQL role, so
# each is granted exactly what it reads and writes; "client" is the SDK and the CLI, acting
# for a tenant or an operator; "admin" creates topics, roles and credentials (the stack).
Actor = Literal["scheduler", "ingest", "trainer", "evaluator", "monitor", "client", "admin"]


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where Kafka and PostgreSQL are (see :func:`lepton.runtime.endpoints.resolve`)."""

    kafka_bootstrap: str
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
        "the broker shares small machines with the services.",
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
    health_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="LEPTON_HEALTH_PORT: loopback port of a service's /healthz and "
        "/metrics endpoint; 0 picks a free one (written to the service log).",
    )
    log_level: str = Field(default="info", description="LEPTON_LOG_LEVEL: debug, info, warning.")
    monitor_url: str = Field(
        default="http://127.0.0.1:8765",
        pattern=r"^https?://",
        description="LEPTON_MONITOR_URL: the monitor's JSON API, from which the SDK and the "
        "CLI list nodes, jobs and models (the read model built from every topic).",
    )
