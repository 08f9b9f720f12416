"""Issue 21 items 2 and 4: training protects itself on data nobody prepared, and says what
it did. Each test fails on a trainer that trusts every column as it comes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.model_selection import KFold
from sklearn.preprocessing import TargetEncoder

from lepton.data.artifacts import _loads
from lepton.data.modeling import model_input
from lepton.data.samples import house_price, messy_houses
from lepton.services.evaluator.findings import preparation_findings
from lepton.services.evaluator.inputs import input_schema
from lepton.services.trainer.pipelines import build_pipeline
from lepton.services.trainer.protection import (
    MAX_ONE_HOT,
    choose_target_transform,
    identifier_columns,
)
from lepton.services.trainer.training import SearchConfig, TrainingResult, train

QUICK = {"trial_budget": 6, "cv_folds": 3, "time_budget_s": 120.0}


def _codes(result: TrainingResult) -> dict[tuple[str, str | None], str]:
    return {(f.code, f.column): f.message for f in result.findings}


def _price(result: TrainingResult, area: str = "150") -> float:
    query = pd.DataFrame({"面积": [area], "房屋类型": ["普通住宅"], "地理位置": ["B区"]})
    return float(result.pipeline.predict(model_input(query)[result.feature_columns])[0])


@pytest.fixture(scope="module")
def clean_text_houses() -> TrainingResult:
    """The messy table's 300 clean rows, every value text as a spreadsheet export has it."""
    frame = messy_houses().iloc[:300]
    return train(frame, SearchConfig(target_column="价格", seed=3, **QUICK))  # type: ignore[arg-type]


def test_an_id_column_is_no_feature_and_the_finding_says_why(
    clean_text_houses: TrainingResult,
) -> None:
    assert "房屋ID" not in clean_text_houses.feature_columns
    assert (
        "named like an identifier" in _codes(clean_text_houses)[("identifier_excluded", "房屋ID")]
    )


def test_numbers_written_as_text_are_numbers_in_the_stored_pipeline(
    clean_text_houses: TrainingResult,
) -> None:
    codes = _codes(clean_text_houses)
    assert ("text_as_numbers", "面积") in codes
    assert ("text_as_numbers", "价格") in codes  # the target too: a regression, not classes
    assert clean_text_houses.problem_type == "regression"
    truth = house_price(150, "普通住宅", "B区")
    assert _price(clean_text_houses) == pytest.approx(truth, rel=0.1)
    # An area never seen in training is still a number: a larger house costs more.
    assert _price(clean_text_houses, "211.3") > _price(clean_text_houses, "150")


def test_the_stored_pipeline_loads_and_takes_text_or_numbers(
    clean_text_houses: TrainingResult,
) -> None:
    loaded = _loads(sio.dumps(clean_text_houses.pipeline))
    schema = input_schema(loaded, clean_text_houses.feature_columns)
    assert "面积" not in schema.numeric  # the evaluator must not refuse its text
    query = pd.DataFrame({"面积": ["150"], "房屋类型": ["普通住宅"], "地理位置": ["B区"]})
    as_number = query.assign(面积=[150.0])
    text_price = loaded.predict(model_input(query))
    assert loaded.predict(model_input(as_number)) == pytest.approx(text_price)


def test_identifiers_by_name_by_shape_and_not_measurements() -> None:
    rows = 60
    rng = np.random.default_rng(0)
    frame = model_input(
        pd.DataFrame(
            {
                "customer_id": [f"C{i}" for i in rng.permutation(rows)],
                "row": np.arange(rows, dtype=float) + 1000,  # unnamed, but a row number
                "ticket": [f"T-{i:04d}-{rng.integers(1e6)}" for i in range(rows)],
                "area": rng.uniform(40, 200, rows),  # unique too, but a measurement
                "paid": rng.uniform(0, 1, rows),  # ends in "id" without being one
                "kind": rng.choice(["a", "b"], rows),
            }
        )
    )
    excluded = {f.column for f in identifier_columns(frame)}
    assert excluded == {"customer_id", "row", "ticket"}
    # A daily series: one date per row, in order, is a feature (seconds in the model input).
    days = model_input(pd.DataFrame({"day": pd.date_range("2026-01-01", periods=rows)}))
    assert identifier_columns(days, ["day"]) == []
    assert len(identifier_columns(days)) == 1


def test_a_table_of_only_identifiers_is_refused_with_the_reason() -> None:
    frame = pd.DataFrame({"id": range(50), "y": np.arange(50) % 7 * 1.5})
    with pytest.raises(Exception, match="identifies rows"):
        train(frame, SearchConfig(target_column="y", **QUICK))  # type: ignore[arg-type]


