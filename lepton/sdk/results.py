"""What the SDK's calls return: a job's events and outcome, a model's verdict, predictions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lepton.contract.codec import Record

__all__ = ["JobEvent", "JobOutcome", "ModelVerdict", "PredictionResult"]


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
