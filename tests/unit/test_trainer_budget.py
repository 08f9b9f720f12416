"""How the trainer spends its trials and time, and its final ensemble."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import get_scorer, r2_score
from sklearn.model_selection import KFold

from lepton.data import artifacts
from lepton.data.modeling import model_input
from lepton.services.evaluator.inputs import input_schema
from lepton.services.trainer.allocation import (
    REFIT_MARGIN,
    TimeBudget,
    by_prior,
    first_rung,
    refit_estimate,
    rung_families,
    survivors,
)
from lepton.services.trainer.ensemble import ENSEMBLE, MIN_GAIN, Ensemble, beats, select, voting
from lepton.services.trainer.pipelines import build_pipeline, candidate_families
from lepton.services.trainer.search import Evaluation, Search
from lepton.services.trainer.search_space import Distribution
from lepton.services.trainer.training import SearchConfig, train


class FakeClock:
    """Time that passes only when the test (or a fake model's fit) says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowModel:
    """A model whose fit takes ``fit_s`` seconds of the fake clock; its score is its
    ``quality`` parameter."""

    def __init__(self, clock: FakeClock, fit_s: float, quality: float) -> None:
        self.clock, self.fit_s, self.quality = clock, fit_s, quality

    def fit(self, X: Any, y: Any) -> SlowModel:
        self.clock.now += self.fit_s
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray[Any, Any]:
        return np.zeros(len(X))


def fake_search(
    clock: FakeClock, budget_s: float, fit_s: dict[str, float], quality: dict[str, float]
) -> Search:
    rows = 50
    folds = list(KFold(5).split(np.zeros(rows)))
    evaluation = Evaluation(
        X=pd.DataFrame({"x": np.arange(rows, dtype=float)}),
        y=np.zeros(rows),
        folds=folds,
        scorer=lambda model, X, y: model.quality,
        pipeline_for=lambda family, params: SlowModel(
            clock, fit_s[family], quality[family] + params["jitter"]
        ),
        probabilities=False,
    )
    space = {family: {"jitter": Distribution("float", 0.0, 0.01)} for family in fit_s}
    return Search(space, evaluation, TimeBudget(clock, clock() + budget_s), seed=0)


def test_the_first_rung_gives_every_family_a_trial_and_takes_at_most_half_the_budget() -> None:
    assert first_rung(20, 7) == 1
    assert first_rung(40, 5) == 3  # capped
    assert first_rung(3, 7) == 1  # fewer trials than families: the first ones get one
    assert rung_families(["a", "b", "c"], 1, 3) == ["a", "b", "c"]  # the rest: shared
    assert rung_families(["a", "b", "c"], 2, 20) == ["a", "b", "c", "a", "b", "c"]
    assert rung_families(["a", "b"], 4, 5) == ["a", "b", "a", "b", "a"]  # best first
    assert rung_families(["a"], 8, 5) == ["a"] * 5
    assert rung_families(["a", "b", "c", "d"], 1, 2) == ["a", "b"]


def test_the_usually_strongest_families_are_tried_first() -> None:
    assert by_prior(["linear_regression", "new_family", "knn", "hist_gradient_boosting"]) == [
        "hist_gradient_boosting",
        "knn",
        "linear_regression",
        "new_family",
    ]
    frame = pd.DataFrame({"x": np.sin(np.arange(60.0)), "y": np.cos(np.arange(60.0))})
    result = train(frame, SearchConfig(target_column="y", trial_budget=2, cv_folds=3))
    # Two trials over seven or more families: the first two by the prior order.
    first_two = by_prior(candidate_families("regression", "auto"))[:2]
    assert [t.family for t in result.trials] == first_two
    assert first_two[0] == "hist_gradient_boosting"


def test_the_better_half_of_the_families_survive_a_rung() -> None:
    best = {"a": 0.2, "b": 0.9, "c": None, "d": 0.5, "e": 0.7}
    assert survivors(["a", "b", "c", "d", "e"], best) == ["b", "e", "d"]
    assert survivors(["c", "a"], best) == ["a"]


def test_the_refit_estimate_scales_a_fold_to_all_rows_with_a_margin() -> None:
    assert refit_estimate([4.0, 4.0], 5) == pytest.approx(REFIT_MARGIN * 4.0 * 5 / 4)
    assert refit_estimate([], 5) == 0.0


def test_successive_halving_gives_the_better_families_more_trials() -> None:
    clock = FakeClock()
    quality = {"poor": 0.1, "fair": 0.4, "good": 0.6, "best": 0.9}
    search = fake_search(clock, 1e9, dict.fromkeys(quality, 1.0), quality)
    search.run(20, lambda finished: None)
    counts = {f: sum(t.family == f for t in search.trials()) for f in quality}
    assert sum(counts.values()) == 20  # the trial budget is the total
    # 4 x 2 in the first rung, 2 x 4 for the better half, the last 4 for the best.
    assert counts == {"poor": 2, "fair": 2, "good": 6, "best": 10}
    assert {t.rung for t in search.trials() if t.family == "poor"} == {0}


def test_the_time_budget_keeps_the_refit_and_abandons_a_fold_that_cannot_finish() -> None:
    clock = FakeClock()
    # 10 s a fold, 50 s a trial; the refit is set at 1.5 x 10 x 5/4 = 18.75 s.
    search = fake_search(clock, 125.0, {"slow": 10.0}, {"slow": 0.5})
    search.run(50, lambda finished: None)
    trials = search.trials()
    # Two trials end at 100 s; the 25 s left cannot hold a 10 s fold and the 18.75 s
    # refit, so no third trial starts.
    assert [t.state for t in trials] == ["complete", "complete"]
    assert 125.0 - clock() >= 18.75

    clock = FakeClock()
    search = fake_search(clock, 135.0, {"slow": 10.0}, {"slow": 0.5})
    search.run(50, lambda finished: None)
    trials = search.trials()
    # With 35 s left after two trials the third starts, fits one fold (at 110 s, 25 s
    # left < 10 + 18.75) and is abandoned with the reason; nothing starts after it.
    assert [t.state for t in trials] == ["complete", "complete", "pruned"]
    assert len(trials[2].fold_scores) == 1
    assert "abandoned before fold 2 of 5" in (trials[2].reason or "")
    assert 135.0 - clock() >= 18.75


def test_the_first_trial_completes_whatever_the_time_budget() -> None:
    clock = FakeClock()
    search = fake_search(clock, 5.0, {"slow": 10.0}, {"slow": 0.5})
    search.run(20, lambda finished: None)
    assert [t.state for t in search.trials()] == ["complete"]


def test_train_stops_after_one_complete_trial_when_the_time_is_spent() -> None:
    calls = iter(range(1_000_000))

    def late_clock() -> float:
        # The run begins at 0; every later reading is an hour on.
        return 0.0 if next(calls) == 0 else 3600.0

    frame = pd.DataFrame(
        {"x": np.sin(np.arange(60.0)), "y": np.sin(np.arange(60.0)) * 2 + np.arange(60) % 3}
    )
    result = train(
        frame,
        SearchConfig(target_column="y", trial_budget=20, time_budget_s=60, cv_folds=3),
        clock=late_clock,
    )
    assert [t.state for t in result.trials] == ["complete"]
    assert result.pipeline is not None
    assert result.family == result.trials[0].family


def oof_scores(predictions: list[np.ndarray[Any, Any]], y: np.ndarray[Any, Any]) -> Any:
    folds = list(KFold(4, shuffle=True, random_state=0).split(y))
    return select(predictions, y, folds, get_scorer("r2"), None)


def test_an_ensemble_of_independent_errors_beats_its_members() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    first, second = y + rng.normal(size=400), y + rng.normal(size=400)
    ensemble = oof_scores([first, second], y)
    assert ensemble is not None
    assert ensemble.weights == pytest.approx([0.5, 0.5], abs=0.15)
    assert oof_scores([first], y) is None  # one candidate: no ensemble
    folds = list(KFold(4, shuffle=True, random_state=0).split(y))
    best_single = max(
        float(np.mean([r2_score(y[test], p[test]) for _, test in folds])) for p in (first, second)
    )
    assert beats(ensemble, best_single)


def test_ensemble_selection_stops_when_the_time_budget_has_no_room() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=400)
    first, second = y + rng.normal(size=400), y + rng.normal(size=400)
    folds = list(KFold(4, shuffle=True, random_state=0).split(y))
    # No room after the first round: one member, no ensemble (with room, two: see above).
    assert select([first, second], y, folds, get_scorer("r2"), None, lambda: False) is None


