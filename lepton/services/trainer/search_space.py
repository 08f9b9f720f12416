"""A training job's search space: the default per family, and the parsed JSON form."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sklearn.compose import TransformedTargetRegressor

from lepton.services.trainer.errors import InvalidSearchSpace
from lepton.services.trainer.pipelines import make_estimator

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    import optuna

__all__ = [
    "CLASS_WEIGHTED",
    "DEFAULT_SPACES",
    "SECOND_POINTS",
    "STARTING_POINTS",
    "Distribution",
    "Space",
    "default_space",
    "parse_search_space",
    "starting_point",
    "starting_points",
]


@dataclass(frozen=True, slots=True)
class Distribution:
    """One parameter's search range: float or int (low, high, log) or categorical."""

    kind: Literal["float", "int", "categorical"]
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def holds(self, value: Any) -> bool:
        """Whether ``value`` lies in this range (or among its choices)."""
        if self.kind == "categorical":
            return value in self.choices
        return isinstance(value, int | float) and self.low <= value <= self.high

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(name, list(self.choices))


def _f(low: float, high: float, log: bool = False) -> Distribution:
    return Distribution("float", low, high, log)


def _i(low: int, high: int, log: bool = False) -> Distribution:
    return Distribution("int", low, high, log)


def _c(*choices: Any) -> Distribution:
    return Distribution("categorical", choices=choices)


Space = dict[str, dict[str, Distribution]]

# Random forest and extra-trees differ in how a split is drawn, not in what bounds a tree.
_TREES = {
    "n_estimators": _i(50, 300),
    # Up to practically unlimited depth (their default), shallow trees as likely to be tried.
    "max_depth": _i(2, 32, log=True),
    "min_samples_leaf": _i(1, 10),
    # The share of columns each split considers: sqrt(n)/n for classification and all of
    # them for regression are the defaults, so the range spans both.
    "max_features": _f(0.1, 1.0),
}
DEFAULT_SPACES: Mapping[str, Mapping[str, Distribution]] = {
    "linear_regression": {"fit_intercept": _c(True, False)},
    "ridge": {"alpha": _f(1e-3, 1e3, log=True)},
    "lasso": {"alpha": _f(1e-4, 10.0, log=True)},
    "logistic_regression": {"C": _f(1e-3, 1e3, log=True)},
    "svm": {"C": _f(1e-2, 1e3, log=True), "gamma": _f(1e-4, 1.0, log=True)},
    "random_forest": _TREES,
    "extra_trees": _TREES,
    "hist_gradient_boosting": {
        "learning_rate": _f(0.01, 0.3, log=True),
        "max_iter": _i(50, 300),
        "max_leaf_nodes": _i(8, 64),
        "min_samples_leaf": _i(2, 100, log=True),
        "max_features": _f(0.3, 1.0),
        "l2_regularization": _f(1e-6, 1.0, log=True),
    },
    "lightgbm": {
        "n_estimators": _i(50, 500, log=True),
        "learning_rate": _f(0.01, 0.3, log=True),
        "num_leaves": _i(4, 128, log=True),
        "min_child_samples": _i(2, 100, log=True),
        "subsample": _f(0.5, 1.0),
        "colsample_bytree": _f(0.5, 1.0),
        "reg_lambda": _f(1e-3, 10.0, log=True),
    },
    "knn": {"n_neighbors": _i(1, 30), "weights": _c("uniform", "distance")},
}
# Where each family's search starts: scikit-learn's (and LightGBM's) own defaults, as far
# as the default space holds them, so that the first rung measures every family as an
# untuned baseline would (a search must not end below the defaults it could have tried)
# and the samplers go on from there. Defaults a range cannot hold are left to the sampler:
# a forest's unlimited depth is approached by its largest. Defaults that depend on the
# table (an SVM's gamma, a forest classifier's share of columns) are computed from it by
# :func:`starting_point`.
STARTING_POINTS: Mapping[str, Mapping[str, Any]] = {
    "linear_regression": {"fit_intercept": True},
    "ridge": {"alpha": 1.0},
    "logistic_regression": {"C": 1.0},
    "svm": {"C": 1.0},
    "random_forest": {"n_estimators": 100, "max_depth": 32, "min_samples_leaf": 1},
    "extra_trees": {"n_estimators": 100, "max_depth": 32, "min_samples_leaf": 1},
    "hist_gradient_boosting": {
        "learning_rate": 0.1,
        "max_iter": 100,
        "max_leaf_nodes": 31,
        "min_samples_leaf": 20,
        "max_features": 1.0,
        "l2_regularization": 1e-6,
    },
    "lightgbm": {
        "n_estimators": 100,
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_child_samples": 20,
        "subsample": 1.0,
        "colsample_bytree": 1.0,
        "reg_lambda": 1e-3,
    },
    "knn": {"n_neighbors": 5, "weights": "uniform"},
}
# Where each family's search goes second (its first trial after the first rung, for the
# families that survive it): settings that commonly beat the defaults on small and
# mid-sized tables, rather than a random draw from ranges this wide. Boosting learns
# slower with more and smaller trees, forests grow more trees that each see half the
# columns, neighbours are more and weighted by distance, ridge regularises harder. On
# friedman1 the boosting points scored r2 0.93 against the defaults' 0.91 (the search's
# own families, 5-fold CV). Families without a point that suits most data (an SVM's
# gamma depends on the columns, a logistic C on the signal) go on to the sampler.
SECOND_POINTS: Mapping[str, Mapping[str, Any]] = {
    "ridge": {"alpha": 10.0},
    "random_forest": {
        "n_estimators": 300,
        "max_depth": 32,
        "min_samples_leaf": 1,
        "max_features": 0.5,
    },
    "extra_trees": {
        "n_estimators": 300,
        "max_depth": 32,
        "min_samples_leaf": 1,
        "max_features": 0.5,
    },
    "hist_gradient_boosting": {
        "learning_rate": 0.05,
        "max_iter": 300,
        "max_leaf_nodes": 8,
        "min_samples_leaf": 10,
        "max_features": 0.8,
        "l2_regularization": 1e-3,
    },
    "lightgbm": {
        "n_estimators": 500,
        "learning_rate": 0.05,
        "num_leaves": 7,
        "min_child_samples": 10,
        "subsample": 1.0,
        "colsample_bytree": 0.8,
        "reg_lambda": 1e-3,
    },
    "knn": {"n_neighbors": 15, "weights": "distance"},
}


