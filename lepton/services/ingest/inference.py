"""The spec ingest infers when a request gives none: types, and the rules a careful
analyst would apply to data nobody described.

From the start of each source (the rows types are inferred from) this decides, per column:

- numbers: ``min: 0`` when the column is otherwise non-negative (at most 1 % of the
  values are negative: a negative area or price is a typing error, not data); robust
  outliers (``mad``, a robust z-score above 6; for a non-negative column, on a log
  scale as well) dropped into the rejects with their reason, unless the column has few distinct
  values (flags, counts, codes);
- text: spreadsheet formulas neutralised; in a category column, values only one row
  holds (over the whole dataset) rejected as junk.

The rules are an ordinary :class:`DatasetSpec`, stored with the version and shown by
``lepton data show``: a user edits it and ingests again with it. No I/O here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from lepton.services.ingest.coercion import convert
from lepton.services.ingest.spec import NUMERIC, ColumnSpec, DatasetSpec, Outliers

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lepton.services.ingest.spec import LogicalType

__all__ = ["careful_spec"]

_MIN_VALUES = 50  # a sample smaller than this says too little to infer rules from
_MAX_NEGATIVE_SHARE = 0.01
_MIN_DISTINCT_FOR_OUTLIERS = 20
OUTLIER_LIMIT = 6.0  # robust z-score: far beyond any value of a normal column


def careful_spec(types: Mapping[str, LogicalType], sample: pd.DataFrame) -> DatasetSpec:
    """The inferred spec: ``types`` (merged over the sources) with a careful analyst's
    rules, decided from ``sample`` (the raw start of the sources)."""
    columns = {}
    for name, kind in types.items():
        raw = sample[name] if name in sample.columns else pd.Series([], dtype=object)
        columns[name] = _column(kind, raw)
    return DatasetSpec(columns=columns, dedupe="exact")


def _column(kind: LogicalType, raw: pd.Series) -> ColumnSpec:
    if kind in ("string", "category"):
        return ColumnSpec(type=kind, formulas="neutralise", rare=1 if kind == "category" else None)
    if kind not in NUMERIC:
        return ColumnSpec(type=kind)
    values = convert(raw, kind).dropna().astype("float64")
    if len(values) < _MIN_VALUES:
        return ColumnSpec(type=kind)
    non_negative = bool((values < 0).mean() <= _MAX_NEGATIVE_SHARE and values.median() > 0)
    outliers = None
    if values.nunique() > _MIN_DISTINCT_FOR_OUTLIERS:
        outliers = Outliers(
            method="mad",
            action="drop",
            threshold=OUTLIER_LIMIT,
            scale="both" if non_negative else "linear",
        )
    return ColumnSpec(type=kind, min=0 if non_negative else None, outliers=outliers)
