"""The trainer's pure training logic: inference, families, pipelines, search spaces, search."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import KFold, cross_val_score

from lepton.data.modeling import holdout_split, model_input
from lepton.services.trainer.allocation import share
from lepton.services.trainer.errors import (
    AlgorithmMismatch,
    ConstantTarget,
    InvalidSearchSpace,
    InvalidTask,
    MissingTargetColumn,
    TooFewRows,
)
from lepton.services.trainer.pipelines import build_pipeline, candidate_families, infer_problem
from lepton.services.trainer.search_space import default_space, parse_search_space
from lepton.services.trainer.training import MAX_CLASSES, SearchConfig, train


def houses(rows: int = 80, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 250, rows)
    district = rng.choice(["A区", "B区", "C区"], rows)
    bonus = pd.Series(district).map({"A区": 900_000, "B区": 400_000, "C区": 0}).to_numpy()
    return pd.DataFrame(
        {
            "area": pd.array(area, dtype="Float64"),
            "district": pd.array(district, dtype="string"),
            "price": area * 30_000 + bonus + rng.normal(0, 50_000, rows),
        }
    )


def labelled(rows: int = 90, classes: int = 2, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    label = np.digitize(x[:, 0] + 0.3 * x[:, 1], np.linspace(-1, 1, classes - 1))
    return pd.DataFrame(
        {"x0": x[:, 0], "x1": x[:, 1], "colour": rng.choice(["red", "blue"], rows), "y": label}
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1.5, 2.25, 3.0, 4.75, 10.1, 3.3], "regression"),
        (list(range(100)), "regression"),  # many distinct integers: a quantity
        ([0, 1, 1, 0, 1, 0], "binary"),
        (["yes", "no", "no", "yes"], "binary"),
        ([True, False, True, True], "binary"),
        ([0, 1, 2] * 10, "multiclass"),
        (["a", "b", "c", "a"], "multiclass"),
    ],
)
def test_the_problem_is_inferred_from_the_target(values: list[object], expected: str) -> None:
    assert infer_problem(pd.Series(values)) == expected


def test_missing_target_values_do_not_change_the_inference() -> None:
    assert infer_problem(pd.Series([0, 1, None, 1, 0], dtype="Int64")) == "binary"


def test_families_suit_the_problem() -> None:
    assert "linear_regression" in candidate_families("regression", "auto")
    assert "linear_regression" not in candidate_families("binary", "auto")
    assert candidate_families("multiclass", "knn") == ("knn",)
    with pytest.raises(AlgorithmMismatch, match="logistic_regression does not fit"):
        candidate_families("regression", "logistic_regression")


@pytest.mark.parametrize("family", candidate_families("regression", "auto"))
def test_each_regression_family_fits_tiny_data(family: str) -> None:
    frame = houses(30)
    result = train(
        frame,
        SearchConfig(
            target_column="price",
            algorithm=family,
            trial_budget=2,
            cv_folds=3,
            holdout_fraction=0.0,
        ),
    )
    assert result.family == family
    assert result.pipeline.predict(model_input(frame.drop(columns="price"))).shape == (30,)
    assert len(result.fold_scores) == 3


@pytest.mark.parametrize("family", candidate_families("multiclass", "auto"))
def test_each_classification_family_fits_tiny_data(family: str) -> None:
    frame = labelled(45, classes=3)
    result = train(
        frame,
        SearchConfig(
            target_column="y", algorithm=family, trial_budget=2, cv_folds=3, holdout_fraction=0.0
        ),
    )
    assert result.problem_type == "multiclass"
    assert set(result.pipeline.predict(model_input(frame.drop(columns="y")))) <= {0.0, 1.0, 2.0}


def test_preprocessing_is_fitted_on_training_rows_only_and_tolerates_new_categories() -> None:
    frame = model_input(houses(60))
    features = frame.drop(columns="price")
    pipeline = build_pipeline("ridge", "regression", {}, numeric=["area"], categorical=["district"])
    train_rows = features.iloc[:30]
    pipeline.fit(train_rows, frame["price"].iloc[:30])
    scaler = pipeline.named_steps["preprocess"].named_transformers_["numeric"]["scale"]
    assert scaler.mean_[0] == pytest.approx(train_rows["area"].mean())
    assert scaler.mean_[0] != pytest.approx(features["area"].mean())
    unseen = pd.DataFrame({"area": [100.0, np.nan], "district": ["D区", np.nan]}, dtype=object)
    unseen["area"] = unseen["area"].astype("float64")
    assert np.isfinite(pipeline.predict(unseen)).all()


def test_search_scores_are_cross_validation_of_the_whole_pipeline() -> None:
    frame = houses(60)
    space = json.dumps({"ridge": {"alpha": {"type": "categorical", "choices": [1.0]}}})
    config = SearchConfig(
        target_column="price", algorithm="ridge", search_space=space, trial_budget=1, seed=3
    )
    result = train(frame, config)
    kept, _ = holdout_split(frame["price"].to_numpy(), "regression", config.holdout_fraction, 3)
    frame = frame.iloc[kept].reset_index(drop=True)
    X = model_input(frame.drop(columns="price"))
    pipeline = build_pipeline(
        "ridge", "regression", {"alpha": 1.0}, numeric=["area"], categorical=["district"], seed=3
    )
    expected = cross_val_score(
        pipeline, X, frame["price"], cv=KFold(5, shuffle=True, random_state=3), scoring="r2"
    )
    assert result.fold_scores == pytest.approx(list(expected))


def test_the_search_is_reproducible_with_a_seed() -> None:
    frame = labelled(80)
    config = SearchConfig(target_column="y", trial_budget=6, cv_folds=3, seed=11)
    first, second = train(frame, config), train(frame, config)
    assert [(t.family, t.params, t.score) for t in first.trials] == [
        (t.family, t.params, t.score) for t in second.trials
    ]
    assert first.problem_type == "binary"
    assert first.scoring == "f1_macro"


def test_a_search_space_restricts_the_families_and_ranges() -> None:
    text = json.dumps(
        {
            "ridge": {"alpha": {"type": "float", "low": 0.5, "high": 2, "log": True}},
            "knn": {"n_neighbors": {"type": "int", "low": 3, "high": 5}},
        }
    )
    space = parse_search_space(text, candidate_families("regression", "auto"), "regression")
    assert set(space) == {"ridge", "knn"}
    result = train(
        houses(60), SearchConfig(target_column="price", search_space=text, trial_budget=6)
    )
    for trial in result.trials:
        assert trial.family in {"ridge", "knn"}
        if trial.family == "ridge":
            assert 0.5 <= trial.params["alpha"] <= 2
        else:
            assert 3 <= trial.params["n_neighbors"] <= 5


def test_default_spaces_name_real_parameters() -> None:
    for problem in ("regression", "binary"):
        for family in candidate_families(problem, "auto"):
            names = set(default_space(family, problem))
            text = json.dumps(
                {family: {name: {"type": "categorical", "choices": [1]} for name in names}}
            )
            assert set(parse_search_space(text, (family,), problem)[family]) == names


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "non-empty JSON object"),
        ('{"lasso": {}}', "not searched"),
        ('{"ridge": {"depth": {"type": "int", "low": 1, "high": 3}}}', "no parameter 'depth'"),
        ('{"ridge": {"alpha": {"type": "float", "low": 5, "high": 1}}}', "low <= high"),
        ('{"ridge": {"alpha": {"type": "float", "low": 0, "high": 1, "log": true}}}', "low > 0"),
        ('{"ridge": {"alpha": {"type": "beta"}}}', "float, int or categorical"),
        ('{"ridge": {"alpha": {"type": "categorical", "choices": []}}}', "non-empty choices"),
        ('{"ridge": {"alpha": {"type": "int", "low": 1.5, "high": 3}}}', "int numbers"),
        ('{"knn": {"weights": {"type": "categorical", "choices": ["a\\u0000"]}}}', "NUL"),
    ],
)
def test_an_invalid_search_space_is_refused_with_the_reason(space: str, message: str) -> None:
    with pytest.raises(InvalidSearchSpace, match=message):
        parse_search_space(space, ("ridge", "knn"), "regression")


def test_bad_input_raises_a_specific_error() -> None:
    with pytest.raises(MissingTargetColumn, match="'rent' is not in the dataset"):
        train(houses(), SearchConfig(target_column="rent"))
    with pytest.raises(ConstantTarget, match="single value"):
        train(houses().assign(price=1.0), SearchConfig(target_column="price"))
    with pytest.raises(TooFewRows, match="3 rows with a target value left for training"):
        train(houses(4), SearchConfig(target_column="price", cv_folds=5))
    rare = labelled(40)
    rare.loc[0, "y"] = 7
    with pytest.raises(TooFewRows, match="class"):
        train(rare, SearchConfig(target_column="y", problem_type="multiclass", cv_folds=3))
    with pytest.raises(InvalidTask, match="scorer"):
        train(houses(), SearchConfig(target_column="price", scoring="nonsense", trial_budget=1))
    with pytest.raises(InvalidTask, match="cv_folds"):
        train(houses(), SearchConfig(target_column="price", cv_folds=1))


def test_a_target_of_more_labels_than_classes_are_trained_for_is_refused() -> None:
    frame = pd.DataFrame(
        {"x": np.arange(MAX_CLASSES + 1.0), "y": [f"order-{i}" for i in range(MAX_CLASSES + 1)]}
    )
    with pytest.raises(InvalidTask, match=f"{MAX_CLASSES + 1} distinct values: a classifier"):
        train(frame, SearchConfig(target_column="y"))


def test_a_long_class_label_is_quoted_cut() -> None:
    rare = labelled(40).astype({"y": str})
    rare.loc[0, "y"] = "7" * 10_000
    config = SearchConfig(
        target_column="y", problem_type="multiclass", cv_folds=3, holdout_fraction=0.0
    )
    with pytest.raises(TooFewRows) as refused:
        train(rare, config)
    assert len(str(refused.value)) < 300


def test_gang_shares_of_a_rung_add_up_to_it() -> None:
    rung = ["ridge", "knn", "svm"] * 3 + ["ridge"]
    shares = [share(rung, i, 3) for i in range(3)]
    assert [len(s) for s in shares] == [4, 3, 3]
    assert sorted(f for s in shares for f in s) == sorted(rung)
    assert sum(len(share(rung[:7], i, 4)) for i in range(4)) == 7


def test_held_out_rows_never_reach_the_search_or_the_refit() -> None:
    from lepton.data.modeling import labelled

    frame = houses(80)
    config = SearchConfig(target_column="price", algorithm="ridge", trial_budget=3, cv_folds=3)
    _, y = labelled(frame, "price", ["area", "district"])
    _, held = holdout_split(y, "regression", config.holdout_fraction, config.seed)
    assert len(held) == 16
    tampered = frame.copy()
    tampered.loc[tampered.index[held], "price"] = 1e12  # would wreck any fit that saw them
    clean, dirty = train(frame, config), train(tampered, config)
    assert dirty.fold_scores == clean.fold_scores
    X = model_input(frame.drop(columns="price"))
    np.testing.assert_allclose(dirty.pipeline.predict(X), clean.pipeline.predict(X))
