"""What a compute node offers and uses, as the heartbeat reports it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil

__all__ = ["NodeSpec", "UsageMeter", "heartbeat"]


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node's identity and declared capacity (a slice of the machine, or all of it)."""

    node_id: str
    region: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None  # None: every core of the machine
    memory_mib: int | None = None  # None: all of the machine's memory
    network_mbps: int = 1000

    def capacity(self) -> dict[str, int]:
        cpus = self.cpus if self.cpus is not None else float(psutil.cpu_count() or 1)
        memory = self.memory_mib or psutil.virtual_memory().total // 2**20
        return {
            "cpu_millicores": int(cpus * 1000),
            "memory_mib": int(memory),
            "gpus": 0,  # GPU discovery through NVIDIA's tools comes with the trainer issue (#5)
            "network_mbps": self.network_mbps,
        }


class UsageMeter:
    """Measures machine usage between two calls, scaled to the node's declared share."""

    def __init__(self, spec: NodeSpec) -> None:
        self._spec = spec
        self._last_net = psutil.net_io_counters()
        self._last_time = time.monotonic()
        psutil.cpu_percent(interval=None)  # primes the counter; the next call is a delta

    def measure(self) -> dict[str, int]:
        now = time.monotonic()
        net = psutil.net_io_counters()
        elapsed = max(now - self._last_time, 1e-3)
        sent = (net.bytes_sent + net.bytes_recv) - (
            self._last_net.bytes_sent + self._last_net.bytes_recv
        )
        self._last_net, self._last_time = net, now
        capacity = self._spec.capacity()
        machine_cores = psutil.cpu_count() or 1
        busy_cores = psutil.cpu_percent(interval=None) / 100 * machine_cores
        memory = psutil.virtual_memory()
        return {
            "cpu_millicores": min(int(busy_cores * 1000), capacity["cpu_millicores"]),
            "memory_mib": min(int(memory.used // 2**20), capacity["memory_mib"]),
            "gpus": 0,
            "network_mbps": int(sent * 8 / elapsed / 1e6),
        }


def heartbeat(
    spec: NodeSpec,
    usage: dict[str, int],
    running_job_ids: list[str],
    *,
    sequence: int,
    sent_at_ms: int,
    agent_started_at_ms: int,
    interval_ms: int,
) -> dict[str, Any]:
    """A ``lepton.NodeHeartbeat`` record."""
    return {
        "node_id": spec.node_id,
        "region": spec.region,
        "labels": dict(spec.labels),
        "gpu_type": None,
        "capacity": spec.capacity(),
        "usage": usage,
        "running_job_ids": running_job_ids,
        "sent_at": sent_at_ms,
        "sequence": sequence,
        "agent_started_at": agent_started_at_ms,
        "interval_ms": interval_ms,
    }
