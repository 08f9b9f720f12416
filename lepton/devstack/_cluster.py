"""The local stack's Kafka: one node, or a cluster of 3 or 5 combined KRaft nodes.

Node 1 lives in ``<state>/kafka`` (where the single broker always lived, so a state
directory from before clusters keeps working), node N in ``<state>/kafka/node-N``. What the
nodes share stays in ``<state>/kafka``: every principal's password, the TLS files, the
cluster id they are formatted with and the cluster's size. A storage formatted for one
size is never restarted at another: a quorum's voters are fixed when it is formatted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lepton.devstack._kafka import KafkaNode, new_cluster_id
from lepton.devstack._process import StackError, is_alive, stop_processes
from lepton.devstack._secrets import kept_secret

if TYPE_CHECKING:
    from pathlib import Path

    from lepton.config import Actor, KafkaAccess

__all__ = ["SIZES", "KafkaCluster", "broker_answers", "formatted_size"]

# Odd sizes only: every node is a voter, and a quorum of 2 or 4 survives no more losses
# than one of 1 or 3.
SIZES = (1, 3, 5)
_READY_TIMEOUT_S = 90.0


def formatted_size(home: Path) -> int | None:
    """How many nodes the cluster whose files are in ``home`` was formatted with; None for
    a storage never formatted."""
    if not (home / "data" / "meta.properties").exists():
        return None
    try:
        return int((home / "brokers").read_text())
    except FileNotFoundError:  # a single broker's storage, from before clusters too
        return 1
    except (OSError, ValueError):
        raise StackError(
            f"{home / 'brokers'} is unreadable: `lepton stack down`, remove {home} "
            "(its topics are lost) and `lepton stack up` again"
        ) from None


def _node_home(home: Path, node_id: int) -> Path:
    return home if node_id == 1 else home / f"node-{node_id}"


@dataclass(frozen=True, slots=True)
class KafkaCluster:
    """The local stack's Kafka nodes: ``ports`` holds each one's (broker, controller)
    port, by node id from 1."""

    home: Path
    ports: tuple[tuple[int, int], ...]
    tls: bool = False

    @property
    def size(self) -> int:
        return len(self.ports)

    @property
    def nodes(self) -> list[KafkaNode]:
        voters = tuple(controller for _, controller in self.ports) if self.size > 1 else ()
        return [
            KafkaNode(
                _node_home(self.home, node_id),
                broker,
                controller,
                tls=self.tls,
                node_id=node_id,
                voters=voters,
                shared=self.home,
            )
            for node_id, (broker, controller) in enumerate(self.ports, start=1)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    @property
    def protocol(self) -> str:
        return self.nodes[0].protocol

    @property
    def credentials_path(self) -> Path:
        return self.nodes[0].credentials_path

    def access(self, actor: Actor) -> KafkaAccess:
        """How ``actor`` connects: its own user and password, every node as bootstrap."""
        return dataclasses.replace(self.nodes[0].access(actor), bootstrap=self.bootstrap)

    def start(self, java: str, jar_dir: Path, heap: str, node_ids: list[int]) -> dict[int, int]:
        """Start the nodes named (formatting those never formatted); their process ids by
        node id. A StackError if this storage was formatted for another size."""
        formatted = formatted_size(self.home)
        if formatted is not None and formatted != self.size:
            raise StackError(
                f"the local Kafka in {self.home} was formatted with {formatted} broker(s), "
                f"not {self.size}: start it with --brokers {formatted}, or `lepton stack "
                f"down`, remove {self.home} (its topics are lost) and start again"
            )
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        cluster_id = None
        if self.size > 1:
            cluster_id = kept_secret(self.home / "cluster.id", new_cluster_id)
            (self.home / "brokers").write_text(f"{self.size}\n")
        nodes = self.nodes
        started: dict[int, int] = {}
        try:
            for node_id in node_ids:
                started[node_id] = nodes[node_id - 1].start(java, jar_dir, heap, cluster_id)
        except BaseException:
            stop_processes(started.values())
            raise
        return started

    def wait_until_serving(self, pids: dict[int, int]) -> None:
        """Return once the cluster answers with every node registered; a StackError naming
        the log of a node that exited, or after a bound."""
        # aiokafka logs every refused connection at ERROR; while nodes boot, that is noise.
        aiokafka_log = logging.getLogger("aiokafka")
        level = aiokafka_log.level
        aiokafka_log.setLevel(logging.CRITICAL)
        admin = self.access("admin")
        nodes = self.nodes
        # Each started node answers on its own listener, and the cluster counts every node
        # (a count alone could still include the registration of the process just killed).
        own = [
            dataclasses.replace(admin, bootstrap=nodes[node_id - 1].bootstrap) for node_id in pids
        ]
        try:
            deadline = time.monotonic() + _READY_TIMEOUT_S
            while time.monotonic() < deadline:
                for node_id, pid in pids.items():
                    if not is_alive(pid):
                        log = self.nodes[node_id - 1].log_path
                        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                        raise StackError(
                            f"Kafka node {node_id} exited during start-up: "
                            f"{' | '.join(tail)} ({log})"
                        )
                if all(asyncio.run(broker_answers(access, 2.0)) == self.size for access in own):
                    return
                time.sleep(0.2)  # a node registering with the quorum: nothing to await
        finally:
            aiokafka_log.setLevel(level)
        stop_processes(pids.values())
        logs = ", ".join(str(self.nodes[node_id - 1].log_path) for node_id in pids)
        raise StackError(f"Kafka did not answer within {_READY_TIMEOUT_S:.0f} s; see {logs}")


async def broker_answers(kafka: KafkaAccess, timeout_s: float) -> int:
    """How many brokers the cluster reports live (registered and not fenced); 0 when it
    does not answer within ``timeout_s``."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
        async with asyncio.timeout(timeout_s):
            cluster = await admin.describe_cluster()
    except Exception:  # any failure means "not answering yet"
        return 0
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    return len(cluster["brokers"])
