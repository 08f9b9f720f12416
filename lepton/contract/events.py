# Generated from schemas/*.avsc by `python -m lepton.contract.typegen --write`; do not edit.
"""Typed events: one TypedDict per Avro record, one Literal per enum."""

from __future__ import annotations

from typing import Any, Final, Literal, NotRequired, TypedDict

__all__ = [
    "EVENT_NAMES",
    "Alert",
    "AlertState",
    "AssignmentAction",
    "AuditAction",
    "AuditEvent",
    "AuditOutcome",
    "Column",
    "Constraints",
    "Curve",
    "DataReady",
    "DataRejected",
    "DatasetRef",
    "DatasetRequested",
    "DatasetVersion",
    "Evidence",
    "Finding",
    "GuardCheck",
    "Integration",
    "IntegrationMode",
    "JobAssigned",
    "JobEvent",
    "JobEventKind",
    "JobRequested",
    "LeaseProof",
    "ModelEvaluated",
    "ModelPromoted",
    "ModelReady",
    "NodeHeartbeat",
    "PredictRequested",
    "PredictionError",
    "PredictionResult",
    "PreparationStep",
    "ProblemType",
    "QualitySummary",
    "Resources",
    "RuleCount",
    "Severity",
    "Source",
    "SourceKind",
    "SourceLineage",
    "Task",
    "TaskKind",
    "Verdict",
]


Severity = Literal[
    "unknown",
    "info",
    "warning",
    "error",
    "critical",
]
"""
How serious a finding or alert is. Readers map a symbol they do not know (added by a later version)
to `unknown`; producers never write `unknown`.
"""


AlertState = Literal[
    "unknown",
    "firing",
    "resolved",
]
"""
Alert state. Readers map a symbol they do not know (added by a later version) to `unknown`;
producers never write `unknown`.
"""


class Alert(TypedDict):
    """An alert rule firing or resolving for one subject. Keyed by <rule>/<subject>."""

    rule: str
    subject: str
    severity: Severity
    state: AlertState
    value: float
    threshold: float
    summary: str
    tenant: NotRequired[str | None]
    labels: NotRequired[dict[str, str]]
    active_since: int
    time: int


AuditAction = Literal[
    "unknown",
    "read",
    "write",
    "grant",
    "revoke",
    "delete",
    "publish",
]
"""
An audited action. Readers map a symbol they do not know (added by a later version) to `unknown`;
producers never write `unknown`.
"""


AuditOutcome = Literal[
    "unknown",
    "allowed",
    "denied",
]
"""
Whether the action was allowed. Readers map a symbol they do not know (added by a later version) to
`unknown`; producers never write `unknown`.
"""


class AuditEvent(TypedDict):
    """Who did what to which data, allowed or denied. Keyed by tenant."""

    actor: str
    tenant: str
    action: AuditAction
    resource: str
    owner: NotRequired[str | None]
    outcome: AuditOutcome
    detail: NotRequired[str | None]
    region: NotRequired[str | None]
    time: int


class Column(TypedDict):
    """One column of the stored table."""

    name: str
    type: str
    nullable: bool
    sensitive: NotRequired[bool]


class RuleCount(TypedDict):
    """How often one rule fired."""

    rule: str
    column: NotRequired[str | None]
    count: int


class QualitySummary(TypedDict):
    """What cleaning did; every rule is counted."""

    rows_read: int
    rows_rejected: int
    duplicates_removed: int
    values_imputed: int
    outliers_flagged: int
    rules: NotRequired[list[RuleCount]]


SourceKind = Literal[
    "unknown",
    "csv",
    "parquet",
    "jsonl",
    "postgres",
]
"""
The format or system a source is read from. Readers map a symbol they do not know (added by a later
version) to `unknown`; producers never write `unknown`.
"""


class SourceLineage(TypedDict):
    """One source as it was read."""

    name: str
    kind: SourceKind
    uri: NotRequired[str | None]
    content_hash: str
    rows: int


