"""Lepton's Prometheus conventions: the bucket sets by time scale that every service's
histograms use, and the metrics every service shares.

Names follow Prometheus's: a unit suffix in base units (``_seconds``, ``_ratio`` for a
0-1 share), ``_total`` for counters; labels carry only bounded values (topics, groups,
outcomes, rule names), never a tenant's job, dataset or model. Each service defines its
own metrics in its ``instruments`` module with these buckets; a labelled series whose
labels are known at start is made then, so that it is exported (at zero) before anything
happened rather than missing.
"""

from __future__ import annotations

import prometheus_client

__all__ = ["POOL_WAIT", "REQUEST_BUCKETS", "WORK_BUCKETS"]

# What answers a request or a message: a millisecond to tens of seconds.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# What runs as a job (an ingest, a training run, an evaluation): a tenth of a second to hours.
WORK_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)

POOL_WAIT = prometheus_client.Histogram(
    "lepton_database_pool_wait_seconds",
    "Time to get a connection from the service's PostgreSQL pool (waiting for a free one, "
    "or opening one).",
    buckets=(0.0001, 0.0005, *REQUEST_BUCKETS),
)
