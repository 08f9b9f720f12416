"""The search of a training job: cross-validated trials in one study per family.

:mod:`lepton.services.trainer.allocation` decides how many trials each family gets (rungs
of successive halving) and whether the time budget has room for another trial or fold;
this module runs them. A gang shares its studies through Optuna's storage: every worker
runs its share of each rung's trials, waits for the rung to finish everywhere, and ranks
the families from the same trials as every other worker, so all agree on the next rung.

A trial keeps its out-of-fold predictions (in this process only) for the final ensemble,
see :mod:`lepton.services.trainer.ensemble`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from lepton.services.trainer.allocation import (
    TimeBudget,
    by_prior,
    first_rung,
    refit_estimate,
    rung_families,
    share,
    survivors,
)
from lepton.services.trainer.ensemble import ENSEMBLE_CANDIDATES
from lepton.services.trainer.pipelines import PARAMETER_ERRORS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import pandas as pd
    from sklearn.pipeline import Pipeline

    from lepton.services.trainer.search_space import Space

__all__ = ["Evaluation", "Search", "Trial", "best_first", "out_of_fold"]

# How often a gang worker looks for the other workers' trials of a rung.
_GANG_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What a search is scored on: the rows, their folds, the metric and the pipelines."""

    X: pd.DataFrame
    y: np.ndarray[Any, Any]
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]]
    scorer: Callable[..., float]
    pipeline_for: Callable[[str, Mapping[str, Any]], Pipeline]
    probabilities: bool  # keep predicted probabilities (classification), else predictions


@dataclass(slots=True)
class Trial:
    """One finished trial of a family's study."""

    family: str
    params: dict[str, Any]
    state: str  # complete, pruned or fail
    score: float | None
    fold_scores: list[float]
    fold_seconds: list[float]
    rung: int
    number: int  # in its family's study
    started: float  # its study's start time, to order the trials of all families
    reason: str | None = None  # why it was pruned or failed
    oof: np.ndarray[Any, Any] | None = field(default=None, repr=False)

    def record(self, number: int) -> dict[str, Any]:
        """The trial as the model catalogue stores it, ``number`` counting every family's
        trials of the job (in the order they began) rather than its own family's."""
        return {
            "number": number,
            "family": self.family,
            "params": self.params,
            "state": self.state,
            "score": self.score,
            "fold_scores": self.fold_scores,
            "rung": self.rung,
            "reason": self.reason,
        }


class _Abandoned(optuna.TrialPruned):
    """A trial stopped because the time budget has no room for its next fold."""


def out_of_fold(
    model: Pipeline,
    test: pd.DataFrame,
    rows: np.ndarray[Any, Any],
    oof: np.ndarray[Any, Any] | None,
    n_rows: int,
    probabilities: bool,
) -> np.ndarray[Any, Any] | None:
    """A trial's out-of-fold predictions (``n_rows`` of them) with ``model``'s for this
    fold's ``rows`` added: its probabilities when ``probabilities``, else its predictions;
    none for a classifier without probabilities (an SVM), which no soft vote can weigh."""
    if probabilities:
        if not hasattr(model, "predict_proba"):
            return None
        predicted = model.predict_proba(test)
    else:
        predicted = model.predict(test)
    if oof is None:
        oof = np.full((n_rows, *predicted.shape[1:]), np.nan)
    oof[rows] = predicted
    return oof


def best_first(trials: Sequence[Trial]) -> list[Trial]:
    """Complete trials, best score first (the earlier of equal ones first)."""
    complete = [t for t in trials if t.state == "complete" and t.score is not None]
    return sorted(complete, key=lambda t: (-(t.score or 0.0), t.started))


