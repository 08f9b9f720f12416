"""Prediction requests: model references, records to frames, errors and warnings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from lepton.data.modeling import label_text, model_input
from lepton.services.evaluator.inputs import InputSchema, input_schema
from lepton.services.evaluator.prediction import (
    NAMES_LISTED,
    ModelRef,
    PredictionFailure,
    parse_model_ref,
    score_rows,
    to_frame,
    unknown_name,
)

FEATURES = ["面积", "房型", "区域"]


def houses() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = 200
    area = rng.uniform(40, 250, rows)
    district = rng.choice(["A区", "B区", "C区"], rows)
    kind = rng.choice(["普通住宅", "公寓"], rows)
    price = area * 30_000 + np.where(district == "A区", 900_000, 0)
    return pd.DataFrame({"面积": area, "房型": kind, "区域": district, "价格": price})


def house_pipeline(model: object) -> Pipeline:
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    return Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("numeric", SimpleImputer(strategy="median"), ["面积"]),
                        ("categorical", categorical, ["房型", "区域"]),
                    ]
                ),
            ),
            ("model", model),
        ]
    )


@pytest.fixture(scope="module")
def regression() -> Pipeline:
    frame = houses()
    return house_pipeline(LinearRegression()).fit(model_input(frame[FEATURES]), frame["价格"])


SEEDS_HOUSE = {"面积": 150.0, "房型": "普通住宅", "区域": "B区"}


def test_model_references() -> None:
    assert parse_model_ref("房价") == ModelRef("房价", "champion")
    assert parse_model_ref("房价@champion") == ModelRef("房价", "champion")
    assert parse_model_ref("房价@model-1") == ModelRef("房价", "model-1")
    for bad in ("", "@m1", "房价@", "a@b@c"):
        with pytest.raises(PredictionFailure) as caught:
            parse_model_ref(bad)
        assert caught.value.code == "invalid_model_ref"


def test_the_seeds_house_gets_a_price(regression: Pipeline) -> None:
    schema = input_schema(regression, FEATURES)
    assert schema.numeric == {"面积"}
    assert schema.categories["区域"] == {"A区", "B区", "C区"}
    scored = score_rows(regression, schema, [SEEDS_HOUSE, SEEDS_HOUSE | {"区域": "A区"}], 10)
    assert scored.predictions[0] == pytest.approx(150 * 30_000, rel=0.01)
    assert scored.predictions[1] == pytest.approx(150 * 30_000 + 900_000, rel=0.01)
    assert scored.warnings == []
    assert scored.probabilities == []


def test_unseen_categories_are_scored_with_a_warning(regression: Pipeline) -> None:
    schema = input_schema(regression, FEATURES)
    scored = score_rows(regression, schema, [SEEDS_HOUSE | {"区域": "D区"}], 10)
    assert len(scored.predictions) == 1
    assert scored.warnings == [
        "column '区域': value(s) 'D区' never seen in training (1 record); scored as an "
        "unknown category"
    ]


def test_null_is_a_missing_value_the_model_imputes(regression: Pipeline) -> None:
    schema = input_schema(regression, FEATURES)
    scored = score_rows(regression, schema, [SEEDS_HOUSE | {"面积": None, "房型": None}], 10)
    assert isinstance(scored.predictions[0], float)


@pytest.mark.parametrize(
    ("rows", "code", "message"),
    [
        ([{"面积": 150.0, "房型": "公寓"}], "missing_columns", r"区域 \(record 0\)"),
        ([SEEDS_HOUSE | {"面积": "一百五十"}], "invalid_value", "needs a number"),
        ([SEEDS_HOUSE | {"面积": True}], "invalid_value", "needs a number"),
        ([SEEDS_HOUSE] * 11, "too_many_rows", "at most 10"),
    ],
)
def test_records_that_cannot_be_scored(
    regression: Pipeline, rows: list[dict[str, object]], code: str, message: str
) -> None:
    with pytest.raises(PredictionFailure, match=message) as caught:
        score_rows(regression, input_schema(regression, FEATURES), rows, 10)
    assert caught.value.code == code


def test_classification_returns_labels_and_probabilities_by_label() -> None:
    frame = houses()
    y = np.where(frame["区域"] == "A区", 1.0, 0.0)  # a numeric target, read as float64
    model = house_pipeline(LogisticRegression()).fit(model_input(frame[FEATURES]), y)
    scored = score_rows(model, input_schema(model, FEATURES), [SEEDS_HOUSE | {"区域": "A区"}], 10)
    assert scored.predictions == ["1"]
    assert set(scored.probabilities[0]) == {"0", "1"}
    assert sum(scored.probabilities[0].values()) == pytest.approx(1.0)


def test_records_become_the_frame_model_input_makes() -> None:
    schema = InputSchema(("a", "k"), frozenset({"a"}))
    requests = [
        # The usual request: numbers and text (fast paths).
        [{"a": 1.0, "k": "x"}, {"a": None, "k": None}, {"a": 3, "k": ""}, {"a": 2**70, "k": "y"}],
        # Numbers, booleans and NaN in a categorical column: model_input converts them.
        [{"a": 1.5, "k": 3}, {"a": 2, "k": True}, {"a": float("nan"), "k": float("nan")}],
    ]
    for rows in requests:
        expected = model_input(
            pd.DataFrame(
                {
                    "a": np.array([np.nan if r["a"] is None else r["a"] for r in rows], float),
                    "k": np.array([np.nan if r["k"] is None else r["k"] for r in rows], object),
                }
            )
        )
        pd.testing.assert_frame_equal(to_frame(rows, schema), expected)


def test_a_classifiers_preprocessing_runs_once_with_the_same_answers() -> None:
    frame = houses()
    X = model_input(frame[FEATURES])
    for y in (np.where(frame["区域"] == "A区", 1.0, 0.0), frame["区域"].to_numpy()):
        model = house_pipeline(LogisticRegression(max_iter=5000)).fit(X, y)
        records = [SEEDS_HOUSE | {"区域": d} for d in ("A区", "B区", "C区", "D区")]
        scored = score_rows(model, input_schema(model, FEATURES), records, 10)
        rows = model_input(pd.DataFrame(records))[FEATURES]
        assert scored.predictions == [label_text(v) for v in model.predict(rows)]
        labels = [label_text(c) for c in model.classes_]
        assert scored.probabilities == [
            dict(zip(labels, map(float, row), strict=True)) for row in model.predict_proba(rows)
        ]


def test_an_unknown_model_name_hears_the_names_near_it_and_the_tenants_models() -> None:
    told = unknown_name("acme", "house_prize", ["diagnosis", "house_prices"])
    assert "did you mean 'house_prices'?" in told
    assert "(its models: diagnosis, house_prices)" in told
    assert "did you mean" not in unknown_name("acme", "zzz", ["diagnosis"])
    assert "no model yet" in unknown_name("acme", "house_prices", [])
    many = [f"m{i:02d}" for i in range(NAMES_LISTED)]
    assert unknown_name("acme", "x", many).endswith("m19 …)")
