"""The metrics an evaluation reports, computed from a model's outputs on some rows.

``outputs`` runs the model once (labels, and probabilities for classifiers); every metric
then reads those outputs, so scoring a model on many metrics costs one prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "PRIMARY",
    "REGRESSION_METRICS",
    "Array",
    "IntArray",
    "Outputs",
    "fast_metric",
    "fold_splits",
    "metric_value",
    "metrics_for",
    "outputs",
    "score",
]

Array = np.ndarray[Any, Any]
IntArray = np.ndarray[Any, np.dtype[np.intp]]

# Direction of every metric an evaluation reports; the promotion policy names these.
HIGHER_IS_BETTER: Mapping[str, bool] = {
    "accuracy": True,
    "precision_macro": True,
    "recall_macro": True,
    "f1_macro": True,
    "f1_weighted": True,
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
    "mape": False,
}
CLASSIFICATION_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "f1_weighted",
    "roc_auc",
    "pr_auc",
    "log_loss",
)
REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")
# The metric the findings reason about: the trainer's default search objective.
PRIMARY = {"regression": "r2", "binary": "f1_macro", "multiclass": "f1_macro"}


def metrics_for(problem: str) -> tuple[str, ...]:
    return REGRESSION_METRICS if problem == "regression" else CLASSIFICATION_METRICS


@dataclass(frozen=True, slots=True)
class Outputs:
    """What a model said about some rows, with the truth to judge it by."""

    y: Array
    predicted: Array
    scores: Array | None = None  # per-class scores, rows by classes; None for regression
    classes: Array | None = None
    probabilities: bool = False  # whether ``scores`` are probabilities

    def rows(self, picked: Array) -> Outputs:
        return Outputs(
            self.y[picked],
            self.predicted[picked],
            self.scores[picked] if self.scores is not None else None,
            self.classes,
            self.probabilities,
        )


def outputs(model: Any, X: pd.DataFrame, y: Array) -> Outputs:
    """``model``'s predictions and per-class scores for ``X``, against the truth ``y``.

    A classifier pipeline's preprocessing runs once for both (what ``Pipeline.predict``
    and ``predict_proba`` each do, then the final estimator's own methods)."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        return Outputs(y, np.asarray(model.predict(X)))
    if isinstance(model, Pipeline) and len(model.steps) > 1:
        X, model = model[:-1].transform(X), model.steps[-1][1]
    predicted = np.asarray(model.predict(X))
    if hasattr(model, "predict_proba"):
        try:
            return Outputs(y, predicted, np.asarray(model.predict_proba(X)), classes, True)
        except AttributeError:  # an SVC without probability=True has the method, no result
            pass
    decision = np.asarray(model.decision_function(X))
    if decision.ndim == 1:
        decision = np.column_stack([-decision, decision])
    return Outputs(y, predicted, decision, classes, False)


def _one_vs_rest(out: Outputs, metric: Callable[[Array, Array], float]) -> float:
    """Macro mean of a ranking metric over classes; binary: the second (positive) class.
    A class absent from the rows (a small fold) has no curve and is skipped."""
    if out.scores is None or out.classes is None:
        return math.nan
    columns = [1] if len(out.classes) == 2 else range(len(out.classes))
    values = []
    for column in columns:
        truth = out.y == out.classes[column]
        if truth.all() or not truth.any():
            continue
        values.append(float(metric(truth, out.scores[:, column])))
    return float(np.mean(values)) if values else math.nan


def _averaged(metric: Callable[..., float], average: str) -> Callable[[Outputs], float]:
    def averaged(out: Outputs) -> float:
        labels = list(out.classes) if out.classes is not None else None
        return float(metric(out.y, out.predicted, labels=labels, average=average, zero_division=0))

    return averaged


def _log_loss(out: Outputs) -> float:
    if out.scores is None or out.classes is None or not out.probabilities:
        return math.nan
    return float(log_loss(out.y, out.scores, labels=list(out.classes)))