def test_an_ensemble_of_one_trial_repeated_is_not_an_ensemble() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=200)
    good, poor = y + 0.1 * rng.normal(size=200), rng.normal(size=200)
    assert oof_scores([good, poor], y) is None


def test_a_hair_of_gain_does_not_choose_the_ensemble() -> None:
    assert not beats(Ensemble([0, 1], [0.5, 0.5], 0.8 * (1 + MIN_GAIN / 2), [], np.empty(0)), 0.8)
    assert beats(Ensemble([0, 1], [0.5, 0.5], 0.8 * (1 + MIN_GAIN * 2), [], np.empty(0)), 0.8)


def test_a_chosen_ensemble_beats_every_trial_and_round_trips_as_an_artifact(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, size=(400, 4))
    y = np.sin(2 * x[:, 0]) + x[:, 1] ** 2 + 0.5 * x[:, 2] + rng.normal(0, 0.3, 400)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(
        colour=rng.choice(["red", "blue"], 400), y=y
    )
    # The top score kept (model_choice "best"): on 400 rows a boosted trial ties with the
    # ensemble within the folds' noise, and test_trainer_selection covers that rule.
    config = SearchConfig(target_column="y", trial_budget=18, cv_folds=3, model_choice="best")
    result = train(frame, config)
    assert result.family == ENSEMBLE, "this problem's trials err apart: the ensemble wins"
    # Its score is the nested one (each fold scored by the ensemble selected without it),
    # and still above every trial's.
    best = max(t.score for t in result.trials if t.state == "complete" and t.score is not None)
    assert result.cv_score > best + MIN_GAIN * abs(best)
    members = result.params["members"]
    assert len(members) >= 2
    assert sum(m["weight"] for m in members) == pytest.approx(1.0)
    _round_trips(result.pipeline, frame.drop(columns="y"), result.feature_columns, tmp_path)


