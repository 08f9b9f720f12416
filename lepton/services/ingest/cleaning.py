"""Cleaning and integration decisions over plain data frames: no files, no database.

The pipeline feeds chunks through :class:`Cleaner`; every row a rule removes comes back as a
reject with the rule and the reason, and :class:`Quality` counts every rule, so nothing
disappears silently. Two bookkeeping columns travel with each chunk: ``SOURCE`` (source
name) and ``ROW`` (1-based data row in that source).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from lepton.services.ingest.coercion import ROW, SOURCE, convert
from lepton.services.ingest.dedupe import DedupeIndex
from lepton.services.ingest.input_bounds import clip
from lepton.services.ingest.spec import RARE_MIN_VALUES, ColumnSpec, DatasetSpec

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from lepton.services.ingest.column_stats import ColumnStats

__all__ = ["REJECT_COLUMNS", "Cleaned", "Cleaner", "Quality"]

REJECT_COLUMNS = ("source", "source_row", "rule", "column_name", "reason", "raw")


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
        *,
        sample_chars: int | None = None,
    ) -> None:
        """``sample_chars``: a value (or list) quoted in a reason is cut to this many
        characters (None: quoted whole)."""
        self.spec = spec
        self._sample_chars = sample_chars
        self.quality = quality
        self._dedupe = dedupe
        self._keys = keys if keys is not None else DedupeIndex()
        self._fills: dict[str, Any] = {}
        self._bounds: dict[str, tuple[float, float]] = {}
        self._rare: dict[str, tuple[frozenset[str], int]] = {}  # rare values, column count
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
            if column.rare is not None and column_stats is not None:
                total = sum(column_stats.counts.values())
                if total >= RARE_MIN_VALUES:
                    rare = column.rare
                    self._rare[name] = (
                        frozenset(v for v, n in column_stats.counts.items() if n <= rare),
                        total,
                    )

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
                    typed[name] = values.fillna(convert(pd.Series([fill]), column.type).iloc[0])
                    count = int(missing.sum())
                    quality.values_imputed += count
                    quality.rules[(f"missing:{column.missing}", name)] += count
            if not column.nullable:
                reject(typed[name].isna(), "not_null", name, _reason(f"{name} is null"))

        for name, column in self.spec.columns.items():
            self._value_rules(typed, name, column, reject)

        kept = self._neutralised(typed[alive])
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
        shown = hit[key].astype("string").fillna("null").agg(", ".join, axis=1).map(self._clip)
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
        return values.map(repr).map(self._clip)

    def _clip(self, text: str) -> str:
        return text if self._sample_chars is None else clip(text, self._sample_chars)

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

    def _neutralised(self, kept: pd.DataFrame) -> pd.DataFrame:
        """Text a spreadsheet would run as a formula, prefixed with ' (OWASP)."""
        for name, column in self.spec.columns.items():
            if column.formulas != "neutralise":
                continue
            formula = _formulas(kept[name])
            count = int(formula.sum())
            if count:
                kept = kept.assign(**{name: kept[name].mask(formula, "'" + kept[name])})
                self.quality.rules[("formula:neutralise", name)] += count
        return kept

    def _value_rules(self, typed: pd.DataFrame, name: str, column: ColumnSpec, reject: Any) -> None:
        values = typed[name]
        present = values.notna()
        if column.formulas == "reject":
            reject(
                _formulas(values),
                "formula",
                name,
                lambda v: f"{name} {v} would run as a spreadsheet formula",
                values,
            )
        if name in self._rare:
            rare, total = self._rare[name]
            most = column.rare
            reject(
                present & values.isin(rare).fillna(False),
                "rare",
                name,
                lambda v: (
                    f"{name} {v} is held by at most {most} of the column's {total} "
                    "values: junk among its categories"
                    + (" (a spreadsheet formula)" if v[1:2] in _FORMULA_START else "")
                ),
                values,
            )
        if column.min is not None:
            low = present & (values < column.min).fillna(False)
            reject(low, "range", name, lambda v: f"{name} {v} is below {column.min:g}", values)
        if column.max is not None:
            high = present & (values > column.max).fillna(False)
            reject(high, "range", name, lambda v: f"{name} {v} is above {column.max:g}", values)
        if column.categories is not None:
            allowed = self._clip(", ".join(column.categories))
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
                lambda v: f"{name} {v} does not match {self._clip(column.pattern or '')}",
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


# OWASP CSV injection: a cell starting with one of these runs as a formula in a
# spreadsheet; a plain number starting with + or - is harmless and left alone.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"


def _formulas(values: pd.Series) -> pd.Series:
    text = values.astype("string")
    starts = text.str.startswith(_FORMULA_START).fillna(False)
    return (starts & ~text.str.fullmatch(_PLAIN_NUMBER).fillna(False)).astype(bool)


def _reason(before: str, after: str = "") -> Callable[[str], str]:
    """A reject reason around the value as shown (empty for rules that quote none)."""
    return lambda shown: f"{before}{shown}{after}"


def _robust_bounds(robust: tuple[float, float] | None, limit: float) -> tuple[float, float] | None:
    """median ± limit robust standard deviations (1.4826 x MAD estimates the standard
    deviation of normal data); None when most values are equal (no spread to measure by)."""
    if robust is None or robust[1] == 0:
        return None
    median, mad = robust
    return median - limit * 1.4826 * mad, median + limit * 1.4826 * mad


def _outlier_bounds(column: ColumnSpec, stats: ColumnStats) -> tuple[float, float] | None:
    assert column.outliers is not None
    limit = column.outliers.limit
    if column.outliers.method == "mad":
        linear = _robust_bounds(stats.robust(log=False), limit)
        if linear is None or column.outliers.scale == "linear":
            return linear
        logged = _robust_bounds(stats.robust(log=True), limit)
        if logged is None:
            return linear
        # Far on both scales: outside the union of the two intervals (both hold the median).
        return min(linear[0], float(np.exp(logged[0]))), max(linear[1], float(np.exp(logged[1])))
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
