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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
)

from lepton.data.modeling import holdout_split, labelled, shown_label
from lepton.services.evaluator.findings import (
    Finding,
    fit_findings,
    imbalance_findings,
    leakage_findings,
    rank_features,
)
from lepton.services.evaluator.inputs import ColumnsMismatch, input_schema
from lepton.services.evaluator.metrics import (
    Array,
    IntArray,
    Outputs,
    fold_splits,
    outputs,
    score,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

__all__ = [
    "Curve",
    "Evaluation",
    "EvaluationConfig",
    "Prepared",
    "evaluate",
    "fold_scores",
    "prepare",
]

# Points kept per curve and residuals kept for the scatter: enough to draw, small on the wire.
_CURVE_POINTS = 200
_RESIDUAL_POINTS = 500
# Classes drawn one by one (one-vs-rest curves, the confusion matrix): what a dashboard can
# show, and a bound on the record: each class adds three curves and a row and a column.
_SHOWN_CLASSES = 30


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
    folds = fold_splits(y[cv_rows], problem, config.cv_folds, seed)
    return Prepared(X, y, problem, seed, train, holdout, cv_rows, folds)


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
    for column in [1] if binary else _most_frequent(out):
        truth = out.y == out.classes[column]
        if truth.all() or not truth.any():
            continue
        label = None if binary else shown_label(out.classes[column])
        fpr, tpr, _ = roc_curve(truth, out.scores[:, column])
        curves.append(Curve("roc", label, *_thin(fpr, tpr)))
        precision, recall, _ = precision_recall_curve(truth, out.scores[:, column])
        curves.append(Curve("precision_recall", label, *_thin(recall, precision)))
        if out.probabilities:
            observed, predicted = calibration_curve(truth, out.scores[:, column], n_bins=10)
            curves.append(Curve("calibration", label, *_thin(predicted, observed)))
    return curves


def _most_frequent(out: Outputs) -> list[int]:
    """The columns of the :data:`_SHOWN_CLASSES` classes most frequent among the rows."""
    assert out.classes is not None
    labels, found = np.unique(out.y, return_counts=True)
    count = dict(zip(labels.tolist(), found.tolist(), strict=True))
    counts = np.array([count.get(label, 0) for label in out.classes.tolist()])
    return sorted(np.argsort(-counts, kind="stable")[:_SHOWN_CLASSES].tolist())


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
            if len(held.classes) <= _SHOWN_CLASSES:
                evaluation.class_labels = [shown_label(c) for c in held.classes]
                matrix = confusion_matrix(held.y, held.predicted, labels=list(held.classes))
                evaluation.confusion_matrix = [[int(v) for v in row] for row in matrix]
            else:
                findings.append(
                    Finding(
                        "info",
                        "many_classes",
                        f"{len(held.classes)} classes: one-vs-rest curves are drawn for the "
                        f"{_SHOWN_CLASSES} most frequent among the held-out rows, and no "
                        f"confusion matrix (it is drawn for at most {_SHOWN_CLASSES} classes).",
                        value=float(len(held.classes)),
                    )
                )
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
    findings += fit_findings(problem, train, cv, y[fitted], config)
    if problem != "regression":
        findings += imbalance_findings(y, config)
    sample = _sample(scored, config.max_importance_rows, seed)
    # The unshuffled baseline of permutation importance: predictions already made on
    # these rows (hold-out or training sample), not a new predict call.
    made = evaluation.held if evaluation.held is not None else train_outputs
    baseline = made.rows(np.searchsorted(scored, sample))
    importance, top = rank_features(
        pipeline, X.iloc[sample], y[sample], problem, seed, config, baseline
    )
    evaluation.feature_importance = importance
    findings += top
    probe = _sample(fitted, config.max_importance_rows, seed)
    findings += leakage_findings(X.iloc[probe], y[probe], problem, seed, config)
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
