"""What training does on its own to data nobody prepared for it, each step with a finding.

- Identifier-like columns (named like an id, a unique monotone integer, or text that is
  different on every row) are left out of the features: a model that reads them learns
  the row's number, not the house. So is ingest's outlier flag of the target.
- Text columns whose values are mostly numbers are read as numbers (a stored pipeline
  converts them itself, so prediction requests may send the same text).
- Categorical columns with many distinct values are target-encoded instead of one-hot.
- A positive, heavy-tailed regression target is modelled on a log scale when
  cross-validation says that predicts better than the raw target.

Every decision comes back as a :class:`PrepFinding`, which the trainer reports with the
model (``ModelReady.preparation``) and the evaluator adds to its findings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.metrics import get_scorer

from lepton.data.modeling import as_numbers

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from sklearn.pipeline import Pipeline

__all__ = [
    "MAX_ONE_HOT",
    "PrepFinding",
    "choose_target_transform",
    "high_cardinality",
    "identifier_columns",
    "log_target",
    "numeric_text_columns",
    "target_flags",
]

# Names that say "identifier": id, *_id, houseId, 房屋ID, uuid, 编号, a pandas index.
_ID_NAME = re.compile(
    r"(?:^|[^a-z])id$|^id[^a-z]|[a-z]Id$|[^A-Z]ID$|^(?:uu|gu)id|编号$|序号$|^unnamed: ?0$|^index$",
)
_MIN_ROWS_FOR_SHAPE = 20  # uniqueness and monotony say nothing about fewer rows
# A text column is read as numbers when this share of its values parse as numbers (the
# same share ingest infers a numeric type by).
_NUMERIC_SHARE = 0.9
MAX_ONE_HOT = 20  # distinct values up to which a categorical column is one-hot encoded
_SKEWED = 1.0  # sample skewness above which a positive target is tried on a log scale
_TRANSFORM_SAMPLE = 20_000  # rows the log-or-raw comparison fits on at most


@dataclass(frozen=True, slots=True)
class PrepFinding:
    """A decision training took about the data: what, on which column, and why."""

    code: str
    message: str
    column: str | None = None

    def record(self) -> dict[str, Any]:
        return {"code": self.code, "column": self.column, "message": self.message}


def _id_named(name: str) -> bool:
    return bool(_ID_NAME.search(name) or _ID_NAME.search(name.lower()))


def identifier_columns(X: pd.DataFrame, dates: Collection[str] = ()) -> list[PrepFinding]:
    """The columns of ``X`` (as :func:`model_input` makes it) that identify rows.

    ``dates``: columns that were datetimes (seconds in ``X``): one per row and in order is
    how a time series looks, not a row number."""
    found = []
    rows = len(X)
    for name in X.columns:
        if name in dates:
            continue
        values = X[name].dropna()
        distinct = values.nunique()
        why = None
        if _id_named(str(name)) and distinct > 1 and distinct >= 0.5 * len(values):
            why = "is named like an identifier and nearly every row has its own value"
        elif rows >= _MIN_ROWS_FOR_SHAPE and distinct == rows:
            if X[name].dtype == np.float64:
                whole = bool(np.all(np.mod(values.to_numpy(), 1) == 0))
                if whole and (values.is_monotonic_increasing or values.is_monotonic_decreasing):
                    why = "holds a different whole number on every row, in order (a row number)"
            else:
                why = "holds a different text on every row"
        if why is not None:
            found.append(
                PrepFinding(
                    "identifier_excluded",
                    f"column {name} {why}: left out of the features, as a model reading "
                    "it would learn which row a price belongs to rather than why",
                    str(name),
                )
            )
    return found


def target_flags(X: pd.DataFrame, target: str) -> list[PrepFinding]:
    """The flag ingest adds beside the target when a spec flags its outliers
    (``<target>_outlier``): it is computed from the target, so it leaks it."""
    flag = f"{target}_outlier"
    if flag not in X.columns:
        return []
    return [
        PrepFinding(
            "target_flag_excluded",
            f"column {flag} is ingest's outlier flag of the target {target}, computed from "
            "it: left out of the features, as it would tell the model the answer",
            flag,
        )
    ]


def numeric_text_columns(X: pd.DataFrame) -> list[PrepFinding]:
    """Text columns whose values are (at least 90 %) numbers: read as numbers."""
    found = []
    for name in X.columns:
        if X[name].dtype == np.float64:
            continue
        present = X[name].dropna()
        if not len(present):
            continue
        parsed = as_numbers(present.to_frame())[:, 0]
        share = float(np.mean(~np.isnan(parsed)))
        if share >= _NUMERIC_SHARE:
            bad = len(present) - int(np.sum(~np.isnan(parsed)))
            found.append(
                PrepFinding(
                    "text_as_numbers",
                    f"column {name} is text but {share:.1%} of its values are numbers: read as "
                    f"numbers ({bad} other value(s) treated as missing) instead of one "
                    "category per value",
                    str(name),
                )
            )
    return found


def high_cardinality(X: pd.DataFrame, categorical: Sequence[str]) -> list[PrepFinding]:
    """Categorical columns with more than :data:`MAX_ONE_HOT` values: target-encoded."""
    found = []
    for name in categorical:
        distinct = X[name].nunique()
        if distinct > MAX_ONE_HOT:
            found.append(
                PrepFinding(
                    "target_encoded",
                    f"column {name} has {distinct} distinct values: target-encoded (with "
                    f"cross-fitting) instead of one column per value (one-hot above "
                    f"{MAX_ONE_HOT} values)",
                    name,
                )
            )
    return found


def log_target(regressor: Any) -> TransformedTargetRegressor:
    """``regressor`` fitted on log(1 + y), predicting on the original scale."""
    return TransformedTargetRegressor(
        regressor=regressor, func=np.log1p, inverse_func=np.expm1, check_inverse=False
    )


def choose_target_transform(
    X: pd.DataFrame,
    y: np.ndarray[Any, Any],
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    scoring: str,
    baseline: Pipeline,
    seed: int,
    target: str,
) -> tuple[bool, PrepFinding | None]:
    """Whether to model a regression target on a log scale, and the finding that says why.

    Only a positive target with heavy tails is tried. The same untuned pipeline
    (``baseline``, whose last step is the model) is cross-validated on the raw and on the
    log target, scored by the job's metric on the original scale; the better one wins.
    """
    values = pd.Series(y, dtype="float64")
    if len(values) < _MIN_ROWS_FOR_SHAPE or values.min() < 0:
        return False, None
    skew = float(values.skew())  # type: ignore[arg-type]
    if not skew > _SKEWED:
        return False, None
    scorer = get_scorer(scoring)
    rng = np.random.default_rng(seed)
    raw_scores, log_scores = [], []
    for train_rows, test_rows in folds:
        if len(train_rows) > _TRANSFORM_SAMPLE:
            train_rows = rng.choice(train_rows, _TRANSFORM_SAMPLE, replace=False)
        X_train, y_train = X.iloc[train_rows], y[train_rows]
        X_test, y_test = X.iloc[test_rows], y[test_rows]
        raw = clone(baseline).fit(X_train, y_train)
        raw_scores.append(float(scorer(raw, X_test, y_test)))
        logged = clone(baseline)
        logged.steps[-1] = (logged.steps[-1][0], log_target(logged.steps[-1][1]))
        logged.fit(X_train, y_train)
        log_scores.append(float(scorer(logged, X_test, y_test)))
    raw_mean, log_mean = float(np.mean(raw_scores)), float(np.mean(log_scores))
    chosen = log_mean > raw_mean
    verdict = "modelled on a log scale" if chosen else "kept on its raw scale"
    return chosen, PrepFinding(
        "target_log" if chosen else "target_raw",
        f"target {target} is positive and skewed (skewness {skew:.1f}): {verdict}, as "
        f"cross-validated {scoring} was {log_mean:.4g} on log(1 + {target}) against "
        f"{raw_mean:.4g} raw (untuned {type(baseline.steps[-1][1]).__name__})",
        target,
    )