class DataReady(TypedDict):
    """A dataset version is stored and readable. Keyed by <tenant>/<dataset>."""

    request_id: str
    tenant: str
    dataset: str
    version: str
    reused: bool
    rows: int
    columns: list[Column]
    quality: QualitySummary
    spec_inferred: bool
    spec: str
    lineage: list[SourceLineage]
    location: str
    region: NotRequired[str | None]
    ready_at: int


class DataRejected(TypedDict):
    """
    A dataset request that could not be ingested; nothing of it was stored. Keyed by
    <tenant>/<dataset>.
    """

    request_id: str
    tenant: str
    dataset: str
    code: str
    reason: str
    source: NotRequired[str | None]
    column: NotRequired[str | None]
    row: NotRequired[int | None]
    rejected_at: int


class Source(TypedDict):
    """One input of a dataset."""

    name: str
    kind: SourceKind
    uri: NotRequired[str | None]
    query: NotRequired[str | None]
    options: NotRequired[dict[str, str]]


IntegrationMode = Literal[
    "unknown",
    "union",
    "join",
]
"""
How sources are combined. Readers map a symbol they do not know (added by a later version) to
`unknown`; producers never write `unknown`.
"""


class Integration(TypedDict):
    """How several sources become one table."""

    mode: NotRequired[IntegrationMode]
    join_keys: NotRequired[list[str]]
    join_how: NotRequired[str]


class DatasetRequested(TypedDict):
    """
    A request to ingest a dataset: load its sources, validate and clean them by a spec, integrate
    them, and store a new immutable version. Keyed by <tenant>/<dataset>.
    """

    request_id: str
    tenant: str
    dataset: str
    sources: list[Source]
    spec: NotRequired[str | None]
    integration: Integration
    region: NotRequired[str | None]
    description: NotRequired[str | None]
    requested_at: int
    requested_by: NotRequired[str | None]


AssignmentAction = Literal[
    "unknown",
    "run",
    "stop",
]
"""
What the node must do. Readers map a symbol they do not know (added by a later version) to
`unknown`; producers never write `unknown`.
"""


class Resources(TypedDict):
    """An amount of each schedulable resource."""

    cpu_millicores: int
    memory_mib: int
    gpus: int
    network_mbps: int


TaskKind = Literal[
    "unknown",
    "train",
    "evaluate",
    "predict",
]
"""
What a job does. Readers map a symbol they do not know (added by a later version) to `unknown`;
producers never write `unknown`.
"""


ProblemType = Literal[
    "unknown",
    "regression",
    "binary",
    "multiclass",
]
"""
The learning problem. Readers map a symbol they do not know (added by a later version) to `unknown`;
producers never write `unknown`.
"""


class Task(TypedDict):
    """The work a job does once placed."""

    kind: TaskKind
    algorithm: NotRequired[str]
    target_column: NotRequired[str | None]
    problem_type: NotRequired[ProblemType | None]
    search_space: NotRequired[str | None]
    trial_budget: NotRequired[int]
    time_budget_s: NotRequired[int]
    cv_folds: NotRequired[int]
    scoring: NotRequired[str | None]
    seed: NotRequired[int | None]
    model_name: NotRequired[str | None]
    model_ref: NotRequired[str | None]
    options: NotRequired[dict[str, str]]


class DatasetVersion(TypedDict):
    """One immutable version of a dataset."""

    name: str
    version: str
    owner: str


class JobAssigned(TypedDict):
    """
    An instruction from the scheduler to one node: run (or stop) one worker of a job under a lease.
    Keyed by node id so that each agent reads only its own partition.
    """

    job_id: str
    node_id: str
    action: NotRequired[AssignmentAction]
    worker_index: int
    gang_size: int
    lease_epoch: int
    attempt: NotRequired[int]
    granted: Resources
    tenant: str
    task: Task
    dataset: NotRequired[DatasetVersion | None]
    reason: NotRequired[str | None]
    assigned_at: int


