"""Scoring records with a stored model, with no Kafka, database or files inside.

A request names a model as ``<name>``, ``<name>@champion`` (both: the tenant's current
champion) or ``<name>@<model id>``, and carries records as maps of column -> value. The
records become the frame a stored pipeline takes (:func:`lepton.data.modeling.model_input`),
in the model's feature order; what cannot be scored is a :class:`PredictionFailure` with
one of the contract's error codes, and categories the model never saw are scored (its
one-hot encoder ignores them) with a warning that names the column and the value.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from lepton.contract.names import name_problem
from lepton.data.modeling import label_text, model_input

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from lepton.services.evaluator.inputs import InputSchema

__all__ = [
    "CHAMPION",
    "NAMES_LISTED",
    "ModelRef",
    "PredictionFailure",
    "Scored",
    "parse_model_ref",
    "score_rows",
    "to_frame",
    "unknown_name",
]

CHAMPION = "champion"
# Unseen values named per column in a warning; the rest are counted.
_NAMED_VALUES = 5
# The tenant's model names an answer to an unknown name lists, at most.
NAMES_LISTED = 20


class PredictionFailure(Exception):
    """A request that cannot be scored: ``code`` is the contract's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    version: str  # CHAMPION or a model id


def unknown_name(tenant: str, name: str, names: Sequence[str]) -> str:
    """What a request naming a model the tenant does not have is told: the names nearest
    it, then the tenant's names (``names``: up to :data:`NAMES_LISTED` of them)."""
    message = f"{tenant} has no model named {name!r}"
    if not names:
        return f"{message}, and no model yet: submit a training job first"
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if near:
        message += f"; did you mean {' or '.join(map(repr, near))}?"
    listed = ", ".join(names) + (" …" if len(names) >= NAMES_LISTED else "")
    return f"{message} (its models: {listed})"


def parse_model_ref(text: str) -> ModelRef:
    name, _, version = text.partition("@")
    if not name or "@" in version or (text.endswith("@") and not version):
        raise PredictionFailure(
            "invalid_model_ref",
            f"model {text[:80]!r} is not <name>, <name>@champion or <name>@<model id>",
        )
    for part, value in (("model", name), ("model version", version)):
        problem = name_problem(value) if value else None
        if problem is not None:
            raise PredictionFailure("invalid_model_ref", f"{part}: {problem}")
    return ModelRef(name, version or CHAMPION)


_PLAIN_NUMBERS = frozenset((float, int, type(None)))


