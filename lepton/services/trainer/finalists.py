"""The finalists scored again on fresh folds before one is kept.

A family's best trial is the best of several parameter draws scored on the same five folds,
so part of its lead is the draw that happened to suit those folds: its score is optimistic,
and the more draws a family had, the more so. On small tables that optimism is as large as
the differences selection has to judge. On one split of wine's 133 training rows an SVM
tuned to C ≈ 97 and gamma ≈ 1e-4 topped the search with a macro F1 of 0.993; the same
pipeline scored 0.964 and 0.985 on two other assignments of the same rows to five folds,
and 0.934 on the held-out rows, where logistic regression at its defaults scored 0.977.

So, when the time budget has room, every single trial among the candidates within reach
of the best (:data:`REACH` times the folds' noise) is cross-validated again on
:data:`REPEATS` more assignments of the rows to folds, drawn after the search (repeated
k-fold cross-validation), and the selection judges each on the mean of all its folds. The
search never saw those folds, so they carry none of its optimism, and averaging over
assignments also shrinks the part of a score that is only which rows landed together.
Candidates out of reach are left out: a fresh assignment moves a score by about the
noise, not by several times it. An ensemble among the finalists is judged as its search
score was, on each fresh assignment too: its library's trials are cross-validated there,
and each fold is scored by the ensemble selected on the other folds alone. Two shortcuts
made an ensemble win on diabetes splits and predict held-out rows worse than a linear
model: scoring the weights chosen on every row's search predictions on fresh folds, and
keeping its search score while the single trials were judged on fresh folds too (that
split's search folds had suited every model, by 0.01 to 0.04 of r2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from lepton.services.trainer.search import out_of_fold
from lepton.services.trainer.selection import Candidate, noise

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

__all__ = [
    "REACH",
    "REPEATS",
    "Refitted",
    "cross_validated",
    "folds_for",
    "fresh_assignments",
    "in_reach",
    "seconds_needed",
]

Folds = list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]

# More assignments of the rows to folds for each finalist: two triple the evidence (fifteen
# folds of five) for twice a search trial's time per finalist.
REPEATS = 2
# How far below the best (in units of the folds' noise) a candidate is still a finalist.
REACH = 3.0


@dataclass(frozen=True, slots=True)
class Refitted:
    """A trial cross-validated on the fresh assignments."""

    fold_scores: list[float]  # every fold of every assignment, in order
    oof: list[np.ndarray[Any, Any] | None]  # per assignment (None: see ``out_of_fold``)


def folds_for(y: np.ndarray[Any, Any], regression: bool, n_folds: int, seed: int) -> Folds:
    """The rows' assignment to ``n_folds`` folds for ``seed``: shuffled, and stratified by
    class for a classifier."""
    splitter = (
        KFold(n_folds, shuffle=True, random_state=seed)
        if regression
        else StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    )
    return list(splitter.split(np.zeros((len(y), 1)), y))


def fresh_assignments(
    y: np.ndarray[Any, Any], regression: bool, n_folds: int, seed: int
) -> list[Folds]:
    """:data:`REPEATS` assignments of the rows to folds other than the search's (``seed``)."""
    return [folds_for(y, regression, n_folds, seed + r) for r in range(1, REPEATS + 1)]


def in_reach(candidates: Sequence[Candidate]) -> list[int]:
    """The positions of ``candidates`` within :data:`REACH` times :func:`noise` of the best."""
    best = max(c.score for c in candidates)
    bar = best - REACH * noise(candidates)
    return [i for i, c in enumerate(candidates) if c.score >= bar]


def seconds_needed(fold_seconds: Sequence[float], n_folds: int) -> float:
    """A trial's time on the fresh assignments, from its search folds' mean."""
    return float(np.mean(fold_seconds)) * n_folds * REPEATS if fold_seconds else 0.0


def cross_validated(
    estimator: Callable[[], Any],
    X: pd.DataFrame,
    y: np.ndarray[Any, Any],
    assignments: Sequence[Folds],
    scorer: Callable[..., float],
    probabilities: bool,
    keep_predictions: bool,
) -> Refitted:
    """``estimator`` (a new unfitted one at each call) fitted and scored on every fold of
    ``assignments``; with ``keep_predictions`` (a trial an ensemble selects from), its
    out-of-fold predictions kept as the search keeps a trial's, else none (``oof`` all
    None: predicting each fold again would cost time and memory for nothing)."""
    scores: list[float] = []
    oofs: list[np.ndarray[Any, Any] | None] = []
    for folds in assignments:
        oof: np.ndarray[Any, Any] | None = None
        for train_rows, test_rows in folds:
            model = estimator().fit(X.iloc[train_rows], y[train_rows])
            test = X.iloc[test_rows]
            scores.append(float(scorer(model, test, y[test_rows])))
            if keep_predictions:
                oof = out_of_fold(model, test, test_rows, oof, len(y), probabilities)
        oofs.append(oof)
    return Refitted(scores, oofs)
