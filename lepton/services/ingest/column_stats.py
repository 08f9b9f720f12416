"""Per-column statistics gathered over all chunks, for fills and outlier bounds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from lepton.services.ingest.spec import DatasetSpec

__all__ = ["ColumnStats", "needs_stats"]


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

    def robust(self, *, log: bool) -> tuple[float, float] | None:
        """Median and median absolute deviation of the values (of their logarithms with
        ``log``, positive values only)."""
        values = self._values
        if log:
            values = np.log(values[values > 0])
        if not len(values):
            return None
        median = float(np.median(values))
        return median, float(np.median(np.abs(values - median)))

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
        if column.missing in ("median", "mode")
        or column.outliers is not None
        or column.rare is not None
    ]
