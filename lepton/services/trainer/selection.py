"""Which model a search keeps: the simplest that cross-validation cannot tell from the best.

The highest cross-validation score among twenty trials is an optimistic estimate: the
trial that tops the list is partly the one whose folds happened to suit it, and the more
flexible a family, the more its score varies with the folds. On small tables (a few
hundred rows) that is enough for an SVM or an ensemble to top a linear model that
predicts new rows as well or better. So the search keeps the least flexible candidate (a
linear model before any other, see :data:`FLEXIBILITY`) whose score is within one
standard error of the top score (the "one-standard-error rule" of Hastie, Tibshirani and
Friedman, *The Elements of Statistical Learning*, 2nd ed., §7.10), the standard error
being that of the top candidate's fold scores: on a few hundred rows folds vary, and the
rule leans to the simple; on many rows they agree, and a flexible model that is better
stays. (A paired comparison, fold by fold, was tried and set aside: an ensemble's
optimism is much the same on every fold, which pairing cannot see, and on diabetes such
ensembles kept winning and then predicted held-out rows worse than the linear model.)

Five folds give a rough standard error, and a top candidate whose folds happen to agree
gives none at all: on one split of wine's 133 training rows an SVM was perfect on all five
folds (a standard error of 0) and logistic regression missed one row of one fold; the
SVM was kept, and its held-out macro F1 was 0.957 against logistic regression's 0.977. The
folds' noise is mostly the data's (which rows land in which fold) rather than the
model's, so the noise is at least the median of every candidate's standard error.

The same rule weighs tuning: a family's trial at its library's defaults (its first, see
:data:`~lepton.services.trainer.search_space.STARTING_POINTS`) is kept over the same
family's tuned trials when they are no better than the noise. The best of twenty draws of
a ridge's alpha on 331 rows is partly the draw that suits the folds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "FLEXIBILITY",
    "Candidate",
    "flexibility",
    "noise",
    "simplest_within_noise",
    "standard_error",
]

# How flexible each family is: linear models (a coefficient per column) 0, every other
# family 1. Neighbours, kernels, forests and boosting each fit any smooth function given
# enough rows, and no order among them holds from one table to the next. Ranked below the
# forests, an SVR at its defaults tied extra-trees at theirs on the house table
# (cross-validated r2 0.973-0.976 against 0.976-0.981) and was kept as the less flexible on
# six seeds of eight; it predicted the clean held-out rows at 0.965, extra-trees at 0.979.
# Among the others, the rule's tie-breaks choose: defaults before tuning, then the score.
# An ensemble is as flexible as its most flexible member (an average of models varies less
# than its members, not more).
FLEXIBILITY: Mapping[str, int] = {
    "linear_regression": 0,
    "ridge": 0,
    "lasso": 0,
    "logistic_regression": 0,
    "knn": 1,
    "svm": 1,
    "random_forest": 1,
    "extra_trees": 1,
    "hist_gradient_boosting": 1,
    "lightgbm": 1,
}


def flexibility(*families: str) -> int:
    """How flexible a model of ``families`` (an ensemble's members, or one family) is: the
    most flexible of them; a family not listed counts as more flexible than any."""
    least = max(FLEXIBILITY.values()) + 1
    return max(FLEXIBILITY.get(family, least) for family in families)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A family's best trial, or the ensemble, as the selection sees it."""

    family: str
    score: float
    fold_scores: Sequence[float]
    flexibility: int
    tuned: bool = True  # False: the family's defaults (its starting point), untouched
    # How many assignments of the rows to folds ``fold_scores`` hold, one after the other
    # (more than one: the finalists scored again, see lepton.services.trainer.finalists).
    assignments: int = 1


def standard_error(fold_scores: Sequence[float], assignments: int = 1) -> float:
    """The standard error of the mean of ``fold_scores`` (0 for fewer than two), as of one
    assignment's folds when they hold ``assignments`` of them: repeating cross-validation
    on the same rows averages out which rows land together, not which rows were drawn, so
    the mean of fifteen folds of the same rows is not known three times better than the
    mean of five (Bengio and Grandvalet, "No unbiased estimator of the variance of K-fold
    cross-validation", 2004). Dividing by the square root of fifteen made the rule keep a
    tuned logistic regression over its defaults on breast cancer, and an SVM over
    logistic regression, that both predicted held-out rows worse."""
    if len(fold_scores) < 2:
        return 0.0
    folds = max(1.0, len(fold_scores) / assignments)
    return float(np.std(fold_scores, ddof=1)) / math.sqrt(folds)


def noise(candidates: Sequence[Candidate]) -> float:
    """How far below the best score a candidate still ties with it: the standard error of
    the best's fold scores, and at least the median of every candidate's."""
    best = max(candidates, key=lambda c: c.score)
    typical = float(np.median([standard_error(c.fold_scores, c.assignments) for c in candidates]))
    return max(standard_error(best.fold_scores, best.assignments), typical)


def simplest_within_noise(candidates: Sequence[Candidate]) -> Candidate:
    """The least flexible of ``candidates`` scoring within :func:`noise` of the best; among
    equally flexible ones, a family's defaults before its tuned trials, then the best
    scorer."""
    best = max(candidates, key=lambda c: c.score)
    bar = best.score - noise(candidates)
    within = [c for c in candidates if c.score >= bar]
    return min(within, key=lambda c: (c.flexibility, c.tuned, -c.score))