_METRICS: Mapping[str, Callable[[Outputs], float]] = {
    "accuracy": lambda out: float(accuracy_score(out.y, out.predicted)),
    "precision_macro": _averaged(precision_score, "macro"),
    "recall_macro": _averaged(recall_score, "macro"),
    "f1_macro": _averaged(f1_score, "macro"),
    "f1_weighted": _averaged(f1_score, "weighted"),
    "roc_auc": lambda out: _one_vs_rest(out, roc_auc_score),
    "pr_auc": lambda out: _one_vs_rest(out, average_precision_score),
    "log_loss": _log_loss,
    "rmse": lambda out: float(root_mean_squared_error(out.y, out.predicted)),
    "mae": lambda out: float(mean_absolute_error(out.y, out.predicted)),
    "r2": lambda out: float(r2_score(out.y, out.predicted)) if len(out.y) > 1 else math.nan,
    "mape": lambda out: float(mean_absolute_percentage_error(out.y, out.predicted)),
}


def metric_value(metric: str, out: Outputs) -> float:
    """One metric; NaN when these outputs cannot define it (one class only, no scores)."""
    return _METRICS[metric](out)


def fast_metric(metric: str, out: Outputs) -> float:
    """:func:`metric_value` computed with plain numpy where that is exact (the same
    formulas as scikit-learn's, without its validation overhead): for metrics evaluated
    many times on resamples of the same rows (the bootstrap). Others fall back."""
    y, predicted = out.y, out.predicted
    if metric in ("rmse", "mae", "r2", "mape") and y.dtype.kind == "f" and len(y) > 1:
        error = y - predicted
        if metric == "rmse":
            return float(np.sqrt(np.mean(error * error)))
        if metric == "mae":
            return float(np.mean(np.abs(error)))
        if metric == "mape":
            eps = np.finfo(np.float64).eps
            return float(np.mean(np.abs(error) / np.maximum(np.abs(y), eps)))
        residual = float(np.sum(error * error))
        total = float(np.sum((y - y.mean()) ** 2))
        if total == 0.0:
            return 1.0 if residual == 0.0 else 0.0
        return 1.0 - residual / total
    counts = _class_counts(out) if metric in _COUNTED else None
    if counts is None:
        return metric_value(metric, out)
    truth, said, hits = counts
    if metric == "accuracy":
        return float(hits.sum() / len(y))
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "precision_macro":
            per_class = np.where(said > 0, hits / np.maximum(said, 1), 0.0)
        elif metric == "recall_macro":
            per_class = np.where(truth > 0, hits / np.maximum(truth, 1), 0.0)
        else:
            denominator = truth + said
            per_class = np.where(denominator > 0, 2 * hits / np.maximum(denominator, 1), 0.0)
    if metric == "f1_weighted":
        support = truth.sum()
        return float(np.sum(per_class * truth) / support) if support else 0.0
    return float(per_class.mean())


_COUNTED = frozenset(("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted"))


def _class_counts(out: Outputs) -> tuple[Array, Array, Array] | None:
    """Per class (in ``out.classes`` order): true rows, predicted rows, correct rows;
    None when some label is not one of the classes (scikit-learn's rules apply then)."""
    if out.classes is None or len(out.y) == 0:
        return None
    classes = np.asarray(out.classes)
    try:
        order = np.argsort(classes, kind="stable")
        ordered = classes[order]
        truth_at = np.searchsorted(ordered, out.y)
        said_at = np.searchsorted(ordered, out.predicted)
    except TypeError:  # labels of mixed types
        return None
    n = len(classes)
    if (truth_at >= n).any() or (said_at >= n).any():
        return None
    if not (
        np.array_equal(ordered[truth_at], out.y) and np.array_equal(ordered[said_at], out.predicted)
    ):
        return None
    truth = np.bincount(order[truth_at], minlength=n).astype(np.float64)
    said = np.bincount(order[said_at], minlength=n).astype(np.float64)
    right = truth_at == said_at
    hits = np.bincount(order[truth_at[right]], minlength=n).astype(np.float64)
    return truth, said, hits


def score(problem: str, out: Outputs) -> dict[str, float]:
    """Every metric of the task that the outputs define."""
    values = {name: metric_value(name, out) for name in metrics_for(problem)}
    return {name: value for name, value in values.items() if math.isfinite(value)}


def fold_splits(y: Array, problem: str, folds: int, seed: int) -> list[tuple[IntArray, IntArray]]:
    """Seeded cross-validation folds, stratified when every class fills each fold."""
    splitter: KFold | StratifiedKFold = KFold(folds, shuffle=True, random_state=seed)
    if problem != "regression" and pd.Series(y).value_counts().min() >= folds:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(y), 1))
    return [(a.astype(np.intp), b.astype(np.intp)) for a, b in splitter.split(placeholder, y)]
