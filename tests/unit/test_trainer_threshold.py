"""A binary classifier's decision threshold, tuned for a metric of labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import get_scorer
from sklearn.model_selection import FixedThresholdClassifier, StratifiedKFold

from lepton.data import artifacts
from lepton.data.modeling import model_input
from lepton.services.evaluator.inputs import input_schema
from lepton.services.trainer.threshold import DEFAULT_THRESHOLD, RARE_SHARE, scores_labels, tune
from lepton.services.trainer.training import SearchConfig, train

CLASSES = np.array([0, 1])


def _folds(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(StratifiedKFold(4, shuffle=True, random_state=0).split(y, y))


def _probabilities(positive: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - positive, positive])


def test_only_metrics_of_labels_are_tuned_for() -> None:
    assert scores_labels(get_scorer("f1_macro"))
    assert scores_labels(get_scorer("accuracy"))
    assert not scores_labels(get_scorer("roc_auc"))
    assert not scores_labels(get_scorer("neg_log_loss"))


def test_a_rare_class_scored_low_gets_a_lower_threshold() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.1).astype(int)
    # The rare class's probabilities straddle one half; the common class's stay below 0.3.
    positive = np.where(y == 1, rng.uniform(0.3, 0.7, 1000), rng.uniform(0.0, 0.3, 1000))
    found = tune(_probabilities(positive), y, _folds(y), get_scorer("f1_macro"), CLASSES)
    assert found is not None
    assert 0.25 <= found.value <= 0.35
    assert found.score == pytest.approx(np.mean(found.fold_scores))
    assert found.score > found.default_score


def test_probabilities_already_right_at_one_half_keep_it() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.1).astype(int)
    positive = np.where(y == 1, rng.uniform(0.55, 1.0, 1000), rng.uniform(0.0, 0.45, 1000))
    assert tune(_probabilities(positive), y, _folds(y), get_scorer("f1"), CLASSES) is None


def test_classes_near_balance_keep_one_half() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 1 - RARE_SHARE).astype(int)  # the rarer class just at the share
    positive = np.where(y == 1, rng.uniform(0.3, 0.7, 1000), rng.uniform(0.0, 0.3, 1000))
    # (With 10 % positives the same probabilities get 0.3: see the test above.)
    assert tune(_probabilities(positive), y, _folds(y), get_scorer("f1_macro"), CLASSES) is None


def test_rows_without_out_of_fold_probabilities_are_not_tuned_on() -> None:
    y = np.array([0, 1] * 20)
    positive = np.where(y == 1, 0.4, 0.1)
    positive[3] = np.nan
    assert tune(_probabilities(positive), y, _folds(y), get_scorer("f1"), CLASSES) is None


def _rare_positives() -> pd.DataFrame:
    """About one row in nine positive, driven by a and b; the logit sits low, so one half
    is too high a threshold for F1."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3))
    y = (rng.random(600) < 1 / (1 + np.exp(-(2.0 * x[:, 0] + x[:, 1] - 3.5)))).astype(int)
    return pd.DataFrame(x, columns=["a", "b", "c"]).assign(
        colour=rng.choice(["red", "blue"], 600), y=y
    )


def _config(scoring: str) -> SearchConfig:
    return SearchConfig(
        target_column="y",
        algorithm="logistic_regression",
        trial_budget=3,
        cv_folds=3,
        scoring=scoring,
        seed=1,
    )


def test_a_tuned_threshold_is_stored_reported_and_read_by_the_evaluator(tmp_path: Path) -> None:
    frame = _rare_positives()
    result = train(frame, _config("f1"))
    assert isinstance(result.pipeline, FixedThresholdClassifier)
    threshold = result.pipeline.threshold
    assert threshold != DEFAULT_THRESHOLD
    [finding] = [f for f in result.findings if f.code == "decision_threshold"]
    assert finding.column == "y"
    assert finding.message.startswith(
        f"the model predicts y 1 when that class's probability is at least {threshold:g} "
    )
    # Its score is the threshold's, above every trial's (which predicted at one half).
    best = max(t.score for t in result.trials if t.score is not None)
    assert result.cv_score > best
    X = model_input(frame.drop(columns="y"))
    positive = result.pipeline.predict_proba(X)[:, 1]
    np.testing.assert_array_equal(result.pipeline.predict(X), (positive >= threshold).astype(int))
    stored = artifacts.dump(result.pipeline, str(tmp_path / "t" / "m.skops"))
    loaded = artifacts.ArtifactStore(str(tmp_path)).load(
        stored.uri, tenant="t", sha256=stored.sha256
    )
    np.testing.assert_array_equal(loaded.predict(X), result.pipeline.predict(X))
    schema = input_schema(loaded, result.feature_columns)
    assert schema.numeric == {"a", "b", "c"}
    assert schema.categories["colour"] == {"red", "blue"}


def test_a_metric_of_probabilities_leaves_the_threshold_alone() -> None:
    result = train(_rare_positives(), _config("roc_auc"))
    assert not isinstance(result.pipeline, FixedThresholdClassifier)
    assert "decision_threshold" not in {f.code for f in result.findings}


def test_a_scan_the_time_budget_cuts_short_keeps_the_thresholds_nearest_one_half() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(1000) < 0.1).astype(int)
    positive = np.where(y == 1, rng.uniform(0.3, 0.7, 1000), rng.uniform(0.0, 0.3, 1000))
    calls: list[int] = []

    def room() -> bool:  # room for four thresholds after one half
        calls.append(1)
        return len(calls) <= 4

    found = tune(_probabilities(positive), y, _folds(y), get_scorer("f1_macro"), CLASSES, room)
    # One half and 0.475, 0.525, 0.45, 0.55 were scored; 0.3 (the best) was not reached.
    assert found is not None
    assert found.value == 0.45
    assert len(calls) == 5
