"""Cleaning and integration decisions over plain data frames: no files, no database.

The pipeline feeds chunks through :class:`Cleaner`; every row a rule removes comes back as a
reject with the rule and the reason, and :class:`Quality` counts every rule, so nothing
disappears silently. Two bookkeeping columns travel with each chunk: ``SOURCE`` (source
name) and ``ROW`` (1-based data row in that source).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from services.ingest.spec import (
    NUMERIC,
    ColumnSpec,
    DatasetSpec,
    IngestRejected,
    LogicalType,
    infer_type,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "REJECT_COLUMNS",
    "ROW",
    "SOURCE",
    "Cleaner",
    "ColumnStats",
    "DedupeIndex",
    "Quality",
    "coerce",
    "effective_spec",
    "merge_types",
    "needs_stats",
    "source_types",
]

SOURCE = "__source"
ROW = "__row"
REJECT_COLUMNS = ("source", "source_row", "rule", "column_name", "reason", "raw")

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


_INFER_ROWS = 5_000


def source_types(sample: pd.DataFrame) -> dict[str, LogicalType]:
    """The logical type of each column of one source, from the start of its first chunk."""
    head = sample.head(_INFER_ROWS)
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


def effective_spec(given: DatasetSpec | None, types: Mapping[str, LogicalType]) -> DatasetSpec:
    """The spec the data is cleaned by: the given one completed, or one inferred.

    An inferred column is nullable: inference sees only the start of each source, and a
    later null must not become a reject.
    """
    if given is None:
        return DatasetSpec(
            columns={name: ColumnSpec(type=kind) for name, kind in types.items()}, dedupe="exact"
        )
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


@dataclass(slots=True)
class _Rejects:
    """Rows removed from a chunk, with the first rule that removed each."""

    parts: list[pd.DataFrame] = field(default_factory=list)

    def add(self, rows: pd.DataFrame, rule: str, column: str | None, reasons: pd.Series) -> None:
        if len(rows):
            self.parts.append(
                pd.DataFrame(
                    {
                        "source": rows[SOURCE].astype(str).to_numpy(),
                        "source_row": rows[ROW].to_numpy(),
                        "rule": rule,
                        "column_name": column,
                        "reason": reasons.to_numpy(),
                        "index": rows.index.to_numpy(),
                    }
                )
            )


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
        converted = _convert(raw, column.type)
        failed = raw.notna() & converted.isna()
        if failed.any():
            failures[name] = failed
        out[name] = converted
    return pd.DataFrame(out, index=chunk.index), failures


def _convert(raw: pd.Series, kind: LogicalType) -> pd.Series:
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


@dataclass(slots=True)
class ColumnStats:
    """What medians, modes and outlier bounds need, gathered in bounded memory.

    Quartiles come from a bottom-k sample (each value gets a random key; the ``capacity``
    smallest keys are kept), which is exact while a column has at most ``capacity`` values
    and a uniform sample beyond; mean and deviation are exact running sums; modes count
    distinct values.
    """

    capacity: int
    seed: int = 0
    _keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    _values: np.ndarray = field(default_factory=lambda: np.empty(0))
    count: int = 0
    total: float = 0.0
    squares: float = 0.0
    counts: Counter[Any] = field(default_factory=Counter)
    _rng: np.random.Generator | None = None

    def add(self, values: pd.Series, *, numeric: bool) -> None:
        present = values.dropna()
        if numeric:
            array = present.to_numpy(dtype="float64")
            self.count += len(array)
            self.total += float(array.sum())
            self.squares += float((array * array).sum())
            if self._rng is None:
                self._rng = np.random.default_rng(self.seed)
            keys = np.concatenate([self._keys, self._rng.random(len(array))])
            kept = np.concatenate([self._values, array])
            if len(kept) > self.capacity:
                keep = np.argpartition(keys, self.capacity)[: self.capacity]
                keys, kept = keys[keep], kept[keep]
            self._keys, self._values = keys, kept
        else:
            self.counts.update(present.astype(str).value_counts().to_dict())

    def quantile(self, q: float) -> float | None:
        return float(np.quantile(self._values, q)) if len(self._values) else None

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def std(self) -> float | None:
        if self.count < 2:
            return None
        variance = (self.squares - self.total * self.total / self.count) / (self.count - 1)
        return float(np.sqrt(max(variance, 0.0)))

    def mode(self) -> Any:
        if self.counts:
            # Ties broken by value, so the same data always fills the same way.
            return min(self.counts.items(), key=lambda item: (-item[1], str(item[0])))[0]
        if len(self._values):
            values, counts = np.unique(self._values, return_counts=True)
            return float(values[np.argmax(counts)])
        return None


def needs_stats(spec: DatasetSpec) -> list[str]:
    """Columns whose cleaning needs statistics over the whole dataset (a first pass)."""
    return [
        name
        for name, column in spec.columns.items()
        if column.missing in ("median", "mode") or column.outliers is not None
    ]


class DedupeIndex:
    """Rows seen so far, as 64-bit digests: 8 bytes per distinct row, whatever its width.

    Digests live in sorted runs. With ``spill_dir``, whenever the runs in memory reach
    ``run_cap`` digests they are merged into one run written to a file there, which later
    lookups search through a memory map, one run at a time: resident memory then stays
    near 8 bytes times ``run_cap`` however many rows pass. Two distinct rows share a digest with
    probability about n²/2⁶⁵ (3·10⁻⁶ at ten million rows); such a row would be counted as
    a duplicate.

    Spilled runs are consulted only for digests a fixed 16 MiB bit filter has seen (the
    top 27 bits of each digest), so most new rows never touch the files.
    """

    def __init__(self, run_cap: int = 1 << 20, spill_dir: str | None = None) -> None:
        self._runs: list[np.ndarray] = []
        self._spilled: list[tuple[str, int]] = []
        self._run_cap = run_cap
        self._spill_dir = spill_dir
        # One bit per digest prefix, set for spilled digests. Allocated up front, so memory
        # does not step up when a large input starts to spill.
        self._filter = (
            np.zeros(1 << (_FILTER_BITS - 3), dtype=np.uint8) if spill_dir is not None else None
        )

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs) + sum(n for _, n in self._spilled)

    def first_seen(self, digests: np.ndarray) -> np.ndarray:
        """A mask of the digests not seen before (nor earlier in ``digests``); records them."""
        # Looked up in sorted order (np.unique sorts), which keeps the binary searches in
        # cache; the new digests then form a sorted run as they are.
        distinct, first = np.unique(digests, return_index=True)
        new = np.ones(len(distinct), dtype=bool)
        for run in self._runs:
            _unmark_seen(run, distinct, new)
        if self._spilled:
            flagged = new & self._may_hold(distinct)
            unseen = flagged.copy()
            for path, count in self._spilled:
                mapped = np.memmap(path, dtype=np.uint64, mode="r", shape=(count,))
                _unmark_seen(mapped, distinct, unseen)
                del mapped  # unmapped: its pages leave this process's resident set
            new &= ~(flagged & ~unseen)
        fresh = np.zeros(len(digests), dtype=bool)
        fresh[first[new]] = True
        if new.any():
            self._runs.append(distinct[new])
            if self._spill_dir is not None and sum(len(r) for r in self._runs) >= self._run_cap:
                self._spill()
        return fresh

    def _may_hold(self, digests: np.ndarray) -> np.ndarray:
        """False where no spilled run can hold the digest."""
        assert self._filter is not None
        slots = digests >> np.uint64(64 - _FILTER_BITS)
        bits = self._filter[slots >> np.uint64(3)] >> (slots & np.uint64(7)).astype(np.uint8)
        held: np.ndarray = (bits & 1).astype(bool)
        return held

    def _spill(self) -> None:
        assert self._spill_dir is not None
        merged = np.sort(np.concatenate(self._runs))
        assert self._filter is not None
        for start in range(0, len(merged), _FILTER_SLICE):  # bounded temporaries
            slots = merged[start : start + _FILTER_SLICE] >> np.uint64(64 - _FILTER_BITS)
            np.bitwise_or.at(
                self._filter,
                slots >> np.uint64(3),
                np.left_shift(1, slots & np.uint64(7)).astype(np.uint8),
            )
        path = os.path.join(self._spill_dir, f"run-{len(self._spilled)}.u64")
        merged.tofile(path)
        self._spilled.append((path, len(merged)))
        self._runs = []


_FILTER_BITS = 27
_FILTER_SLICE = 1 << 17


def _unmark_seen(run: np.ndarray, digests: np.ndarray, fresh: np.ndarray) -> None:
    if not len(run):
        return
    candidates = digests[fresh]
    at = np.searchsorted(run, candidates)
    at[at == len(run)] = 0
    fresh[np.flatnonzero(fresh)[run[at] == candidates]] = False


@dataclass(slots=True)
class Quality:
    """Every rule's count: the quality report of a version."""

    rows_read: int = 0
    rows_rejected: int = 0
    duplicates_removed: int = 0
    values_imputed: int = 0
    outliers_flagged: int = 0
    rules: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    first_reject: dict[tuple[str, str | None], tuple[str, int, str]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The ``QualitySummary`` record of ``lepton.data.ready``."""
        return {
            "rows_read": self.rows_read,
            "rows_rejected": self.rows_rejected,
            "duplicates_removed": self.duplicates_removed,
            "values_imputed": self.values_imputed,
            "outliers_flagged": self.outliers_flagged,
            "rules": [
                {"rule": rule, "column": column, "count": count}
                for (rule, column), count in sorted(
                    self.rules.items(), key=lambda item: (item[0][0], item[0][1] or "")
                )
            ],
        }

    def worst(self) -> tuple[str, str | None, int, tuple[str, int, str]] | None:
        """The rule that rejected most rows, with its first example."""
        rejecting = [(key, self.rules[key]) for key in self.first_reject]
        if not rejecting:
            return None
        (rule, column), count = max(rejecting, key=lambda item: item[1])
        return rule, column, count, self.first_reject[(rule, column)]


@dataclass(frozen=True, slots=True)
class Cleaned:
    rows: pd.DataFrame  # the clean chunk, bookkeeping columns removed, spec column order
    rejects: pd.DataFrame  # REJECT_COLUMNS


class Cleaner:
    """Applies a spec's rules to coerced chunks, in order: types, missing values,
    nullability, ranges, categories, patterns, outliers; then (:meth:`first_seen`,
    :meth:`enforce_unique`) duplicates and unique keys."""

    def __init__(
        self,
        spec: DatasetSpec,
        stats: Mapping[str, ColumnStats],
        quality: Quality,
        dedupe: DedupeIndex,
        keys: DedupeIndex | None = None,
    ) -> None:
        self.spec = spec
        self.quality = quality
        self._dedupe = dedupe
        self._keys = keys if keys is not None else DedupeIndex()
        self._fills: dict[str, Any] = {}
        self._bounds: dict[str, tuple[float, float]] = {}
        for name, column in spec.columns.items():
            column_stats = stats.get(name)
            if column.missing == "constant":
                self._fills[name] = column.fill
            elif column.missing == "median" and column_stats is not None:
                self._fills[name] = column_stats.quantile(0.5)
            elif column.missing == "mode" and column_stats is not None:
                self._fills[name] = column_stats.mode()
            if column.outliers is not None and column_stats is not None:
                bounds = _outlier_bounds(column, column_stats)
                if bounds is not None:
                    self._bounds[name] = bounds

    def output_columns(self) -> list[tuple[str, ColumnSpec]]:
        """The stored columns: the spec's, plus a boolean flag per flagged outlier rule."""
        columns = list(self.spec.columns.items())
        for name, column in self.spec.columns.items():
            if column.outliers is not None and column.outliers.action == "flag":
                columns.append((f"{name}_outlier", ColumnSpec(type="boolean", nullable=False)))
        return columns

    def clean(
        self, raw: pd.DataFrame, typed: pd.DataFrame, failures: Mapping[str, pd.Series]
    ) -> Cleaned:
        """One chunk: ``raw`` as read (for reject records), ``typed`` and ``failures`` from
        :func:`coerce`."""
        quality, rejects = self.quality, _Rejects()
        alive = pd.Series(True, index=typed.index)

        def reject(
            mask: pd.Series,
            rule: str,
            column: str | None,
            describe: Callable[[str], str],
            values: pd.Series | None = None,
        ) -> None:
            # Reasons are built for the rejected rows only: most rows pass every rule.
            hit = (mask & alive).to_numpy(dtype=bool, na_value=False)
            if not hit.any():
                return
            rows = typed[hit]
            shown = (
                self._shown(column, values[hit])
                if values is not None and column is not None
                else pd.Series("", index=rows.index)
            )
            reasons = shown.map(describe)
            rejects.add(rows, rule, column, reasons)
            count = int(hit.sum())
            quality.rules[(rule, column)] += count
            quality.rows_rejected += count
            quality.first_reject.setdefault(
                (rule, column),
                (str(rows[SOURCE].iloc[0]), int(rows[ROW].iloc[0]), str(reasons.iloc[0])),
            )
            alive[hit] = False

        for name, failed in failures.items():
            kind = self.spec.columns[name].type
            reject(failed, "type", name, _reason(f"{name} ", f" is not {kind}"), raw[name])

        for name, column in self.spec.columns.items():
            values = typed[name]
            missing = values.isna() & alive
            if column.missing == "drop":
                reject(missing, "missing:drop", name, _reason(f"{name} is missing"))
            elif column.missing in ("constant", "median", "mode") and missing.any():
                fill = self._fills.get(name)
                if fill is not None:
                    typed[name] = values.fillna(_convert(pd.Series([fill]), column.type).iloc[0])
                    count = int(missing.sum())
                    quality.values_imputed += count
                    quality.rules[(f"missing:{column.missing}", name)] += count
            if not column.nullable:
                reject(typed[name].isna(), "not_null", name, _reason(f"{name} is null"))

        for name, column in self.spec.columns.items():
            self._value_rules(typed, name, column, reject)

        kept = typed[alive]
        kept = self._outliers(kept, quality, rejects, alive, typed)
        columns = [SOURCE, ROW, *(name for name, _ in self.output_columns())]
        return Cleaned(kept[columns].reset_index(drop=True), self._reject_frame(rejects, raw))

    def enforce_unique(self, rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Rows whose unique key an earlier row already had are rejects (rule ``unique``).

        With ``dedupe: key`` such rows are duplicates instead, removed and counted.
        """
        if not self.spec.unique or self.spec.dedupe == "key" or rows.empty:
            return rows, pd.DataFrame(columns=list(REJECT_COLUMNS))
        key = self.spec.unique
        digests = pd.util.hash_pandas_object(rows[key], index=False).to_numpy()
        repeated = ~self._keys.first_seen(digests)
        if not repeated.any():
            return rows, pd.DataFrame(columns=list(REJECT_COLUMNS))
        column = key[0] if len(key) == 1 else None
        hit = rows[repeated]
        shown = hit[key].astype("string").fillna("null").agg(", ".join, axis=1)
        if any(self.spec.columns[name].sensitive for name in key):
            shown = pd.Series("(sensitive)", index=hit.index)
        reasons = shown.map(
            lambda v: f"unique key ({', '.join(key)}) = ({v}) repeats an earlier row"
        )
        found = _Rejects()
        found.add(hit, "unique", column, reasons)
        count = len(hit)
        self.quality.rules[("unique", column)] += count
        self.quality.rows_rejected += count
        self.quality.first_reject.setdefault(
            ("unique", column), (str(hit[SOURCE].iloc[0]), int(hit[ROW].iloc[0]), reasons.iloc[0])
        )
        return rows[~repeated], self._reject_frame(found, rows)

    def _shown(self, name: str, values: pd.Series) -> pd.Series:
        """Values as a reason may quote them: never a sensitive column's."""
        if self.spec.columns[name].sensitive:
            return pd.Series("(sensitive)", index=values.index)
        return values.map(repr)

    def _reject_frame(self, rejects: _Rejects, raw: pd.DataFrame) -> pd.DataFrame:
        if not rejects.parts:
            return pd.DataFrame(columns=list(REJECT_COLUMNS))
        frame = pd.concat(rejects.parts, ignore_index=True)
        hidden = {name for name, column in self.spec.columns.items() if column.sensitive}
        visible = [c for c in raw.columns if c not in (SOURCE, ROW) and c not in hidden]
        rows = raw.loc[frame.pop("index"), visible].astype("string")
        # pandas writes the JSON lines in C; a loop over rows costs 50x more.
        frame["raw"] = rows.to_json(orient="records", lines=True, force_ascii=False).splitlines()
        return frame[list(REJECT_COLUMNS)]

    def _value_rules(self, typed: pd.DataFrame, name: str, column: ColumnSpec, reject: Any) -> None:
        values = typed[name]
        present = values.notna()
        if column.min is not None:
            low = present & (values < column.min).fillna(False)
            reject(low, "range", name, lambda v: f"{name} {v} is below {column.min:g}", values)
        if column.max is not None:
            high = present & (values > column.max).fillna(False)
            reject(high, "range", name, lambda v: f"{name} {v} is above {column.max:g}", values)
        if column.categories is not None:
            allowed = ", ".join(column.categories)
            outside = present & ~values.isin(column.categories).fillna(False)
            reject(
                outside, "category", name, lambda v: f"{name} {v} is not one of {allowed}", values
            )
        if column.pattern is not None:
            unmatched = present & ~values.str.fullmatch(column.pattern).fillna(False)
            reject(
                unmatched,
                "pattern",
                name,
                lambda v: f"{name} {v} does not match {column.pattern}",
                values,
            )

    def _outliers(
        self,
        kept: pd.DataFrame,
        quality: Quality,
        rejects: _Rejects,
        alive: pd.Series,
        typed: pd.DataFrame,
    ) -> pd.DataFrame:
        for name, column in self.spec.columns.items():
            if column.outliers is None:
                continue
            low, high = self._bounds.get(name, (-np.inf, np.inf))
            values = kept[name].astype("Float64")
            outside = ((values < low) | (values > high)).fillna(False).astype(bool)
            rule = f"outlier:{column.outliers.method}"
            count = int(outside.sum())
            quality.outliers_flagged += count
            if count:
                quality.rules[(rule, name)] += count
            if column.outliers.action == "flag":
                kept = kept.assign(**{f"{name}_outlier": outside.to_numpy()})
            elif count:
                rows = kept[outside]
                reasons = self._shown(name, rows[name]).map(
                    lambda v, n=name, lo=low, hi=high: f"{n} {v} is outside [{lo:g}, {hi:g}]"
                )
                rejects.add(rows, rule, name, reasons)
                quality.rows_rejected += count
                quality.first_reject.setdefault(
                    (rule, name),
                    (str(rows[SOURCE].iloc[0]), int(rows[ROW].iloc[0]), reasons.iloc[0]),
                )
                kept = kept[~outside]
        return kept

    def row_digests(self, kept: pd.DataFrame) -> np.ndarray | None:
        """64-bit digests of the dedupe key of each row; None when nothing is deduplicated.

        Exact duplicates are found by the pipeline from the canonical text of each row
        (cheaper); this covers key deduplication and rows whose text spans lines.
        """
        if self.spec.dedupe == "none":
            return None
        key = self.spec.unique if self.spec.dedupe == "key" else list(self.spec.columns)
        digests: np.ndarray = pd.util.hash_pandas_object(kept[key], index=False).to_numpy()
        return digests

    def first_seen(self, digests: np.ndarray) -> np.ndarray:
        """Which rows are not duplicates of an earlier one (any chunk); counts the others."""
        fresh = self._dedupe.first_seen(digests)
        removed = int(len(fresh) - fresh.sum())
        if removed:
            self.quality.duplicates_removed += removed
            self.quality.rules[("dedupe", None)] += removed
        return fresh


def _reason(before: str, after: str = "") -> Callable[[str], str]:
    """A reject reason around the value as shown (empty for rules that quote none)."""
    return lambda shown: f"{before}{shown}{after}"


def _outlier_bounds(column: ColumnSpec, stats: ColumnStats) -> tuple[float, float] | None:
    assert column.outliers is not None
    limit = column.outliers.limit
    if column.outliers.method == "iqr":
        q1, q3 = stats.quantile(0.25), stats.quantile(0.75)
        if q1 is None or q3 is None:
            return None
        spread = q3 - q1
        return q1 - limit * spread, q3 + limit * spread
    mean, std = stats.mean, stats.std
    if mean is None or std is None or std == 0:
        return None
    return mean - limit * std, mean + limit * std