def test_a_soft_voting_ensemble_round_trips_as_an_artifact(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"]).assign(
        colour=rng.choice(["red", "blue"], 200)
    )
    y = np.digitize(x[:, 0] + x[:, 1], [-0.5, 0.5])
    features = list(frame.columns)
    pipelines = [
        (
            f"{family}_{i}",
            build_pipeline(
                family,
                "multiclass",
                {},
                numeric=["a", "b", "c", "d"],
                categorical=["colour"],
                numeric_text=[],
                encoded=[],
                seed=0,
                n_jobs=1,
            ),
        )
        for i, family in enumerate(["logistic_regression", "random_forest"])
    ]
    model = voting(pipelines, [0.6, 0.4], classification=True).fit(model_input(frame), y)
    _round_trips(model, frame, features, tmp_path)


def _round_trips(model: Any, frame: pd.DataFrame, features: list[str], tmp_path: Path) -> None:
    stored = artifacts.dump(model, str(tmp_path / "t" / "m.skops"))
    loaded = artifacts.ArtifactStore(str(tmp_path)).load(
        stored.uri, tenant="t", sha256=stored.sha256
    )
    X = model_input(frame)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # The evaluator reads the ensemble's input as its members': "colour" is a category.
    schema = input_schema(loaded, features)
    assert schema.numeric == {"a", "b", "c", "d"}
    assert schema.categories["colour"] == {"red", "blue"}


def test_identical_trials_give_the_single_best_pipeline() -> None:
    import json

    frame = pd.DataFrame(
        {"x": np.sin(np.arange(60.0)), "y": np.sin(np.arange(60.0)) + np.arange(60) % 3}
    )
    space = json.dumps({"ridge": {"alpha": {"type": "categorical", "choices": [1.0]}}})
    result = train(
        frame,
        SearchConfig(
            target_column="y", algorithm="ridge", search_space=space, trial_budget=3, cv_folds=3
        ),
    )
    assert result.family == "ridge"
    assert result.params == {"alpha": 1.0}


def test_paced_work_stops_when_another_step_as_long_as_the_last_would_not_fit() -> None:
    clock = FakeClock()
    budget = TimeBudget(clock, deadline=10.0, reserve=2.0)
    room = budget.paced()
    clock.now = 3.0  # a step of 3 s: 7 s left, 3 s more and the 2 s reserve fit
    assert room()
    clock.now = 6.0  # another 3 s step: 4 s left, not enough for 3 s and the reserve
    assert not room()
