"""The final ensemble: greedy ensemble selection over the best trials' out-of-fold
predictions (Caruana et al., "Ensemble selection from libraries of models", 2004).

Starting from nothing, each round adds (with replacement) the trial whose predictions
most improve the cross-validation score of the ensemble's average; the best ensemble of
any round is kept, its weights the times each trial was added. Classifiers are averaged
by their predicted probabilities (a soft vote), regressors by their predictions. The
ensemble is scored exactly as a trial is (the job's scorer on each fold's held-out rows,
averaged), so the two scores compare; it is chosen only when it beats the best single
trial by a margin (see :data:`MIN_GAIN`), and it is refitted as a scikit-learn
``VotingRegressor`` or soft ``VotingClassifier`` whose members are refitted on all rows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import VotingClassifier, VotingRegressor

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sklearn.pipeline import Pipeline

__all__ = [
    "ENSEMBLE",
    "ENSEMBLE_CANDIDATES",
    "ENSEMBLE_ROUNDS",
    "MIN_GAIN",
    "PATIENCE",
    "Ensemble",
    "beats",
    "replayed_scores",
    "select",
    "voting",
]

# The algorithm a result names when the ensemble was chosen.
ENSEMBLE = "ensemble"
# Trials whose predictions are kept for the ensemble: the best eight. Caruana et al. found
# that selecting from a small library of the best models overfits less than from all;
# eight already hold several families in a default search of twenty trials.
ENSEMBLE_CANDIDATES = 8
# Rounds of greedy selection: each adds one member (with replacement), so weights are in
# twentieths; more rounds rarely change the best ensemble and cost scoring time.
ENSEMBLE_ROUNDS = 20
# Selection stops after this many rounds without a better ensemble: each round scores
# every candidate on every fold (a scorer such as f1_macro takes milliseconds a call),
# and a plateau of three rounds is seldom left by adding a fourth copy of a member.
PATIENCE = 3
# The ensemble is chosen over the best single trial only when its cross-validation score
# is higher by this share of the single trial's (absolute) score: it was selected on the
# same out-of-fold rows it is scored on, so a tie or a hair's gain is optimism, not skill.
MIN_GAIN = 0.002


class _Replayed(BaseEstimator):  # type: ignore[misc]
    """Stored out-of-fold predictions behind an estimator's methods, so that any
    scikit-learn scorer scores them: its ``X`` is the rows' positions (one column)."""

    def __init__(self, values: np.ndarray[Any, Any], classes: np.ndarray[Any, Any] | None) -> None:
        self.values = values
        self.classes = classes

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor" if self.classes is None else "classifier"
        return tags

    @property
    def classes_(self) -> np.ndarray[Any, Any] | None:
        return self.classes

    def predict(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        values: np.ndarray[Any, Any] = self.values[np.asarray(X)[:, 0]]
        if self.classes is None:
            return values
        labels: np.ndarray[Any, Any] = self.classes[np.argmax(values, axis=1)]
        return labels

    def predict_proba(self, X: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        values: np.ndarray[Any, Any] = self.values[np.asarray(X)[:, 0]]
        return values


@dataclass(frozen=True, slots=True)
class Ensemble:
    members: list[int]  # positions in the candidates given to :func:`select`
    weights: list[float]  # sum to 1
    score: float
    fold_scores: list[float]
    predictions: np.ndarray[Any, Any]  # out-of-fold: the weighted average of the members'


def replayed_scores(
    values: np.ndarray[Any, Any],
    y: np.ndarray[Any, Any],
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    scorer: Callable[..., float],
    classes: np.ndarray[Any, Any] | None,
) -> list[float]:
    """The job's scorer on each fold's held-out rows of ``values`` (out-of-fold
    predictions, or probabilities when ``classes`` is given), as a trial is scored."""
    replayed = _Replayed(values, classes)
    return [float(scorer(replayed, test[:, None], y[test])) for _, test in folds]


def select(
    predictions: Sequence[np.ndarray[Any, Any]],
    y: np.ndarray[Any, Any],
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    scorer: Callable[..., float],
    classes: np.ndarray[Any, Any] | None,
    room: Callable[[], bool] = lambda: True,
) -> Ensemble | None:
    """The best ensemble greedy selection finds over ``predictions`` (out-of-fold, one
        per candidate trial; probabilities when ``classes`` is given), or None when it is a
        single trial. ``room``: whether the time budget allows another round (asked before
    each round but the first)."""
    if len(predictions) < 2:
        return None
    total = np.zeros_like(predictions[0], dtype=float)
    counts: Counter[int] = Counter()
    # (score, members' counts, fold scores, round, predictions) of the best ensemble so far
    best: tuple[float, Counter[int], list[float], int, np.ndarray[Any, Any]] | None = None
    for size in range(1, ENSEMBLE_ROUNDS + 1):
        if best is not None and (size - best[3] > PATIENCE or not room()):
            break
        scored = [
            (replayed_scores((total + p) / size, y, folds, scorer, classes), i)
            for i, p in enumerate(predictions)
        ]
        # Highest mean score; among equals the earlier (better single) candidate.
        fold_scores, chosen = max(scored, key=lambda s: (float(np.mean(s[0])), -s[1]))
        total += predictions[chosen]
        counts[chosen] += 1
        score = float(np.mean(fold_scores))
        if best is None or score > best[0]:
            best = (score, counts.copy(), fold_scores, size, total / size)
    assert best is not None
    score, chosen_counts, fold_scores, _, averaged = best
    if len(chosen_counts) < 2:
        return None
    members = sorted(chosen_counts)
    size = sum(chosen_counts.values())
    return Ensemble(
        members=members,
        weights=[chosen_counts[m] / size for m in members],
        score=score,
        fold_scores=fold_scores,
        predictions=averaged,
    )


def beats(ensemble: Ensemble, single: float) -> bool:
    """Whether the ensemble's score beats the best single trial's by the margin."""
    return ensemble.score > single + MIN_GAIN * abs(single)


def voting(
    pipelines: Sequence[tuple[str, Pipeline]], weights: Sequence[float], classification: bool
) -> VotingClassifier | VotingRegressor:
    """The ensemble as a scikit-learn estimator (unfitted): its fit refits every member
    on all rows."""
    if classification:
        return VotingClassifier(list(pipelines), voting="soft", weights=list(weights))
    return VotingRegressor(list(pipelines), weights=list(weights))