def starting_point(
    family: str, space: Mapping[str, Distribution], problem: str, columns: int
) -> dict[str, Any]:
    """The values of ``family``'s first trial that ``space`` can hold (a job's own ranges
    may not); the rest are sampled. Unbalanced classes first, as scikit-learn's default;
    a forest's regressor looks at every column at each split, as scikit-learn's does.

    Two defaults depend on the table's ``columns`` (its feature columns), and are computed
    from them: an SVM's ``gamma="scale"`` is 1 / (columns x their variance), and the
    pipeline scales numbers to a variance of 1; a forest's classifier considers sqrt(n) of
    the n columns at each split. (One-hot encoding widens a table with categories, so
    there both are near the library's default rather than at it.) Sampled instead, an
    SVM's gamma of 1e-4 predicted wine's majority class alone.
    """
    point = dict(STARTING_POINTS.get(family, {}))
    width = max(1, columns)
    if family == "svm":
        point["gamma"] = 1.0 / width
    if family in ("random_forest", "extra_trees"):
        # The share whose whole part of n is floor(sqrt(n)), whatever the rounding.
        point["max_features"] = (
            1.0 if problem == "regression" else min(1.0, (math.isqrt(width) + 0.5) / width)
        )
    return _held(point, space, problem)


def starting_points(
    family: str, space: Mapping[str, Distribution], problem: str, columns: int
) -> list[dict[str, Any]]:
    """``family``'s first trials in order: its :func:`starting_point`, then its
    :data:`SECOND_POINTS` entry as far as ``space`` holds it (none when it holds nothing
    of either)."""
    points = [
        starting_point(family, space, problem, columns),
        _held(dict(SECOND_POINTS.get(family, {})), space, problem),
    ]
    return [point for point in points if point]


