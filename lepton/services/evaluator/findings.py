"""The findings of an evaluation: fit, class balance, important features, suspected leaks.

Each check turns numbers the evaluation already has (or a seeded sample of rows) into
``Finding``s a person can act on; the thresholds come from ``EvaluationConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    r2_score,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from lepton.data.modeling import shown_label
from lepton.services.evaluator.metrics import (
    PRIMARY,
    Array,
    Outputs,
    fold_splits,
    metric_value,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from lepton.services.evaluator.evaluation import EvaluationConfig

__all__ = [
    "Finding",
    "Severity",
    "fit_findings",
    "imbalance_findings",
    "leakage_findings",
    "permutation_importance",
    "preparation_findings",
    "rank_features",
]

Severity = Literal["info", "warning", "error", "critical"]


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    message: str
    feature: str | None = None
    value: float | None = None

    def record(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "feature": self.feature,
            "value": self.value,
        }


def preparation_findings(steps: Sequence[Mapping[str, Any]]) -> list[Finding]:
    """What training excluded or transformed on its own (``ModelReady.preparation``), as
    findings: the columns a reader misses among the features, and why."""
    return [
        Finding("info", step["code"], step["message"], feature=step["column"]) for step in steps
    ]


def fit_findings(
    problem: str,
    train: Mapping[str, float],
    cv: Mapping[str, list[float]],
    y: Array,
    config: EvaluationConfig,
) -> list[Finding]:
    primary = PRIMARY[problem]
    folds = cv.get(primary)
    findings: list[Finding] = []
    if not folds:
        return findings
    mean, spread = float(np.mean(folds)), float(np.std(folds))
    fitted = train.get(primary)
    if fitted is not None and fitted - mean > config.overfit_gap:
        findings.append(
            Finding(
                "warning",
                "overfitting",
                f"{primary} is {fitted:.3f} on the training rows but {mean:.3f} in "
                "cross-validation: the model memorises its training data. Regularise more, "
                "simplify the model or add rows.",
                value=fitted - mean,
            )
        )
    if problem == "regression":
        if mean < config.underfit_r2:
            findings.append(
                Finding(
                    "warning",
                    "underfitting",
                    f"cross-validated r2 is {mean:.3f}: the model explains little of the "
                    "target. Add informative features or try a more flexible algorithm.",
                    value=mean,
                )
            )
    else:
        majority = float(pd.Series(y).value_counts(normalize=True).iloc[0])
        accuracy = float(np.mean(cv.get("accuracy", [1.0])))
        if accuracy <= majority + 0.02:
            findings.append(
                Finding(
                    "warning",
                    "underfitting",
                    f"cross-validated accuracy {accuracy:.3f} is no better than always "
                    f"predicting the most frequent class ({majority:.3f}). Add informative "
                    "features or try a more flexible algorithm.",
                    value=accuracy,
                )
            )
    if spread > config.unstable_std:
        findings.append(
            Finding(
                "warning",
                "unstable_folds",
                f"{primary} varies across folds (standard deviation {spread:.3f}, from "
                f"{min(folds):.3f} to {max(folds):.3f}): results depend on which rows are "
                "seen. More rows or a simpler model would make it steadier.",
                value=spread,
            )
        )
    return findings


def imbalance_findings(y: Array, config: EvaluationConfig) -> list[Finding]:
    shares = pd.Series(y).value_counts(normalize=True)
    smallest = float(shares.iloc[-1])
    if smallest >= config.imbalance_share:
        return []
    label = shown_label(shares.index[-1])
    return [
        Finding(
            "warning",
            "class_imbalance",
            f"class {label!r} is {smallest:.1%} of the rows: accuracy flatters the model. "
            "Judge it by recall, PR AUC or macro F1; consider class weights or resampling.",
            value=smallest,
        )
    ]


# Permuted rows scored by one predict call at most: one call amortises the pipeline's
# per-call overhead over every feature and repeat, the cap bounds its memory.
_PERMUTED_ROWS_PER_CALL = 200_000


def permutation_importance(
    pipeline: Any,
    X: pd.DataFrame,
    y: Array,
    metric: str,
    baseline: Outputs,
    repeats: int,
    seed: int,
) -> Array:
    """Mean drop of ``metric`` when each column is shuffled (``repeats`` seeded shuffles
    per column), as scikit-learn's ``permutation_importance`` defines it; the unshuffled
    score comes from ``baseline`` (predictions already made on these rows), and the
    shuffled copies of the rows are scored together in as few predict calls as fit."""
    reference = metric_value(metric, baseline)
    rng = np.random.default_rng(seed)
    rows = len(X)
    jobs = [(column, repeat) for column in range(X.shape[1]) for repeat in range(repeats)]
    drops = np.zeros((X.shape[1], repeats))
    per_call = max(1, _PERMUTED_ROWS_PER_CALL // max(rows, 1))
    for begin in range(0, len(jobs), per_call):
        batch = jobs[begin : begin + per_call]
        copies = []
        for column, _ in batch:
            copy = X.copy()
            copy.iloc[:, column] = X.iloc[rng.permutation(rows), column].to_numpy()
            copies.append(copy)
        # r2 and macro F1 need the predictions only (no per-class scores).
        predicted = np.asarray(pipeline.predict(pd.concat(copies, ignore_index=True)))
        for index, (column, repeat) in enumerate(batch):
            part = Outputs(y, predicted[index * rows : (index + 1) * rows], None, baseline.classes)
            drops[column, repeat] = reference - metric_value(metric, part)
    means: Array = drops.mean(axis=1)
    return means


def rank_features(
    pipeline: Any,
    X: pd.DataFrame,
    y: Array,
    problem: str,
    seed: int,
    config: EvaluationConfig,
    baseline: Outputs,
) -> tuple[dict[str, float], list[Finding]]:
    scoring = "r2" if problem == "regression" else "f1_macro"
    means = permutation_importance(
        pipeline, X, y, scoring, baseline, config.importance_repeats, seed
    )
    importance = {str(name): float(value) for name, value in zip(X.columns, means, strict=True)}
    ranked = sorted(importance.items(), key=lambda item: -item[1])[:3]
    listed = ", ".join(f"{name} ({value:.3f})" for name, value in ranked)
    finding = Finding(
        "info",
        "top_features",
        f"the features that matter most (drop in {scoring} when shuffled): {listed}.",
        feature=ranked[0][0] if ranked else None,
        value=ranked[0][1] if ranked else None,
    )
    return importance, [finding]


def _single_feature_score(column: pd.Series, y: Array, problem: str, seed: int) -> float:
    """How well one feature alone predicts the target: a shallow tree, 3-fold CV."""
    if column.dtype == np.float64:
        values = column.fillna(column.median() if column.notna().any() else 0.0).to_numpy()
    else:
        values = pd.factorize(column)[0].astype(np.float64)
    X = values.reshape(-1, 1)
    model = (
        DecisionTreeRegressor(max_depth=8, random_state=seed)
        if problem == "regression"
        else DecisionTreeClassifier(max_depth=8, random_state=seed)
    )
    scores = []
    for fit_rows, test_rows in fold_splits(y, problem, 3, seed):
        model.fit(X[fit_rows], y[fit_rows])
        predicted = model.predict(X[test_rows])
        scores.append(
            r2_score(y[test_rows], predicted)
            if problem == "regression"
            else accuracy_score(y[test_rows], predicted)
        )
    return float(np.mean(scores))


def leakage_findings(
    X: pd.DataFrame, y: Array, problem: str, seed: int, config: EvaluationConfig
) -> list[Finding]:
    if len(y) < 30:
        return []  # too few rows to tell a leak from luck
    majority = (
        0.0 if problem == "regression" else float(pd.Series(y).value_counts(normalize=True).iloc[0])
    )
    findings = []
    for name in X.columns:
        alone = _single_feature_score(X[name], y, problem, seed)
        if alone >= config.leakage_score and alone > majority + 0.01:
            metric = "r2" if problem == "regression" else "accuracy"
            findings.append(
                Finding(
                    "critical",
                    "suspected_leakage",
                    f"{name!r} alone predicts the target almost perfectly ({metric} "
                    f"{alone:.3f}): it may be derived from the target or only known after "
                    "the fact. Check how it is collected before trusting the model.",
                    feature=str(name),
                    value=alone,
                )
            )
    return findings
