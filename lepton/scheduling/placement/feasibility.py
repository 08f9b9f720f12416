"""Whether a job could ever be placed on a set of nodes, and if not, why."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lepton.scheduling.entities import JobSpec, NodeState

_RESOURCE_NAMES = ("cpu_millicores", "memory_mib", "gpus", "network_mbps")


def _has_label(key: str, value: str) -> Callable[[NodeState], bool]:
    return lambda node: node.labels.get(key) == value


def feasibility(job: JobSpec, nodes: Iterable[NodeState]) -> str | None:
    """Why no node of ``nodes`` could ever hold ``job``, whatever the load; None if some can.

    Capacities count, current usage and the no-new-work flag do not: this is the
    submit-time check. The reason names the first constraint that rules nodes out.
    """
    return _feasibility(job, [(node, 1) for node in nodes])


def _feasibility(job: JobSpec, groups: list[tuple[NodeState, int]]) -> str | None:
    """``feasibility`` over groups of identical nodes: (one of them, how many)."""
    demand = job.demand
    if job.gang_size < 1:
        return f"gang_size must be at least 1, got {job.gang_size}"
    if any(amount < 0 for amount in demand.as_tuple()):
        return f"demand must not be negative: {demand}"
    if not any(demand.as_tuple()):
        return "demand asks for no resources at all"
    constraints = job.constraints
    candidates = groups
    if not candidates:
        return "the cluster has no nodes"
    steps: list[tuple[str, Callable[[NodeState], bool]]] = []
    if constraints.region is not None:
        steps.append((f"region={constraints.region!r}", lambda n: n.region == constraints.region))
    if constraints.gpu_type is not None:
        steps.append(
            (f"gpu_type={constraints.gpu_type!r}", lambda n: n.gpu_type == constraints.gpu_type)
        )
    for key, value in sorted(constraints.labels.items()):
        steps.append((f"label {key}={value!r}", _has_label(key, value)))
    described: list[str] = []
    for description, keep in steps:
        described.append(description)
        candidates = [(node, count) for node, count in candidates if keep(node)]
        if not candidates:
            return f"no node has {', '.join(described)}"
    matching = f"with {', '.join(described)}" if described else "in the cluster"
    holding = sum(count for node, count in candidates if demand.fits_within(node.capacity))
    if not holding:
        capacities = [node.capacity.as_tuple() for node, _ in candidates]
        largest = [max(dim) for dim in zip(*capacities, strict=True)]
        too_big = [
            f"{name} {want} > {most}"
            for name, want, most in zip(_RESOURCE_NAMES, demand.as_tuple(), largest, strict=True)
            if want > most
        ]
        if too_big:
            return f"demand exceeds every node {matching}: {', '.join(too_big)}"
        return f"no single node {matching} has all of {demand} at once"
    if holding < job.gang_size:
        return (
            f"gang of {job.gang_size} needs {job.gang_size} distinct nodes; "
            f"only {holding} node(s) {matching} can hold one worker"
        )
    return None
