"""The core's bookkeeping of nodes and jobs, and the sorted index that finds nodes fast.

Resource amounts are unpacked into plain int tuples and slotted attributes because the
placement loops read them for every candidate node.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from lepton.scheduling.entities import JobSpec, NodeState

_Vector = tuple[int, int, int, int]  # cpu_millicores, memory_mib, gpus, network_mbps
_CPU, _MEM, _GPU, _NET = range(4)
# A bucket's index holds one int per node that sorts like the tuple (free GPUs, free
# CPU, node sequence number): bisect and insort compare ints several times faster.
_SEQ_BITS = 32
_CPU_BITS = 40
_SEQ_MASK = (1 << _SEQ_BITS) - 1
# Everything that decides whether a job can be placed, so equal shapes share failures.
_Shape = tuple[_Vector, int, str | None, str | None, tuple[tuple[str, str], ...]]
# Nodes that are the same for the submit-time feasibility check.


def _covers(amount: Sequence[int], needed: Sequence[int]) -> bool:
    """Every one of the four amounts is at least what is needed (unrolled: a hot path)."""
    return (
        amount[0] >= needed[0]
        and amount[1] >= needed[1]
        and amount[2] >= needed[2]
        and amount[3] >= needed[3]
    )


def _index_key(free_gpus: int, free_cpu: int, seq: int) -> int:
    # A negative free amount (capacity shrank under running work) sorts as zero.
    return (((max(free_gpus, 0) << _CPU_BITS) | max(free_cpu, 0)) << _SEQ_BITS) | seq


def _index(node: _Node) -> None:
    node.index_key = _index_key(node.free_gpu, node.free_cpu, node.seq)
    for bucket in node.buckets:
        bucket.keys.add(node.index_key)


def _unindex(node: _Node) -> None:
    for bucket in node.buckets:
        bucket.keys.remove(node.index_key)


class _SortedKeys:
    """A sorted multiset of ints, kept as a list of short sorted chunks.

    One flat sorted list would move all keys after the insertion point on every
    update: at 100,000 nodes that memmove dominates. Chunks of at most ``_CHUNK`` keys
    bound it, and a bisect over the chunks' last keys finds the right chunk.
    """

    __slots__ = ("chunks", "lasts")

    _CHUNK = 512

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []
        self.lasts: list[int] = []  # the last (largest) key of each chunk

    def add(self, key: int) -> None:
        if not self.chunks:
            self.chunks.append([key])
            self.lasts.append(key)
            return
        at = min(bisect_left(self.lasts, key), len(self.chunks) - 1)
        chunk = self.chunks[at]
        insort(chunk, key)
        self.lasts[at] = chunk[-1]
        if len(chunk) > self._CHUNK:
            half = len(chunk) // 2
            self.chunks[at : at + 1] = [chunk[:half], chunk[half:]]
            self.lasts[at : at + 1] = [chunk[half - 1], chunk[-1]]

    def remove(self, key: int) -> None:
        at = bisect_left(self.lasts, key)
        chunk = self.chunks[at]
        del chunk[bisect_left(chunk, key)]
        if chunk:
            self.lasts[at] = chunk[-1]
        else:
            del self.chunks[at], self.lasts[at]

    def __iter__(self) -> Iterator[int]:
        for chunk in self.chunks:
            yield from chunk

    def ascending_from(self, lowest: int) -> Iterator[int]:
        """Keys >= ``lowest``, smallest first."""
        at = bisect_left(self.lasts, lowest)
        if at < len(self.chunks):
            chunk = self.chunks[at]
            yield from chunk[bisect_left(chunk, lowest) :]
            for chunk in self.chunks[at + 1 :]:
                yield from chunk

    def descending_to(self, lowest: int) -> Iterator[int]:
        """Keys >= ``lowest``, largest first."""
        for at in range(len(self.chunks) - 1, -1, -1):
            chunk = self.chunks[at]
            if chunk[0] >= lowest:
                yield from reversed(chunk)
            else:
                yield from reversed(chunk[bisect_left(chunk, lowest) :])
                return


def _labels_match(node_labels: dict[str, str], wanted: tuple[tuple[str, str], ...]) -> bool:
    return all(node_labels.get(key) == value for key, value in wanted)


class _Node:
    """A node's mutable bookkeeping: what is still free after the core's grants."""

    __slots__ = (
        "accepting",
        "buckets",
        "capacity",
        "free_cpu",
        "free_gpu",
        "free_mem",
        "free_net",
        "index_key",
        "job_ids",
        "seq",
        "state",
    )

    def __init__(self, state: NodeState, seq: int, buckets: tuple[_Bucket, _Bucket]) -> None:
        self.state = state
        self.seq = seq
        # Its (region, GPU type) bucket and its (any region, GPU type) bucket.
        self.buckets = buckets
        self.capacity: _Vector = state.capacity.as_tuple()
        self.free_cpu, self.free_mem, self.free_gpu, self.free_net = self.capacity
        self.accepting = state.accepts_new_work
        self.index_key = 0  # set by _index
        # Insertion-ordered set: iteration order must not depend on string hashing.
        self.job_ids: dict[str, None] = {}

    @property
    def free(self) -> _Vector:
        return (self.free_cpu, self.free_mem, self.free_gpu, self.free_net)

    def add_free(self, delta: _Vector, sign: int) -> None:
        self.free_cpu += sign * delta[_CPU]
        self.free_mem += sign * delta[_MEM]
        self.free_gpu += sign * delta[_GPU]
        self.free_net += sign * delta[_NET]

    def big_enough(self, job: _Job) -> bool:
        """Has the job's labels and could hold one worker when empty."""
        return _covers(self.capacity, job.demand) and _labels_match(self.state.labels, job.labels)

    def could_ever_hold(self, job: _Job) -> bool:
        """Matches all the job's constraints and could hold one worker when empty."""
        constraints = job.spec.constraints
        return (
            constraints.region in (None, self.state.region)
            and constraints.gpu_type in (None, self.state.gpu_type)
            and self.big_enough(job)
        )


class _Bucket:
    """Accepting nodes of one (region, GPU type), sorted by (free GPUs, free CPU).

    ``region`` None: the nodes of every region with this GPU type.
    """

    __slots__ = ("gpu_type", "keys", "region")

    def __init__(self, region: str | None, gpu_type: str | None) -> None:
        self.region = region
        self.gpu_type = gpu_type
        self.keys = _SortedKeys()  # index keys, see _index_key


class _Job:
    """A queued or running job with its demand unpacked for the hot loops."""

    __slots__ = (
        "attempts",
        "demand",
        "fifo_key",
        "labels",
        "nodes",
        "seq",
        "shape",
        "spec",
        "started_at_ms",
        "total",
    )

    def __init__(self, spec: JobSpec, seq: int, attempts: int) -> None:
        self.spec = spec
        self.seq = seq
        self.fifo_key = (spec.submitted_at_ms, seq)
        self.attempts = attempts
        self.demand: _Vector = spec.demand.as_tuple()
        gang = spec.gang_size
        cpu, memory, gpus, network = self.demand
        self.total: _Vector = (cpu * gang, memory * gang, gpus * gang, network * gang)
        self.labels = tuple(sorted(spec.constraints.labels.items()))
        self.shape: _Shape = (
            self.demand,
            spec.gang_size,
            spec.constraints.region,
            spec.constraints.gpu_type,
            self.labels,
        )
        self.nodes: list[_Node] = []
        self.started_at_ms = 0
