"""What an evaluation computes, with no Kafka, database or files inside.

From a dataset frame and a fitted pipeline this module rebuilds the rows the trainer held
out (:func:`lepton.data.modeling.holdout_split` with the model's fraction and seed), scores the
pipeline on them, cross-validates clones of it on the training rows (stratified for
classification, seeded), and analyses the result into findings: over- and under-fitting,
class imbalance, unstable folds, the most important features (permutation importance)
and suspected leakage.

Cross-validation, permutation importance and the leakage probe run on seeded samples of
at most ``EvaluationConfig.max_cv_rows`` / ``max_importance_rows`` rows, so that the time
an evaluation takes is bounded whatever the dataset's size; the hold-out metrics always
use every held-out row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_absolute_percentage_error,
    precision_recall_curve,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
    root_mean_squared_error,
)
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from lepton.data.modeling import holdout_split, labelled
from services.evaluator.inputs import ColumnsMismatch, input_schema

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "REGRESSION_METRICS",
    "Curve",
    "Evaluation",
    "EvaluationConfig",
    "Finding",
    "Outputs",
    "Prepared",
    "evaluate",
    "fast_metric",
    "fold_scores",
    "label_text",
    "metric_value",
    "metrics_for",
    "outputs",
    "prepare",
    "score",
]

Array = np.ndarray[Any, Any]
IntArray = np.ndarray[Any, np.dtype[np.intp]]
Severity = Literal["info", "warning", "error", "critical"]

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
# Points kept per curve and residuals kept for the scatter: enough to draw, small on the wire.
_CURVE_POINTS = 200
_RESIDUAL_POINTS = 500


def metrics_for(problem: str) -> tuple[str, ...]:
    return REGRESSION_METRICS if problem == "regression" else CLASSIFICATION_METRICS


def label_text(value: Any) -> str:
    """A class label as text: 1.0 (a numeric target read as float64) is "1"."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class EvaluationConfig:
    cv_folds: int = 5
    max_cv_rows: int = 20_000
    max_importance_rows: int = 5_000
    importance_repeats: int = 3
    # Findings' thresholds, on the primary metric (r2 or macro F1, both 0..1).
    overfit_gap: float = 0.1
    unstable_std: float = 0.05
    underfit_r2: float = 0.3
    imbalance_share: float = 0.1
    leakage_score: float = 0.98


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


@dataclass(frozen=True, slots=True)
class Curve:
    kind: str  # roc, precision_recall, calibration, residuals
    label: str | None
    x: list[float]
    y: list[float]

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "label": self.label, "x": self.x, "y": self.y}


@dataclass(slots=True)
class Evaluation:
    holdout_rows: int
    cv_folds: int
    seed: int
    metrics: dict[str, float]
    cv_metrics: dict[str, list[float]]
    train_metrics: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    feature_importance: dict[str, float] = field(default_factory=dict)
    class_labels: list[str] = field(default_factory=list)
    confusion_matrix: list[list[int]] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    # The model's outputs on the hold-out rows (not published: the champion comparison
    # scores the champion on the same rows against them).
    held: Outputs | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A dataset split as the trainer split it, with the sample cross-validation uses.

    ``X`` has every column of the dataset but the target (a champion trained on other
    columns of the same data can be scored on the same rows)."""

    X: pd.DataFrame
    y: Array
    problem: str
    seed: int
    train: IntArray  # positions in X of the rows the model was trained on
    holdout: IntArray  # positions of the rows it never saw
    cv_rows: IntArray  # seeded sample of ``train`` that cross-validation uses
    folds: list[tuple[IntArray, IntArray]]  # positions into ``cv_rows``


def _sample(positions: IntArray, limit: int, seed: int) -> IntArray:
    if len(positions) <= limit:
        return positions
    chosen = np.random.default_rng(seed).choice(positions, size=limit, replace=False)
    return np.sort(chosen)


def prepare(
    frame: pd.DataFrame,
    *,
    target: str,
    features: Sequence[str],
    problem: str,
    holdout_fraction: float,
    seed: int,
    config: EvaluationConfig,
) -> Prepared:
    """Raises :class:`ColumnsMismatch` when the data no longer has the model's columns."""
    missing = [name for name in (target, *features) if name not in frame.columns]
    if missing:
        raise ColumnsMismatch(
            f"the dataset lacks the model's column(s) {', '.join(missing)} "
            f"(it has {', '.join(map(str, frame.columns))})"
        )
    others = [name for name in frame.columns if name != target]
    X, y = labelled(frame, target, others)
    train, holdout = holdout_split(y, problem, holdout_fraction, seed)
    cv_rows = _sample(train, config.max_cv_rows, seed)
    folds = _splits(y[cv_rows], problem, config.cv_folds, seed)
    return Prepared(X, y, problem, seed, train, holdout, cv_rows, folds)


