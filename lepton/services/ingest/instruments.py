"""Ingest's Prometheus metrics (conventions: :mod:`lepton.runtime.metrics`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import prometheus_client

from lepton.runtime.metrics import WORK_BUCKETS

if TYPE_CHECKING:
    from lepton.services.ingest.cleaning import Quality

__all__ = ["DURATION", "REJECTIONS", "count_rows"]

DURATION = prometheus_client.Histogram(
    "lepton_ingest_duration_seconds",
    "Time to ingest a dataset request, from reading its sources to its answer stored, by "
    "outcome (ready or rejected).",
    ["outcome"],
    buckets=WORK_BUCKETS,
)
_ROWS = prometheus_client.Counter(
    "lepton_ingest_rows_total",
    "Rows of the datasets ingested, by stage: read from the sources, removed as "
    "duplicates, rejected by a cleaning rule, stored.",
    ["stage"],
)
_REJECTED_ROWS = prometheus_client.Counter(
    "lepton_ingest_rejected_rows_total",
    "Rows rejected by each cleaning rule (type, range, missing:reject, ...).",
    ["rule"],
)
REJECTIONS = prometheus_client.Counter(
    "lepton_ingest_rejections_total",
    "Dataset requests refused (answered with lepton.data.rejected), by code.",
    ["code"],
)
for _outcome in ("ready", "rejected"):
    DURATION.labels(_outcome)
for _stage in ("read", "duplicate", "rejected", "stored"):
    _ROWS.labels(_stage)


def count_rows(quality: Quality, stored: int) -> None:
    """Count the rows of one ingested version, from its quality report."""
    _ROWS.labels("read").inc(quality.rows_read)
    _ROWS.labels("duplicate").inc(quality.duplicates_removed)
    _ROWS.labels("rejected").inc(quality.rows_rejected)
    _ROWS.labels("stored").inc(stored)
    for rule, column in quality.first_reject:  # the rules that rejected rows
        _REJECTED_ROWS.labels(rule).inc(quality.rules[rule, column])
