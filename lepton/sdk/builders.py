"""Typed builders for what a client asks of Lepton: jobs, datasets and predictions.

Each builder is a pydantic model, validated when it is built, whose :meth:`to_record`
gives the exact Avro record of the contract (``schemas/*.avsc``): the bytes a client
sends are the bytes any other producer would send for the same values (a test holds the
builders to the golden vectors). :meth:`JobRequest.check` applies the scheduler's own
intake rules (:func:`lepton.scheduling.intake.job_spec`) on top, so that a job the
scheduler would reject is refused before it is sent.

::

    job = JobRequest(
        tenant="acme",
        dataset="houses",
        task=TrainingTask(target_column="price", trial_budget=10),
        demand=Resources.of(cpus=1, memory_mib=1024),
    )
    record = job.to_record()  # a lepton.JobRequested record
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lepton.contract.algorithms import ALGORITHMS
from lepton.contract.names import InvalidField, check_finite, check_text, name_problem
from lepton.errors import RequestError
from lepton.scheduling.intake import Rejection, job_spec

__all__ = [
    "MAX_PREDICT_ROWS",
    "Constraints",
    "DatasetRef",
    "DatasetRequest",
    "Integration",
    "InvalidRequest",
    "JobRequest",
    "PredictRequest",
    "Resources",
    "Source",
    "TrainingTask",
    "describe",
    "millicores",
]

# Rows in one lepton.PredictRequested: bounds the message (and the evaluator's batch);
# the SDK splits larger inputs into several requests.
MAX_PREDICT_ROWS = 1000

SourceKind = Literal["csv", "parquet", "jsonl", "postgres"]
# A value a prediction row may hold: the union of lepton.PredictRequested's rows.
Value = bool | int | float | str | None

_SUFFIX_KINDS: dict[str, SourceKind] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".jsonl": "jsonl",
}


class InvalidRequest(RequestError, ValueError):
    """A request that cannot be built as given; the message says what to change."""


def describe(error: ValidationError) -> str:
    """A builder's validation error in one line: ``field.path: what is wrong``."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = error.error_count() - 1
    return (f"{where}: {message}" if where else message) + (
        f" (and {more} more)" if more > 0 else ""
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _a_name(value: str) -> str:
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _a_model_ref(value: str) -> str:
    # <name>, <name>@champion or <name>@<model id>: each part a name.
    for part in value.split("@", 1):
        _a_name(part)
    return value


def _short_text(value: str | None) -> str | None:
    try:
        check_text(value, "text")
    except InvalidField as exc:
        raise ValueError(exc.reason) from None
    return value


# A tenant, dataset, model, node, job or region: see lepton.contract.names for the rule.
Name = Annotated[str, AfterValidator(_a_name)]


def millicores(cpus: float) -> int:
    """``cpus`` cores in millicores; :class:`InvalidRequest` unless a finite number that is
    at least one millicore."""
    try:
        check_finite(cpus, "demand.cpus")
        amount = round(cpus * 1000)
        if amount < 1:
            raise InvalidField("demand.cpus", f"{cpus!r} cores is less than one millicore")
    except InvalidField as exc:
        raise InvalidRequest(str(exc)) from None
    return amount


def _json_text(value: Any) -> Any:
    """A JSON document given as a mapping becomes the JSON text the contract carries."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value


class _Builder(BaseModel):
    # extra="forbid": a misspelt field in a YAML job file is an error, not silently dropped.
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_record(self) -> dict[str, Any]:
        """The Avro record of the contract, field for field."""
        return self.model_dump(mode="python")


class Resources(_Builder):
    """An amount of each schedulable resource (``lepton.Resources``)."""

    cpu_millicores: int = Field(ge=0, description="CPU in thousandths of a core.")
    memory_mib: int = Field(ge=0, description="Memory in MiB.")
    gpus: int = Field(default=0, ge=0)
    network_mbps: int = Field(default=0, ge=0)

    @classmethod
    def of(
        cls, *, cpus: float = 1.0, memory_mib: int = 1024, gpus: int = 0, network_mbps: int = 0
    ) -> Resources:
        """Resources in cores rather than millicores."""
        return cls(
            cpu_millicores=millicores(cpus),
            memory_mib=memory_mib,
            gpus=gpus,
            network_mbps=network_mbps,
        )


class Constraints(_Builder):
    """Where a job may run (``lepton.Constraints``)."""

    region: Name | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    gpu_type: Name | None = None


class DatasetRef(_Builder):
    """A dataset in the catalog: the latest ready version unless ``version`` is given."""

    name: Name
    version: str | None = None
    owner: Name | None = None


class TrainingTask(_Builder):
    """What a job does once placed (``lepton.Task``): training, unless ``kind`` says else."""

    kind: Literal["train", "evaluate", "predict"] = "train"
    algorithm: str = "auto"
    target_column: str | None = None
    problem_type: Literal["regression", "binary", "multiclass"] | None = None
    search_space: str | None = Field(
        default=None, description="JSON text, or a mapping that is written as JSON text."
    )
    trial_budget: int = 20
    time_budget_s: int = 300
    cv_folds: int = 5
    scoring: str | None = None
    seed: int | None = None
    model_name: Name | None = None
    model_ref: str | None = None
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, value: str) -> str:
        if value not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {value!r}; one of {', '.join(ALGORITHMS)}")
        return value

    @field_validator("search_space", mode="before")
    @classmethod
    def _search_space_text(cls, value: Any) -> Any:
        return _json_text(value)


class JobRequest(_Builder):
    """A job request (``lepton.JobRequested``)."""

    job_id: Name = Field(default_factory=lambda: f"job-{uuid.uuid4().hex[:12]}")
    tenant: Name
    name: Annotated[str | None, AfterValidator(_short_text)] = None
    priority_class: Name = "normal"
    priority: int = 100
    preemptible: bool = True
    task: TrainingTask
    dataset: DatasetRef | None = Field(
        default=None, description="A DatasetRef, or just the dataset's name."
    )
    demand: Resources = Field(default_factory=Resources.of)
    constraints: Constraints = Field(default_factory=Constraints)
    gang_size: int = 1
    max_retries: int = 3
    placement_policy: str | None = None
    runtime_estimate_s: int | None = None
    submitted_at: int = Field(default_factory=_now_ms, description="Epoch milliseconds.")
    submitted_by: str | None = None

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    def check(self) -> None:
        """Raise :class:`InvalidRequest` (``field: reason``) if the scheduler would reject
        this job. Separate from building, because the contract admits jobs the scheduler
        refuses (a training job without its target column, say): those can be built and
        encoded, and :meth:`lepton.LeptonClient.submit` refuses to send them."""
        verdict = job_spec(self.to_record())
        if isinstance(verdict, Rejection):
            raise InvalidRequest(f"{verdict.field}: {verdict.reason}")


class Source(_Builder):
    """One input of a dataset (``lepton.Source``)."""

    name: str = Field(min_length=1)
    kind: SourceKind
    uri: str | None = None
    query: str | None = None
    options: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _located(self) -> Source:
        if self.kind == "postgres" and not self.query:
            raise ValueError("a postgres source needs its query")
        if self.kind != "postgres" and not self.uri:
            raise ValueError(f"a {self.kind} source needs its uri")
        return self

    @classmethod
    def file(cls, location: str | Path, *, kind: SourceKind | None = None) -> Source:
        """A file source: a local path (made absolute) or a URL; the kind from the
        extension (``.gz`` aside) unless given."""
        text = str(location)
        chosen = kind or _SUFFIX_KINDS.get(Path(text.removesuffix(".gz")).suffix.lower())
        if chosen is None:
            raise InvalidRequest(f"cannot tell the format of {text!r}; say csv, parquet or jsonl")
        uri = text if "://" in text else str(Path(text).resolve())
        return cls(name=Path(text).name, kind=chosen, uri=uri)


class Integration(_Builder):
    """How several sources become one table (``lepton.Integration``)."""

    mode: Literal["union", "join"] = "union"
    join_keys: list[str] = Field(default_factory=list)
    join_how: Literal["inner", "left", "outer"] = "inner"


class DatasetRequest(_Builder):
    """A request to ingest a dataset (``lepton.DatasetRequested``)."""

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    tenant: Name
    dataset: Name
    sources: list[Source] = Field(min_length=1)
    spec: str | None = Field(
        default=None, description="Spec text (JSON or YAML), or a mapping written as JSON."
    )
    integration: Integration = Field(default_factory=Integration)
    region: str | None = None
    description: str | None = None
    requested_at: int = Field(default_factory=_now_ms, description="Epoch milliseconds.")
    requested_by: str | None = None

    @field_validator("spec", mode="before")
    @classmethod
    def _spec_text(cls, value: Any) -> Any:
        return _json_text(value)

    @model_validator(mode="after")
    def _joinable(self) -> DatasetRequest:
        joined = self.integration.mode == "join" and len(self.sources) > 1
        if joined and not self.integration.join_keys:
            raise ValueError("integration.join_keys: a join needs its key columns")
        return self

    @property
    def key(self) -> str:
        """The message key: ``<tenant>/<dataset>``."""
        return f"{self.tenant}/{self.dataset}"


class PredictRequest(_Builder):
    """Records to score with a model (``lepton.PredictRequested``)."""

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    tenant: Name
    model: Annotated[str, AfterValidator(_a_model_ref)] = Field(
        description="<name>, <name>@champion or <name>@<model id>."
    )
    rows: list[dict[str, Value]] = Field(min_length=1, max_length=MAX_PREDICT_ROWS)
    requested_by: str | None = None
    requested_at: int = Field(default_factory=_now_ms, description="Epoch milliseconds.")