class Search:
    """The studies of one job's search (one per family) and the trials run in them."""

    def __init__(
        self,
        space: Space,
        evaluation: Evaluation,
        budget: TimeBudget,
        *,
        seed: int,
        starting_points: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        storage: optuna.storages.BaseStorage | str | None = None,
        study_name: str | None = None,
        worker_index: int = 0,
        gang_size: int = 1,
    ) -> None:
        self._space = space
        self._evaluation = evaluation
        self._budget = budget
        self._worker = worker_index
        self._gang = gang_size
        self._shared = storage is not None
        self._oof: dict[tuple[str, int], np.ndarray[Any, Any]] = {}
        # This worker's view of the complete trials, refreshed after each of its trials
        # (reading a shared study is a query).
        self._done: list[Trial] = []
        self._studies = {
            family: optuna.create_study(
                storage=storage,
                study_name=f"{study_name}:{family}" if study_name else None,
                direction="maximize",
                # Gang workers seed apart, or they would all propose the same points.
                sampler=optuna.samplers.TPESampler(seed=seed + 1000 * position + worker_index),
                # Within a family only: its trials' fold scores are comparable.
                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
                load_if_exists=storage is not None,
            )
            for position, family in enumerate(space)
        }
        # Each family's first trials at its starting points, in order (a gang's workers
        # enqueue each once between them: the same point is skipped when already there).
        for family, points in (starting_points or {}).items():
            for point in points:
                self._studies[family].enqueue_trial(dict(point), skip_if_exists=True)

    def run(self, trial_budget: int, after_trial: Callable[[int], None]) -> None:
        """Spend ``trial_budget`` trials (this worker's share of each rung in a gang) by
        successive halving, stopping early when the time budget has no room for more."""
        alive = by_prior(list(self._space))
        per_family = first_rung(trial_budget, len(alive))
        planned = rung = 0
        while planned < trial_budget and alive:
            families = rung_families(alive, per_family, trial_budget - planned)
            mine = share(families, self._worker, self._gang)
            for family in mine:
                # The time budget stops the search once one trial is complete: before a
                # trial whose first fold would not fit, or after one it abandoned.
                if self._done and not self._budget.room_for(self._fold_guess(family, [])):
                    return
                if not self._trial(family, rung):
                    return
                after_trial(self._finished())
            planned += len(families)
            if self._shared:
                self._await(planned)
            alive = survivors(alive, self._best_by_family(rung))
            per_family *= 2
            rung += 1

    def await_gang(self, trial_budget: int) -> None:
        """Wait until the gang has finished the whole budget, or the time budget is over."""
        self._await(trial_budget)

    def trials(self) -> list[Trial]:
        """Every finished trial of every family (the gang's too), in the order they began."""
        found = [
            self._trial_of(family, frozen)
            for family, study in self._studies.items()
            for frozen in study.get_trials(deepcopy=False)
            if frozen.state.is_finished()
        ]
        return sorted(found, key=lambda t: (t.started, t.family))

    def _trial(self, family: str, rung: int) -> bool:
        """Run one trial of ``family``; False when the time budget abandoned it."""
        study = self._studies[family]
        trial = study.ask()
        trial.set_user_attr("rung", rung)
        params = {
            name: distribution.suggest(trial, name)
            for name, distribution in self._space[family].items()
        }
        try:
            score = self._cross_validate(trial, family, params)
        except _Abandoned as abandoned:
            trial.set_user_attr("reason", str(abandoned))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return False
        except optuna.TrialPruned:
            trial.set_user_attr("reason", "pruned: below its family's median at this fold")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        # A trial whose estimator rejects its parameter point fails alone, not the search.
        except PARAMETER_ERRORS as exc:
            trial.set_user_attr("reason", f"{type(exc).__name__}: {str(exc)[:200]}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, score)
        self._done = self._complete()
        if self._done:
            best = max(self._done, key=lambda t: t.score if t.score is not None else -np.inf)
            self._budget.reserve = refit_estimate(best.fold_seconds, len(self._evaluation.folds))
        # Only the best few trials can join the ensemble: the others' predictions go.
        keep = {(t.family, t.number) for t in best_first(self._done)[:ENSEMBLE_CANDIDATES]}
        self._oof = {key: oof for key, oof in self._oof.items() if key in keep}
        return True

    def _cross_validate(self, trial: optuna.Trial, family: str, params: Mapping[str, Any]) -> float:
        evaluation, clock = self._evaluation, self._budget.clock
        scores: list[float] = []
        seconds: list[float] = []
        oof: np.ndarray[Any, Any] | None = None
        for step, (train_rows, test_rows) in enumerate(evaluation.folds):
            if self._done and not self._budget.room_for(self._fold_guess(family, seconds)):
                raise _Abandoned(
                    f"abandoned before fold {step + 1} of {len(evaluation.folds)}: the time "
                    "budget had no room for it and the refit"
                )
            model = evaluation.pipeline_for(family, params)
            began = clock()
            model.fit(evaluation.X.iloc[train_rows], evaluation.y[train_rows])
            test = evaluation.X.iloc[test_rows]
            scores.append(float(evaluation.scorer(model, test, evaluation.y[test_rows])))
            oof = out_of_fold(
                model, test, test_rows, oof, len(evaluation.y), evaluation.probabilities
            )
            # The whole fold, scoring included: on small data scoring is most of it. (A
            # refit estimated from it is then a little generous, which is its side.)
            seconds.append(clock() - began)
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("fold_seconds", seconds)
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned
        if oof is not None:
            self._oof[(family, trial.number)] = oof
        return float(np.mean(scores))

    def _fold_guess(self, family: str, seconds: Sequence[float]) -> float:
        """A fold's fit time: the longest of this trial's folds so far, else of the
        family's earlier trials (none yet: unknown, taken as no time). The longest, not
        the mean: a family's fit time varies with its parameters (a forest's trees, an
        SVM's C), and a budget overrun is worse than a fold left out."""
        known = list(seconds) or [
            s for t in self._done if t.family == family for s in t.fold_seconds
        ]
        return max(known, default=0.0)

    def _await(self, finished: int) -> None:
        while self._finished() < finished and self._budget.left() > 0:
            time.sleep(_GANG_POLL_S)

    def _finished(self) -> int:
        return sum(
            1
            for study in self._studies.values()
            for t in study.get_trials(deepcopy=False)
            if t.state.is_finished()
        )

    def _complete(self) -> list[Trial]:
        return [t for t in self.trials() if t.state == "complete"]

    def _best_by_family(self, rung: int) -> dict[str, float | None]:
        """Each family's best score over the rungs up to ``rung`` (later trials of a
        faster gang worker left out, so that every worker ranks the same trials)."""
        best: dict[str, float | None] = {}
        for trial in self._complete():  # read again: the gang's trials of the rung are in
            if trial.rung <= rung and trial.score is not None:
                current = best.get(trial.family)
                best[trial.family] = trial.score if current is None else max(current, trial.score)
        return best

    def _trial_of(self, family: str, frozen: optuna.trial.FrozenTrial) -> Trial:
        attrs = frozen.user_attrs
        return Trial(
            family=family,
            params=dict(frozen.params),
            state=frozen.state.name.lower(),
            score=float(frozen.value) if frozen.value is not None else None,
            fold_scores=[float(s) for s in attrs.get("fold_scores", [])],
            fold_seconds=[float(s) for s in attrs.get("fold_seconds", [])],
            rung=int(attrs.get("rung", 0)),
            number=frozen.number,
            started=frozen.datetime_start.timestamp() if frozen.datetime_start else 0.0,
            reason=attrs.get("reason"),
            oof=self._oof.get((family, frozen.number)),
        )