def _numbers(column: str, values: list[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
    if set(map(type, values)) <= _PLAIN_NUMBERS:
        # Only floats, ints and nulls (the usual request): numpy converts them in C,
        # None as NaN.
        return np.array(values, dtype=np.float64)
    out = np.empty(len(values), dtype=np.float64)
    for index, value in enumerate(values):
        if value is None:
            out[index] = math.nan
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[index] = value
        else:
            raise PredictionFailure(
                "invalid_value",
                f"record {index}: column {column!r} needs a number, got {value!r}",
            )
    return out


def _texts(values: list[Any]) -> np.ndarray[Any, np.dtype[np.object_]] | None:
    """A categorical column as :func:`model_input` makes it (text, NaN for null) when
    every value already is text or null; None otherwise (model_input converts)."""
    if not set(map(type, values)) <= {str, type(None)}:
        return None
    text = np.array(values, dtype=object)
    text[text == None] = math.nan  # noqa: E711 - elementwise, on an object array
    return text


def to_frame(rows: Sequence[Mapping[str, Any]], schema: InputSchema) -> pd.DataFrame:
    """The records as the model's input frame; raises ``missing_columns`` when a record
    lacks a column the model reads, ``invalid_value`` for text where it needs a number."""
    missing: dict[str, list[int]] = {}
    columns: dict[str, Any] = {}
    converted = True  # every column already as model_input makes it
    for name in schema.features:
        values = [row.get(name, _ABSENT) for row in rows]
        if values.count(_ABSENT):
            missing[name] = [index for index, value in enumerate(values) if value is _ABSENT]
            continue
        if name in schema.numeric:
            columns[name] = _numbers(name, values)
            continue
        text = _texts(values)
        if text is None:
            converted = False
            text = np.array(
                [math.nan if value is None else value for value in values], dtype=object
            )
        columns[name] = text
    if missing:
        listed = "; ".join(
            f"{name} (record{'s' if len(at) > 1 else ''} {', '.join(map(str, at[:5]))}"
            f"{', ...' if len(at) > 5 else ''})"
            for name, at in missing.items()
        )
        raise PredictionFailure(
            "missing_columns",
            f"the model needs column(s) the records lack: {listed}. Give every record every "
            f"feature ({', '.join(schema.features)}); null is a missing value it can impute.",
        )
    if converted:
        # Object columns stay objects (pandas would otherwise infer its string dtype).
        return pd.DataFrame(
            {
                name: pd.Series(values, dtype=object if values.dtype == object else None)
                for name, values in columns.items()
            },
            columns=list(schema.features),
        )
    return model_input(pd.DataFrame(columns, columns=list(schema.features)))


class _Absent:
    """A column a record does not have (null is a value: missing, imputed)."""


_ABSENT = _Absent()


def unseen_categories(frame: pd.DataFrame, schema: InputSchema) -> list[str]:
    warnings = []
    for column, known in schema.categories.items():
        values = frame[column]
        seen = values[values.notna()]
        unseen = sorted(set(seen.unique()) - known)
        if not unseen:
            continue
        named = ", ".join(repr(v) for v in unseen[:_NAMED_VALUES])
        more = f" and {len(unseen) - _NAMED_VALUES} more" if len(unseen) > _NAMED_VALUES else ""
        rows = int(seen.isin(unseen).sum())
        warnings.append(
            f"column {column!r}: value(s) {named}{more} never seen in training "
            f"({rows} record{'s' if rows != 1 else ''}); scored as an unknown category"
        )
    return warnings


@dataclass(slots=True)
class Scored:
    predictions: list[float | str]
    probabilities: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def score_rows(
    pipeline: Any, schema: InputSchema, rows: Sequence[Mapping[str, Any]], max_rows: int
) -> Scored:
    """Predictions (and class probabilities) for ``rows``, in order."""
    if len(rows) > max_rows:
        raise PredictionFailure(
            "too_many_rows",
            f"{len(rows)} records in one request; at most {max_rows} "
            "(LEPTON_EVALUATOR_PREDICT_MAX_ROWS): split it",
        )
    if not rows:
        return Scored([])
    frame = to_frame(rows, schema)
    warnings = unseen_categories(frame, schema)
    classes = getattr(pipeline, "classes_", None)
    if classes is None:
        return Scored(np.asarray(pipeline.predict(frame), dtype=np.float64).tolist(), [], warnings)
    model = pipeline
    if isinstance(pipeline, Pipeline) and len(pipeline.steps) > 1:
        # Preprocess once for both predict and predict_proba (what each would do).
        frame, model = pipeline[:-1].transform(frame), pipeline.steps[-1][1]
    predicted = model.predict(frame)
    labels = [label_text(c) for c in classes]
    probabilities: list[dict[str, float]] = []
    if hasattr(model, "predict_proba"):
        try:
            matrix = model.predict_proba(frame)
        except AttributeError:  # an SVC without probability estimates
            matrix = None
        if matrix is not None:
            rows_out = np.asarray(matrix, dtype=np.float64).tolist()
            probabilities = [dict(zip(labels, row, strict=True)) for row in rows_out]
    known = classes.tolist() if hasattr(classes, "tolist") else list(classes)
    text = dict(zip(known, labels, strict=True))
    return Scored(
        [text[v] if v in text else label_text(v) for v in np.asarray(predicted).tolist()],
        probabilities,
        warnings,
    )
