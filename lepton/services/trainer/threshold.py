"""A binary classifier's decision threshold, tuned for the job's metric.

A classifier predicts the positive class when its probability is above one half. That
maximises accuracy for calibrated probabilities, not F1: on imbalanced labels the F1 of
the rare class (and so macro F1) is usually best at a lower threshold. When the job's
metric scores predicted labels (``f1``, ``f1_macro``, ``accuracy``, ``balanced_accuracy``
…, not ``roc_auc`` or ``neg_log_loss``, which read probabilities) and one class is rare
(:data:`RARE_SHARE`), the chosen model's
out-of-fold probabilities from the search are scored at every threshold of a grid, and
the best replaces one half only when it scores better by more than one standard error of
the score at one half (and by the ensemble's margin,
:data:`~lepton.services.trainer.ensemble.MIN_GAIN`): the best of 37 thresholds is
partly the one that suits these folds, and on balanced labels it would chase their noise
(see :mod:`lepton.services.trainer.selection` for the same rule between families). The
stored model is then a scikit-learn ``FixedThresholdClassifier`` around the pipeline (or
ensemble), so that ``predict`` applies the threshold and ``predict_proba`` is the model's
own.

The threshold is picked on the rows its score is then reported on; like the ensemble's,
that score is a little optimistic, and the margin tempers it. No model is fitted here:
the cost is one scorer call per threshold and fold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import FixedThresholdClassifier

from lepton.services.trainer.ensemble import MIN_GAIN, replayed_scores
from lepton.services.trainer.selection import standard_error

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "DEFAULT_THRESHOLD",
    "RARE_SHARE",
    "THRESHOLDS",
    "Threshold",
    "fixed",
    "scores_labels",
    "tune",
]

DEFAULT_THRESHOLD = 0.5
# Tuned only when the rarer class is under this share of the rows: with classes near
# balance one half is already about where F1 and accuracy peak for fair probabilities, and
# a tuned threshold would mostly chase the folds' noise (at the cost of a scorer call per
# threshold and fold).
RARE_SHARE = 0.2
# The candidates: steps of 0.025 from 0.05 to 0.95. Finer steps chase the noise of a few
# out-of-fold rows; the extremes would predict (almost) one class.
THRESHOLDS = tuple(round(0.05 + 0.025 * i, 3) for i in range(37))


@dataclass(frozen=True, slots=True)
class Threshold:
    """The tuned threshold, its cross-validation score and the score at one half."""

    value: float
    score: float
    fold_scores: list[float]
    default_score: float


def scores_labels(scorer: Callable[..., float]) -> bool:
    """Whether ``scorer`` scores predicted labels (so a threshold changes its score)."""
    # scikit-learn's scorers name what they read; there is no public accessor.
    return getattr(scorer, "_response_method", None) == "predict"


def _labels(positive: np.ndarray[Any, Any], threshold: float) -> np.ndarray[Any, Any]:
    """The labels at ``threshold`` as certain probabilities (negative, positive), which
    the ensemble's replayed scorer turns back into labels."""
    above = positive >= threshold
    return np.column_stack([~above, above]).astype(np.float64)


def tune(
    probabilities: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    scorer: Callable[..., float],
    classes: np.ndarray[Any, Any],
    room: Callable[[], bool] = lambda: True,
) -> Threshold | None:
    """The threshold on ``probabilities`` (out-of-fold, one column per class of the two
    ``classes``) whose labels score best, as a trial is scored (the mean over the folds),
    when it beats one half by more than the noise; None otherwise, when the classes are
    near balance (see :data:`RARE_SHARE`) and when a row has no out-of-fold probability.
    ``room``: whether the time budget allows another threshold (asked before each but the
    first, one half)."""
    known = ~np.isnan(probabilities).any(axis=1)
    rarer = min(float(np.mean(y == label)) for label in classes)
    if not known.all() or rarer >= RARE_SHARE:
        return None
    positive = probabilities[:, 1]
    scores: dict[float, list[float]] = {}
    # Outward from one half, so that a scan the time budget cuts short has tried the
    # thresholds nearest it.
    for threshold in sorted(THRESHOLDS, key=lambda t: abs(t - DEFAULT_THRESHOLD)):
        if scores and not room():
            break
        scores[threshold] = replayed_scores(_labels(positive, threshold), y, folds, scorer, classes)
    mean = {threshold: float(np.mean(per_fold)) for threshold, per_fold in scores.items()}
    default = mean[DEFAULT_THRESHOLD]
    # Best score; among equals the threshold nearest one half (the least change).
    best = max(scores, key=lambda t: (mean[t], -abs(t - DEFAULT_THRESHOLD)))
    if not mean[best] > default + max(
        MIN_GAIN * abs(default), standard_error(scores[DEFAULT_THRESHOLD])
    ):
        return None
    return Threshold(best, mean[best], scores[best], default)


def fixed(estimator: Any, threshold: Threshold) -> FixedThresholdClassifier:
    """``estimator`` (unfitted) behind the tuned threshold: fitting it fits the estimator."""
    return FixedThresholdClassifier(
        estimator, threshold=threshold.value, response_method="predict_proba"
    )
