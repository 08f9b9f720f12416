"""Turning job requests and heartbeats (Avro records) into the core's plain values.

A request that cannot be scheduled as written becomes a :class:`Rejection` naming the
field and the reason, which the scheduler publishes as a ``rejected`` job event.

A heartbeat that no node could have sent (a negative or absurd capacity, a time in the
future, a node id that is no name) is refused by :func:`check_heartbeat`, by every
service that reads heartbeats (the scheduler and the monitor), not capped or stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton.contract.algorithms import ALGORITHMS, TASK_KINDS
from lepton.contract.names import InvalidField, check_name, check_text
from lepton.scheduling.entities import Constraints, JobSpec, NodeState, Policy, Resources

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CLOCK_SKEW_MS",
    "MAX_AHEAD_MS",
    "NODE_CAPACITY_MAX",
    "Rejection",
    "check_beat",
    "check_heartbeat",
    "check_job_event",
    "check_node",
    "job_spec",
    "node_state",
]

# Generous bounds: they catch typos (a memory of 10^12 MiB), not legitimate big jobs.
_MAX_PRIORITY = 1_000_000
_MAX_GANG = 10_000
_MAX_RETRIES = 100
_MAX_RESOURCE = 2**31 - 1
# A search space is a few hundred bytes of JSON; the bound keeps every instruction that
# carries it far below the broker's message limit, so a job once accepted can be sent.
_MAX_SEARCH_SPACE_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a job request was refused, and which field was wrong."""

    job_id: str
    tenant: str
    field: str
    reason: str


# A job needs some CPU and some memory on every worker: a demand of 0 would be placed
# anywhere, on top of everything else, and run unaccounted for.
_DEMAND_LEAST = {"cpu_millicores": 1, "memory_mib": 1, "gpus": 0, "network_mbps": 0}
# The most a single node may offer of each resource: generous (10,000 cores, 1 PiB, 1,024
# GPUs, 10 Tbit/s), so that only a broken or hostile agent's heartbeat is refused.
NODE_CAPACITY_MAX = Resources(
    cpu_millicores=10_000_000, memory_mib=2**30, gpus=1024, network_mbps=10_000_000
)
# A heartbeat sent this far ahead of the reader's clock is refused: no clock is that wrong
# by accident, and a node dated in the future would stay alive for as long. Within it, a
# reader caps a node's time at its own clock plus CLOCK_SKEW_MS.
MAX_AHEAD_MS = 60_000
CLOCK_SKEW_MS = 2_000
_MAX_INTERVAL_MS = 3_600_000
_MAX_LABELS = 64
_MAX_RUNNING = 10_000


def _amount(value: Any, field: str, least: int, most: int) -> int:
    # bool is an int to Python, and no amount of anything.
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise InvalidField(field, f"must be a whole number from {least} to {most}, got {value!r}")
    return value


def _resources(record: dict[str, Any], field: str) -> Resources:
    return Resources(
        **{
            name: _amount(record.get(name), f"{field}.{name}", least, _MAX_RESOURCE)
            for name, least in _DEMAND_LEAST.items()
        }
    )


def _in_range(value: Any, field: str, low: int, high: int) -> int:
    if not isinstance(value, int) or not low <= value <= high:
        raise InvalidField(field, f"must be between {low} and {high}, got {value!r}")
    return value


