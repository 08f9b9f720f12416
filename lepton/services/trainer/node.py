"""What a compute node offers and uses, as the heartbeat reports it.

GPUs are found through NVIDIA's own ``nvidia-smi`` when it is installed: it ships with
the driver, so a node with NVIDIA GPUs has it, and a node without has no GPUs to offer.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
import structlog

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "Gpu",
    "GpuDiscoveryError",
    "NodeSpec",
    "UsageMeter",
    "discover_gpus",
    "heartbeat",
    "offered_gpus",
    "parse_nvidia_smi",
]

log = structlog.get_logger("lepton.trainer")

_QUERY = "--query-gpu=index,name,memory.total,utilization.gpu"
_NVIDIA_SMI_TIMEOUT_S = 5.0
# A GPU counts as in use above this utilisation (percent): idle GPUs report 0-1 %.
_BUSY_PERCENT = 2.0


class GpuDiscoveryError(RuntimeError):
    """nvidia-smi is installed but did not answer as documented."""


@dataclass(frozen=True, slots=True)
class Gpu:
    index: int
    name: str
    memory_mib: int
    utilization_percent: float = 0.0


def parse_nvidia_smi(text: str) -> list[Gpu]:
    """GPUs from ``nvidia-smi --query-gpu=index,name,memory.total,utilization.gpu
    --format=csv,noheader,nounits`` output."""
    gpus = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = [part.strip() for part in line.split(",")]
        if len(fields) != 4:
            raise GpuDiscoveryError(f"nvidia-smi line {number}: expected 4 fields: {line!r}")
        index, name, memory, utilization = fields
        try:
            gpus.append(
                Gpu(
                    index=int(index),
                    name=name,
                    memory_mib=int(float(memory)),
                    # "[N/A]" on GPUs that do not report utilisation: treat as idle.
                    utilization_percent=float(utilization) if utilization[:1].isdigit() else 0.0,
                )
            )
        except ValueError:
            raise GpuDiscoveryError(f"nvidia-smi line {number}: not a GPU row: {line!r}") from None
    return gpus


def discover_gpus(executable: str | None = None) -> list[Gpu]:
    """The machine's NVIDIA GPUs, or none when nvidia-smi is not installed."""
    found = executable or shutil.which("nvidia-smi")
    if found is None:
        return []
    try:
        # Fixed arguments, no shell: nothing here comes from a user.
        answer = subprocess.run(
            [found, _QUERY, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise GpuDiscoveryError(f"{found} failed: {exc}") from exc
    return parse_nvidia_smi(answer.stdout)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node's identity and declared capacity (a slice of the machine, or all of it)."""

    node_id: str
    region: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None  # None: every core of the machine
    memory_mib: int | None = None  # None: all of the machine's memory
    network_mbps: int = 1000
    gpus: tuple[Gpu, ...] = ()  # the GPUs this node offers (see :func:`offered_gpus`)
    nvidia_smi: str | None = None  # where GPU usage is measured; None: no GPUs

    @property
    def gpu_type(self) -> str | None:
        return self.gpus[0].name if self.gpus else None

    def capacity(self) -> dict[str, int]:
        cpus = self.cpus if self.cpus is not None else float(psutil.cpu_count() or 1)
        memory = self.memory_mib or psutil.virtual_memory().total // 2**20
        return {
            "cpu_millicores": int(cpus * 1000),
            "memory_mib": int(memory),
            "gpus": len(self.gpus),
            "network_mbps": self.network_mbps,
        }


def offered_gpus(found: Sequence[Gpu], declared: int | None) -> tuple[Gpu, ...]:
    """The GPUs a node offers: all found, or the first ``declared`` of them (a slice of the
    machine). Declaring more than exist is refused: the scheduler would place work on
    hardware that is not there."""
    if declared is None:
        return tuple(found)
    if declared < 0 or declared > len(found):
        raise ValueError(
            f"--gpus {declared}: this machine has {len(found)} NVIDIA GPU(s) (nvidia-smi)"
        )
    return tuple(found[:declared])


class UsageMeter:
    """Measures what the node uses between two calls.

    A node that is the whole machine reports the machine's usage. A declared slice (the
    agent was given ``--cpus`` or ``--memory``, as when several agents share a machine)
    reports what its own processes use: the agent and its job workers. Otherwise every
    slice would carry the whole machine's load, and on a busy machine look full and never
    get work. Network traffic cannot be told apart per process, so it is the machine's.
    """

    def __init__(self, spec: NodeSpec) -> None:
        self._spec = spec
        self._sliced = spec.cpus is not None or spec.memory_mib is not None
        self._last_net = psutil.net_io_counters()
        self._last_time = time.monotonic()
        self._agent = psutil.Process()
        self._tracked: dict[int, psutil.Process] = {}
        # Primes the counters: the next reading is a delta.
        self._busy_cores(self._processes() if self._sliced else [])

    def measure(self) -> dict[str, int]:
        now = time.monotonic()
        net = psutil.net_io_counters()
        elapsed = max(now - self._last_time, 1e-3)
        sent = (net.bytes_sent + net.bytes_recv) - (
            self._last_net.bytes_sent + self._last_net.bytes_recv
        )
        self._last_net, self._last_time = net, now
        capacity = self._spec.capacity()
        processes = self._processes() if self._sliced else []
        return {
            "cpu_millicores": min(
                int(self._busy_cores(processes) * 1000), capacity["cpu_millicores"]
            ),
            "memory_mib": min(self._used_memory_mib(processes), capacity["memory_mib"]),
            "gpus": self._busy_gpus(),
            "network_mbps": int(sent * 8 / elapsed / 1e6),
        }

    def _processes(self) -> list[psutil.Process]:
        # The same Process objects call after call: cpu_percent is a delta per object.
        try:
            current = [self._agent, *self._agent.children(recursive=True)]
        except psutil.Error:
            current = [self._agent]
        self._tracked = {p.pid: self._tracked.get(p.pid, p) for p in current}
        return list(self._tracked.values())

    def _busy_cores(self, processes: list[psutil.Process]) -> float:
        if not self._sliced:
            return psutil.cpu_percent(interval=None) / 100 * (psutil.cpu_count() or 1)
        percent = 0.0
        for process in processes:
            with contextlib.suppress(psutil.Error):  # a worker that just ended
                percent += process.cpu_percent(interval=None)
        return percent / 100

    def _used_memory_mib(self, processes: list[psutil.Process]) -> int:
        if not self._sliced:
            return int(psutil.virtual_memory().used // 2**20)
        resident = 0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                resident += process.memory_info().rss
        return resident // 2**20

    def _busy_gpus(self) -> int:
        if not self._spec.gpus:
            return 0
        offered = {gpu.index for gpu in self._spec.gpus}
        try:
            now = discover_gpus(self._spec.nvidia_smi)
        except GpuDiscoveryError as exc:
            # Usage is a measurement, not a promise: report none rather than stop beating.
            log.warning("gpu usage unavailable", error=str(exc))
            return 0
        return sum(1 for g in now if g.index in offered and g.utilization_percent > _BUSY_PERCENT)


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
        "gpu_type": spec.gpu_type,
        "capacity": spec.capacity(),
        "usage": usage,
        "running_job_ids": running_job_ids,
        "sent_at": sent_at_ms,
        "sequence": sequence,
        "agent_started_at": agent_started_at_ms,
        "interval_ms": interval_ms,
    }
