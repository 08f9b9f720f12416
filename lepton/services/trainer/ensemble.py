"""The final ensemble: greedy ensemble selection over the best trials' out-of-fold
predictions (Caruana et al., "Ensemble selection from libraries of models", 2004).

Starting from nothing, each round adds (with replacement) the trial whose predictions
most improve the cross-validation score of the ensemble's average; the best ensemble of
any round is kept, its weights the times each trial was added. Classifiers are averaged
by their predicted probabilities (a soft vote), regressors by their predictions.

The ensemble's score is cross-validated honestly (nested): each fold is scored with the
ensemble selected on the other folds alone. Scored on the rows it was selected on, an
ensemble looks better than it predicts, and on a few hundred rows that optimism alone
made it win over a linear model that predicted held-out rows better. The honest score
compares with a trial's (the job's scorer on each fold's held-out rows, averaged); the
ensemble is a candidate only when it beats the best single trial by a margin (see
:data:`MIN_GAIN`), and then competes with each family's best trial as the most flexible
of them (:mod:`lepton.services.trainer.selection`). It is refitted as a scikit-learn
``VotingRegressor`` or soft ``VotingClassifier`` whose members are refitted on all rows.
The nested selection costs one greedy selection per fold more, scorer calls only.
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
    "nested_scores",
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
# The ensemble is a candidate only when its cross-validation score is higher than the
# best single trial's by this share of the trial's (absolute) score: for a tie or a hair's
# gain, refitting several members is not worth their time (and a larger model).
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


def _greedy(
    predictions: Sequence[np.ndarray[Any, Any]],
    y: np.ndarray[Any, Any],
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    scorer: Callable[..., float],
    classes: np.ndarray[Any, Any] | None,
    room: Callable[[], bool],
) -> tuple[Counter[int], list[float]]:
    """Greedy selection scored on ``folds``: the best round's members (times each was
    added) and fold scores."""
    total = np.zeros_like(predictions[0], dtype=float)
    counts: Counter[int] = Counter()
    # (score, members' counts, fold scores, round) of the best ensemble so far
    best: tuple[float, Counter[int], list[float], int] | None = None
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
            best = (score, counts.copy(), fold_scores, size)
    assert best is not None
    return best[1], best[2]


def _averaged(
    predictions: Sequence[np.ndarray[Any, Any]], counts: Counter[int]
) -> np.ndarray[Any, Any]:
    total = np.zeros_like(predictions[0], dtype=float)
    for member, times in counts.items():
        total += predictions[member] * times
    return total / sum(counts.values())


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
    each round but the first).

    Its score is cross-validated honestly: each fold's score is that of the ensemble
    selected on the other folds alone (which may differ, or be one trial), so it compares
    with a trial's score and carries no optimism from selecting on the rows it is scored
    on. Its members and weights are those selected on all folds."""
    if len(predictions) < 2:
        return None
    counts, _ = _greedy(predictions, y, folds, scorer, classes, room)
    if len(counts) < 2:
        return None
    fold_scores = nested_scores(predictions, y, folds, scorer, classes, room)
    members = sorted(counts)
    size = sum(counts.values())
    return Ensemble(
        members=members,
        weights=[counts[m] / size for m in members],
        score=float(np.mean(fold_scores)),
        fold_scores=fold_scores,
        predictions=_averaged(predictions, counts),
    )


def nested_scores(
    predictions: Sequence[np.ndarray[Any, Any]],
    y: np.ndarray[Any, Any],
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    scorer: Callable[..., float],
    classes: np.ndarray[Any, Any] | None,
    room: Callable[[], bool] = lambda: True,
) -> list[float]:
    """Each fold's score of the ensemble greedy selection finds on the other folds alone
    (``predictions`` out-of-fold on ``folds``): the selection cross-validated."""
    fold_scores = []
    for k, (_, test) in enumerate(folds):
        others = [fold for i, fold in enumerate(folds) if i != k]
        chosen, _ = _greedy(predictions, y, others, scorer, classes, room)
        held_out = [(np.empty(0, dtype=int), test)]
        averaged = _averaged(predictions, chosen)
        fold_scores += replayed_scores(averaged, y, held_out, scorer, classes)
    return fold_scores


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
