"""The algorithm families a job may search: which suit a problem, and their pipelines.

Preprocessing (imputation, reading numbers written as text, one-hot or target encoding,
scaling) is part of every pipeline, so each cross-validation fold fits it on its own
training rows only: no leakage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from lightgbm import LGBMClassifier, LGBMRegressor
from lightgbm.basic import LightGBMError
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler, TargetEncoder
from sklearn.svm import SVC, SVR

from lepton.contract.algorithms import AUTO
from lepton.data.modeling import as_numbers
from lepton.services.trainer.errors import AlgorithmMismatch
from lepton.services.trainer.protection import log_target

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "PARAMETER_ERRORS",
    "Problem",
    "build_pipeline",
    "candidate_families",
    "infer_problem",
    "make_estimator",
]

Problem = Literal["regression", "binary", "multiclass"]

# Families whose fit depends on feature scale get a StandardScaler on numeric columns.
_SCALED = frozenset({"linear_regression", "ridge", "lasso", "logistic_regression", "svm", "knn"})
_REGRESSION_FAMILIES = (
    "linear_regression",
    "ridge",
    "lasso",
    "svm",
    "random_forest",
    "extra_trees",
    "hist_gradient_boosting",
    "lightgbm",
    "knn",
)
_CLASSIFICATION_FAMILIES = (
    "logistic_regression",
    "svm",
    "random_forest",
    "extra_trees",
    "hist_gradient_boosting",
    "lightgbm",
    "knn",
)
# What fitting raises for a parameter point the estimator rejects (a search space's range
# can reach past what a family accepts): scikit-learn's checks raise ValueError, numerical
# trouble ArithmeticError, and LightGBM's own checks LightGBMError, a bare Exception.
PARAMETER_ERRORS: tuple[type[Exception], ...] = (ValueError, ArithmeticError, LightGBMError)
# A numeric target with at most this many distinct integer values (and few per row) is
# taken as class labels rather than a quantity.
_MAX_INTEGER_CLASSES = 20


def infer_problem(target: pd.Series) -> Problem:
    """regression, binary or multiclass from the target's values (missing ones ignored)."""
    values = target.dropna()
    distinct = values.nunique()
    if distinct == 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
        values.dtype
    )
    if not numeric:
        return "multiclass"
    as_float = values.to_numpy(dtype="float64")
    integral = bool(np.all(np.isfinite(as_float)) and np.all(np.mod(as_float, 1) == 0))
    if integral and distinct <= _MAX_INTEGER_CLASSES and distinct * 5 <= len(values):
        return "multiclass"
    return "regression"


def candidate_families(problem: str, algorithm: str) -> tuple[str, ...]:
    """The families a job searches: all that suit the problem for ``auto``, else one."""
    suited = _REGRESSION_FAMILIES if problem == "regression" else _CLASSIFICATION_FAMILIES
    if algorithm == AUTO:
        return suited
    if algorithm not in suited:
        raise AlgorithmMismatch(
            f"algorithm {algorithm} does not fit a {problem} problem; use one of "
            f"{', '.join(suited)} or auto"
        )
    return (algorithm,)


def make_estimator(family: str, problem: str, seed: int, n_jobs: int) -> Any:
    regression = problem == "regression"
    if family == "linear_regression":
        return LinearRegression()
    if family == "ridge":
        return Ridge(random_state=seed)
    if family == "lasso":
        return Lasso(random_state=seed, max_iter=5000)
    if family == "logistic_regression":
        return LogisticRegression(max_iter=2000, random_state=seed)
    if family == "svm":
        # SVR's epsilon tube and its solver's tolerance are in target units: on an
        # unscaled target (prices in the millions) it barely converges.
        return (
            TransformedTargetRegressor(regressor=SVR(), transformer=StandardScaler())
            if regression
            else SVC(random_state=seed)
        )
    if family == "random_forest":
        cls = RandomForestRegressor if regression else RandomForestClassifier
        return cls(random_state=seed, n_jobs=n_jobs)
    if family == "extra_trees":
        cls = ExtraTreesRegressor if regression else ExtraTreesClassifier
        return cls(random_state=seed, n_jobs=n_jobs)
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        return cls(random_state=seed)
    if family == "lightgbm":
        booster = LGBMRegressor if regression else LGBMClassifier
        return booster(
            random_state=seed,
            n_jobs=n_jobs,
            # Its C++ core writes to stdout unless silenced, and a worker logs JSON lines only.
            verbose=-1,
            # The same model for the same seed whatever the thread count: column-wise
            # histograms summed in a fixed order.
            deterministic=True,
            force_col_wise=True,
            # subsample (row bagging) acts only when bagging is redone every n iterations.
            subsample_freq=1,
        )
    if family == "knn":
        return (
            KNeighborsRegressor(n_jobs=n_jobs)
            if regression
            else KNeighborsClassifier(n_jobs=n_jobs)
        )
    raise AlgorithmMismatch(f"unknown algorithm family {family!r}")


def build_pipeline(
    family: str,
    problem: str,
    params: Mapping[str, Any],
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    numeric_text: Sequence[str] = (),
    encoded: Sequence[str] = (),
    log_scale: bool = False,
    seed: int = 0,
    n_jobs: int = 1,
) -> Pipeline:
    """Preprocessing and model in one pipeline, so that cross-validation refits both.

    ``numeric_text``: text columns read as numbers; ``encoded``: categorical columns
    target-encoded rather than one-hot; ``log_scale``: a regression target modelled on a
    log scale (see :mod:`lepton.services.trainer.protection`).
    """
    scaled = family in _SCALED

    def numeric_steps() -> list[tuple[str, Any]]:
        steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
        return [*steps, ("scale", StandardScaler())] if scaled else steps

    categorical_steps = [
        ("impute", SimpleImputer(strategy="most_frequent")),
        # Dense output: histogram gradient boosting takes no sparse input, and one-hot
        # columns of a tabular dataset are few.
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ]
    encoded_steps: list[tuple[str, Any]] = [
        ("impute", SimpleImputer(strategy="most_frequent")),
        # Integer prices would look like class labels to "auto". The cross-fitting folds
        # are seeded (repeatable) and plain: stratified ones would refuse a rare class
        # inside a cross-validation fold.
        (
            "target",
            TargetEncoder(
                target_type="continuous" if problem == "regression" else "auto",
                cv=KFold(5, shuffle=True, random_state=seed),
            ),
        ),
    ]
    if scaled:
        encoded_steps.append(("scale", StandardScaler()))
    groups = [
        ("numeric", numeric_steps(), numeric),
        # A text column of numbers is converted inside the pipeline, so that prediction
        # requests may send the same text the dataset had.
        (
            "numeric_text",
            [
                ("as_numbers", FunctionTransformer(as_numbers, feature_names_out="one-to-one")),
                *numeric_steps(),
            ],
            numeric_text,
        ),
        ("categorical", categorical_steps, [c for c in categorical if c not in encoded]),
        ("encoded", encoded_steps, encoded),
    ]
    transformers = [
        (name, Pipeline(steps), list(columns)) for name, steps, columns in groups if columns
    ]
    model = make_estimator(family, problem, seed, n_jobs)
    _innermost(model).set_params(**params)
    if log_scale:
        model = log_target(model)
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", model)])


def _innermost(model: Any) -> Any:
    """The estimator a family's parameters belong to, inside any target transforms."""
    while isinstance(model, TransformedTargetRegressor):
        model = model.regressor
    return model
