"""One request's data path, synchronous and bounded: sources → types → integration →
cleaning → canonical CSV. The service runs it in a worker thread and streams its pieces
into PostgreSQL; nothing here touches the database or Kafka.

The version is the SHA-256 of the schema and the cleaned rows in canonical form (the CSV
the pyarrow writer makes of the typed rows, plaintext), so the same content always gives
the same version whatever the source formats or chunk sizes.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from lepton.services.ingest.cleaning import Cleaner, Quality
from lepton.services.ingest.coercion import (
    INFER_ROWS,
    ROW,
    SOURCE,
    coerce,
    effective_spec,
    merge_types,
    source_types,
)
from lepton.services.ingest.column_stats import ColumnStats, needs_stats
from lepton.services.ingest.dedupe import DedupeIndex
from lepton.services.ingest.inference import careful_spec
from lepton.services.ingest.input_bounds import Bounds, check_categories, check_cells, check_columns
from lepton.services.ingest.spec import NUMERIC, ColumnSpec, DatasetSpec, IngestRejected

if TYPE_CHECKING:
    from lepton.services.ingest.sources import SourceReader

__all__ = ["Integration", "Outcome", "Piece", "Pipeline", "canonical_csv"]

_PG_TYPES = {
    "integer": "bigint",
    "float": "double precision",
    "string": "text",
    "category": "text",
    "boolean": "boolean",
    "datetime": "timestamptz",
}
_ARROW_TYPES = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "string": pa.string(),
    "category": pa.string(),
    "boolean": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}

Encrypt = Callable[[str, pd.Series], pd.Series]
# The statistics pass keeps at most this many columns' full samples in all.
STATS_COLUMNS_AT_FULL = 10
_MIN_STATS_SAMPLE = 100  # values: enough for a median and MAD against a 6-sigma rule
_STREAMED_JOIN: dict[str, Literal["inner", "left"]] = {
    "inner": "inner",
    "left": "left",
    "outer": "left",
}


@dataclass(frozen=True, slots=True)
class Integration:
    mode: str = "union"
    join_keys: tuple[str, ...] = ()
    join_how: str = "inner"


@dataclass(frozen=True, slots=True)
class Piece:
    """Cleaned rows ready for COPY (CSV, sensitive columns already ciphertext) and the rows
    the rules removed."""

    copy_csv: bytes
    rows: int
    rejects: pd.DataFrame


@dataclass(slots=True)
class Outcome:
    spec: DatasetSpec
    inferred: bool
    columns: list[tuple[str, ColumnSpec]]
    quality: Quality
    version: str = ""
    rows: int = 0
    lineage: list[dict[str, Any]] = field(default_factory=list)

    def pg_columns(self) -> list[tuple[str, str]]:
        """Generated identifiers (never user text) and PostgreSQL types, in column order."""
        return [
            (f"c{i}", "bytea" if column.sensitive else _PG_TYPES[column.type])
            for i, (_, column) in enumerate(self.columns)
        ]


def canonical_csv(frame: pd.DataFrame, columns: Sequence[tuple[str, ColumnSpec]]) -> bytes:
    """The rows as headerless CSV with each column in its canonical Arrow type."""
    arrays = [
        pa.array(frame[name], type=_ARROW_TYPES[column.type], from_pandas=True)
        for name, column in columns
    ]
    table = pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(columns))])
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue()


class Pipeline:
    """Plans a request (:meth:`prepare`), then yields its pieces (:meth:`pieces`)."""

    def __init__(
        self,
        readers: Sequence[SourceReader],
        spec: DatasetSpec | None,
        integration: Integration,
        *,
        stats_sample_rows: int,
        max_join_rows: int,
        max_reject_fraction: float,
        bounds: Bounds,
        encrypt: Encrypt | None = None,
    ) -> None:
        self.readers = list(readers)
        self.given = spec
        self.integration = integration if len(readers) > 1 else Integration()
        self.stats_sample_rows = stats_sample_rows
        self.max_join_rows = max_join_rows
        self.max_reject_fraction = max_reject_fraction
        self.bounds = bounds
        self.encrypt = encrypt
        self.outcome: Outcome | None = None
        self._cells = 0  # read in the current pass over the sources

    def prepare(self) -> Outcome:
        """Types per source (from each first chunk), merged; the effective spec."""
        per_source, samples = [], []
        for reader in self.readers:
            first = next(reader.chunks(probe=True), None)
            if first is None:
                raise IngestRejected(
                    "empty", f"source {reader.name!r} has no rows", source=reader.name
                )
            sample = first.drop(columns=[SOURCE, ROW])
            per_source.append((reader.name, source_types(sample)))
            samples.append(sample.head(INFER_ROWS))
        types = merge_types(per_source)
        if self.integration.mode == "join":
            self._check_join(per_source)
        if self.integration.mode not in ("union", "join"):
            raise IngestRejected(
                "spec_invalid", f"integration mode {self.integration.mode!r} is not supported"
            )
        spec = (
            careful_spec(types, pd.concat(samples, ignore_index=True))
            if self.given is None
            else effective_spec(self.given, types)
        )
        for name, column in spec.columns.items():
            if column.categories is not None:
                check_categories(
                    len(column.categories), name, self.bounds, why="in the spec's categories"
                )
        cleaner = Cleaner(spec, {}, Quality(), DedupeIndex())
        columns = cleaner.output_columns()
        check_columns([name for name, _ in columns], self.bounds, None)
        self.outcome = Outcome(spec, self.given is None, columns, Quality())
        return self.outcome

    def _check_join(self, per_source: Sequence[tuple[str, dict[str, Any]]]) -> None:
        keys = self.integration.join_keys
        if not keys:
            raise IngestRejected("spec_invalid", "integration mode join needs join_keys")
        if self.integration.join_how not in ("inner", "left", "outer"):
            raise IngestRejected(
                "spec_invalid",
                f"join_how {self.integration.join_how!r} is not inner, left or outer",
            )
        for source, types in per_source:
            for key in keys:
                if key not in types:
                    raise IngestRejected(
                        "spec_invalid",
                        f"join key {key!r} is not a column of source {source!r}",
                        source=source,
                        column=key,
                    )
        seen: dict[str, str] = {}
        for source, types in per_source:
            for column in types:
                if column not in keys and column in seen:
                    raise IngestRejected(
                        "type_conflict",
                        f"column {column!r} is in sources {seen[column]!r} and {source!r} "
                        "but is not a join key",
                        source=source,
                        column=column,
                    )
                seen.setdefault(column, source)

    def pieces(self) -> Iterator[Piece]:
        """The cleaned data; when exhausted, :attr:`outcome` has the version and report."""
        outcome = self.outcome or self.prepare()
        spec, quality = outcome.spec, outcome.quality
        stats = self._stats(spec) if needs_stats(spec) else {}
        digest = hashlib.sha256(self._schema_text(outcome).encode())
        with tempfile.TemporaryDirectory(prefix="lepton-dedupe-") as spill:
            keys_dir = os.path.join(spill, "keys")
            os.mkdir(keys_dir)
            cleaner = Cleaner(
                spec,
                stats,
                quality,
                DedupeIndex(spill_dir=spill),
                DedupeIndex(spill_dir=keys_dir) if spec.unique else None,
                sample_chars=self.bounds.sample_chars,
            )
            categories = CategoryCount(spec, self.bounds, inferred=outcome.inferred)
            for raw, typed, failures in self._integrated(spec, quality):
                cleaned = cleaner.clean(raw, typed, failures)
                categories.add(cleaned.rows)
                rows, plain = self._deduplicated(cleaner, cleaned.rows, outcome)
                rows, repeated = cleaner.enforce_unique(rows)
                rejects = cleaned.rejects
                if len(repeated):
                    plain = canonical_csv(rows, outcome.columns)
                    rejects = pd.concat([rejects, repeated], ignore_index=True)
                digest.update(plain)
                outcome.rows += len(rows)
                yield Piece(self._for_copy(rows, outcome, plain), len(rows), rejects)
        if (
            quality.rows_read
            and quality.rows_rejected > self.max_reject_fraction * quality.rows_read
        ):
            raise self._contradiction(quality)
        if outcome.rows == 0:
            raise IngestRejected("empty", "no rows are left after cleaning")
        outcome.version = "sha256:" + digest.hexdigest()
        outcome.lineage = [
            {
                "name": reader.name,
                "kind": reader.request.kind,
                "uri": reader.request.uri,
                "content_hash": reader.content_hash or "",
                "rows": reader.rows,
            }
            for reader in self.readers
        ]

    @staticmethod
    def _deduplicated(
        cleaner: Cleaner, rows: pd.DataFrame, outcome: Outcome
    ) -> tuple[pd.DataFrame, bytes]:
        """The chunk without rows seen before, and its canonical CSV."""
        plain = canonical_csv(rows, outcome.columns)
        if outcome.spec.dedupe == "none" or rows.empty:
            return rows, plain
        lines = plain.split(b"\n")[:-1]
        if outcome.spec.dedupe == "exact" and len(lines) == len(rows):
            # One line per row (no text spans lines): a row's canonical line is its identity,
            # and hashing bytes is far cheaper than hashing typed columns.
            digests = np.fromiter(map(hash, lines), dtype=np.int64, count=len(lines))
            fresh = cleaner.first_seen(digests.view(np.uint64))
            if fresh.all():
                return rows, plain
            kept = b"\n".join(itertools.compress(lines, fresh))
            return rows[fresh], kept + b"\n" if kept or fresh.any() else b""
        row_digests = cleaner.row_digests(rows)
        assert row_digests is not None
        fresh = cleaner.first_seen(row_digests)
        rows = rows[fresh]
        return rows, canonical_csv(rows, outcome.columns)

    @staticmethod
    def _schema_text(outcome: Outcome) -> str:
        return (
            json.dumps(
                [[name, column.type, column.sensitive] for name, column in outcome.columns],
                ensure_ascii=False,
            )
            + "\n"
        )

    def _for_copy(self, rows: pd.DataFrame, outcome: Outcome, plain: bytes) -> bytes:
        sensitive = [name for name, column in outcome.columns if column.sensitive]
        if not sensitive:
            return plain
        if self.encrypt is None:
            raise IngestRejected(
                "spec_invalid",
                "the spec marks columns sensitive but no master key is configured "
                "(LEPTON_MASTER_KEY)",
                column=sensitive[0],
            )
        encrypted = rows.copy()
        for name in sensitive:
            encrypted[name] = self.encrypt(name, rows[name])
        as_text = [
            (name, column.model_copy(update={"type": "string"}) if column.sensitive else column)
            for name, column in outcome.columns
        ]
        return canonical_csv(encrypted, as_text)

    def _contradiction(self, quality: Quality) -> IngestRejected:
        worst = quality.worst()
        assert worst is not None
        rule, column, count, (source, row, reason) = worst
        return IngestRejected(
            "spec_violation",
            f"the spec contradicts the data: {quality.rows_rejected} of {quality.rows_read} "
            f"rows fail its rules (limit {self.max_reject_fraction:.0%}); most by {rule}"
            f"{' on ' + column if column else ''} ({count}), first: {reason}",
            source=source,
            column=column,
            row=row,
        )

    def _stats(self, spec: DatasetSpec) -> dict[str, ColumnStats]:
        wanted = needs_stats(spec)
        # An inferred spec gives every numeric column an outlier rule: on a wide table the
        # samples share a budget of STATS_COLUMNS_AT_FULL columns' worth, so memory stays
        # bounded (a median or MAD from a uniform sample of thousands is close to exact).
        capacity = max(
            _MIN_STATS_SAMPLE,
            min(
                self.stats_sample_rows,
                STATS_COLUMNS_AT_FULL * self.stats_sample_rows // max(1, len(wanted)),
            ),
        )
        stats = {name: ColumnStats(capacity) for name in wanted}
        for _, typed, failures in self._integrated(spec, Quality()):
            failed = pd.Series(False, index=typed.index)
            for mask in failures.values():
                failed |= mask
            for name in wanted:
                numeric = spec.columns[name].type in NUMERIC
                stats[name].add(typed.loc[~failed, name], numeric=numeric)
                if not numeric:
                    # A mode counts every distinct value: as bounded as a category's.
                    check_categories(
                        len(stats[name].counts), name, self.bounds, why="(counted for its mode)"
                    )
        return stats

    def _read(self, reader: SourceReader, quality: Quality) -> Iterator[pd.DataFrame]:
        """A source's chunks, counted as rows read and as cells against the bound."""
        for chunk in reader.chunks():
            quality.rows_read += len(chunk)
            self._cells += len(chunk) * (chunk.shape[1] - 2)  # less SOURCE and ROW
            check_cells(self._cells, self.bounds)
            yield chunk

    def _integrated(
        self, spec: DatasetSpec, quality: Quality
    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.Series]]]:
        self._cells = 0
        if self.integration.mode == "join":
            yield from self._joined(spec, quality)
            return
        for reader in self.readers:
            for chunk in self._read(reader, quality):
                typed, failures = coerce(chunk, spec)
                yield chunk, typed, failures

    def _joined(
        self, spec: DatasetSpec, quality: Quality
    ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.Series]]]:
        keys = list(self.integration.join_keys)
        how = self.integration.join_how
        left, *rights = self.readers
        right_frames = []
        for reader in rights:
            parts, rows = [], 0
            for chunk in self._read(reader, quality):
                rows += len(chunk)
                if rows > self.max_join_rows:
                    raise IngestRejected(
                        "too_large",
                        f"source {reader.name!r} has more than {self.max_join_rows} rows, the "
                        "limit for a joined source (LEPTON_INGEST_MAX_JOIN_ROWS)",
                        source=reader.name,
                    )
                # Rows of a joined source with values of the wrong type are rejected
                # through the first chunk that cleans them (as a chunk of their own).
                typed, rejected = self._coerce_split(chunk, spec)
                if rejected is not None:
                    yield rejected
                parts.append(typed)
            right_frames.append(pd.concat(parts, ignore_index=True))
        matched = [set[Any]() for _ in right_frames]
        for chunk in self._read(left, quality):
            joined, rejected = self._coerce_split(chunk, spec)
            if rejected is not None:
                yield rejected
            for i, right in enumerate(right_frames):
                extra = right.drop(columns=[SOURCE, ROW])
                # Outer joins stream as left joins; unmatched right rows are added at the end.
                merged = joined.merge(
                    extra, on=keys, how=_STREAMED_JOIN[how], indicator=how == "outer"
                )
                if how == "outer":
                    hit = merged.pop("_merge") == "both"
                    matched[i].update(merged.loc[hit, keys].itertuples(index=False, name=None))
                joined = merged
            joined = self._align(joined, spec)
            yield joined, joined, {}
        if how == "outer":
            for i, right in enumerate(right_frames):
                unmatched = right[
                    ~pd.Series(
                        [tuple(r) in matched[i] for r in right[keys].itertuples(index=False)],
                        index=right.index,
                        dtype=bool,
                    )
                ]
                if len(unmatched):
                    aligned = self._align(unmatched, spec)
                    yield aligned, aligned, {}

    def _coerce_split(
        self, chunk: pd.DataFrame, spec: DatasetSpec
    ) -> tuple[pd.DataFrame, tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.Series]] | None]:
        """The chunk's rows that coerce to the spec's types, and the ones that do not as a
        (raw, aligned, failures) piece to reject, or None when every row coerced."""
        typed, failures = coerce(chunk, spec, only_present=True)
        bad = pd.Series(False, index=typed.index)
        for mask in failures.values():
            bad |= mask
        if not bad.any():
            return typed, None
        rejected = (
            chunk[bad],
            self._align(typed[bad], spec),
            {name: mask[bad] for name, mask in failures.items()},
        )
        return typed[~bad], rejected

    @staticmethod
    def _align(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
        for name, column in spec.columns.items():
            if name not in frame.columns:
                frame[name] = pd.Series(pd.NA, index=frame.index, dtype="object")
                frame[name] = coerce(
                    frame[[SOURCE, ROW, name]], spec.model_copy(update={"columns": {name: column}})
                )[0][name]
        return frame[[SOURCE, ROW, *spec.columns]]


class CategoryCount:
    """The distinct values each category column has had so far (as 64-bit hashes, so a
    long value costs no more than a short one), held to the bound."""

    def __init__(self, spec: DatasetSpec, bounds: Bounds, *, inferred: bool) -> None:
        self._seen = {
            name: set[int]() for name, column in spec.columns.items() if column.type == "category"
        }
        self._bounds = bounds
        self._why = (
            "(inferred as a category from its first rows; declare it string)"
            if inferred
            else "(a category)"
        )

    def add(self, rows: pd.DataFrame) -> None:
        for name, seen in self._seen.items():
            values = rows[name].dropna().unique()
            seen.update(pd.util.hash_array(np.asarray(values, dtype=object)).tolist())
            check_categories(len(seen), name, self._bounds, why=self._why)
