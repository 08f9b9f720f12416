"""Exact duplicate detection over every row ingested so far, in bounded memory."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["DedupeIndex"]


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
