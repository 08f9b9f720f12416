"""The algorithm families: every one fits and predicts inside a full Lepton pipeline, the
lists of families agree wherever they are written, and class weights are searched."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, r2_score
from sklearn.pipeline import Pipeline

from lepton.contract.algorithms import ALGORITHMS, AUTO
from lepton.services.trainer.pipelines import (
    PARAMETER_ERRORS,
    build_pipeline,
    candidate_families,
    make_estimator,
)
from lepton.services.trainer.search_space import (
    CLASS_WEIGHTED,
    DEFAULT_SPACES,
    SECOND_POINTS,
    default_space,
    parse_search_space,
    starting_point,
    starting_points,
)
from lepton.services.trainer.training import SearchConfig, train

_ROOT = Path(__file__).resolve().parents[2]


def frame(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    """Numbers with a gap, a category, a quantity and two kinds of labels of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    colour = rng.choice(["red", "blue", "green"], rows).astype(object)
    quantity = 3 * x[:, 0] - x[:, 1] + (colour == "red") * 2 + rng.normal(0, 0.3, rows)
    data = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "colour": colour})
    data.loc[5, "x0"] = np.nan
    data.loc[7, "colour"] = np.nan
    data["quantity"] = quantity
    data["binary"] = (quantity > np.quantile(quantity, 0.8)).astype(int)
    data["multiclass"] = np.digitize(quantity, np.quantile(quantity, [0.33, 0.66]))
    return data


_TARGETS = {"regression": "quantity", "binary": "binary", "multiclass": "multiclass"}


def fitted(family: str, problem: str, params: Mapping[str, object], n_jobs: int = 1) -> Pipeline:
    data = frame()
    pipeline = build_pipeline(
        family,
        problem,
        params,
        numeric=["x0", "x1"],
        categorical=["colour"],
        seed=3,
        n_jobs=n_jobs,
    )
    return pipeline.fit(data[["x0", "x1", "colour"]], data[_TARGETS[problem]])


@pytest.mark.parametrize("problem", ["regression", "binary", "multiclass"])
@pytest.mark.parametrize("family", ["extra_trees", "lightgbm"])
def test_each_new_family_fits_and_predicts_in_a_lepton_pipeline(family: str, problem: str) -> None:
    assert family in candidate_families(problem, AUTO)
    model = fitted(family, problem, {})
    rows = frame(40, seed=1)
    predicted = model.predict(rows[["x0", "x1", "colour"]])
    truth = rows[_TARGETS[problem]]
    # Rows of the same rule it never saw: R², or accuracy averaged over the classes (the
    # binary labels are 80 / 20, where always the common class scores 0.5), well above chance.
    score = (r2_score if problem == "regression" else balanced_accuracy_score)(truth, predicted)
    assert score > 0.65


@pytest.mark.parametrize("problem", ["regression", "multiclass"])
def test_lightgbm_is_silent_and_repeats_itself_for_a_seed(
    problem: str, capfd: pytest.CaptureFixture[str]
) -> None:
    rows = frame(40, seed=1)[["x0", "x1", "colour"]]
    params = {"subsample": 0.7, "colsample_bytree": 0.7}
    first = fitted("lightgbm", problem, params, n_jobs=2).predict(rows)
    again = fitted("lightgbm", problem, params, n_jobs=2).predict(rows)
    np.testing.assert_array_equal(first, again)
    # Its C++ core writes to the process's stdout unless silenced; a worker logs JSON only.
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("lightgbm", {"num_leaves": 1}),
        ("lightgbm", {"objective": "nonsense"}),
        ("extra_trees", {"max_depth": 0}),
    ],
)
def test_a_parameter_point_a_family_rejects_raises_a_parameter_error(
    family: str, params: Mapping[str, object]
) -> None:
    # The search fails such a trial and goes on; LightGBM's checks raise a bare Exception.
    with pytest.raises(PARAMETER_ERRORS):
        fitted(family, "regression", params)


def test_every_list_of_families_agrees() -> None:
    regression = set(candidate_families("regression", AUTO))
    classification = set(candidate_families("binary", AUTO))
    assert {"extra_trees", "lightgbm"} <= regression & classification
    assert set(ALGORITHMS) - {AUTO} == regression | classification == set(DEFAULT_SPACES)
    for schema in ("job_requested", "job_assigned"):
        fields = json.loads((_ROOT / "schemas" / f"{schema}.avsc").read_text())["fields"]
        task = next(f for f in fields if f["name"] == "task")
        doc = next(f["doc"] for f in task["type"]["fields"] if f["name"] == "algorithm")
        named = doc.split("one family: ")[1].rstrip(".").split(", ")
        assert named == [a for a in ALGORITHMS if a != AUTO], schema


@pytest.mark.parametrize("family", sorted(CLASS_WEIGHTED))
def test_class_weight_is_searched_for_classifiers_that_take_it(family: str) -> None:
    assert default_space(family, "binary")["class_weight"].choices == (None, "balanced")
    assert "class_weight" not in default_space(family, "regression")
    assert "class_weight" not in DEFAULT_SPACES[family]  # not shared with regression
    model = fitted(family, "binary", {"class_weight": "balanced"})
    assert model[-1].get_params()["class_weight"] == "balanced"


