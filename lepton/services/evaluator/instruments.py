"""The evaluator's Prometheus metrics (conventions: :mod:`lepton.runtime.metrics`)."""

from __future__ import annotations

import prometheus_client

from lepton.runtime.metrics import REQUEST_BUCKETS, WORK_BUCKETS

__all__ = [
    "EVALUATION_DURATION",
    "MODEL_CACHE",
    "MODEL_LOAD_DURATION",
    "PREDICTION_LATENCY",
    "PREDICTION_ROWS",
]

EVALUATION_DURATION = prometheus_client.Histogram(
    "lepton_evaluation_duration_seconds",
    "Time to evaluate a new model and judge it against its champion (artifact and dataset "
    "loaded, scored, plotted), failed evaluations included.",
    buckets=WORK_BUCKETS,
)
# The handler's own time is lepton_handler_duration_seconds{group="lepton-evaluator-predict"}.
PREDICTION_LATENCY = prometheus_client.Histogram(
    "lepton_prediction_latency_seconds",
    "From a prediction request's requested_at (the requester's clock) to its answer "
    "scored: the wait in the topic included.",
    buckets=REQUEST_BUCKETS,
)
PREDICTION_ROWS = prometheus_client.Counter(
    "lepton_prediction_rows_total", "Records scored for prediction requests."
)
MODEL_CACHE = prometheus_client.Counter(
    "lepton_model_cache_requests_total",
    "Models asked of the loaded-model cache, by result: hit (already loaded) or miss.",
    ["result"],
)
MODEL_LOAD_DURATION = prometheus_client.Histogram(
    "lepton_model_load_duration_seconds",
    "Time to read, check and load a model's artifact on a cache miss.",
    buckets=REQUEST_BUCKETS,
)
for _result in ("hit", "miss"):
    MODEL_CACHE.labels(_result)
