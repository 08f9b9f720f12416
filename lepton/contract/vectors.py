"""Golden test vectors: example events and their exact single-object encoding.

``schemas/vectors/<schema file stem>.json`` holds, for every schema, a list of
``{"description", "record", "bytes_hex"}``. Another implementation checks itself by
encoding ``record`` and comparing with ``bytes_hex``, and by decoding ``bytes_hex`` back
to ``record``. Records hold Avro-level values: a ``timestamp-millis`` is the integer
number of milliseconds since the epoch, a union holds the plain value (JSON null or the
branch's value), and no schema uses ``bytes``. Avro lets a writer choose the order of a
map's entries, so for a record with a map of several entries, another encoder may produce
different bytes that decode to the same record; the vectors keep the records' key order.

The examples below are the source of truth; the JSON files are generated from them, and
``tests/unit/test_contract.py`` fails when the two disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from lepton.contract import default_codec, schemas_dir

if TYPE_CHECKING:
    from pathlib import Path

    from lepton.contract.codec import Codec

__all__ = [
    "EXAMPLES",
    "Vector",
    "build_vectors",
    "render_vector_file",
    "schema_file_stem",
    "stale_vector_files",
    "to_wire_values",
    "vectors_dir",
    "write_vectors",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# 2026-01-01T00:00:00Z and a few instants after it: fixed, so the bytes never change.
T0 = 1_767_225_600_000
T1 = T0 + 1_500
T2 = T0 + 90_000


class Vector(TypedDict):
    description: str
    record: dict[str, Any]
    bytes_hex: str


def _resources(cpu: int, memory: int, gpus: int, network: int) -> dict[str, Any]:
    return {"cpu_millicores": cpu, "memory_mib": memory, "gpus": gpus, "network_mbps": network}


def _task(**overrides: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "kind": "train",
        "algorithm": "auto",
        "target_column": None,
        "problem_type": None,
        "search_space": None,
        "trial_budget": 20,
        "time_budget_s": 300,
        "cv_folds": 5,
        "scoring": None,
        "seed": None,
        "model_name": None,
        "model_ref": None,
        "options": {},
    }
    task.update(overrides)
    return task


_HOUSE_TASK = _task(
    algorithm="ridge",
    target_column="价格",
    problem_type="regression",
    search_space='{"ridge": {"alpha": {"type": "float", "low": 0.001, "high": 100, "log": true}}}',
    trial_budget=40,
    time_budget_s=600,
    cv_folds=10,
    scoring="neg_root_mean_squared_error",
    seed=42,
    model_name="房价-B区",
    options={"district": "B区", "house_type": "普通住宅"},
)
_HOUSE_DATA = {"name": "house_prices", "version": "sha256:" + "ab" * 32, "owner": "acme"}

# Keyed by the event's full name; each example is (description, record).
EXAMPLES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "lepton.NodeHeartbeat": [
        (
            "minimal: no labels, no GPU, idle, defaults",
            {
                "node_id": "n1",
                "region": "r1",
                "labels": {},
                "gpu_type": None,
                "capacity": _resources(1000, 1024, 0, 100),
                "usage": _resources(0, 0, 0, 0),
                "running_job_ids": [],
                "sent_at": T0,
                "sequence": 0,
                "agent_started_at": T0,
                "interval_ms": 1000,
            },
        ),
        (
            "full: GPU node in B区 running two jobs, unicode labels, large sequence",
            {
                "node_id": "gpu-节点-07",
                "region": "cn-B区",
                "labels": {"zone": "B区", "tier": "普通", "rack": "r42"},
                "gpu_type": "a100",
                "capacity": _resources(64_000, 524_288, 8, 100_000),
                "usage": _resources(31_500, 200_000, 4, 2_345),
                "running_job_ids": ["job-1", "训练-2"],
                "sent_at": T2,
                "sequence": 9_007_199_254_740_993,
                "agent_started_at": T0,
                "interval_ms": 500,
            },
        ),
    ],
    "lepton.JobRequested": [
        (
            "minimal: train with auto algorithm, no dataset, defaults, nulls",
            {
                "job_id": "j1",
                "tenant": "t1",
                "name": None,
                "priority_class": "normal",
                "priority": 0,
                "preemptible": True,
                "task": _task(),
                "dataset": None,
                "demand": _resources(500, 256, 0, 0),
                "constraints": {"region": None, "labels": {}, "gpu_type": None},
                "gang_size": 1,
                "max_retries": 3,
                "placement_policy": None,
                "runtime_estimate_s": None,
                "submitted_at": T0,
                "submitted_by": None,
            },
        ),
        (
            "full: the seed's house-price model for 普通住宅 in B区, gang of 3, GPU constraint",
            {
                "job_id": "job-房价-001",
                "tenant": "acme",
                "name": "房价预测 普通住宅 B区",
                "priority_class": "high",
                "priority": 1000,
                "preemptible": False,
                "task": _HOUSE_TASK,
                "dataset": {"name": "house_prices", "version": None, "owner": "地产数据"},
                "demand": _resources(2_500, 4_096, 1, 250),
                "constraints": {"region": "cn-B区", "labels": {"disk": "ssd"}, "gpu_type": "a100"},
                "gang_size": 3,
                "max_retries": 5,
                "placement_policy": "drf",
                "runtime_estimate_s": 900,
                "submitted_at": T0,
                "submitted_by": "王小明",
            },
        ),
    ],
    "lepton.JobAssigned": [
        (
            "minimal: one worker, no dataset",
            {
                "job_id": "j1",
                "node_id": "n1",
                "action": "run",
                "worker_index": 0,
                "gang_size": 1,
                "lease_epoch": 1,
                "attempt": 0,
                "granted": _resources(500, 256, 0, 0),
                "tenant": "t1",
                "task": _task(),
                "dataset": None,
                "reason": None,
                "assigned_at": T0,
            },
        ),
        (
            "full: worker 2 of 3 of the house-price job after a requeue, dataset resolved",
            {
                "job_id": "job-房价-001",
                "node_id": "gpu-节点-07",
                "action": "run",
                "worker_index": 2,
                "gang_size": 3,
                "lease_epoch": 4_294_967_297,
                "attempt": 2,
                "granted": _resources(2_500, 4_096, 1, 250),
                "tenant": "acme",
                "task": _HOUSE_TASK,
                "dataset": _HOUSE_DATA,
                "reason": None,
                "assigned_at": T1,
            },
        ),
        (
            "stop: a preempted worker",
            {
                "job_id": "j1",
                "node_id": "n1",
                "action": "stop",
                "worker_index": 0,
                "gang_size": 1,
                "lease_epoch": 1,
                "attempt": 0,
                "granted": _resources(500, 256, 0, 0),
                "tenant": "t1",
                "task": _task(),
                "dataset": None,
                "reason": "preempted by job-房价-001",
                "assigned_at": T2,
            },
        ),
    ],
    "lepton.JobEvent": [
        (
            "minimal: queued",
            {
                "job_id": "j1",
                "kind": "queued",
                "tenant": "t1",
                "node_id": None,
                "lease_epoch": None,
                "worker_index": None,
                "attempt": 0,
                "reason": None,
                "field": None,
                "progress_percent": None,
                "stage": None,
                "error_type": None,
                "model_id": None,
                "time": T0,
            },
        ),
        (
            "rejected: names the field and the reason",
            {
                "job_id": "j2",
                "kind": "rejected",
                "tenant": "t1",
                "node_id": None,
                "lease_epoch": None,
                "worker_index": None,
                "attempt": 0,
                "reason": "demand.gpus must be >= 0, got -1",
                "field": "demand.gpus",
                "progress_percent": None,
                "stage": None,
                "error_type": None,
                "model_id": None,
                "time": T0,
            },
        ),
        (
            "full: progress of a worker in B区, float percent",
            {
                "job_id": "job-房价-001",
                "kind": "progress",
                "tenant": "acme",
                "node_id": "gpu-节点-07",
                "lease_epoch": 4_294_967_297,
                "worker_index": 2,
                "attempt": 2,
                "reason": None,
                "field": None,
                "progress_percent": 42.5,
                "stage": "搜索 trial 17/40",
                "error_type": None,
                "model_id": None,
                "time": T1,
            },
        ),
        (
            "failed: error type and message",
            {
                "job_id": "job-房价-001",
                "kind": "failed",
                "tenant": "acme",
                "node_id": "gpu-节点-07",
                "lease_epoch": 4_294_967_297,
                "worker_index": 0,
                "attempt": 1,
                "reason": "target column '价格' not in dataset house_prices",
                "field": "task.target_column",
                "progress_percent": None,
                "stage": None,
                "error_type": "TargetColumnMissing",
                "model_id": None,
                "time": T2,
            },
        ),
    ],
    "lepton.DatasetRequested": [
        (
            "minimal: one CSV source, inferred spec",
            {
                "request_id": "r1",
                "tenant": "t1",
                "dataset": "d1",
                "sources": [
                    {"name": "s1", "kind": "csv", "uri": "d1.csv", "query": None, "options": {}}
                ],
                "spec": None,
                "integration": {"mode": "union", "join_keys": [], "join_how": "inner"},
                "region": None,
                "description": None,
                "requested_at": T0,
                "requested_by": None,
            },
        ),
        (
            "full: house prices from a GBK CSV joined with a PostgreSQL query, with a spec",
            {
                "request_id": "req-房价-7",
                "tenant": "acme",
                "dataset": "house_prices",
                "sources": [
                    {
                        "name": "挂牌",
                        "kind": "csv",
                        "uri": "listings/房价.csv",
                        "query": None,
                        "options": {"delimiter": ";", "encoding": "gbk", "header": "true"},
                    },
                    {
                        "name": "districts",
                        "kind": "postgres",
                        "uri": "warehouse",
                        "query": "SELECT 区域, 均价 FROM districts WHERE 区域 = 'B区'",
                        "options": {},
                    },
                ],
                "spec": (
                    '{"columns": {"房型": {"type": "category", "categories": '
                    '["普通住宅", "公寓", "别墅"]}, "区域": {"type": "category", '
                    '"categories": ["A区", "B区", "C区"]}}}'
                ),
                "integration": {"mode": "join", "join_keys": ["区域"], "join_how": "left"},
                "region": "cn-B区",
                "description": "二手房价格 — B区",
                "requested_at": T0,
                "requested_by": "王小明",
            },
        ),
    ],
    "lepton.DataReady": [
        (
            "minimal: one column, nothing cleaned",
            {
                "request_id": "r1",
                "tenant": "t1",
                "dataset": "d1",
                "version": "sha256:" + "00" * 32,
                "reused": False,
                "rows": 0,
                "columns": [{"name": "x", "type": "float", "nullable": False, "sensitive": False}],
                "quality": {
                    "rows_read": 0,
                    "rows_rejected": 0,
                    "duplicates_removed": 0,
                    "values_imputed": 0,
                    "outliers_flagged": 0,
                    "rules": [],
                },
                "spec_inferred": True,
                "spec": "{}",
                "lineage": [],
                "location": "datasets.d1_00",
                "region": None,
                "ready_at": T0,
            },
        ),
        (
            "full: cleaned house prices with per-rule counts and lineage",
            {
                "request_id": "req-房价-7",
                "tenant": "acme",
                "dataset": "house_prices",
                "version": _HOUSE_DATA["version"],
                "reused": True,
                "rows": 1_000_000,
                "columns": [
                    {"name": "面积", "type": "float", "nullable": False, "sensitive": False},
                    {"name": "房型", "type": "category", "nullable": False, "sensitive": False},
                    {"name": "区域", "type": "category", "nullable": False, "sensitive": False},
                    {"name": "业主电话", "type": "string", "nullable": True, "sensitive": True},
                    {"name": "价格", "type": "float", "nullable": False, "sensitive": False},
                ],
                "quality": {
                    "rows_read": 1_012_345,
                    "rows_rejected": 12,
                    "duplicates_removed": 12_333,
                    "values_imputed": 4_567,
                    "outliers_flagged": 1,
                    "rules": [
                        {"rule": "dedupe", "column": None, "count": 12_333},
                        {"rule": "missing:median", "column": "面积", "count": 4_567},
                        {"rule": "category", "column": "房型", "count": 12},
                    ],
                },
                "spec_inferred": False,
                "spec": '{"columns": {"房型": {"type": "category"}}}',
                "lineage": [
                    {
                        "name": "挂牌",
                        "kind": "csv",
                        "uri": "listings/房价.csv",
                        "content_hash": "sha256:" + "cd" * 32,
                        "rows": 1_012_000,
                    },
                    {
                        "name": "districts",
                        "kind": "postgres",
                        "uri": "warehouse",
                        "content_hash": "sha256:" + "ef" * 32,
                        "rows": 345,
                    },
                ],
                "location": "datasets.house_prices_abab",
                "region": "cn-B区",
                "ready_at": T2,
            },
        ),
    ],
    "lepton.DataRejected": [
        (
            "minimal: empty file",
            {
                "request_id": "r1",
                "tenant": "t1",
                "dataset": "d1",
                "code": "empty",
                "reason": "source s1 has no rows",
                "source": None,
                "column": None,
                "row": None,
                "rejected_at": T0,
            },
        ),
        (
            "full: a value outside the spec's categories, located precisely",
            {
                "request_id": "req-房价-8",
                "tenant": "acme",
                "dataset": "house_prices",
                "code": "spec_violation",
                "reason": "房型 '城堡' is not one of 普通住宅, 公寓, 别墅",
                "source": "挂牌",
                "column": "房型",
                "row": 4_242,
                "rejected_at": T1,
            },
        ),
    ],
    "lepton.ModelReady": [
        (
            "minimal: a linear regression with one fold score list",
            {
                "model_id": "m1",
                "job_id": "j1",
                "attempt": 0,
                "tenant": "t1",
                "model_name": "d1",
                "dataset": {"name": "d1", "version": "sha256:" + "00" * 32, "owner": "t1"},
                "problem_type": "regression",
                "target_column": "y",
                "feature_columns": ["x"],
                "algorithm": "linear_regression",
                "parameters": "{}",
                "scoring": "r2",
                "cv_score": 0.5,
                "cv_fold_scores": [0.5],
                "trials": 1,
                "training_seconds": 0.25,
                "artifact_uri": "file:///var/lib/lepton/artifacts/m1.skops",
                "artifact_format": "skops",
                "artifact_sha256": "00" * 32,
                "holdout_fraction": 0.0,
                "split_seed": 0,
                "ready_at": T0,
            },
        ),
        (
            "full: the house-price ridge model",
            {
                "model_id": "model-房价-001-2",
                "job_id": "job-房价-001",
                "attempt": 2,
                "tenant": "acme",
                "model_name": "房价-B区",
                "dataset": _HOUSE_DATA,
                "problem_type": "regression",
                "target_column": "价格",
                "feature_columns": ["面积", "房型", "区域"],
                "algorithm": "ridge",
                "parameters": '{"alpha": 0.123}',
                "scoring": "neg_root_mean_squared_error",
                "cv_score": -12345.678,
                "cv_fold_scores": [-12000.5, -12691.25, -12345.284],
                "trials": 40,
                "training_seconds": 31.337,
                "artifact_uri": "s3://lepton-artifacts/acme/房价-B区/model-房价-001-2.skops",
                "artifact_format": "skops",
                "artifact_sha256": "9f" * 32,
                "holdout_fraction": 0.2,
                "split_seed": 42,
                "ready_at": T2,
            },
        ),
    ],
    "lepton.PredictRequested": [
        (
            "minimal: one record for the champion",
            {
                "request_id": "r1",
                "tenant": "t1",
                "model": "m",
                "rows": [{"x": 1.5}],
                "requested_by": None,
                "requested_at": T0,
            },
        ),
        (
            "full: the seed's example, a 150 m² 普通住宅 in B区, and every value type",
            {
                "request_id": "predict-房价-7",
                "tenant": "acme",
                "model": "房价-B区@model-房价-001-2",
                "rows": [
                    {"面积": 150.0, "房型": "普通住宅", "区域": "B区", "楼层": 12, "学区": True},
                    {"面积": 88.5, "房型": "公寓", "区域": "A区", "楼层": None, "学区": False},
                ],
                "requested_by": "王小明",
                "requested_at": T1,
            },
        ),
    ],
    "lepton.PredictionResult": [
        (
            "minimal: an error before any model was chosen",
            {
                "request_id": "r1",
                "tenant": "t1",
                "model_name": "m",
                "model_id": None,
                "problem_type": "unknown",
                "predictions": [],
                "probabilities": [],
                "error": {"code": "no_champion", "message": "m has no champion yet"},
                "warnings": [],
                "scored_at": T0,
            },
        ),
        (
            "full: a classifier's labels and probabilities, with a warning",
            {
                "request_id": "predict-诊断-3",
                "tenant": "医院",
                "model_name": "乳腺癌诊断",
                "model_id": "model-诊断-9",
                "problem_type": "binary",
                "predictions": ["良性", "恶性"],
                "probabilities": [{"良性": 0.93, "恶性": 0.07}, {"良性": 0.2, "恶性": 0.8}],
                "error": None,
                "warnings": ["column 科室: category '急诊' was not seen in training"],
                "scored_at": T2,
            },
        ),
    ],
    "lepton.ModelEvaluated": [
        (
            "minimal: regression metrics only",
            {
                "model_id": "m1",
                "tenant": "t1",
                "model_name": "d1",
                "dataset": {"name": "d1", "version": "sha256:" + "00" * 32, "owner": "t1"},
                "problem_type": "regression",
                "holdout_rows": 20,
                "cv_folds": 5,
                "seed": 0,
                "metrics": {"r2": 0.5},
                "cv_metrics": {},
                "train_metrics": {},
                "findings": [],
                "feature_importance": {},
                "class_labels": [],
                "confusion_matrix": [],
                "curves": [],
                "plots": {},
                "evaluated_at": T0,
            },
        ),
        (
            "full: a binary classifier with findings, confusion matrix and a ROC curve",
            {
                "model_id": "model-诊断-9",
                "tenant": "医院",
                "model_name": "乳腺癌诊断",
                "dataset": {
                    "name": "breast_cancer",
                    "version": "sha256:" + "12" * 32,
                    "owner": "医院",
                },
                "problem_type": "binary",
                "holdout_rows": 114,
                "cv_folds": 5,
                "seed": 7,
                "metrics": {
                    "accuracy": 0.956140350877193,
                    "recall_macro": 0.95,
                    "f1_macro": 0.9527,
                    "roc_auc": 0.99,
                    "log_loss": 0.1,
                },
                "cv_metrics": {"f1_macro": [0.94, 0.96, 0.95, 0.97, 0.93]},
                "train_metrics": {"f1_macro": 0.999},
                "findings": [
                    {
                        "severity": "warning",
                        "code": "overfitting",
                        "message": "训练 F1 0.999 vs 交叉验证 0.95: regularise more",
                        "feature": None,
                        "value": 0.049,
                    },
                    {
                        "severity": "info",
                        "code": "top_features",
                        "message": "worst radius explains most of the score",
                        "feature": "worst radius",
                        "value": 0.21,
                    },
                ],
                "feature_importance": {"worst radius": 0.21, "mean texture": 0.03},
                "class_labels": ["良性", "恶性"],
                "confusion_matrix": [[70, 2], [3, 39]],
                "curves": [
                    {
                        "kind": "roc",
                        "label": None,
                        "x": [0.0, 0.05, 1.0],
                        "y": [0.0, 0.9, 1.0],
                    }
                ],
                "plots": {"roc": "file:///var/lib/lepton/plots/model-诊断-9/roc.png"},
                "evaluated_at": T2,
            },
        ),
    ],
    "lepton.ModelPromoted": [
        (
            "minimal: the first model of a name becomes champion",
            {
                "tenant": "t1",
                "model_name": "d1",
                "model_id": "m1",
                "verdict": "promoted",
                "previous_champion_id": None,
                "policy": '{"primary": "r2"}',
                "primary_metric": "r2",
                "challenger_score": 0.5,
                "champion_score": None,
                "guards": [],
                "evidence": {
                    "method": "none",
                    "p_value": None,
                    "ci_low": None,
                    "ci_high": None,
                    "challenger_folds": [],
                    "champion_folds": [],
                },
                "reason": "no champion yet",
                "decided_by": None,
                "decided_at": T0,
            },
        ),
        (
            "full: a challenger wins with a paired test and guards",
            {
                "tenant": "acme",
                "model_name": "房价-B区",
                "model_id": "model-房价-001-2",
                "verdict": "promoted",
                "previous_champion_id": "model-房价-000-0",
                "policy": '{"primary": "r2", "min_improvement": 0.01, "guards": ["mae"]}',
                "primary_metric": "r2",
                "challenger_score": 0.91,
                "champion_score": 0.88,
                "guards": [
                    {"metric": "mae", "challenger": 10_500.0, "champion": 11_200.0, "passed": True}
                ],
                "evidence": {
                    "method": "paired_t_test",
                    "p_value": 0.003,
                    "ci_low": 0.012,
                    "ci_high": 0.048,
                    "challenger_folds": [0.9, 0.92, 0.91],
                    "champion_folds": [0.87, 0.89, 0.88],
                },
                "reason": "r2 +0.03 (p=0.003) ≥ 0.01; mae did not get worse",
                "decided_by": None,
                "decided_at": T2,
            },
        ),
    ],
    "lepton.Alert": [
        (
            "minimal: a platform alert resolving",
            {
                "rule": "consumer_lag_high",
                "subject": "scheduler/lepton.jobs.requested",
                "severity": "warning",
                "state": "resolved",
                "value": 0.0,
                "threshold": 10_000.0,
                "summary": "lag back to 0",
                "tenant": None,
                "labels": {},
                "active_since": T0,
                "time": T1,
            },
        ),
        (
            "full: a dead node in B区",
            {
                "rule": "node_dead",
                "subject": "gpu-节点-07",
                "severity": "critical",
                "state": "firing",
                "value": 16.5,
                "threshold": 15.0,
                "summary": "gpu-节点-07 (B区) silent for 16.5 s",
                "tenant": "acme",
                "labels": {"region": "cn-B区"},
                "active_since": T0,
                "time": T2,
            },
        ),
    ],
    "lepton.AuditEvent": [
        (
            "minimal: an allowed write",
            {
                "actor": "service:ingest",
                "tenant": "t1",
                "action": "write",
                "resource": "dataset:t1/d1",
                "owner": None,
                "outcome": "allowed",
                "detail": None,
                "region": None,
                "time": T0,
            },
        ),
        (
            "full: a denied cross-tenant read of a B区 dataset",
            {
                "actor": "王小明",
                "tenant": "竞争对手",
                "action": "read",
                "resource": "dataset:acme/house_prices@" + _HOUSE_DATA["version"],
                "owner": "acme",
                "outcome": "denied",
                "detail": "not shared with 竞争对手 in cn-B区",
                "region": "cn-B区",
                "time": T1,
            },
        ),
    ],
}


def schema_file_stem(event_name: str) -> str:
    """``lepton.NodeHeartbeat`` -> ``node_heartbeat``: the ``.avsc`` and vector file stem."""
    short = event_name.rsplit(".", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", short).lower()


def vectors_dir() -> Path:
    return schemas_dir() / "vectors"


def to_wire_values(value: Any) -> Any:
    """Turn decoded values back into Avro-level values: fastavro decodes
    ``timestamp-millis`` to aware datetimes, the vectors hold epoch milliseconds."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MS
    if isinstance(value, Mapping):
        return {key: to_wire_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_wire_values(item) for item in value]
    return value


