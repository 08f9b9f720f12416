"""The simulator's own ledger of the cluster, and the promises of the core it checks.

The ledger is built from the core's decisions alone, never from its state, so that an
over-committed node, a quota overrun or a priority inversion shows up as a difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lepton.scheduling.entities import (
    Assign,
    Decision,
    JobSpec,
    NodeState,
    Preempt,
    Wait,
    WaitReason,
)

__all__ = ["Ledger", "priority_inversions"]


@dataclass(slots=True)
class _Run:
    """A job the ledger counts as running; ``token`` tells a stale completion apart."""

    node_ids: tuple[str, ...]
    granted: tuple[int, int, int, int]
    token: int


@dataclass(slots=True)
class Ledger:
    """The simulator's own account of the cluster, built from decisions alone."""

    node_states: dict[str, NodeState]
    # Live nodes only: a failed node leaves, a repaired one comes back empty.
    free: dict[str, list[int]] = field(default_factory=dict)
    capacity: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    granted: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    tenant_held: dict[str, list[int]] = field(default_factory=dict)
    runs: dict[str, _Run] = field(default_factory=dict)

    def node_up(self, node_id: str) -> None:
        capacity = self.node_states[node_id].capacity.as_tuple()
        self.free[node_id] = list(capacity)
        for dim, amount in enumerate(capacity):
            self.capacity[dim] += amount

    def node_down(self, node_id: str) -> None:
        del self.free[node_id]
        for dim, amount in enumerate(self.node_states[node_id].capacity.as_tuple()):
            self.capacity[dim] -= amount

    def hold(self, job: JobSpec, node_ids: tuple[str, ...], token: int) -> bool:
        """Count the assignment; False if it over-commits a node resource."""
        granted = job.demand.as_tuple()
        ok = True
        for node_id in node_ids:
            free = self.free[node_id]
            for dim, amount in enumerate(granted):
                free[dim] -= amount
            ok = ok and min(free) >= 0
        held = self.tenant_held.setdefault(job.tenant, [0, 0, 0, 0])
        for dim, amount in enumerate(granted):
            held[dim] += amount * len(node_ids)
            self.granted[dim] += amount * len(node_ids)
        self.runs[job.job_id] = _Run(node_ids, granted, token)
        return ok

    def drop(self, job: JobSpec) -> None:
        run = self.runs.pop(job.job_id)
        for node_id in run.node_ids:
            free = self.free.get(node_id)
            if free is not None:  # a failed node's ledger is gone already
                for dim, amount in enumerate(run.granted):
                    free[dim] += amount
        held = self.tenant_held[job.tenant]
        for dim, amount in enumerate(run.granted):
            held[dim] -= amount * len(run.node_ids)
            self.granted[dim] -= amount * len(run.node_ids)


def _fits_outside(job: JobSpec, ledger: Ledger, excluded: set[str]) -> bool:
    """Brute force: could ``job`` be placed now on nodes not in ``excluded``?"""
    constraints = job.constraints
    demand = job.demand.as_tuple()
    holding = 0
    for node_id, free in ledger.free.items():
        state = ledger.node_states[node_id]
        if (
            node_id not in excluded
            and constraints.region in (None, state.region)
            and constraints.gpu_type in (None, state.gpu_type)
            and all(state.labels.get(k) == v for k, v in constraints.labels.items())
            and all(have >= want for have, want in zip(free, demand, strict=True))
        ):
            holding += 1
    return holding >= job.gang_size


def priority_inversions(decisions: list[Decision], jobs: dict[str, JobSpec], ledger: Ledger) -> int:
    """Replay one plan from the ledger's state before it and count priority inversions.

    An inversion: an assigned job of lower priority while an earlier-decided job of
    higher priority waits for capacity although it would fit outside the nodes held
    (reserved, or freed by a preemption) for other jobs.
    """
    replay = Ledger(ledger.node_states, {n: list(f) for n, f in ledger.free.items()})
    replay.runs = {
        job_id: _Run(r.node_ids, r.granted, r.token) for job_id, r in ledger.runs.items()
    }
    replay.tenant_held = {tenant: list(held) for tenant, held in ledger.tenant_held.items()}
    held_for: dict[str, str] = {}  # node id -> job id holding it
    waiting: list[JobSpec] = []
    inversions = 0
    for decision in decisions:
        if isinstance(decision, Preempt):
            for victim_id in decision.victim_job_ids:
                for node_id in replay.runs[victim_id].node_ids:
                    held_for[node_id] = decision.for_job_id
                replay.drop(jobs[victim_id])
        elif isinstance(decision, Wait) and decision.reason is WaitReason.NO_CAPACITY:
            waiting.append(jobs[decision.job_id])
            for node_id in decision.reserved_node_ids:
                held_for[node_id] = decision.job_id
        elif isinstance(decision, Assign):
            assigned = jobs[decision.job_id]
            for blocked in waiting:
                excluded = {n for n, owner in held_for.items() if owner != blocked.job_id}
                if blocked.priority > assigned.priority and _fits_outside(
                    blocked, replay, excluded
                ):
                    inversions += 1
            replay.hold(assigned, decision.node_ids, token=0)
    return inversions
