"""Champion and challenger, with no Kafka, database or files inside.

A promotion policy is declarative: the primary metric, the least improvement that counts,
guard metrics that must not get worse (within a relative tolerance) and, optionally, the
significance the paired test must reach. Defaults per problem type can be overridden per
``<tenant>/<model name>`` (glob patterns) in a YAML or JSON file::

    defaults:
      regression: {primary: r2, min_improvement: 0.0, guards: [mae]}
    models:
      "acme/house-*": {primary: rmse, min_improvement: 1000, alpha: 0.05}

The first pattern that matches wins; the fields it gives replace the default's.

The evidence compares challenger and champion on the same rows: both are refitted on the
same cross-validation folds of the challenger's training rows (a paired t-test over the
fold scores), and both are scored on the challenger's hold-out (a bootstrap interval of the
improvement). A tie keeps the champion.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import yaml
from scipy.stats import ttest_rel

from lepton.services.evaluator.evaluation import Evaluation, Prepared, fold_scores
from lepton.services.evaluator.inputs import input_schema
from lepton.services.evaluator.metrics import (
    HIGHER_IS_BETTER,
    fast_metric,
    metrics_for,
    outputs,
    score,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "DEFAULT_POLICIES",
    "Comparison",
    "Decision",
    "Policy",
    "PolicyBook",
    "PolicyError",
    "bootstrap_interval",
    "compare",
    "decide",
    "paired_p_value",
    "parse_policies",
]

Verdict = Literal["promoted", "kept_champion"]
Array = np.ndarray[Any, Any]


class PolicyError(ValueError):
    """A promotion policy that cannot be applied: unknown field or a metric that does not
    fit the model's task."""


@dataclass(frozen=True, slots=True)
class Policy:
    primary: str
    min_improvement: float = 0.0
    guards: tuple[str, ...] = ()
    # A guard holds while the challenger is at most this share of the champion's value worse.
    guard_tolerance: float = 0.02
    # With a value, the paired test's p-value must be at most this for a promotion.
    alpha: float | None = None

    def check(self, problem: str) -> None:
        allowed = metrics_for(problem)
        for metric in (self.primary, *self.guards):
            if metric not in allowed:
                raise PolicyError(
                    f"metric {metric!r} does not fit a {problem} model (it has: "
                    f"{', '.join(allowed)})"
                )
        if self.min_improvement < 0 or self.guard_tolerance < 0:
            raise PolicyError("min_improvement and guard_tolerance must not be negative")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise PolicyError(f"alpha {self.alpha} must be between 0 and 1")

    def text(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


_CLASSIFICATION_DEFAULT = Policy("f1_macro", guards=("recall_macro",))
DEFAULT_POLICIES: Mapping[str, Policy] = {
    "regression": Policy("r2", guards=("mae",)),
    "binary": _CLASSIFICATION_DEFAULT,
    "multiclass": _CLASSIFICATION_DEFAULT,
}
_FIELDS = frozenset(Policy.__dataclass_fields__)


def _overridden(policy: Policy, raw: Any, where: str) -> Policy:
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: expected a mapping of policy fields")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise PolicyError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} (known: "
            f"{', '.join(sorted(_FIELDS))})"
        )
    values = dict(raw)
    if "guards" in values:
        guards = values["guards"]
        if not isinstance(guards, list) or not all(isinstance(g, str) for g in guards):
            raise PolicyError(f"{where}.guards: expected a list of metric names")
        values["guards"] = tuple(guards)
    for name in ("primary",):
        if name in values and values[name] not in HIGHER_IS_BETTER:
            raise PolicyError(
                f"{where}.{name}: unknown metric {values[name]!r} (known: "
                f"{', '.join(HIGHER_IS_BETTER)})"
            )
    for name in ("min_improvement", "guard_tolerance", "alpha"):
        value = values.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise PolicyError(f"{where}.{name}: expected a number")
    return replace(policy, **values)


@dataclass(frozen=True, slots=True)
class PolicyBook:
    """Defaults per problem type and per-model overrides, in file order."""

    defaults: Mapping[str, Policy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))
    models: tuple[tuple[str, Mapping[str, Any]], ...] = ()

    def policy_for(self, tenant: str, model_name: str, problem: str) -> Policy:
        """The policy of ``tenant/model_name``; raises :class:`PolicyError` when it names
        a metric that does not fit ``problem``."""
        policy = self.defaults[problem]
        subject = f"{tenant}/{model_name}"
        for pattern, raw in self.models:
            if fnmatch.fnmatchcase(subject, pattern):
                policy = _overridden(policy, raw, f"models.{pattern}")
                break
        policy.check(problem)
        return policy