def _check_task(task: dict[str, Any]) -> None:
    if task.get("kind") not in TASK_KINDS:
        raise InvalidField(
            "task.kind", f"unknown task kind {task.get('kind')!r}; one of {TASK_KINDS}"
        )
    if task.get("algorithm") not in ALGORITHMS:
        raise InvalidField(
            "task.algorithm",
            f"unknown algorithm {task.get('algorithm')!r}; one of {', '.join(ALGORITHMS)}",
        )
    if task.get("problem_type") == "unknown":
        raise InvalidField("task.problem_type", "unknown problem type")
    _in_range(task.get("trial_budget"), "task.trial_budget", 1, 100_000)
    _in_range(task.get("time_budget_s"), "task.time_budget_s", 1, 7 * 24 * 3600)
    _in_range(task.get("cv_folds"), "task.cv_folds", 2, 100)
    for field in ("target_column", "scoring"):
        check_text(task.get(field), f"task.{field}")
    space = task.get("search_space")
    check_text(space, "task.search_space", _MAX_SEARCH_SPACE_CHARS)
    if space is not None:
        try:
            parsed = json.loads(space)
        except ValueError as exc:
            raise InvalidField("task.search_space", f"is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InvalidField("task.search_space", "must be a JSON object")
    if task.get("model_name") is not None:
        check_name(task["model_name"], "task.model_name")
    if task.get("kind") == "train" and not task.get("target_column"):
        raise InvalidField("task.target_column", "a training job needs its target column")


def job_spec(record: dict[str, Any]) -> JobSpec | Rejection:
    """A :class:`JobSpec` for a valid ``lepton.JobRequested`` record, else a rejection."""
    job_id = str(record.get("job_id") or "")
    tenant = str(record.get("tenant") or "")
    try:
        check_name(record.get("job_id"), "job_id")
        check_name(record.get("tenant"), "tenant")
        check_name(record.get("priority_class"), "priority_class")
        check_text(record.get("name"), "name")
        dataset = record.get("dataset")
        if dataset is not None:
            check_name(dataset.get("name"), "dataset.name")
            if dataset.get("owner") is not None:
                check_name(dataset["owner"], "dataset.owner")
        priority = _in_range(record.get("priority"), "priority", -_MAX_PRIORITY, _MAX_PRIORITY)
        _check_task(record.get("task") or {})
        demand = _resources(record.get("demand") or {}, "demand")
        constraints = record.get("constraints") or {}
        gpu_type = constraints.get("gpu_type")
        for name in ("region", "gpu_type"):
            if constraints.get(name) is not None:
                check_name(constraints[name], f"constraints.{name}")
        if gpu_type is not None and demand.gpus == 0:
            raise InvalidField(
                "constraints.gpu_type", f"asks for {gpu_type} GPUs but demand.gpus is 0"
            )
        gang = _in_range(record.get("gang_size"), "gang_size", 1, _MAX_GANG)
        retries = _in_range(record.get("max_retries"), "max_retries", 0, _MAX_RETRIES)
        policy_name = record.get("placement_policy")
        try:
            policy = Policy(policy_name) if policy_name is not None else None
        except ValueError:
            raise InvalidField(
                "placement_policy",
                f"unknown policy {policy_name!r}; one of {', '.join(p.value for p in Policy)}",
            ) from None
        estimate = record.get("runtime_estimate_s")
        if estimate is not None:
            _in_range(estimate, "runtime_estimate_s", 1, 365 * 24 * 3600)
        submitted = record.get("submitted_at")
        if not isinstance(submitted, int) or submitted <= 0:
            raise InvalidField("submitted_at", f"must be epoch milliseconds, got {submitted!r}")
    except InvalidField as invalid:
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


def check_node(record: Mapping[str, Any]) -> None:
    """Refuse (:class:`InvalidField`) a heartbeat's placement fields no node could have:
    a node id or region that is no name, an impossible capacity, too many labels."""
    check_name(record.get("node_id"), "node_id")
    check_name(record.get("region"), "region")
    if record.get("gpu_type") is not None:
        check_name(record["gpu_type"], "gpu_type")
    capacity = record.get("capacity") or {}
    for name, most in zip(_DEMAND_LEAST, NODE_CAPACITY_MAX.as_tuple(), strict=True):
        _amount(capacity.get(name), f"capacity.{name}", 0, most)
    labels = record.get("labels") or {}
    if len(labels) > _MAX_LABELS:
        raise InvalidField("labels", f"at most {_MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        check_name(key, "labels")
        check_text(value, f"labels.{key}", 256)


def check_beat(record: Mapping[str, Any], now_ms: int) -> None:
    """Refuse (:class:`InvalidField`) a heartbeat's changing fields no node could have sent
    by ``now_ms`` (the reader's clock): a time in the future, an agent that started after
    it sent the beat, a negative or absurd usage."""
    sent = record.get("sent_at")
    if not isinstance(sent, int) or not 0 <= sent <= now_ms + MAX_AHEAD_MS:
        raise InvalidField(
            "sent_at", f"{sent!r} is more than {MAX_AHEAD_MS // 1000} s ahead of {now_ms}"
        )
    started = record.get("agent_started_at")
    if not isinstance(started, int) or not 0 <= started <= sent:
        raise InvalidField("agent_started_at", f"{started!r} is not at or before sent_at {sent}")
    usage = record.get("usage") or {}
    for name, most in zip(_DEMAND_LEAST, NODE_CAPACITY_MAX.as_tuple(), strict=True):
        _amount(usage.get(name), f"usage.{name}", 0, most)
    _amount(record.get("interval_ms"), "interval_ms", 1, _MAX_INTERVAL_MS)
    if len(record.get("running_job_ids") or ()) > _MAX_RUNNING:
        raise InvalidField("running_job_ids", f"more than {_MAX_RUNNING} jobs on one node")


def check_heartbeat(record: Mapping[str, Any], now_ms: int) -> None:
    """:func:`check_node` and :func:`check_beat` of a whole heartbeat."""
    check_node(record)
    check_beat(record, now_ms)


# The free-text fields of a job event (the names are checked as names).
_JOB_EVENT_TEXT = ("reason", "field", "stage", "error_type", "model_id")


def check_job_event(record: Mapping[str, Any]) -> None:
    """Refuse (:class:`InvalidField`) a ``lepton.JobEvent`` whose job, tenant or node is no
    name, or whose free text is longer than any producer writes (they clip it)."""
    check_name(record.get("job_id"), "job_id")
    check_name(record.get("tenant"), "tenant")
    if record.get("node_id") is not None:
        check_name(record["node_id"], "node_id")
    for name in _JOB_EVENT_TEXT:
        check_text(record.get(name), name)
