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
noise, not by several times it. (The ensemble keeps its nested score: see
``lepton.services.trainer.training._rescored``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold

from lepton.services.trainer.selection import Candidate, noise

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import pandas as pd

    from lepton.services.trainer.allocation import TimeBudget

__all__ = ["REACH", "REPEATS", "Finalist", "folds_for", "in_reach", "rescored"]

Folds = list[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]

# More assignments of the rows to folds for each finalist: two triple the evidence (fifteen
# folds of five) for twice a search trial's time per finalist.
REPEATS = 2
# How far below the best (in units of the folds' noise) a candidate is still a finalist.
REACH = 3.0


@dataclass(frozen=True, slots=True)
class Finalist:
    """A candidate, how to build its estimator afresh, and its search folds' duration."""

    candidate: Candidate
    estimator: Callable[[], Any]  # unfitted, a new one at each call
    fold_seconds: float  # the mean of its search folds (fit and scoring)


def folds_for(y: np.ndarray[Any, Any], regression: bool, n_folds: int, seed: int) -> Folds:
    """The rows' assignment to ``n_folds`` folds for ``seed``: shuffled, and stratified by
    class for a classifier."""
    splitter = (
        KFold(n_folds, shuffle=True, random_state=seed)
        if regression
        else StratifiedKFold(n_folds, shuffle=True, random_state=seed)
    )
    return list(splitter.split(np.zeros((len(y), 1)), y))


def in_reach(candidates: Sequence[Candidate]) -> list[int]:
    """The positions of ``candidates`` within :data:`REACH` times :func:`noise` of the best."""
    best = max(c.score for c in candidates)
    bar = best - REACH * noise(candidates)
    return [i for i, c in enumerate(candidates) if c.score >= bar]


def rescored(
    finalists: Sequence[Finalist],
    X: pd.DataFrame,
    y: np.ndarray[Any, Any],
    regression: bool,
    n_folds: int,
    seed: int,
    scorer: Callable[..., float],
    budget: TimeBudget,
    keep: float = 0.0,
) -> list[Candidate] | None:
    """Each finalist with the scores of :data:`REPEATS` more fold assignments (seeds after
    ``seed``, the search's) added to its own; None when the time budget has no room for
    all of them, as the estimate from their search folds says (judging some finalists on
    more folds than others would not be fair to either), with ``keep`` seconds more set
    aside (the refit of an ensemble, beyond the budget's reserve for a single trial's)."""
    needed = sum(f.fold_seconds for f in finalists) * n_folds * REPEATS
    if not budget.room_for(needed + keep):
        return None
    assignments = [folds_for(y, regression, n_folds, seed + r) for r in range(1, REPEATS + 1)]
    out = []
    for finalist in finalists:
        scores = list(finalist.candidate.fold_scores)
        for folds in assignments:
            for train_rows, test_rows in folds:
                model = finalist.estimator().fit(X.iloc[train_rows], y[train_rows])
                scores.append(float(scorer(model, X.iloc[test_rows], y[test_rows])))
        c = finalist.candidate
        out.append(Candidate(c.family, float(np.mean(scores)), scores, c.flexibility, c.tuned))
    return out