def parse_policies(text: str) -> PolicyBook:
    """A policy file's text (YAML, or JSON, which YAML reads too)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"the policy file is not valid YAML or JSON: {exc}") from None
    if not isinstance(raw, dict) or set(raw) - {"defaults", "models"}:
        raise PolicyError("the policy file must be a mapping with 'defaults' and/or 'models'")
    defaults = dict(DEFAULT_POLICIES)
    for problem, fields in (raw.get("defaults") or {}).items():
        if problem == "classification":
            for kind in ("binary", "multiclass"):
                defaults[kind] = _overridden(defaults[kind], fields, f"defaults.{problem}")
        elif problem in defaults:
            defaults[problem] = _overridden(defaults[problem], fields, f"defaults.{problem}")
        else:
            raise PolicyError(
                f"defaults.{problem}: not a problem type (regression, binary, multiclass, "
                "classification)"
            )
    models = raw.get("models") or {}
    if not isinstance(models, dict):
        raise PolicyError("models: expected a mapping of '<tenant>/<model name>' patterns")
    for pattern, fields in models.items():
        # Validated now (field names, types), so a broken file fails at start, not later.
        _overridden(DEFAULT_POLICIES["regression"], fields, f"models.{pattern}")
    for problem, policy in defaults.items():
        policy.check(problem)
    return PolicyBook(defaults, tuple((str(p), f) for p, f in models.items()))


# -- evidence -------------------------------------------------------------------------


def paired_p_value(challenger: Sequence[float], champion: Sequence[float]) -> float | None:
    """Two-sided paired t-test over fold scores; None when it is undefined (fewer than two
    folds); 1.0 when the two never differ."""
    if len(challenger) < 2 or len(challenger) != len(champion):
        return None
    differences = np.asarray(challenger) - np.asarray(champion)
    if np.allclose(differences, differences[0]):
        return 1.0 if np.isclose(differences[0], 0.0) else 0.0
    return float(ttest_rel(challenger, champion).pvalue)


def bootstrap_interval(
    metric: Callable[[Array], float],
    rows: int,
    *,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of ``metric(indices)`` over bootstrap resamples of ``rows``
    positions; ``metric`` returns the improvement on those rows (NaN when undefined)."""
    if rows < 2 or resamples < 1:
        return None
    rng = np.random.default_rng(seed)
    values = [metric(rng.integers(0, rows, rows)) for _ in range(resamples)]
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Scores of challenger and champion on the same rows and folds."""

    challenger: Mapping[str, float]
    champion: Mapping[str, float]
    challenger_folds: Sequence[float] = ()
    champion_folds: Sequence[float] = ()
    interval: tuple[float, float] | None = None
    # True when both were scored on the same rows; False when only their own reported
    # scores could be compared (the champion could not be scored on this data).
    paired: bool = True
    note: str = ""


def compare(
    policy: Policy,
    prepared: Prepared,
    challenger: Evaluation,
    champion_pipeline: Any,
    champion_features: Sequence[str],
    *,
    resamples: int,
    max_rows: int,
) -> Comparison:
    """Challenger and champion on the challenger's rows: the champion refitted on the same
    folds the challenger's evaluation used, and scored on the same hold-out rows.

    Raises :class:`~lepton.services.evaluator.inputs.ColumnsMismatch` when the champion cannot
    read this data (its columns are not all there, or changed type)."""
    features = list(champion_features)
    input_schema(champion_pipeline, features).check(prepared.X, "the challenger's dataset")
    primary = policy.primary
    champion_cv = fold_scores(champion_pipeline, prepared, features)
    challenger_folds = challenger.cv_metrics.get(primary, [])
    champion_folds = champion_cv.get(primary, [])
    challenger_held = challenger.held
    if challenger_held is None:
        means = {name: float(np.mean(values)) for name, values in champion_cv.items()}
        return Comparison(challenger.metrics, means, challenger_folds, champion_folds)
    X = prepared.X.iloc[prepared.holdout][features]
    champion_held = outputs(champion_pipeline, X, prepared.y[prepared.holdout])
    # Resampled hold-out rows: a seeded sample of them keeps the bootstrap's cost bounded.
    rows = np.arange(len(X), dtype=np.intp)
    if len(rows) > max_rows:
        rows = np.sort(np.random.default_rng(prepared.seed).choice(rows, max_rows, replace=False))
    mine, theirs = challenger_held.rows(rows), champion_held.rows(rows)

    def gain(picked: Array) -> float:
        return improvement(
            primary,
            fast_metric(primary, mine.rows(picked)),
            fast_metric(primary, theirs.rows(picked)),
        )

    return Comparison(
        challenger.metrics,
        score(prepared.problem, champion_held),
        challenger_folds,
        champion_folds,
        interval=bootstrap_interval(gain, len(rows), resamples=resamples, seed=prepared.seed),
    )


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    challenger_score: float
    champion_score: float | None
    guards: list[dict[str, Any]]
    evidence: dict[str, Any]
    reason: str


def improvement(metric: str, challenger: float, champion: float) -> float:
    """How much better the challenger is, in the metric's units (positive: better)."""
    return challenger - champion if HIGHER_IS_BETTER[metric] else champion - challenger


