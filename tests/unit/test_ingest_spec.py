"""The dataset spec: validation with specific errors, and type inference."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lepton.services.ingest.spec import IngestRejected, infer_type, parse_spec


def test_a_json_spec_parses_with_defaults() -> None:
    spec = parse_spec(
        json.dumps(
            {
                "columns": {
                    "面积": {"type": "float", "missing": "median", "min": 0},
                    "区域": {"type": "category", "categories": ["A区", "B区"]},
                },
                "unique": ["区域"],
                "dedupe": "key",
            }
        )
    )
    assert spec.columns["面积"].missing == "median"
    assert spec.columns["区域"].nullable is True
    assert spec.dedupe == "key"


def test_yaml_is_accepted_too() -> None:
    spec = parse_spec("columns:\n  x:\n    type: integer\n    nullable: false\n")
    assert spec.columns["x"].type == "integer"
    assert spec.columns["x"].nullable is False


@pytest.mark.parametrize(
    ("spec", "message", "column"),
    [
        ({"columns": {"a": {"type": "float", "categories": ["x"]}}}, "categories need", "a"),
        ({"columns": {"a": {"type": "string", "min": 1}}}, "min/max need a numeric", "a"),
        ({"columns": {"a": {"type": "float", "min": 5, "max": 1}}}, "is above max", "a"),
        ({"columns": {"a": {"type": "string", "missing": "median"}}}, "median needs", "a"),
        ({"columns": {"a": {"type": "string", "missing": "constant"}}}, "needs fill", "a"),
        ({"columns": {"a": {"type": "string", "pattern": "("}}}, "not a regular expression", "a"),
        ({"columns": {"a": {"type": "strnig"}}}, "columns.a.type", "a"),
        ({"columns": {"a": {"typo": 1}}}, "Extra inputs", "a"),
        ({"columns": {"a": {}}, "unique": ["b"]}, "does not declare", None),
        ({"columns": {"a": {}}, "dedupe": "key"}, "needs unique key", None),
    ],
)
def test_an_invalid_spec_is_rejected_specifically(
    spec: dict, message: str, column: str | None
) -> None:
    with pytest.raises(IngestRejected) as caught:
        parse_spec(json.dumps(spec))
    assert caught.value.code == "spec_invalid"
    assert message in caught.value.reason
    assert caught.value.column == column


def test_text_that_is_no_spec_is_rejected() -> None:
    with pytest.raises(IngestRejected) as caught:
        parse_spec("[1, 2]")
    assert caught.value.code == "spec_invalid"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "2", "-3"], "integer"),
        (["1.5", "2", "x"] + ["3"] * 30, "float"),
        (["true", "false", "yes"], "boolean"),
        (["2024-01-02", "2024-02-03T10:00:00"], "datetime"),
        (["A区", "B区"] * 20, "category"),
        ([f"name {i}" for i in range(100)], "string"),
        ([None, None], "string"),
    ],
)
def test_infer_type_from_text(values: list, expected: str) -> None:
    assert infer_type(pd.Series(values, dtype="object")) == expected


def test_infer_type_from_native_columns() -> None:
    assert infer_type(pd.Series([1, 2])) == "integer"
    assert infer_type(pd.Series([1.0, None])) == "float"
    assert infer_type(pd.Series([True, False])) == "boolean"
    assert infer_type(pd.Series([1, 2.5], dtype="object")) == "float"


def test_a_few_wrong_values_do_not_make_a_numeric_column_text() -> None:
    values = [str(i) for i in range(95)] + ["一百二十"] * 5
    assert infer_type(pd.Series(values)) == "integer"
