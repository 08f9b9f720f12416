"""The one way to build a ``lepton.JobEvent``: every field set, so no producer leans on defaults."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypedDict, Unpack

from lepton.contract.names import clip

if TYPE_CHECKING:
    from lepton.contract.events import JobEvent, JobEventKind

__all__ = ["JobEventDetails", "job_event"]


class JobEventDetails(TypedDict, total=False):
    """The fields of a ``JobEvent`` that only some transitions carry (see its schema)."""

    node_id: str | None
    lease_epoch: int | None
    worker_index: int | None
    reason: str | None
    field: str | None
    progress_percent: float | None
    stage: str | None
    error_type: str | None
    model_id: str | None


def job_event(
    job_id: str,
    kind: JobEventKind,
    tenant: str,
    *,
    attempt: int = 0,
    time_ms: int | None = None,
    **details: Unpack[JobEventDetails],
) -> JobEvent:
    """A job event of ``kind``, at ``time_ms`` (epoch milliseconds; now if None)."""
    event: JobEvent = {
        "job_id": job_id,
        "kind": kind,
        "tenant": tenant,
        "node_id": None,
        "lease_epoch": None,
        "worker_index": None,
        "attempt": attempt,
        "reason": None,
        "field": None,
        "progress_percent": None,
        "stage": None,
        "error_type": None,
        "model_id": None,
        "time": time.time_ns() // 1_000_000 if time_ms is None else time_ms,
        **details,
    }
    # Readers refuse longer free text (an exception's message may run to megabytes).
    for name in ("reason", "field", "stage", "error_type"):
        event[name] = clip(event[name])
    return event