def test_class_weight_is_searched_wherever_a_classifier_takes_it() -> None:
    for family in candidate_families("multiclass", AUTO):
        takes = "class_weight" in make_estimator(family, "multiclass", 0, 1).get_params()
        assert takes == (family in CLASS_WEIGHTED), family


def test_a_search_tries_balanced_class_weights_on_imbalanced_labels() -> None:
    data = frame(150)[["x0", "x1", "colour", "binary"]]
    result = train(
        data,
        SearchConfig(
            target_column="binary", algorithm="logistic_regression", trial_budget=8, seed=1
        ),
    )
    tried = {trial.params["class_weight"] for trial in result.trials}
    assert tried == {None, "balanced"}


def test_each_family_is_first_tried_at_its_library_defaults() -> None:
    """The first rung is every family untuned, as a baseline would run it (scikit-learn's
    estimator defaults), so a search never ends below a default it could have tried."""
    data = frame().drop(columns=["binary", "multiclass"])
    config = SearchConfig(target_column="quantity", trial_budget=9, time_budget_s=600, seed=0)
    result = train(data, config)
    first = {}
    for trial in result.trials:
        first.setdefault(trial.family, trial.params)
    assert len(first) == 9, "every regression family has its first trial in the first rung"
    assert first["hist_gradient_boosting"] == {
        "learning_rate": 0.1,
        "max_iter": 100,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "max_features": 1.0,
        "l2_regularization": 1e-6,
    }
    assert first["random_forest"] == {
        "n_estimators": 100,
        "max_depth": 32,
        "min_samples_leaf": 1,
        "max_features": 1.0,
    }
    assert first["linear_regression"] == {"fit_intercept": True}
    # Where a range holds the library's default, the starting point is that default (a
    # forest's depth, the regularisations and a forest's column share are not: see
    # STARTING_POINTS).
    # An SVM's gamma is "scale" computed for the table (see test below).
    approximated = {"max_depth", "l2_regularization", "max_features", "reg_lambda", "gamma"}
    columns = data.shape[1] - 1
    for family, params in first.items():
        defaults = make_estimator(family, "regression", seed=0, n_jobs=1).get_params()
        start = starting_point(family, default_space(family, "regression"), "regression", columns)
        for name, value in start.items():
            assert params[name] == value
            if name not in approximated:
                [default] = [v for k, v in defaults.items() if k.split("__")[-1] == name]
                assert default == value, (family, name)


@pytest.mark.parametrize("columns", [1, 4, 9, 13, 20, 64, 100])
def test_defaults_that_depend_on_the_table_are_computed_from_its_columns(columns: int) -> None:
    # scikit-learn's forest classifiers consider floor(sqrt(n)) of n columns at a split;
    # a float share s considers floor(s * n) of them.
    for family in ("random_forest", "extra_trees"):
        share = starting_point(family, default_space(family, "binary"), "binary", columns)
        assert int(share["max_features"] * columns) == math.isqrt(columns)
        regression = default_space(family, "regression")
        assert starting_point(family, regression, "regression", columns)["max_features"] == 1.0
    # gamma="scale" is 1 / (n x variance), and the pipeline scales numbers to variance 1.
    svm = starting_point("svm", default_space("svm", "binary"), "binary", columns)
    assert svm["gamma"] == pytest.approx(1 / columns)


def test_a_jobs_range_without_the_default_is_sampled_instead() -> None:
    space = parse_search_space(
        json.dumps({"ridge": {"alpha": {"type": "float", "low": 5.0, "high": 50.0}}}),
        ("ridge",),
        "regression",
    )
    assert starting_point("ridge", space["ridge"], "regression", 4) == {}
    balanced = starting_point("svm", default_space("svm", "binary"), "binary", 4)
    assert balanced == {"C": 1.0, "gamma": 0.25, "class_weight": None}


@pytest.mark.parametrize("family", sorted(SECOND_POINTS))
def test_a_familys_second_trial_is_its_second_point(family: str) -> None:
    data = frame().drop(columns=["binary", "multiclass"])
    result = train(
        data, SearchConfig(target_column="quantity", algorithm=family, trial_budget=3, cv_folds=3)
    )
    space = default_space(family, "regression")
    # The default ranges hold every value of both points, so both are tried whole.
    assert starting_points(family, space, "regression", 4)[1] == SECOND_POINTS[family]
    first, second = (t.params for t in result.trials[:2])
    assert starting_point(family, space, "regression", 4).items() <= first.items()
    assert second == SECOND_POINTS[family]
    if family in CLASS_WEIGHTED:  # a classifier's weighs classes as scikit-learn's default
        classified = starting_points(family, default_space(family, "binary"), "binary", 4)[1]
        assert classified["class_weight"] is None