JobEventKind = Literal[
    "unknown",
    "queued",
    "rejected",
    "assigned",
    "started",
    "progress",
    "succeeded",
    "failed",
    "preempted",
    "requeued",
    "cancelled",
    "lost",
    "cancel_requested",
]
"""
A job lifecycle transition. Readers map a symbol they do not know (added by a later version) to
`unknown`; producers never write `unknown`.
"""


class JobEvent(TypedDict):
    """One transition in a job's lifecycle, from the scheduler, an agent or a client."""

    job_id: str
    kind: JobEventKind
    tenant: str
    node_id: NotRequired[str | None]
    lease_epoch: NotRequired[int | None]
    worker_index: NotRequired[int | None]
    attempt: NotRequired[int]
    reason: NotRequired[str | None]
    field: NotRequired[str | None]
    progress_percent: NotRequired[float | None]
    stage: NotRequired[str | None]
    error_type: NotRequired[str | None]
    model_id: NotRequired[str | None]
    time: int


class DatasetRef(TypedDict):
    """A dataset in the catalog."""

    name: str
    version: NotRequired[str | None]
    owner: NotRequired[str | None]


class Constraints(TypedDict):
    """Where the job may run."""

    region: NotRequired[str | None]
    labels: NotRequired[dict[str, str]]
    gpu_type: NotRequired[str | None]


class JobRequested(TypedDict):
    """
    A request to run a job: who asks, how urgent, what it does, on which data, and what it needs.
    """

    job_id: str
    tenant: str
    name: NotRequired[str | None]
    priority_class: str
    priority: int
    preemptible: NotRequired[bool]
    task: Task
    dataset: NotRequired[DatasetRef | None]
    demand: Resources
    constraints: Constraints
    gang_size: NotRequired[int]
    max_retries: NotRequired[int]
    placement_policy: NotRequired[str | None]
    runtime_estimate_s: NotRequired[int | None]
    submitted_at: int
    submitted_by: NotRequired[str | None]


class Finding(TypedDict):
    """One result of the analysis of what is wrong and where to improve."""

    severity: Severity
    code: str
    message: str
    feature: NotRequired[str | None]
    value: NotRequired[float | None]


class Curve(TypedDict):
    """Points of a curve for plotting."""

    kind: str
    label: NotRequired[str | None]
    x: list[float]
    y: list[float]


class ModelEvaluated(TypedDict):
    """
    The evaluation of a model on held-out data and by cross-validation, with findings. Keyed by
    model id.
    """

    model_id: str
    tenant: str
    model_name: str
    dataset: DatasetVersion
    problem_type: ProblemType
    holdout_rows: int
    cv_folds: int
    seed: int
    metrics: dict[str, float]
    cv_metrics: NotRequired[dict[str, list[float]]]
    train_metrics: NotRequired[dict[str, float]]
    findings: NotRequired[list[Finding]]
    feature_importance: NotRequired[dict[str, float]]
    class_labels: NotRequired[list[str]]
    confusion_matrix: NotRequired[list[list[int]]]
    curves: NotRequired[list[Curve]]
    plots: NotRequired[dict[str, str]]
    evaluated_at: int


Verdict = Literal[
    "unknown",
    "promoted",
    "kept_champion",
    "rolled_back",
]
"""
A promotion decision. Readers map a symbol they do not know (added by a later version) to `unknown`;
producers never write `unknown`.
"""


class GuardCheck(TypedDict):
    """A metric that must not get worse."""

    metric: str
    challenger: float
    champion: NotRequired[float | None]
    passed: bool


class Evidence(TypedDict):
    """Statistical evidence for the verdict."""

    method: str
    p_value: NotRequired[float | None]
    ci_low: NotRequired[float | None]
    ci_high: NotRequired[float | None]
    challenger_folds: NotRequired[list[float]]
    champion_folds: NotRequired[list[float]]


