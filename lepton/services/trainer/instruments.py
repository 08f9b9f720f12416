"""The trainer agent's Prometheus metrics (conventions: :mod:`lepton.runtime.metrics`)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import prometheus_client

from lepton.runtime.metrics import WORK_BUCKETS

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["RUN_DURATION", "count_trials"]

RUN_DURATION = prometheus_client.Histogram(
    "lepton_training_duration_seconds",
    "Time of a training run on this node, from its start to its end, by outcome "
    "(succeeded, failed, lost).",
    ["outcome"],
    buckets=WORK_BUCKETS,
)
_TRIALS = prometheus_client.Counter(
    "lepton_training_trials_total",
    "Trials of the parameter searches of the jobs whose model this node stored, by how "
    "each ended (complete, pruned, fail).",
    ["state"],
)
for _outcome in ("succeeded", "failed", "lost"):
    RUN_DURATION.labels(_outcome)
for _state in ("complete", "pruned", "fail"):
    _TRIALS.labels(_state)


def count_trials(trials: Iterable[Mapping[str, Any]]) -> None:
    """Count a search's trials (a run's result's), by state."""
    for state, count in Counter(trial["state"] for trial in trials).items():
        _TRIALS.labels(state).inc(count)
