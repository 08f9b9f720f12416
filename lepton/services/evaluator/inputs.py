"""What a stored pipeline takes as input: which columns are numbers, which are categories,
and which categories it saw in training.

The trainer's pipelines start with a ColumnTransformer whose numeric branch imputes (and
may scale), whose categorical branches one-hot encode with ``handle_unknown="ignore"`` or
target-encode, and whose branch for numbers written as text starts by converting them
(a FunctionTransformer), so it takes text or numbers.
The evaluator reads that structure through scikit-learn's own attributes (not the
trainer's code: services never import each other) to check a dataset or a prediction
request against the model before scoring it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import VotingClassifier, VotingRegressor
from sklearn.model_selection import FixedThresholdClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, TargetEncoder

from lepton.data.modeling import as_numbers

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ColumnsMismatch", "InputSchema", "declared_columns_read", "input_schema"]


class ColumnsMismatch(ValueError):
    """Data whose columns no longer fit the model: missing ones, or a changed type."""


@dataclass(frozen=True, slots=True)
class InputSchema:
    """A model's feature columns, in order, and what each holds."""

    features: tuple[str, ...]
    numeric: frozenset[str]
    # Categorical column -> the categories its one-hot encoder knows.
    categories: dict[str, frozenset[str]] = field(default_factory=dict)

    def check(self, frame: pd.DataFrame, where: str) -> None:
        """Raise :class:`ColumnsMismatch` unless ``frame`` (as :func:`model_input` makes
        it) has every feature, with numbers where the model expects numbers."""
        missing = [name for name in self.features if name not in frame.columns]
        if missing:
            raise ColumnsMismatch(
                f"{where} lacks the model's feature column(s) {', '.join(missing)} "
                f"(it has {', '.join(map(str, frame.columns))})"
            )
        changed = [name for name in sorted(self.numeric) if frame[name].dtype != np.float64]
        if changed:
            raise ColumnsMismatch(
                f"{where}: column(s) {', '.join(changed)} held numbers when the model was "
                "trained and hold text now"
            )


def declared_columns_read(pipeline: Any, features: list[str]) -> bool:
    """Whether the fitted pipeline reads exactly ``features`` (its ModelReady's), when it
    knows the columns it was fitted on (scikit-learn's ``feature_names_in_``). What a model
    reads decides whether its artifact must be sealed, so the event's word is checked."""
    fitted = getattr(pipeline, "feature_names_in_", None)
    return fitted is None or [str(name) for name in fitted] == features


def _thresholded(model: Any) -> Any:
    """The model inside the trainer's tuned decision threshold (a binary classifier's),
    which reads the same input; any other model as it is."""
    return model.estimator_ if isinstance(model, FixedThresholdClassifier) else model


def _encoder(transformer: Any) -> OneHotEncoder | TargetEncoder | None:
    steps = transformer.steps if isinstance(transformer, Pipeline) else [("", transformer)]
    for _, step in steps:
        if isinstance(step, OneHotEncoder | TargetEncoder):
            return step
    return None


def _converts(transformer: Any) -> bool:
    """Whether the branch reads numbers written as text first: it takes either. (A fitted
    ColumnTransformer's "passthrough" is a FunctionTransformer too, without a function.)"""
    steps = transformer.steps if isinstance(transformer, Pipeline) else [("", transformer)]
    first = steps[0][1]
    return isinstance(first, FunctionTransformer) and first.func is as_numbers


def input_schema(pipeline: Any, features: list[str]) -> InputSchema:
    """The schema of a fitted pipeline whose input columns are ``features``.

    A pipeline without a leading ColumnTransformer is taken to read every feature as a
    number (the only input a bare estimator accepts)."""
    pipeline = _thresholded(pipeline)
    if isinstance(pipeline, VotingClassifier | VotingRegressor):
        # The trainer's ensemble: its members are its pipelines, fitted on the same rows
        # and columns, so the first reads its input as every member does.
        pipeline = pipeline.estimators_[0]
    preprocess = pipeline.steps[0][1] if isinstance(pipeline, Pipeline) else None
    if not isinstance(preprocess, ColumnTransformer):
        return InputSchema(tuple(features), frozenset(features))
    numeric: set[str] = set()
    categories: dict[str, frozenset[str]] = {}
    for _, transformer, columns in preprocess.transformers_:
        if isinstance(columns, str) or transformer == "drop":
            continue
        if _converts(transformer):
            continue
        encoder = _encoder(transformer)
        if encoder is None:
            numeric.update(map(str, columns))
            continue
        for column, known in zip(columns, encoder.categories_, strict=True):
            categories[str(column)] = frozenset(str(value) for value in known)
    return InputSchema(tuple(features), frozenset(numeric), categories)
