"""What the SDK's calls return: a job's events and outcome, a model's verdict, predictions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lepton.contract.codec import Record

__all__ = [
    "Cancellation",
    "JobEvent",
    "JobHistory",
    "JobOutcome",
    "ModelVerdict",
    "PredictionResult",
]


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One transition of a job (``lepton.JobEvent``); ``time`` in epoch milliseconds."""

    job_id: str
    kind: str
    tenant: str
    node_id: str | None
    lease_epoch: int | None
    worker_index: int | None
    attempt: int
    reason: str | None
    field: str | None
    progress_percent: float | None
    stage: str | None
    error_type: str | None
    model_id: str | None
    time: int

    @classmethod
    def from_record(cls, record: Record) -> JobEvent:
        return cls(**{name: record[name] for name in _JOB_EVENT_FIELDS})


_JOB_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(JobEvent))


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """How a job ended, and for a training job that succeeded, the model it produced."""

    job_id: str
    state: str  # succeeded, failed, rejected or cancelled
    event: JobEvent  # the event that ended it: its reason, error type, model id
    model: Record | None  # the lepton.ModelReady record

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


@dataclass(frozen=True, slots=True)
class JobHistory:
    """A job as the log tells it: its request and every event about it, in log order."""

    job_id: str
    tenant: str | None  # the request's, else the first event's
    request: Record | None  # lepton.JobRequested, while the topic keeps it (30 days)
    events: list[JobEvent]  # the newest ones if there were more than the SDK keeps
    omitted: int  # older events not kept in ``events``
    # As the scheduler's journal decides it: requested (not answered yet), queued,
    # assigned, running, lost, or how it ended (succeeded, failed, rejected, cancelled).
    state: str
    outcome: JobEvent | None  # the event that ended it
    cancel_requested: bool  # its tenant asked to cancel it (and it had not ended then)

    @property
    def finished(self) -> bool:
        return self.outcome is not None


@dataclass(frozen=True, slots=True)
class Cancellation:
    """What cancelling a job did."""

    job_id: str
    state: str  # cancelled, or how the job had already ended (succeeded, failed, rejected)
    event: JobEvent  # the event that ended it
    sent: bool  # False: the job had ended before; nothing was asked

    @property
    def cancelled(self) -> bool:
        return self.state == "cancelled"


@dataclass(frozen=True, slots=True)
class ModelVerdict:
    """What the evaluator made of a model."""

    evaluated: Record  # lepton.ModelEvaluated: metrics, findings, curves, plots
    verdict: Record | None  # lepton.ModelPromoted: promoted or kept_champion, with evidence


@dataclass(frozen=True, slots=True)
class PredictionResult:
    """Predictions for every row asked, in order, all made by one model version."""

    model_name: str
    model_id: str
    problem_type: str
    predictions: list[float | str]
    probabilities: list[dict[str, float]]  # classification: label -> probability, per row
    warnings: list[str]
    request_ids: list[str]  # one per lepton.PredictRequested sent
