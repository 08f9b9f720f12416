"""What the trainer and the evaluator must agree on about a model's data.

A stored pipeline takes the frame :func:`model_input` makes; the rows a model never saw
are the ones :func:`holdout_split` gives for its ``ModelReady.holdout_fraction`` and
``split_seed``. Both services call these same functions, so the evaluator scores a model
on exactly the rows its trainer kept out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lepton.contract.names import clip

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "SHOWN_LABEL_CHARS",
    "as_numbers",
    "holdout_split",
    "label_text",
    "labelled",
    "model_input",
    "shown_label",
]

IntArray = np.ndarray[Any, np.dtype[np.intp]]


def label_text(value: Any) -> str:
    """A class label as text: 1.0 (a numeric target read as float64) is "1"."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


# A class label is dataset text, whose length ingest does not bound: a finding, an
# evaluation record or a curve quotes at most this much of it, so that one long label
# cannot push a record past its topic's message size.
SHOWN_LABEL_CHARS = 100


def shown_label(value: Any) -> str:
    """:func:`label_text` as a message or a record shows it: cut to
    :data:`SHOWN_LABEL_CHARS`, an ellipsis marking the cut. A prediction gives the label
    whole: that is the answer."""
    return clip(label_text(value), SHOWN_LABEL_CHARS) or ""


def model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a stored pipeline takes it: numbers (not booleans) as float64, every
    other column as objects with NaN for missing. pandas' nullable types carry ``pd.NA``,
    which scikit-learn's imputers and encoders reject."""
    columns: dict[str, Any] = {}
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_datetime64_any_dtype(values.dtype):
            # Seconds since the epoch: a datetime becomes an ordinary numeric feature.
            stamps = pd.to_datetime(values, utc=True)
            seconds = (stamps - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
            columns[name] = seconds.to_numpy(dtype="float64", na_value=np.nan)
        elif pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(
            values.dtype
        ):
            columns[name] = values.to_numpy(dtype="float64", na_value=np.nan)
        else:
            columns[name] = pd.Series(_as_text(values), index=frame.index, dtype=object)
    return pd.DataFrame(columns, index=frame.index)


def as_numbers(values: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Columns of text read as numbers (NaN where a value is not one), as a stored
    pipeline's first step does for text columns that hold numbers: the pipeline then
    takes the same text at prediction time. Thousands separators are allowed."""
    frame = pd.DataFrame(values)
    columns = [
        pd.to_numeric(
            frame[name].astype("string").str.strip().str.replace(",", "", regex=False),
            errors="coerce",
        ).to_numpy(dtype="float64", na_value=np.nan)
        for name in frame.columns
    ]
    return np.column_stack(columns) if columns else np.empty((len(frame), 0))


def _as_text(values: pd.Series) -> np.ndarray[Any, np.dtype[np.object_]]:
    """Each value as ``str``, NaN where missing; vectorised, as this runs on every row the
    trainer, the evaluator and prediction see."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        # Convert the few categories, then index by code (-1: missing).
        labels = np.asarray(values.cat.categories.astype(str), dtype=object)
        codes = values.cat.codes.to_numpy()
        text = labels[codes] if len(labels) else np.full(len(codes), np.nan, dtype=object)
        text[codes < 0] = np.nan
        return text
    missing = values.isna().to_numpy()
    text = values.astype(str).to_numpy(dtype=object)
    text[missing] = np.nan
    return text


def labelled(
    frame: pd.DataFrame, target: str, features: Sequence[str]
) -> tuple[pd.DataFrame, np.ndarray[Any, Any]]:
    """Features and target of the rows that have a target value, as a model takes them."""
    rows = frame[frame[target].notna()]
    y = model_input(rows[[target]])[target].to_numpy()
    return model_input(rows[list(features)]).reset_index(drop=True), y


def holdout_split(
    y: np.ndarray[Any, Any], problem_type: str, fraction: float, seed: int
) -> tuple[IntArray, IntArray]:
    """Positions of the rows to train on and of the rows held out.

    Stratified by class for classification when every class can give a row to each side;
    seeded, so the same target, fraction and seed always give the same rows.
    """
    positions = np.arange(len(y), dtype=np.intp)
    if fraction <= 0:
        return positions, positions[:0]
    stratify = None
    if problem_type != "regression":
        counts = pd.Series(y).value_counts()
        held = max(1, round(len(y) * fraction))
        if counts.min() >= 2 and held >= len(counts) and len(y) - held >= len(counts):
            stratify = y
    train, holdout = train_test_split(
        positions, test_size=fraction, random_state=seed, shuffle=True, stratify=stratify
    )
    return np.sort(train), np.sort(holdout)