def _splits(y: Array, problem: str, folds: int, seed: int) -> list[tuple[IntArray, IntArray]]:
    splitter: KFold | StratifiedKFold = KFold(folds, shuffle=True, random_state=seed)
    if problem != "regression" and pd.Series(y).value_counts().min() >= folds:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(y), 1))
    return [(a.astype(np.intp), b.astype(np.intp)) for a, b in splitter.split(placeholder, y)]


# -- metrics --------------------------------------------------------------------------


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


def fold_scores(
    pipeline: Any, prepared: Prepared, features: Sequence[str]
) -> dict[str, list[float]]:
    """Every metric on each fold, for a clone of ``pipeline`` refitted per fold."""
    X = prepared.X.iloc[prepared.cv_rows][list(features)]
    y = prepared.y[prepared.cv_rows]
    per_fold: dict[str, list[float]] = {}
    for fit_rows, test_rows in prepared.folds:
        model = clone(pipeline).fit(X.iloc[fit_rows], y[fit_rows])
        for name, value in score(
            prepared.problem, outputs(model, X.iloc[test_rows], y[test_rows])
        ).items():
            per_fold.setdefault(name, []).append(value)
    # A metric undefined on some fold (a class missing from it) is not comparable per fold.
    return {name: values for name, values in per_fold.items() if len(values) == len(prepared.folds)}


# -- curves ---------------------------------------------------------------------------


def _thin(x: Array, y: Array) -> tuple[list[float], list[float]]:
    if len(x) > _CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(x) - 1, _CURVE_POINTS).round().astype(int))
        x, y = x[keep], y[keep]
    return [float(v) for v in x], [float(v) for v in y]


def _classification_curves(out: Outputs) -> list[Curve]:
    assert out.classes is not None
    assert out.scores is not None
    curves = []
    binary = len(out.classes) == 2
    for column in [1] if binary else range(len(out.classes)):
        truth = out.y == out.classes[column]
        if truth.all() or not truth.any():
            continue
        label = None if binary else label_text(out.classes[column])
        fpr, tpr, _ = roc_curve(truth, out.scores[:, column])
        curves.append(Curve("roc", label, *_thin(fpr, tpr)))
        precision, recall, _ = precision_recall_curve(truth, out.scores[:, column])
        curves.append(Curve("precision_recall", label, *_thin(recall, precision)))
        if out.probabilities:
            observed, predicted = calibration_curve(truth, out.scores[:, column], n_bins=10)
            curves.append(Curve("calibration", label, *_thin(predicted, observed)))
    return curves


def _residual_curve(y: Array, predicted: Array, seed: int) -> Curve:
    keep = _sample(np.arange(len(y), dtype=np.intp), _RESIDUAL_POINTS, seed)
    return Curve(
        "residuals",
        None,
        [float(v) for v in predicted[keep]],
        [float(v) for v in (y - predicted)[keep]],
    )


def _residual_summary(y: Array, predicted: Array) -> dict[str, float]:
    residuals = y - predicted
    return {
        "residual_mean": float(residuals.mean()),
        "residual_std": float(residuals.std()),
        "residual_median": float(np.median(residuals)),
        "residual_p95_abs": float(np.percentile(np.abs(residuals), 95)),
    }


# -- findings -------------------------------------------------------------------------