def test_many_categories_are_target_encoded_and_the_evaluator_reads_them_as_categories() -> None:
    rng = np.random.default_rng(1)
    rows = 400
    street = rng.integers(0, 60, rows)
    frame = pd.DataFrame(
        {
            "street": [f"街道{s}" for s in street],
            "area": rng.uniform(40, 200, rows),
        }
    )
    frame["price"] = frame["area"] * 100 + street * 50 + rng.normal(0, 20, rows)
    result = train(frame, SearchConfig(target_column="price", algorithm="ridge", **QUICK))  # type: ignore[arg-type]
    assert ("target_encoded", "street") in _codes(result)
    preprocess = result.pipeline.named_steps["preprocess"]
    encoders = [
        step
        for _, branch, _ in preprocess.transformers_
        if hasattr(branch, "steps")
        for _, step in branch.steps
    ]
    assert any(isinstance(step, TargetEncoder) for step in encoders)
    assert preprocess.transform(model_input(frame.drop(columns="price"))).shape[1] < MAX_ONE_HOT
    schema = input_schema(result.pipeline, result.feature_columns)
    assert "street" in schema.categories
    assert "street" not in schema.numeric


def _multiplicative(rows: int = 400) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"a": rng.uniform(0, 4, rows), "b": rng.uniform(0, 4, rows)})
    y = np.exp(X["a"] + X["b"] + rng.normal(0, 0.1, rows))
    return X, y.to_numpy()


def test_a_skewed_positive_target_goes_on_a_log_scale_when_cv_says_so() -> None:
    X, y = _multiplicative()
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    baseline = build_pipeline("ridge", "regression", {}, numeric=["a", "b"], categorical=[])
    chosen, finding = choose_target_transform(X, y, folds, "r2", baseline, 0, "price")
    assert chosen
    assert finding is not None
    assert finding.code == "target_log"
    assert "log(1 + price)" in finding.message
    assert "raw" in finding.message


def test_a_symmetric_or_signed_target_is_not_transformed() -> None:
    X, y = _multiplicative()
    folds = list(KFold(3, shuffle=True, random_state=0).split(X))
    baseline = build_pipeline("ridge", "regression", {}, numeric=["a", "b"], categorical=[])
    for target in (np.log(y), np.log(y) - 4):
        assert choose_target_transform(X, target, folds, "r2", baseline, 0, "y") == (False, None)


def test_training_reports_the_log_scale_and_refits_with_it() -> None:
    X, y = _multiplicative()
    result = train(X.assign(price=y), SearchConfig(target_column="price", **QUICK))  # type: ignore[arg-type]
    assert ("target_log", "price") in _codes(result)
    model = result.pipeline.named_steps["model"]
    assert type(model).__name__ == "TransformedTargetRegressor"
    assert model.func is np.log1p


def test_a_messy_table_without_cleaning_still_prices_a_house_sanely() -> None:
    # The raw file (the 99,999,999 price included): the log scale keeps that one row from
    # dragging every prediction.
    result = train(messy_houses(), SearchConfig(target_column="价格", **QUICK))  # type: ignore[arg-type]
    assert "房屋ID" not in result.feature_columns
    assert _price(result) == pytest.approx(house_price(150, "普通住宅", "B区"), rel=0.25)


def test_a_classifier_target_encodes_many_categories_and_its_artifact_loads() -> None:
    rng = np.random.default_rng(4)
    rows = 300
    shop = rng.integers(0, 40, rows)
    frame = pd.DataFrame({"shop": [f"s{s}" for s in shop], "amount": rng.uniform(1, 100, rows)})
    frame["fraud"] = np.where((shop < 6) | (frame["amount"] > 90), "yes", "no")
    result = train(frame, SearchConfig(target_column="fraud", **QUICK))  # type: ignore[arg-type]
    assert ("target_encoded", "shop") in _codes(result)
    loaded = _loads(sio.dumps(result.pipeline))
    query = model_input(pd.DataFrame({"shop": ["s1", "s39"], "amount": [10.0, 10.0]}))
    assert list(loaded.predict(query)) == list(result.pipeline.predict(query))


def test_the_targets_outlier_flag_is_no_feature() -> None:
    rng = np.random.default_rng(5)
    area = rng.uniform(40, 200, 120)
    price = area * 100 + rng.normal(0, 50, 120)
    price[:3] = 1e7
    frame = pd.DataFrame({"area": area, "price": price, "price_outlier": price > 1e6})
    result = train(frame, SearchConfig(target_column="price", **QUICK))  # type: ignore[arg-type]
    assert result.feature_columns == ["area"]
    assert ("target_flag_excluded", "price_outlier") in _codes(result)


def test_the_evaluator_reports_each_preparation_step_as_a_finding(
    clean_text_houses: TrainingResult,
) -> None:
    # As the worker reports them in ModelReady.preparation.
    steps = [finding.record() for finding in clean_text_houses.findings]
    findings = preparation_findings(steps)
    assert [(f.code, f.feature) for f in findings] == [(s["code"], s["column"]) for s in steps]
    (excluded,) = [f for f in findings if f.code == "identifier_excluded"]
    assert excluded.feature == "房屋ID"
    assert "named like an identifier" in excluded.message
    assert excluded.severity == "info"
