"""The split the trainer and the evaluator share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lepton.data.modeling import SHOWN_LABEL_CHARS, holdout_split, label_text, labelled, shown_label


def test_the_split_is_seeded_disjoint_and_complete() -> None:
    y = np.arange(100, dtype=float)
    train, held = holdout_split(y, "regression", 0.2, seed=7)
    again_train, again_held = holdout_split(y, "regression", 0.2, seed=7)
    assert (train == again_train).all()
    assert (held == again_held).all()
    assert len(held) == 20
    assert set(train) | set(held) == set(range(100))
    assert not set(train) & set(held)
    _, other = holdout_split(y, "regression", 0.2, seed=8)
    assert set(other) != set(held)


def test_classification_is_stratified_when_classes_allow() -> None:
    y = np.array(["a"] * 90 + ["b"] * 10, dtype=object)
    _, held = holdout_split(y, "binary", 0.2, seed=0)
    assert sorted(pd.Series(y[held]).value_counts().to_dict().items()) == [("a", 18), ("b", 2)]


@pytest.mark.parametrize("fraction", [0.0, -1.0])
def test_no_fraction_holds_nothing_out(fraction: float) -> None:
    train, held = holdout_split(np.zeros(5), "regression", fraction, seed=0)
    assert list(train) == [0, 1, 2, 3, 4]
    assert len(held) == 0


def test_labelled_drops_rows_without_a_target_and_takes_model_input() -> None:
    frame = pd.DataFrame(
        {"x": pd.array([1, None, 3], dtype="Int64"), "k": ["a", None, "c"], "y": [1.0, 2.0, None]}
    )
    X, y = labelled(frame, "y", ["k", "x"])
    assert list(X.columns) == ["k", "x"]
    assert list(y) == [1.0, 2.0]
    assert X["x"].dtype == np.float64
    assert np.isnan(X["x"][1])
    assert X["k"][0] == "a"
    assert pd.isna(X["k"][1])


def test_a_shown_label_is_cut_and_a_label_is_whole() -> None:
    assert label_text("x" * 5_000) == "x" * 5_000
    assert shown_label("x" * 5_000) == "x" * (SHOWN_LABEL_CHARS - 1) + "…"
    assert shown_label(1.0) == "1"
