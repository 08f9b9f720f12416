"""Plain data the scheduler's core reads and writes.

Everything here is an immutable value: the I/O shell builds these from Avro records
(heartbeats, job requests) and turns the decisions back into events. Field names and
units follow the Avro contract: CPU in millicores, memory in MiB, network in Mbit/s.

The core never reads a node's measured ``usage``: it accounts for what it granted.
Measured usage is for the shell, which flags a node that runs hot (or whose heartbeat
is late) with ``accepts_new_work=False``; the core then places nothing new there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Assign",
    "Constraints",
    "Decision",
    "Failed",
    "JobSpec",
    "NodeLossOutcome",
    "NodeState",
    "Policy",
    "Preempt",
    "Requeued",
    "Resources",
    "SchedulerConfig",
    "TenantQuota",
    "Unschedulable",
    "Wait",
    "WaitReason",
]


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of each schedulable resource (per worker when it is a demand)."""

    cpu_millicores: int = 0
    memory_mib: int = 0
    gpus: int = 0
    network_mbps: int = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        """The four amounts in a fixed order, for arithmetic in hot loops."""
        return (self.cpu_millicores, self.memory_mib, self.gpus, self.network_mbps)

    def fits_within(self, other: Resources) -> bool:
        """True if every amount is at most the matching amount of ``other``."""
        return all(
            mine <= theirs for mine, theirs in zip(self.as_tuple(), other.as_tuple(), strict=True)
        )

    def __add__(self, other: Resources) -> Resources:
        return Resources(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def __sub__(self, other: Resources) -> Resources:
        return Resources(*(a - b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def times(self, factor: int) -> Resources:
        """This amount ``factor`` times over, e.g. a gang's whole demand."""
        return Resources(*(amount * factor for amount in self.as_tuple()))


class Policy(StrEnum):
    """How the core orders tenants and chooses nodes.

    ``binpack`` puts work on the most allocated node that fits (keeps whole nodes free
    for big jobs); ``spread`` on the least allocated (limits the blast radius of a
    node failure); ``drf`` orders tenants of equal priority by dominant-resource fair
    share and places like ``binpack``.
    """

    BINPACK = "binpack"
    SPREAD = "spread"
    DRF = "drf"


@dataclass(frozen=True, slots=True)
class NodeState:
    """A compute node as its latest heartbeat describes it."""

    node_id: str
    region: str
    capacity: Resources
    labels: dict[str, str] = field(default_factory=dict)
    gpu_type: str | None = None
    usage: Resources = field(default_factory=Resources)
    running_job_ids: tuple[str, ...] = ()
    sent_at_ms: int = 0
    sequence: int = 0
    # Set by the shell: stale heartbeat (first stage) or measured usage over headroom.
    accepts_new_work: bool = True


@dataclass(frozen=True, slots=True)
class Constraints:
    """Where a job may run. Every label listed must be present with the same value."""

    region: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    gpu_type: str | None = None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job as requested: ``gang_size`` workers, each needing ``demand`` on its own node.

    ``estimated_duration_ms`` is optional; jobs that carry one may be backfilled onto
    nodes held for a waiting large job when they will finish before it can start.
    ``policy`` overrides the configured node choice (binpack or spread) for this job.
    """

    job_id: str
    tenant: str
    demand: Resources
    priority: int = 0
    priority_class: str = "default"
    preemptible: bool = False
    gang_size: int = 1
    constraints: Constraints = field(default_factory=Constraints)
    max_retries: int = 3
    submitted_at_ms: int = 0
    estimated_duration_ms: int | None = None
    policy: Policy | None = None


@dataclass(frozen=True, slots=True)
class TenantQuota:
    """A tenant's guaranteed share and hard limit, summed over all its running workers.

    A tenant may borrow idle capacity beyond ``guaranteed`` up to ``limit``; borrowed
    work is reclaimed (preempted) when another tenant needs capacity within its own
    guarantee.
    """

    guaranteed: Resources
    limit: Resources


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    """Knobs of the core. Tenants without a quota have no guarantee and no limit."""

    policy: Policy = Policy.BINPACK
    quotas: dict[str, TenantQuota] = field(default_factory=dict)
    # How many blocked jobs per plan may hold nodes for themselves (see placement.py).
    max_reservations: int = 4


class WaitReason(StrEnum):
    """Why a job stays queued after a plan."""

    # Some accepting node could hold it, but not now (or only nodes held for earlier jobs).
    NO_CAPACITY = "no_capacity"
    # The tenant's limit would be exceeded.
    QUOTA_LIMIT = "quota_limit"
    # No node that accepts new work could ever hold it right now (all such nodes are
    # flagged, dead or too small); it was feasible when submitted.
    NO_ACCEPTING_NODE = "no_accepting_node"


@dataclass(frozen=True, slots=True)
class Assign:
    """Start ``job_id``: worker ``i`` on ``node_ids[i]``, each granted ``granted``."""

    job_id: str
    node_ids: tuple[str, ...]
    granted: Resources


@dataclass(frozen=True, slots=True)
class Preempt:
    """Stop the victims (whole jobs, all their workers) to make room for ``for_job_id``.

    The core has already requeued the victims and freed what they held; the ``Assign``
    of ``for_job_id`` follows in the same plan.
    """

    for_job_id: str
    victim_job_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Wait:
    """``job_id`` stays queued. A reservation owner lists the nodes held for it."""

    job_id: str
    reason: WaitReason
    reserved_node_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No node of the cluster could ever hold ``job_id``, whatever the load."""

    job_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Requeued:
    """``job_id`` lost a node and is queued again; ``attempt`` counts its failures."""

    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Failed:
    """``job_id`` lost a node more often than its ``max_retries`` allows."""

    job_id: str
    reason: str


Decision = Assign | Preempt | Wait | Unschedulable
NodeLossOutcome = Requeued | Failed