class ModelPromoted(TypedDict):
    """
    A champion-and-challenger verdict for a tenant's model name, with its evidence; promotions,
    rejections and rollbacks. Keyed by <tenant>/<model name>.
    """

    tenant: str
    model_name: str
    model_id: str
    verdict: Verdict
    previous_champion_id: NotRequired[str | None]
    policy: str
    primary_metric: str
    challenger_score: float
    champion_score: NotRequired[float | None]
    guards: NotRequired[list[GuardCheck]]
    evidence: Evidence
    reason: str
    decided_by: NotRequired[str | None]
    decided_at: int


class PreparationStep(TypedDict):
    """
    Something training did to the data on its own: a column it left out of the features, read
    differently or encoded differently, or a transform of the target.
    """

    code: str
    column: NotRequired[str | None]
    message: str


class LeaseProof(TypedDict):
    """
    The scheduler's signed instruction under which a node trained a model: the JobAssigned record's
    bytes as the scheduler published them, and its lepton-signature. The evaluator checks it names
    this job, tenant and the node that signed the ModelReady.
    """

    assignment: bytes
    signature: bytes


class ModelReady(TypedDict):
    """
    A trained model is stored in the artifact store and recorded in the catalog. Keyed by model id.
    """

    model_id: str
    job_id: str
    attempt: NotRequired[int]
    tenant: str
    model_name: str
    dataset: DatasetVersion
    problem_type: ProblemType
    target_column: str
    feature_columns: list[str]
    algorithm: str
    parameters: str
    scoring: str
    cv_score: float
    cv_fold_scores: list[float]
    trials: int
    training_seconds: float
    artifact_uri: str
    artifact_format: str
    artifact_sha256: str
    holdout_fraction: NotRequired[float]
    split_seed: NotRequired[int]
    preparation: NotRequired[list[PreparationStep]]
    ready_at: int
    lease: NotRequired[LeaseProof | None]


class NodeHeartbeat(TypedDict):
    """
    A compute node agent's periodic report of its capacity, usage and running jobs. Liveness is
    judged from sent_at and sequence, never from the time a consumer reads it.
    """

    node_id: str
    region: str
    labels: NotRequired[dict[str, str]]
    gpu_type: NotRequired[str | None]
    capacity: Resources
    usage: Resources
    running_job_ids: NotRequired[list[str]]
    sent_at: int
    sequence: int
    agent_started_at: int
    interval_ms: NotRequired[int]


class PredictRequested(TypedDict):
    """
    A request to score records with a model. Keyed by request id; the answer is a PredictionResult
    with the same request id on lepton.predict.results.
    """

    request_id: str
    tenant: str
    model: str
    rows: list[dict[str, bool | int | float | str | None]]
    requested_by: NotRequired[str | None]
    requested_at: int


class PredictionError(TypedDict):
    """Why no prediction was made."""

    code: str
    message: str


class PredictionResult(TypedDict):
    """
    The answer to a PredictRequested: one prediction per record, in order, or the reason none could
    be made. Keyed by request id.
    """

    request_id: str
    tenant: str
    model_name: str
    model_id: NotRequired[str | None]
    problem_type: ProblemType
    predictions: NotRequired[list[float | str]]
    probabilities: NotRequired[list[dict[str, float]]]
    error: NotRequired[PredictionError | None]
    warnings: NotRequired[list[str]]
    scored_at: int


# The Avro full name of each event type, for Event.record_as.
EVENT_NAMES: Final[dict[Any, str]] = {
    Alert: "lepton.Alert",
    AuditEvent: "lepton.AuditEvent",
    DataReady: "lepton.DataReady",
    DataRejected: "lepton.DataRejected",
    DatasetRequested: "lepton.DatasetRequested",
    JobAssigned: "lepton.JobAssigned",
    JobEvent: "lepton.JobEvent",
    JobRequested: "lepton.JobRequested",
    ModelEvaluated: "lepton.ModelEvaluated",
    ModelPromoted: "lepton.ModelPromoted",
    ModelReady: "lepton.ModelReady",
    NodeHeartbeat: "lepton.NodeHeartbeat",
    PredictRequested: "lepton.PredictRequested",
    PredictionResult: "lepton.PredictionResult",
}