def _fit_findings(
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


def _imbalance(y: Array, config: EvaluationConfig) -> list[Finding]:
    shares = pd.Series(y).value_counts(normalize=True)
    smallest = float(shares.iloc[-1])
    if smallest >= config.imbalance_share:
        return []
    label = label_text(shares.index[-1])
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


def _permutation_importance(
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


def _importance(
    pipeline: Any,
    X: pd.DataFrame,
    y: Array,
    problem: str,
    seed: int,
    config: EvaluationConfig,
    baseline: Outputs,
) -> tuple[dict[str, float], list[Finding]]:
    scoring = "r2" if problem == "regression" else "f1_macro"
    means = _permutation_importance(
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
    for fit_rows, test_rows in _splits(y, problem, 3, seed):
        model.fit(X[fit_rows], y[fit_rows])
        predicted = model.predict(X[test_rows])
        scores.append(
            r2_score(y[test_rows], predicted)
            if problem == "regression"
            else accuracy_score(y[test_rows], predicted)
        )
    return float(np.mean(scores))


def _leakage(
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


# -- the evaluation -------------------------------------------------------------------


def evaluate(
    pipeline: Any,
    prepared: Prepared,
    features: Sequence[str],
    config: EvaluationConfig,
) -> Evaluation:
    """Hold-out metrics, per-fold cross-validation, training metrics and findings.

    Raises :class:`ColumnsMismatch` when a column the model reads as a number holds text
    in this dataset."""
    features = list(features)
    problem, seed = prepared.problem, prepared.seed
    input_schema(pipeline, features).check(prepared.X, "the dataset")
    X, y = prepared.X[features], prepared.y
    cv = fold_scores(pipeline, prepared, features)
    # The stored pipeline was fitted on all training rows: its score on (a sample of)
    # them, against cross-validation, shows how much it memorised.
    fitted = prepared.cv_rows
    train_outputs = outputs(pipeline, X.iloc[fitted], y[fitted])
    train = score(problem, train_outputs)
    evaluation = Evaluation(
        holdout_rows=len(prepared.holdout),
        cv_folds=len(prepared.folds),
        seed=seed,
        metrics={},
        cv_metrics=cv,
        train_metrics=train,
    )
    findings: list[Finding] = []
    scored = prepared.holdout
    if len(scored):
        held = outputs(pipeline, X.iloc[scored], y[scored])
        evaluation.held = held
        evaluation.metrics = score(problem, held)
        if problem == "regression":
            evaluation.metrics |= _residual_summary(held.y, held.predicted)
            evaluation.curves = [_residual_curve(held.y, held.predicted, seed)]
        else:
            assert held.classes is not None
            evaluation.class_labels = [label_text(c) for c in held.classes]
            matrix = confusion_matrix(held.y, held.predicted, labels=list(held.classes))
            evaluation.confusion_matrix = [[int(v) for v in row] for row in matrix]
            evaluation.curves = _classification_curves(held)
    else:
        scored = fitted
        evaluation.metrics = {name: float(np.mean(values)) for name, values in cv.items()}
        findings.append(
            Finding(
                "info",
                "no_holdout",
                "the model was trained on every row (no hold-out): its metrics are "
                "cross-validation means, and no curves or confusion matrix are drawn.",
            )
        )
    findings += _fit_findings(problem, train, cv, y[fitted], config)
    if problem != "regression":
        findings += _imbalance(y, config)
    sample = _sample(scored, config.max_importance_rows, seed)
    # The unshuffled baseline of permutation importance: predictions already made on
    # these rows (hold-out or training sample), not a new predict call.
    made = evaluation.held if evaluation.held is not None else train_outputs
    baseline = made.rows(np.searchsorted(scored, sample))
    importance, top = _importance(
        pipeline, X.iloc[sample], y[sample], problem, seed, config, baseline
    )
    evaluation.feature_importance = importance
    findings += top
    probe = _sample(fitted, config.max_importance_rows, seed)
    findings += _leakage(X.iloc[probe], y[probe], problem, seed, config)
    if len(fitted) < len(prepared.train):
        findings.append(
            Finding(
                "info",
                "sampled",
                f"cross-validation, training metrics and the leakage probe used a seeded "
                f"sample of {len(fitted)} of the {len(prepared.train)} training rows, "
                f"permutation importance at most {config.max_importance_rows} rows "
                "(LEPTON_EVALUATOR_CV_MAX_ROWS, LEPTON_EVALUATOR_IMPORTANCE_MAX_ROWS); "
                "hold-out metrics used every held-out row.",
                value=float(len(fitted)),
            )
        )
    evaluation.findings = findings
    return evaluation
