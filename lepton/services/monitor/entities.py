"""What the monitor knows about each node, job, dataset and model, as plain records.

Also the helpers shared by the state and the rules: sliding windows of samples and
their quantiles, which metric ranks a model, and the compact table form the state's
snapshot stores each kind of record in.
"""

from __future__ import annotations

import collections
import dataclasses
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = [
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
    "RESOURCES",
    "TERMINAL",
    "WINDOW_MS",
    "Dataset",
    "Job",
    "Lag",
    "Model",
    "Node",
    "Record",
    "Window",
    "from_table",
    "primary_metric",
    "quantile",
    "summarise",
    "to_table",
]

Record = Mapping[str, Any]
T = TypeVar("T")
RESOURCES = ("cpu_millicores", "memory_mib", "gpus", "network_mbps")
TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})
_MINUTE_MS = 60_000
WINDOW_MS = 5 * _MINUTE_MS  # what the rates and distributions of the views look back on

# Held-out metrics where higher is better, in the order one is chosen as a model's primary
# metric for the leaderboard and the regression rule; the second list is lower-is-better.
HIGHER_IS_BETTER = ("roc_auc", "f1_macro", "accuracy", "f1_weighted", "r2", "recall_macro")
LOWER_IS_BETTER = ("rmse", "mae", "mse", "log_loss")


def quantile(values: Iterable[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of the values; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarise(values: list[float]) -> dict[str, float | int | None]:
    """Count, median, 95th percentile and maximum, as the API shows a distribution."""
    return {
        "count": len(values),
        "p50": quantile(values, 0.5),
        "p95": quantile(values, 0.95),
        "max": max(values) if values else None,
    }


class Window:
    """Observations of the last ``horizon_ms``, for quantiles and rates (bounded in size)."""

    def __init__(self, horizon_ms: int = WINDOW_MS, maxlen: int = 20_000) -> None:
        self.horizon_ms = horizon_ms
        self._points: collections.deque[tuple[int, float]] = collections.deque(maxlen=maxlen)

    def add(self, time_ms: int, value: float) -> None:
        self._points.append((time_ms, value))

    def values(self, now_ms: int) -> list[float]:
        start = now_ms - self.horizon_ms
        while self._points and self._points[0][0] < start:
            self._points.popleft()
        return [value for _, value in self._points]

    def summary(self, now_ms: int) -> dict[str, float | int | None]:
        return summarise(self.values(now_ms))


@dataclass(slots=True)
class Node:
    node_id: str
    region: str
    gpu_type: str | None
    labels: dict[str, str]
    capacity: dict[str, int]
    usage: dict[str, int]
    running_job_ids: list[str]
    sent_at: int
    sequence: int
    agent_started_at: int
    interval_ms: int
    restarts: int = 0

    def utilisation(self) -> dict[str, float]:
        """Usage over capacity per resource; a resource the node does not offer is absent."""
        return {
            resource: self.usage[resource] / self.capacity[resource]
            for resource in RESOURCES
            if self.capacity.get(resource, 0) > 0
        }


@dataclass(slots=True)
class Job:
    job_id: str
    tenant: str
    state: str = "unknown"
    name: str | None = None
    priority_class: str | None = None
    priority: int | None = None
    submitted_at: int | None = None
    queued_since: int | None = None  # start of the current wait (submission or requeue)
    assigned_at: int | None = None
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int = 0
    node_ids: list[str] = field(default_factory=list)
    attempt: int = 0
    reason: str | None = None
    progress_percent: float | None = None
    stage: str | None = None
    preemptions: int = 0
    requeues: int = 0
    dataset: str | None = None
    model_id: str | None = None
    model_name: str | None = None  # what a training job's model is registered under


@dataclass(slots=True)
class Dataset:
    tenant: str
    dataset: str
    state: str
    updated_at: int
    version: str | None = None
    rows: int | None = None
    reused: bool | None = None
    region: str | None = None
    quality: dict[str, int] = field(default_factory=dict)
    reject_code: str | None = None
    reject_reason: str | None = None
    versions: int = 0
    rejects: int = 0


@dataclass(slots=True)
class Model:
    model_id: str
    tenant: str
    model_name: str
    algorithm: str | None = None
    problem_type: str | None = None
    cv_score: float | None = None
    scoring: str | None = None
    ready_at: int | None = None
    evaluated_at: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    roc: list[dict[str, Any]] = field(default_factory=list)
    findings: int = 0


@dataclass(slots=True)
class Lag:
    """A consumer group's lag on one topic, from the broker's offsets."""

    messages: int
    seconds: float | None  # estimated from the group's recent consume rate
    committed: int
    end: int


def primary_metric(metrics: Mapping[str, float]) -> tuple[str, bool] | None:
    """The metric a model is ranked by, and whether higher is better."""
    for name in HIGHER_IS_BETTER:
        if name in metrics:
            return name, True
    for name in LOWER_IS_BETTER:
        if name in metrics:
            return name, False
    return None


_FIELDS: dict[type, tuple[str, ...]] = {
    kind: tuple(f.name for f in dataclasses.fields(kind)) for kind in (Node, Job, Dataset, Model)
}
_GETTERS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    kind: operator.attrgetter(*names) for kind, names in _FIELDS.items()
}


def to_table(kind: type, items: Iterable[Any]) -> dict[str, Any]:
    getter = _GETTERS[kind]
    return {"fields": _FIELDS[kind], "rows": [getter(item) for item in items]}


def from_table(kind: type[T], table: Mapping[str, Any]) -> Iterator[T]:
    known = set(_FIELDS[kind])
    names = table["fields"]
    for row in table["rows"]:
        yield kind(**{name: value for name, value in zip(names, row, strict=True) if name in known})