def build_vectors(codec: Codec | None = None) -> dict[str, list[Vector]]:
    """Every example, encoded with the current schemas, by schema file stem."""
    codec = codec or default_codec()
    missing = set(codec.names) ^ set(EXAMPLES)
    if missing:
        raise ValueError(f"examples and schemas disagree on: {sorted(missing)}")
    return {
        schema_file_stem(name): [
            Vector(
                description=description,
                record=record,
                bytes_hex=codec.encode(name, record).hex(),
            )
            for description, record in examples
        ]
        for name, examples in sorted(EXAMPLES.items())
    }


def render_vector_file(vectors: list[Vector]) -> str:
    # Unicode stays readable: other implementations read the file as UTF-8 JSON.
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def stale_vector_files(directory: Path | None = None, codec: Codec | None = None) -> list[Path]:
    """Vector files that are missing or differ from what the codec produces now."""
    target = directory or vectors_dir()
    return [
        target / f"{stem}.json"
        for stem, vectors in build_vectors(codec).items()
        if not (target / f"{stem}.json").exists()
        or (target / f"{stem}.json").read_text(encoding="utf-8") != render_vector_file(vectors)
    ]


def write_vectors(directory: Path | None = None, codec: Codec | None = None) -> list[Path]:
    """Write (or rewrite) every vector file; returns the files that changed."""
    target = directory or vectors_dir()
    target.mkdir(parents=True, exist_ok=True)
    built = build_vectors(codec)
    changed = stale_vector_files(target, codec)
    for path in changed:
        path.write_text(render_vector_file(built[path.stem]), encoding="utf-8")
    return changed
