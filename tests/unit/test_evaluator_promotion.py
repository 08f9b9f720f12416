"""Promotion policies, the paired evidence and the verdict."""

from __future__ import annotations

import numpy as np
import pytest

from lepton.services.evaluator.promotion import (
    DEFAULT_POLICIES,
    Comparison,
    Policy,
    PolicyBook,
    PolicyError,
    bootstrap_interval,
    decide,
    paired_p_value,
    parse_policies,
)

R2 = Policy("r2", guards=("mae",))


def comparison(mine: float, theirs: float, mae: tuple[float, float] = (10.0, 10.0)) -> Comparison:
    return Comparison(
        {"r2": mine, "mae": mae[0]},
        {"r2": theirs, "mae": mae[1]},
        [mine + d for d in (0.01, -0.01, 0.02, 0.0, -0.02)],
        [theirs + d for d in (0.0, -0.01, 0.01, 0.01, -0.02)],
        interval=(mine - theirs - 0.01, mine - theirs + 0.01),
    )


def test_without_a_champion_the_challenger_is_promoted_with_no_test() -> None:
    decision = decide(R2, {"r2": 0.8, "mae": 3.0}, None)
    assert decision.verdict == "promoted"
    assert decision.champion_score is None
    assert decision.evidence["method"] == "none"


def test_a_better_challenger_within_its_guards_is_promoted_with_evidence() -> None:
    decision = decide(R2, {}, comparison(0.9, 0.8, mae=(10.1, 10.0)))
    assert decision.verdict == "promoted"
    assert decision.evidence["method"] == "paired_t_test"
    assert 0 <= decision.evidence["p_value"] <= 1
    assert decision.evidence["ci_low"] == pytest.approx(0.09)
    assert decision.guards == [
        {"metric": "mae", "challenger": 10.1, "champion": 10.0, "passed": True}
    ]


def test_worse_equal_or_guard_breaking_challengers_keep_the_champion() -> None:
    assert decide(R2, {}, comparison(0.7, 0.8)).verdict == "kept_champion"
    assert decide(R2, {}, comparison(0.8, 0.8)).verdict == "kept_champion"  # a tie
    broken = decide(R2, {}, comparison(0.9, 0.8, mae=(12.0, 10.0)))
    assert broken.verdict == "kept_champion"
    assert "mae" in broken.reason
    needs_more = Policy("r2", min_improvement=0.2)
    assert decide(needs_more, {}, comparison(0.9, 0.8)).verdict == "kept_champion"


def test_lower_is_better_metrics_and_alpha() -> None:
    rmse = Policy("rmse")
    better = Comparison({"rmse": 1.0}, {"rmse": 2.0}, [1.0, 1.1, 0.9], [2.0, 2.1, 1.9])
    assert decide(rmse, {}, better).verdict == "promoted"
    strict = Policy("rmse", alpha=0.01)
    noisy = Comparison({"rmse": 1.0}, {"rmse": 1.1}, [1.0, 1.5, 0.5], [1.1, 1.0, 1.2])
    decision = decide(strict, {}, noisy)
    assert decision.verdict == "kept_champion"
    assert "alpha" in decision.reason


def test_reported_scores_are_compared_when_the_champion_cannot_be_scored() -> None:
    unpaired = Comparison(
        {"r2": 0.9, "mae": 1.0},
        {"r2": 0.8, "mae": 1.0},
        paired=False,
        note="the champion cannot read this dataset",
    )
    decision = decide(R2, {}, unpaired)
    assert decision.verdict == "promoted"
    assert decision.evidence["method"] == "none"
    assert "cannot read" in decision.reason


def test_a_metric_that_does_not_fit_the_task_is_a_policy_error() -> None:
    with pytest.raises(PolicyError, match="does not fit a regression model"):
        Policy("f1_macro").check("regression")
    book = parse_policies("models:\n  'acme/*': {primary: rmse}\n")
    with pytest.raises(PolicyError, match="rmse"):
        book.policy_for("acme", "churn", "binary")
    with pytest.raises(PolicyError, match="no log_loss"):
        decide(Policy("f1_macro", guards=("log_loss",)), {"f1_macro": 0.9}, None)


def test_policy_files_override_defaults_per_tenant_and_model_pattern() -> None:
    book = parse_policies(
        '{"defaults": {"classification": {"primary": "roc_auc"}},'
        ' "models": {"acme/house-*": {"primary": "rmse", "min_improvement": 1000,'
        ' "guards": ["mae"], "alpha": 0.05}}}'
    )
    assert book.policy_for("acme", "house-b", "regression") == Policy(
        "rmse", 1000, ("mae",), alpha=0.05
    )
    assert book.policy_for("other", "house-b", "regression") == DEFAULT_POLICIES["regression"]
    assert book.policy_for("x", "y", "binary").primary == "roc_auc"
    assert PolicyBook().policy_for("x", "y", "multiclass").primary == "f1_macro"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: {'a/*': {primary: r2, colour: red}}", "unknown field"),
        ("models: {'a/*': {primary: accuracy_of_vibes}}", "unknown metric"),
        ("models: {'a/*': {min_improvement: lots}}", "expected a number"),
        ("defaults: {timeseries: {primary: r2}}", "not a problem type"),
        ("defaults: {regression: {primary: accuracy}}", "does not fit"),
        ("[1, 2]", "mapping"),
        ("models: {a: [}", "not valid YAML"),
    ],
)
def test_bad_policy_files_are_specific_errors(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policies(text)


def test_the_paired_test_and_the_bootstrap() -> None:
    assert paired_p_value([0.9, 0.91, 0.92], [0.8, 0.82, 0.81]) < 0.05
    assert paired_p_value([0.9, 0.9], [0.9, 0.9]) == 1.0
    assert paired_p_value([0.9], [0.8]) is None
    gains = np.linspace(0.0, 0.2, 100)
    low, high = bootstrap_interval(
        lambda rows: float(gains[rows].mean()), 100, resamples=300, seed=1
    ) or (0, 0)
    assert low < 0.1 < high
    assert bootstrap_interval(lambda rows: 0.0, 1, resamples=10, seed=1) is None
