"""The records the evaluator publishes for an evaluated model and its verdict."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lepton.services.evaluator.evaluation import Evaluation
    from lepton.services.evaluator.promotion import Decision, Policy

__all__ = ["evaluated_record", "now_ms", "promoted_record"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def evaluated_record(
    ready: dict[str, Any], evaluation: Evaluation, plot_uris: dict[str, str]
) -> dict[str, Any]:
    return {
        "model_id": ready["model_id"],
        "tenant": ready["tenant"],
        "model_name": ready["model_name"],
        "dataset": ready["dataset"],
        "problem_type": ready["problem_type"],
        "holdout_rows": evaluation.holdout_rows,
        "cv_folds": evaluation.cv_folds,
        "seed": evaluation.seed,
        "metrics": evaluation.metrics,
        "cv_metrics": evaluation.cv_metrics,
        "train_metrics": evaluation.train_metrics,
        "findings": [finding.record() for finding in evaluation.findings],
        "feature_importance": evaluation.feature_importance,
        "class_labels": evaluation.class_labels,
        "confusion_matrix": evaluation.confusion_matrix,
        "curves": [curve.record() for curve in evaluation.curves],
        "plots": plot_uris,
        "evaluated_at": now_ms(),
    }


def promoted_record(
    ready: dict[str, Any], policy: Policy, decision: Decision, previous: str | None
) -> dict[str, Any]:
    return {
        "tenant": ready["tenant"],
        "model_name": ready["model_name"],
        "model_id": ready["model_id"],
        "verdict": decision.verdict,
        "previous_champion_id": previous,
        "policy": policy.text(),
        "primary_metric": policy.primary,
        "challenger_score": decision.challenger_score,
        "champion_score": decision.champion_score,
        "guards": decision.guards,
        "evidence": decision.evidence,
        "reason": decision.reason,
        "decided_by": None,
        "decided_at": now_ms(),
    }