def _held(point: dict[str, Any], space: Mapping[str, Distribution], problem: str) -> dict[str, Any]:
    if problem != "regression" and point:
        point["class_weight"] = None
    return {
        name: value for name, value in point.items() if name in space and space[name].holds(value)
    }


# Classifiers that can weigh classes inversely to their frequency: on imbalanced labels
# ("balanced") a rare class is not traded away for accuracy on the common one.
CLASS_WEIGHTED = frozenset(
    {
        "logistic_regression",
        "svm",
        "random_forest",
        "extra_trees",
        "hist_gradient_boosting",
        "lightgbm",
    }
)


def default_space(family: str, problem: str) -> dict[str, Distribution]:
    """A family's default search space for a problem: for a classifier that takes class
    weights, whether to balance them is searched too."""
    space = dict(DEFAULT_SPACES[family])
    if problem != "regression" and family in CLASS_WEIGHTED:
        space["class_weight"] = _c(None, "balanced")
    return space


def _distribution(where: str, raw: Any) -> Distribution:
    if not isinstance(raw, dict):
        raise InvalidSearchSpace(f"{where}: expected an object with a type")
    kind = raw.get("type")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise InvalidSearchSpace(f"{where}: categorical needs a non-empty choices list")
        if not all(c is None or isinstance(c, str | int | float | bool) for c in choices):
            raise InvalidSearchSpace(f"{where}: choices must be strings, numbers, booleans")
        # A trial's parameters (and an estimator's complaint quoting one) are catalogued
        # as PostgreSQL jsonb, which cannot hold a NUL character.
        if any(isinstance(c, str) and "\x00" in c for c in choices):
            raise InvalidSearchSpace(f"{where}: a choice holds a NUL character")
        return Distribution("categorical", choices=tuple(choices))
    if kind not in ("float", "int"):
        raise InvalidSearchSpace(f"{where}: type must be float, int or categorical")
    low, high, log = raw.get("low"), raw.get("high"), raw.get("log", False)
    numbers = (int,) if kind == "int" else (int, float)
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        raise InvalidSearchSpace(f"{where}: low and high must be {kind} numbers")
    assert isinstance(low, int | float)
    assert isinstance(high, int | float)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise InvalidSearchSpace(f"{where}: needs finite low <= high, got {low}..{high}")
    if not isinstance(log, bool):
        raise InvalidSearchSpace(f"{where}: log must be true or false")
    if log and low <= 0:
        raise InvalidSearchSpace(f"{where}: a log range needs low > 0")
    return Distribution(kind, float(low), float(high), log)


def parse_search_space(text: str | None, families: Sequence[str], problem: str) -> Space:
    """The space to search: the job's JSON (family -> parameter -> distribution) for the
    families it names, which are then the only ones searched; the defaults otherwise."""
    if text is None:
        return {family: default_space(family, problem) for family in families}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InvalidSearchSpace(f"search_space is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise InvalidSearchSpace("search_space must be a non-empty JSON object of families")
    space: Space = {}
    for family, params in raw.items():
        if family not in families:
            raise InvalidSearchSpace(
                f"search_space names {family!r}, which is not searched for this job "
                f"(families: {', '.join(families)})"
            )
        if not isinstance(params, dict):
            raise InvalidSearchSpace(f"search_space.{family}: expected an object of parameters")
        estimator = make_estimator(family, problem, 0, 1)
        if isinstance(estimator, TransformedTargetRegressor):
            estimator = estimator.regressor
        known = estimator.get_params()
        parsed: dict[str, Distribution] = {}
        for name, distribution in params.items():
            if name not in known:
                raise InvalidSearchSpace(
                    f"search_space.{family}.{name}: {family} has no parameter {name!r}"
                )
            parsed[name] = _distribution(f"search_space.{family}.{name}", distribution)
        space[family] = parsed
    return space
