"""The finalists scored again on fresh folds before the selection keeps one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lepton.services.trainer.allocation import TimeBudget
from lepton.services.trainer.finalists import (
    REACH,
    REPEATS,
    Finalist,
    folds_for,
    in_reach,
    rescored,
)
from lepton.services.trainer.selection import Candidate, noise
from lepton.services.trainer.training import SearchConfig, train


def _wine() -> tuple[pd.DataFrame, np.ndarray]:
    data = load_wine(as_frame=True)
    return data.data, data.target.to_numpy()


def test_only_candidates_within_reach_of_the_best_are_finalists() -> None:
    steady = [0.90, 0.91, 0.89, 0.90, 0.90]
    best = Candidate("svm", 0.90, steady, 2)
    near = Candidate("ridge", 0.895, [s - 0.005 for s in steady], 0)
    far = Candidate("knn", 0.50, [s - 0.40 for s in steady], 1)
    candidates = [best, near, far]
    assert far.score < best.score - REACH * noise(candidates)
    assert in_reach(candidates) == [0, 1]


def test_folds_are_stratified_and_differ_by_seed() -> None:
    _, y = _wine()
    first, second = folds_for(y, False, 5, 0), folds_for(y, False, 5, 1)
    assert sorted(np.concatenate([test for _, test in first]).tolist()) == list(range(len(y)))
    for _, test in first:  # every class in every fold, in its share
        assert set(np.unique(y[test])) == set(np.unique(y))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(first, second, strict=True))


def test_a_finalist_is_judged_on_its_own_folds_and_the_fresh_ones() -> None:
    X, y = _wine()
    search_folds = [0.91, 0.92, 0.93, 0.94, 0.95]
    candidate = Candidate("logistic_regression", float(np.mean(search_folds)), search_folds, 0)
    finalist = Finalist(
        candidate, lambda: make_pipeline(StandardScaler(), LogisticRegression()), 0.01
    )
    budget = TimeBudget(clock=lambda: 0.0, deadline=60.0)
    [scored] = rescored([finalist], X, y, False, 5, 0, get_scorer("f1_macro"), budget) or []
    assert len(scored.fold_scores) == 5 * (REPEATS + 1)
    assert list(scored.fold_scores[:5]) == search_folds
    assert scored.score == pytest.approx(np.mean(scored.fold_scores))
    assert min(scored.fold_scores[5:]) > 0.8  # really fitted and scored on wine
    assert (scored.family, scored.flexibility, scored.tuned) == ("logistic_regression", 0, True)


def test_no_finalist_is_scored_again_when_the_budget_has_no_room_for_all() -> None:
    X, y = _wine()
    candidate = Candidate("logistic_regression", 0.9, [0.9] * 5, 0)
    slow = Finalist(candidate, lambda: LogisticRegression(), fold_seconds=1.0)
    budget = TimeBudget(clock=lambda: 0.0, deadline=5 * REPEATS * 1.0 - 0.5)
    assert rescored([slow], X, y, False, 5, 0, get_scorer("f1_macro"), budget) is None


def test_the_kept_model_is_judged_on_its_search_folds_and_the_fresh_ones() -> None:
    # Wine, the benchmark's split of seed 7: 133 rows, where several families tie.
    X, y = _wine()
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.25, random_state=7, stratify=y)
    frame = X_train.assign(target=y_train)
    result = train(frame, SearchConfig(target_column="target", seed=7, holdout_fraction=0.0))
    [finding] = [f for f in result.findings if f.code == "finalists_rescored"]
    assert " → " in finding.message
    assert len(result.fold_scores) == 5 * (REPEATS + 1)
    assert result.cv_score == pytest.approx(np.mean(result.fold_scores))
    # Its first five folds are its trial's in the search.
    searched = [t.fold_scores for t in result.trials if t.params == result.params]
    assert list(result.fold_scores[:5]) in searched
