"""The evaluator's pure evaluation: metrics, curves and findings on small known data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from lepton.data.modeling import SHOWN_LABEL_CHARS, holdout_split, label_text, labelled
from lepton.services.evaluator import findings
from lepton.services.evaluator.evaluation import EvaluationConfig, Prepared, evaluate, prepare
from lepton.services.evaluator.findings import permutation_importance
from lepton.services.evaluator.inputs import ColumnsMismatch, input_schema
from lepton.services.evaluator.metrics import (
    Outputs,
    fast_metric,
    metric_value,
    outputs,
    score,
)

CONFIG = EvaluationConfig(cv_folds=3)


def pipeline(model: object) -> Pipeline:
    return Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("numeric", "passthrough", ["x"]),
                        ("categorical", OneHotEncoder(handle_unknown="ignore"), ["kind"]),
                    ]
                ),
            ),
            ("model", model),
        ]
    )


def regression_frame(rows: int = 300, noise: float = 1.0) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, rows)
    kind = rng.choice(["a", "b"], rows)
    y = 3 * x + np.where(kind == "a", 5, 0) + rng.normal(0, noise, rows)
    return pd.DataFrame({"x": x, "kind": kind, "y": y})


def fitted(frame: pd.DataFrame, model: object, problem: str, fraction: float = 0.2) -> Pipeline:
    """Fitted the way the trainer fits: on the rows holdout_split keeps for training."""
    X, y = labelled(frame, "y", ["x", "kind"])
    train, _ = holdout_split(y, problem, fraction, 7)
    return pipeline(model).fit(X.iloc[train], y[train])


def prepared_like_the_evaluator(
    frame: pd.DataFrame,
    problem: str,
    fraction: float = 0.2,
    config: EvaluationConfig = CONFIG,
) -> Prepared:
    """Prepared as the evaluator prepares a job: target y, features x and kind, seed 7."""
    return prepare(
        frame,
        target="y",
        features=["x", "kind"],
        problem=problem,
        holdout_fraction=fraction,
        seed=7,
        config=config,
    )


def test_regression_is_scored_on_the_trainers_holdout_with_cv_per_fold() -> None:
    frame = regression_frame()
    model = fitted(frame, LinearRegression(), "regression")
    prepared = prepared_like_the_evaluator(frame, "regression")
    assert len(prepared.holdout) == 60
    result = evaluate(model, prepared, ["x", "kind"], CONFIG)
    assert result.holdout_rows == 60
    assert result.metrics["r2"] > 0.95
    assert {"rmse", "mae", "mape", "residual_mean", "residual_p95_abs"} <= set(result.metrics)
    assert {name: len(v) for name, v in result.cv_metrics.items()} == dict.fromkeys(
        ["rmse", "mae", "r2", "mape"], 3
    )
    assert result.curves[0].kind == "residuals"
    assert max(result.feature_importance, key=result.feature_importance.__getitem__) == "x"
    codes = [finding.code for finding in result.findings]
    assert "top_features" in codes
    assert "overfitting" not in codes
    assert "underfitting" not in codes


def test_a_noise_model_is_underfitting() -> None:
    frame = regression_frame(noise=200.0)
    model = fitted(frame, LinearRegression(), "regression")
    prepared = prepared_like_the_evaluator(frame, "regression")
    codes = {finding.code for finding in evaluate(model, prepared, ["x", "kind"], CONFIG).findings}
    assert "underfitting" in codes


def classification_frame(rows: int = 400, rare: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, rows)
    y = np.where(x + rng.normal(0, 0.5, rows) > np.quantile(x, 1 - rare), "yes", "no")
    return pd.DataFrame({"x": x, "kind": rng.choice(["a", "b"], rows), "y": y})


def test_classification_has_its_metrics_matrix_curves_and_imbalance() -> None:
    frame = classification_frame(rare=0.04)
    model = fitted(frame, LogisticRegression(), "binary")
    prepared = prepared_like_the_evaluator(frame, "binary", 0.25)
    result = evaluate(model, prepared, ["x", "kind"], CONFIG)
    assert set(result.metrics) == {
        "accuracy",
        "precision_macro",
        "recall_macro",
        "f1_macro",
        "f1_weighted",
        "roc_auc",
        "pr_auc",
        "log_loss",
    }
    assert result.class_labels == ["no", "yes"]
    assert sum(map(sum, result.confusion_matrix)) == result.holdout_rows == 100
    assert {curve.kind for curve in result.curves} == {"roc", "precision_recall", "calibration"}
    imbalance = [f for f in result.findings if f.code == "class_imbalance"]
    assert imbalance
    assert imbalance[0].value < 0.1


def test_a_feature_copied_from_the_target_is_suspected_leakage() -> None:
    frame = classification_frame()
    frame["x"] = (frame["y"] == "yes").astype(float)  # the label itself, as a number
    model = fitted(frame, LogisticRegression(), "binary")
    prepared = prepared_like_the_evaluator(frame, "binary", 0.25)
    leaks = [
        f
        for f in evaluate(model, prepared, ["x", "kind"], CONFIG).findings
        if f.code == "suspected_leakage"
    ]
    assert [(f.feature, f.severity) for f in leaks] == [("x", "critical")]


def test_without_holdout_the_metrics_are_cv_means_and_a_finding_says_so() -> None:
    frame = regression_frame()
    model = fitted(frame, LinearRegression(), "regression", fraction=0.0)
    prepared = prepared_like_the_evaluator(frame, "regression", 0.0)
    result = evaluate(model, prepared, ["x", "kind"], CONFIG)
    assert result.holdout_rows == 0
    assert result.metrics["r2"] == pytest.approx(np.mean(result.cv_metrics["r2"]))
    assert "no_holdout" in {finding.code for finding in result.findings}


def test_cross_validation_is_capped_to_a_seeded_sample_and_says_so() -> None:
    frame = regression_frame(rows=1000)
    config = EvaluationConfig(cv_folds=3, max_cv_rows=200)
    prepared = prepared_like_the_evaluator(frame, "regression", config=config)
    assert len(prepared.cv_rows) == 200
    assert set(prepared.cv_rows) <= set(prepared.train)
    model = fitted(frame, LinearRegression(), "regression")
    sampled = [
        f for f in evaluate(model, prepared, ["x", "kind"], config).findings if f.code == "sampled"
    ]
    assert sampled[0].value == 200


def test_missing_or_retyped_columns_are_a_columns_mismatch() -> None:
    frame = regression_frame()
    with pytest.raises(ColumnsMismatch, match="kind"):
        prepared_like_the_evaluator(frame.drop(columns=["kind"]), "regression")
    model = fitted(frame, LinearRegression(), "regression")
    retyped = frame.assign(x=frame["x"].map(lambda v: f"{v:.1f} m²"))
    X, _ = labelled(retyped, "y", ["x", "kind"])
    with pytest.raises(ColumnsMismatch, match="held numbers"):
        input_schema(model, ["x", "kind"]).check(X, "the dataset")


def test_score_leaves_out_what_the_outputs_cannot_define() -> None:
    y = np.array(["a", "a", "a"])
    out = Outputs(y, y, np.array([[0.9, 0.1]] * 3), np.array(["a", "b"]), probabilities=False)
    values = score("binary", out)
    assert values["accuracy"] == 1.0
    assert "roc_auc" not in values  # one class only: no curve
    assert "log_loss" not in values  # scores that are not probabilities


def many_class_frame(classes: int, rows_per_class: int = 8) -> pd.DataFrame:
    """Classes far apart on x; class 0 the most frequent, and its label very long."""
    rng = np.random.default_rng(2)
    label = np.repeat(np.arange(classes), rows_per_class)
    label = np.concatenate([label, np.zeros(3 * rows_per_class, dtype=int)])
    names = np.array(["x" * 5_000, *(f"c{k}" for k in range(1, classes))])
    return pd.DataFrame(
        {
            "x": label * 10.0 + rng.normal(0, 0.1, len(label)),
            "kind": rng.choice(["a", "b"], len(label)),
            "y": names[label],
        }
    )


def test_a_long_label_is_shown_cut_and_few_classes_get_every_picture() -> None:
    frame = many_class_frame(4, rows_per_class=30)
    model = fitted(frame, LogisticRegression(max_iter=5000), "multiclass", 0.3)
    result = evaluate(
        model, prepared_like_the_evaluator(frame, "multiclass", 0.3), ["x", "kind"], CONFIG
    )
    assert len(result.class_labels) == 4
    long = [label for label in result.class_labels if label.startswith("xxx")]
    assert long == ["x" * (SHOWN_LABEL_CHARS - 1) + "…"]
    assert len(result.confusion_matrix) == 4
    assert {curve.label for curve in result.curves} == set(result.class_labels)
    assert "many_classes" not in {f.code for f in result.findings}


def test_many_classes_draw_the_most_frequent_and_no_confusion_matrix() -> None:
    frame = many_class_frame(40)
    model = fitted(frame, LogisticRegression(max_iter=5000), "multiclass", 0.5)
    prepared = prepared_like_the_evaluator(frame, "multiclass", 0.5)
    result = evaluate(model, prepared, ["x", "kind"], CONFIG)
    assert result.confusion_matrix == []
    assert result.class_labels == []
    drawn = {curve.label for curve in result.curves}
    assert len(drawn) == 30
    assert "x" * (SHOWN_LABEL_CHARS - 1) + "…" in drawn  # the most frequent class
    (many,) = [f for f in result.findings if f.code == "many_classes"]
    assert many.value == 40
    assert "30 most frequent" in many.message


def test_labels_of_a_numeric_target_read_as_integers() -> None:
    assert label_text(1.0) == "1"
    assert label_text(np.float64(0.0)) == "0"
    assert label_text(2.5) == "2.5"
    assert label_text("良性") == "良性"


@pytest.mark.parametrize("seed", range(20))
def test_the_bootstraps_fast_metrics_equal_scikit_learns(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = int(rng.integers(2, 60))
    y = rng.normal(0, 3, rows)
    if seed % 5 == 0:
        y[:] = 2.0  # constant truth: r2's special cases
    predicted = y if seed % 7 == 0 else y + rng.normal(0, 1, rows)
    regression = Outputs(y, predicted)
    for metric in ("rmse", "mae", "r2", "mape"):
        assert fast_metric(metric, regression) == pytest.approx(
            metric_value(metric, regression), rel=1e-9, abs=1e-12
        )
    classes = np.array(["a", "b", "c", "d"][: 2 + seed % 3], dtype=object)
    if seed % 2:
        classes = np.arange(len(classes)).astype(np.float64)
    # Some classes absent from the truth, or from the predictions, on small samples.
    truth = rng.choice(classes[: max(1, len(classes) - seed % 2)], rows)
    said = rng.choice(classes, rows)
    classified = Outputs(truth, said, None, classes)
    for metric in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted"):
        assert fast_metric(metric, classified) == pytest.approx(
            metric_value(metric, classified), rel=1e-9, abs=1e-12
        )
    # A label the model does not know: scikit-learn's rules, not the fast path.
    unknown = Outputs(
        np.array(["a", "z"], dtype=object),
        np.array(["a", "a"], dtype=object),
        None,
        np.array(["a", "b"], dtype=object),
    )
    assert fast_metric("f1_macro", unknown) == metric_value("f1_macro", unknown)


def test_permutation_importance_is_the_drop_when_shuffled_in_any_batching(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frame = regression_frame(400)
    frame["noise"] = np.random.default_rng(3).normal(size=len(frame))
    model = fitted(frame, LinearRegression(), "regression")  # reads x and kind only
    X, y = labelled(frame, "y", ["x", "kind", "noise"])
    baseline = outputs(model, X, y)
    one_call = permutation_importance(model, X, y, "r2", baseline, 3, seed=5)
    monkeypatch.setattr(findings, "_PERMUTED_ROWS_PER_CALL", 1)  # one predict per shuffle
    per_shuffle = permutation_importance(model, X, y, "r2", baseline, 3, seed=5)
    np.testing.assert_allclose(one_call, per_shuffle)
    importance = dict(zip(X.columns, one_call, strict=True))
    assert importance["noise"] == 0.0  # the model never reads it
    assert importance["x"] > importance["kind"] > 0.0
