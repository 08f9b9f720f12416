"""Turning job requests and heartbeats (Avro records) into the core's plain values.

A request that cannot be scheduled as written becomes a :class:`Rejection` naming the
field and the reason, which the scheduler publishes as a ``rejected`` job event.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lepton.contract.algorithms import ALGORITHMS, TASK_KINDS
from lepton.scheduling.entities import Constraints, JobSpec, NodeState, Policy, Resources

__all__ = ["Rejection", "job_spec", "node_state"]

# Generous bounds: they catch typos (a memory of 10^12 MiB), not legitimate big jobs.
_MAX_PRIORITY = 1_000_000
_MAX_GANG = 10_000
_MAX_RETRIES = 100
_MAX_RESOURCE = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a job request was refused, and which field was wrong."""

    job_id: str
    tenant: str
    field: str
    reason: str


class _Invalid(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _resources(record: dict[str, Any], field: str) -> Resources:
    amounts = {}
    for name in ("cpu_millicores", "memory_mib", "gpus", "network_mbps"):
        value = record.get(name)
        if not isinstance(value, int) or value < 0:
            raise _Invalid(f"{field}.{name}", f"must be a whole number >= 0, got {value!r}")
        if value > _MAX_RESOURCE:
            raise _Invalid(f"{field}.{name}", f"{value} is out of range")
        amounts[name] = value
    return Resources(**amounts)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid(field, "is required and may not be empty")
    return value


def _in_range(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise _Invalid(field, f"must be between {low} and {high}, got {value!r}")
    return value


def _check_task(task: dict[str, Any]) -> None:
    if task.get("kind") not in TASK_KINDS:
        raise _Invalid("task.kind", f"unknown task kind {task.get('kind')!r}; one of {TASK_KINDS}")
    if task.get("algorithm") not in ALGORITHMS:
        raise _Invalid(
            "task.algorithm",
            f"unknown algorithm {task.get('algorithm')!r}; one of {', '.join(ALGORITHMS)}",
        )
    if task.get("problem_type") == "unknown":
        raise _Invalid("task.problem_type", "unknown problem type")
    _in_range(task.get("trial_budget"), "task.trial_budget", 1, 100_000)
    _in_range(task.get("time_budget_s"), "task.time_budget_s", 1, 7 * 24 * 3600)
    _in_range(task.get("cv_folds"), "task.cv_folds", 2, 100)
    space = task.get("search_space")
    if space is not None:
        try:
            parsed = json.loads(space)
        except ValueError as exc:
            raise _Invalid("task.search_space", f"is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise _Invalid("task.search_space", "must be a JSON object")
    if task.get("kind") == "train" and not task.get("target_column"):
        raise _Invalid("task.target_column", "a training job needs its target column")


def job_spec(record: dict[str, Any]) -> JobSpec | Rejection:
    """A :class:`JobSpec` for a valid ``lepton.JobRequested`` record, else a rejection."""
    job_id = str(record.get("job_id") or "")
    tenant = str(record.get("tenant") or "")
    try:
        _text(record.get("job_id"), "job_id")
        _text(record.get("tenant"), "tenant")
        _text(record.get("priority_class"), "priority_class")
        priority = _in_range(record.get("priority"), "priority", -_MAX_PRIORITY, _MAX_PRIORITY)
        _check_task(record.get("task") or {})
        demand = _resources(record.get("demand") or {}, "demand")
        if demand.cpu_millicores == 0 and demand.memory_mib == 0:
            raise _Invalid("demand", "a job must ask for some CPU or memory")
        constraints = record.get("constraints") or {}
        gpu_type = constraints.get("gpu_type")
        if gpu_type is not None and demand.gpus == 0:
            raise _Invalid("constraints.gpu_type", f"asks for {gpu_type} GPUs but demand.gpus is 0")
        gang = _in_range(record.get("gang_size"), "gang_size", 1, _MAX_GANG)
        retries = _in_range(record.get("max_retries"), "max_retries", 0, _MAX_RETRIES)
        policy_name = record.get("placement_policy")
        try:
            policy = Policy(policy_name) if policy_name is not None else None
        except ValueError:
            raise _Invalid(
                "placement_policy",
                f"unknown policy {policy_name!r}; one of {', '.join(p.value for p in Policy)}",
            ) from None
        estimate = record.get("runtime_estimate_s")
        if estimate is not None:
            _in_range(estimate, "runtime_estimate_s", 1, 365 * 24 * 3600)
        submitted = record.get("submitted_at")
        if not isinstance(submitted, int) or submitted <= 0:
            raise _Invalid("submitted_at", f"must be epoch milliseconds, got {submitted!r}")
    except _Invalid as invalid:
        return Rejection(job_id, tenant, invalid.field, invalid.reason)
    return JobSpec(
        job_id=job_id,
        tenant=tenant,
        demand=demand,
        priority=priority,
        priority_class=record["priority_class"],
        preemptible=bool(record.get("preemptible", True)),
        gang_size=gang,
        constraints=Constraints(
            region=constraints.get("region"),
            labels=dict(constraints.get("labels") or {}),
            gpu_type=gpu_type,
        ),
        max_retries=retries,
        submitted_at_ms=submitted,
        estimated_duration_ms=estimate * 1000 if estimate is not None else None,
        policy=policy,
    )


def node_state(record: dict[str, Any], *, accepts_new_work: bool = True) -> NodeState:
    """A :class:`NodeState` from a ``lepton.NodeHeartbeat`` record."""
    return NodeState(
        node_id=record["node_id"],
        region=record["region"],
        capacity=Resources(**record["capacity"]),
        labels=dict(record["labels"]),
        gpu_type=record["gpu_type"],
        usage=Resources(**record["usage"]),
        running_job_ids=tuple(record["running_job_ids"]),
        sent_at_ms=record["sent_at"],
        sequence=record["sequence"],
        accepts_new_work=accepts_new_work,
    )
