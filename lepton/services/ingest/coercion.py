"""Column types of ingested data: inferred per source, merged, and enforced on chunks.

Two bookkeeping columns travel with each chunk: ``SOURCE`` (source name) and ``ROW``
(1-based data row in that source). A value that does not convert to its column's type is
a type failure, never silently a null.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lepton.services.ingest.spec import (
    NUMERIC,
    ColumnSpec,
    DatasetSpec,
    IngestRejected,
    LogicalType,
    infer_type,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "INFER_ROWS",
    "ROW",
    "SOURCE",
    "coerce",
    "convert",
    "effective_spec",
    "merge_types",
    "source_types",
]

SOURCE = "__source"
ROW = "__row"
_WIDER: dict[frozenset[str], LogicalType] = {
    frozenset({"integer", "float"}): "float",
    frozenset({"category", "string"}): "string",
}
_TRUE_SET = pa.array(["true", "t", "yes", "y", "1"])
_FALSE_SET = pa.array(["false", "f", "no", "n", "0"])
_FLOAT = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)$"
_INTEGER = r"^[+-]?\d{1,18}$"
_NULL_TEXT = pa.scalar(None, pa.string())
_NULLABLE = {
    pa.int64(): pd.Int64Dtype(),
    pa.float64(): pd.Float64Dtype(),
    pa.bool_(): pd.BooleanDtype(),
}


INFER_ROWS = 5_000


def source_types(sample: pd.DataFrame) -> dict[str, LogicalType]:
    """The logical type of each column of one source, from the start of its first chunk."""
    head = sample.head(INFER_ROWS)
    return {str(name): infer_type(head[name]) for name in head.columns}


def merge_types(
    per_source: Sequence[tuple[str, Mapping[str, LogicalType]]],
) -> dict[str, LogicalType]:
    """One type per column across sources, widening integer→float and category→string.

    Any other disagreement is a ``type_conflict``: the sources do not describe the same data.
    """
    merged: dict[str, LogicalType] = {}
    seen_in: dict[str, str] = {}
    for source, types in per_source:
        for column, kind in types.items():
            if column not in merged:
                merged[column], seen_in[column] = kind, source
                continue
            current = merged[column]
            if current == kind:
                continue
            wider = _WIDER.get(frozenset({current, kind}))
            if wider is None:
                raise IngestRejected(
                    "type_conflict",
                    f"column {column!r} is {current} in source {seen_in[column]!r} "
                    f"but {kind} in source {source!r}",
                    source=source,
                    column=column,
                )
            merged[column] = wider
    return merged


def effective_spec(given: DatasetSpec, types: Mapping[str, LogicalType]) -> DatasetSpec:
    """The spec the data is cleaned by: the given one, completed with the columns it does
    not declare (when it keeps them). Without a spec, :mod:`.inference` makes one."""
    missing = [name for name in given.columns if name not in types]
    if missing:
        raise IngestRejected(
            "spec_violation",
            f"the spec declares column {missing[0]!r}, which no source has "
            f"(columns: {', '.join(types)})",
            column=missing[0],
        )
    columns = dict(given.columns)
    if given.extra_columns == "keep":
        for name, kind in types.items():
            columns.setdefault(name, ColumnSpec(type=kind))
    ordered = {name: columns[name] for name in types if name in columns}
    return given.model_copy(update={"columns": ordered})


def coerce(
    chunk: pd.DataFrame, spec: DatasetSpec, *, only_present: bool = False
) -> tuple[pd.DataFrame, dict[str, pd.Series]]:
    """Columns converted to their spec types; a non-null value that does not convert is a
    type failure (returned as a mask per column), never silently a null. Columns a chunk
    lacks are all null (union alignment) unless ``only_present``."""
    out: dict[str, pd.Series] = {SOURCE: chunk[SOURCE], ROW: chunk[ROW]}
    failures: dict[str, pd.Series] = {}
    for name, column in spec.columns.items():
        if only_present and name not in chunk.columns:
            continue
        raw = chunk[name] if name in chunk.columns else pd.Series(pd.NA, index=chunk.index)
        converted = convert(raw, column.type)
        failed = raw.notna() & converted.isna()
        if failed.any():
            failures[name] = failed
        out[name] = converted
    return pd.DataFrame(out, index=chunk.index), failures


def convert(raw: pd.Series, kind: LogicalType) -> pd.Series:
    if kind in ("string", "category"):
        return raw.astype("string")
    if _native(raw, kind):
        if kind == "integer":
            integral = raw.isna() | (raw == np.floor(raw))
            return raw.where(integral).astype("Float64").astype("Int64")
        return raw.astype("Float64") if kind == "float" else raw
    text = pc.utf8_trim_whitespace(pa.array(raw.astype("string"), type=pa.string()))
    if kind in NUMERIC:
        with contextlib.suppress(pa.ArrowInvalid):
            # The common case, every value well formed, is one cast.
            whole = pc.cast(text, pa.int64() if kind == "integer" else pa.float64())
            return pd.Series(whole.to_pandas(types_mapper=_NULLABLE.get), index=raw.index)
        # Parsed by Arrow's kernels: a regular expression says which strings are numbers,
        # and only those are cast, so a bad value becomes a type failure, never an error.
        floats = pc.cast(
            pc.if_else(pc.match_substring_regex(text, _FLOAT), text, _NULL_TEXT), pa.float64()
        )
        if kind == "integer":
            integral = pc.equal(floats, pc.floor(floats))
            exact = pc.match_substring_regex(text, _INTEGER)
            ints = pc.cast(pc.if_else(exact, text, _NULL_TEXT), pa.int64())
            whole = pc.if_else(
                exact, ints, pc.cast(pc.if_else(integral, floats, None), pa.int64(), safe=False)
            )
            return pd.Series(whole.to_pandas(types_mapper=_NULLABLE.get), index=raw.index)
        return pd.Series(floats.to_pandas(types_mapper=_NULLABLE.get), index=raw.index)
    if kind == "boolean":
        lowered = pc.utf8_lower(text)
        truth = pc.if_else(
            pc.is_in(lowered, value_set=_TRUE_SET),
            True,
            pc.if_else(pc.is_in(lowered, value_set=_FALSE_SET), False, None),
        )
        return pd.Series(truth.to_pandas(types_mapper=_NULLABLE.get), index=raw.index)
    return pd.to_datetime(
        pd.Series(text.to_pandas(), index=raw.index), errors="coerce", format="ISO8601", utc=True
    )


def _native(raw: pd.Series, kind: LogicalType) -> bool:
    if kind in NUMERIC:
        return pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(
            raw.dtype
        )
    if kind == "datetime":
        return bool(pd.api.types.is_datetime64_any_dtype(raw.dtype))
    return False
