"""The algorithm families a job may search: which suit a problem, and their pipelines.

Preprocessing (imputation, one-hot encoding, scaling) is part of every pipeline, so each
cross-validation fold fits it on its own training rows only: no leakage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Lasso, LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, SVR

from lepton.contract.algorithms import AUTO
from lepton.services.trainer.errors import AlgorithmMismatch

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = ["Problem", "build_pipeline", "candidate_families", "infer_problem", "make_estimator"]

Problem = Literal["regression", "binary", "multiclass"]

# Families whose fit depends on feature scale get a StandardScaler on numeric columns.
_SCALED = frozenset({"linear_regression", "ridge", "lasso", "logistic_regression", "svm", "knn"})
_REGRESSION_FAMILIES = (
    "linear_regression",
    "ridge",
    "lasso",
    "svm",
    "random_forest",
    "hist_gradient_boosting",
    "knn",
)
_CLASSIFICATION_FAMILIES = (
    "logistic_regression",
    "svm",
    "random_forest",
    "hist_gradient_boosting",
    "knn",
)
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
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
        return cls(random_state=seed)
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
    seed: int = 0,
    n_jobs: int = 1,
) -> Pipeline:
    """Preprocessing and model in one pipeline, so that cross-validation refits both."""
    numeric_steps: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="median"))]
    if family in _SCALED:
        numeric_steps.append(("scale", StandardScaler()))
    categorical_steps = [
        ("impute", SimpleImputer(strategy="most_frequent")),
        # Dense output: histogram gradient boosting takes no sparse input, and one-hot
        # columns of a tabular dataset are few.
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        transformers.append(("numeric", Pipeline(numeric_steps), list(numeric)))
    if categorical:
        transformers.append(("categorical", Pipeline(categorical_steps), list(categorical)))
    model = make_estimator(family, problem, seed, n_jobs)
    if isinstance(model, TransformedTargetRegressor):
        model.regressor.set_params(**params)
    else:
        model.set_params(**params)
    return Pipeline([("preprocess", ColumnTransformer(transformers)), ("model", model)])