def _guard(metric: str, comparison: Comparison, tolerance: float) -> dict[str, Any]:
    challenger = comparison.challenger.get(metric, math.nan)
    champion = comparison.champion.get(metric)
    passed = True
    if champion is not None and math.isfinite(champion):
        allowed = abs(champion) * tolerance
        passed = math.isfinite(challenger) and improvement(metric, challenger, champion) >= -allowed
    return {"metric": metric, "challenger": challenger, "champion": champion, "passed": passed}


def _required(policy: Policy, metrics: Mapping[str, float]) -> None:
    lacking = [m for m in (policy.primary, *policy.guards) if m not in metrics]
    if lacking:
        raise PolicyError(
            f"the challenger has no {', '.join(lacking)} score (this model does not give "
            "what the metric needs, e.g. probabilities for log_loss): the policy cannot judge it"
        )


def decide(
    policy: Policy, challenger: Mapping[str, float], comparison: Comparison | None
) -> Decision:
    """The verdict for a challenger with ``challenger`` metrics against the champion
    (``comparison``; None when there is none). Raises :class:`PolicyError` when the
    challenger lacks a metric the policy names."""
    primary = policy.primary
    _required(policy, challenger if comparison is None else comparison.challenger)
    if comparison is None:
        score = challenger[primary]
        return Decision(
            "promoted",
            score,
            None,
            [],
            {
                "method": "none",
                "p_value": None,
                "ci_low": None,
                "ci_high": None,
                "challenger_folds": [],
                "champion_folds": [],
            },
            f"no champion yet: promoted with {primary} {score:.4g}",
        )
    score = comparison.challenger.get(primary, math.nan)
    rival = comparison.champion.get(primary, math.nan)
    p_value = paired_p_value(comparison.challenger_folds, comparison.champion_folds)
    evidence = {
        "method": "paired_t_test"
        if p_value is not None
        else ("bootstrap" if comparison.interval else "none"),
        "p_value": p_value,
        "ci_low": comparison.interval[0] if comparison.interval else None,
        "ci_high": comparison.interval[1] if comparison.interval else None,
        "challenger_folds": list(comparison.challenger_folds),
        "champion_folds": list(comparison.champion_folds),
    }
    guards = [_guard(metric, comparison, policy.guard_tolerance) for metric in policy.guards]
    failed = [g["metric"] for g in guards if not g["passed"]]
    gain = (
        improvement(primary, score, rival)
        if math.isfinite(score) and math.isfinite(rival)
        else math.nan
    )
    where = "" if comparison.paired else " (reported scores: " + comparison.note + ")"
    if not math.isfinite(gain):
        reason = f"{primary} could not be compared{where}: the champion stays"
    elif gain <= 0 or gain < policy.min_improvement:
        reason = (
            f"{primary} {score:.4g} against the champion's {rival:.4g}{where}: an improvement "
            f"of {gain:.4g}, the policy needs more than 0 and at least {policy.min_improvement:g}"
        )
    elif failed:
        reason = (
            f"{primary} improved by {gain:.4g}{where}, but guard(s) {', '.join(failed)} got worse"
        )
    elif policy.alpha is not None and (p_value is None or p_value > policy.alpha):
        shown = "undefined" if p_value is None else f"{p_value:.3g}"
        reason = (
            f"{primary} improved by {gain:.4g}{where}, but the paired test's p-value "
            f"{shown} is above the policy's alpha {policy.alpha:g}"
        )
    else:
        return Decision(
            "promoted",
            score,
            rival,
            guards,
            evidence,
            f"{primary} {score:.4g} against the champion's {rival:.4g}{where}: improved by "
            f"{gain:.4g}, every guard held",
        )
    return Decision("kept_champion", score, rival, guards, evidence, reason)
