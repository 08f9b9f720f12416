"""How an automatic search spends its trials and its time.

Trials go to the algorithm families by successive halving: a first rung gives every
candidate family a few trials, the better half of the families (by their best
cross-validation score so far) get twice as many in the next rung, and so on until one
family is left or the trial budget is spent. Each family has its own study and TPE
sampler, so a family's parameters are searched on their own and no pruner compares one
family's fold scores with another's.

The time budget bounds the whole run, the refit included: :class:`TimeBudget` says
whether there is room for another trial or another fold once the refit of the best trial
so far is set aside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEADLINE_SLACK",
    "FIRST_RUNG_MAX",
    "PRIOR",
    "REFIT_MARGIN",
    "TimeBudget",
    "by_prior",
    "first_rung",
    "refit_estimate",
    "rung_families",
    "share",
    "survivors",
]

# The order a first rung tries the families in: the usually strongest on tabular data
# first, so that a trial budget smaller than the number of families, or a first rung the
# time budget cuts short, still tries those.
PRIOR = (
    "hist_gradient_boosting",
    "lightgbm",
    "random_forest",
    "extra_trees",
    "svm",
    "logistic_regression",
    "ridge",
    "knn",
    "lasso",
    "linear_regression",
)
# At most this many trials per family in the first rung. One trial is a single random
# point of a family's space, a noisy ranking; three already cost 21 of the default budget
# of 20 over seven families, so more would leave nothing to the later rungs.
FIRST_RUNG_MAX = 3
# A refit is estimated at this many times the mean fold fit of its trial (scaled to all
# rows): a fit grows a little faster than linearly with the rows for trees and SVMs, and
# the machine's other work slows it unevenly; half as much again covers both in practice.
REFIT_MARGIN = 1.5
# The search plans for a deadline this share of the time budget before the real one: the
# bookkeeping it does not time (sampling, the result) and the jitter of a shared machine
# overran a 60 s budget by up to 0.5 % (load 5 to 9 on two cores); 2 % covers that 4x.
DEADLINE_SLACK = 0.02


def by_prior(families: Sequence[str]) -> list[str]:
    """``families`` in the order a first rung tries them (see :data:`PRIOR`); families
    it does not name keep their order, after the named ones."""
    return sorted(families, key=lambda f: PRIOR.index(f) if f in PRIOR else len(PRIOR))


def first_rung(budget: int, families: int) -> int:
    """Trials per family in the first rung: at most half the budget goes to it, so that
    the later rungs (where the better families are searched further) get the rest."""
    return max(1, min(FIRST_RUNG_MAX, budget // (2 * families)))


def rung_families(alive: Sequence[str], per_family: int, remaining: int) -> list[str]:
    """The family of each trial of the next rung, in the order they run.

    ``alive``: the families still searched, best first. Each gets ``per_family`` trials,
    interleaved (so that a rung cut short by the time budget still tried every family);
    when that is the rest of the budget or more, or one family is left, the rest is
    shared out round robin, best first.
    """
    if remaining <= 0 or not alive:
        return []
    if len(alive) == 1 or len(alive) * per_family >= remaining:
        return [alive[i % len(alive)] for i in range(remaining)]
    return [family for _ in range(per_family) for family in alive]


def share(rung: Sequence[str], worker_index: int, gang_size: int) -> list[str]:
    """The trials of a rung that gang worker ``worker_index`` runs: every
    ``gang_size``-th, so the shares add up to the rung and each gets every family."""
    return list(rung[worker_index::gang_size])


def survivors(alive: Sequence[str], best: Mapping[str, float | None]) -> list[str]:
    """The better half of ``alive`` (rounded up), best first, by their best score; a
    family without a complete trial ranks last. Ties keep the candidate order."""

    def score(family: str) -> float:
        found = best.get(family)
        return -math.inf if found is None else found

    ranked = sorted(alive, key=score, reverse=True)
    return ranked[: math.ceil(len(ranked) / 2)]


def refit_estimate(fold_seconds: Sequence[float], folds: int) -> float:
    """Seconds a refit on all rows may take, from a trial's fold fit times: each fold
    trained on (k-1)/k of the rows."""
    if not fold_seconds:
        return 0.0
    mean = sum(fold_seconds) / len(fold_seconds)
    return REFIT_MARGIN * mean * folds / (folds - 1)


@dataclass(slots=True)
class TimeBudget:
    """The run's deadline on ``clock``, and the refit time it must keep in reserve."""

    clock: Callable[[], float]
    deadline: float
    reserve: float = 0.0  # the estimated refit of the best complete trial so far

    def left(self) -> float:
        return self.deadline - self.clock()

    def room_for(self, seconds: float) -> bool:
        """Whether work of ``seconds`` (a trial's next fold) fits before the deadline
        with the refit still set aside."""
        return self.left() >= seconds + self.reserve

    def paced(self) -> Callable[[], bool]:
        """A check for work done in steps (ensemble rounds, thresholds): each call says
        whether there is room for one more step as long as the last, with the refit still
        set aside. The first call measures from now."""
        last = self.clock()

        def room() -> bool:
            nonlocal last
            now = self.clock()
            spent, last = now - last, now
            return self.room_for(spent)

        return room
