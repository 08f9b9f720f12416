"""Cleaning and integration decisions, on plain data frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lepton.services.ingest.cleaning import Cleaner, Quality
from lepton.services.ingest.coercion import ROW, SOURCE, coerce, effective_spec, merge_types
from lepton.services.ingest.column_stats import ColumnStats
from lepton.services.ingest.dedupe import DedupeIndex
from lepton.services.ingest.spec import ColumnSpec, DatasetSpec, IngestRejected, Outliers


def _chunk(source: str = "s", **columns: list) -> pd.DataFrame:
    frame = pd.DataFrame(columns, dtype="object")
    frame.insert(0, ROW, range(1, len(frame) + 1))
    frame.insert(0, SOURCE, source)
    return frame


def _clean(spec: DatasetSpec, chunk: pd.DataFrame, stats: dict | None = None):
    quality = Quality()
    cleaner = Cleaner(spec, stats or {}, quality, DedupeIndex())
    typed, failures = coerce(chunk, spec)
    return cleaner, cleaner.clean(chunk, typed, failures), quality


def test_merge_types_widens_and_reports_conflicts() -> None:
    merged = merge_types(
        [
            ("a", {"x": "integer", "c": "category"}),
            ("b", {"x": "float", "c": "string", "y": "boolean"}),
        ]
    )
    assert merged == {"x": "float", "c": "string", "y": "boolean"}
    with pytest.raises(IngestRejected) as caught:
        merge_types([("a", {"x": "integer"}), ("b", {"x": "datetime"})])
    assert caught.value.code == "type_conflict"
    assert caught.value.column == "x"
    assert "'a'" in caught.value.reason
    assert "'b'" in caught.value.reason


def test_effective_spec_keeps_source_order_and_adds_undeclared_columns() -> None:
    given = DatasetSpec(columns={"b": ColumnSpec(type="float")})
    spec = effective_spec(given, {"a": "integer", "b": "float"})
    assert list(spec.columns) == ["a", "b"]
    assert spec.columns["a"].type == "integer"
    dropped = effective_spec(
        given.model_copy(update={"extra_columns": "drop"}), {"a": "integer", "b": "float"}
    )
    assert list(dropped.columns) == ["b"]


def test_a_declared_column_no_source_has_contradicts_the_data() -> None:
    with pytest.raises(IngestRejected) as caught:
        effective_spec(DatasetSpec(columns={"z": ColumnSpec()}), {"a": "integer"})
    assert caught.value.code == "spec_violation"
    assert caught.value.column == "z"


def test_type_failures_are_rejects_never_silent_nulls() -> None:
    spec = DatasetSpec(columns={"n": ColumnSpec(type="integer")}, dedupe="none")
    _, cleaned, quality = _clean(spec, _chunk(n=["1", "x", None, "4.0", "4.5"]))
    assert cleaned.rows["n"].tolist()[0] == 1
    assert cleaned.rows["n"].isna().tolist() == [False, True, False]
    assert cleaned.rows["n"].tolist()[2] == 4
    assert cleaned.rejects["source_row"].tolist() == [2, 5]
    assert set(cleaned.rejects["rule"]) == {"type"}
    assert "'x' is not integer" in cleaned.rejects["reason"].iloc[0]
    assert quality.rules[("type", "n")] == 2


def test_missing_value_strategies() -> None:
    spec = DatasetSpec(
        columns={
            "a": ColumnSpec(type="float", missing="median"),
            "b": ColumnSpec(type="category", missing="mode"),
            "c": ColumnSpec(type="string", missing="constant", fill="?"),
            "d": ColumnSpec(type="float", missing="drop"),
        },
        dedupe="none",
    )
    chunk = _chunk(
        a=["1", "2", None, "10"],
        b=["x", None, "x", "y"],
        c=[None, "k", "k", "k"],
        d=["1", "1", "1", None],
    )
    stats = {"a": ColumnStats(100), "b": ColumnStats(100)}
    typed, _ = coerce(chunk, spec)
    stats["a"].add(typed["a"], numeric=True)
    stats["b"].add(typed["b"], numeric=False)
    _, cleaned, quality = _clean(spec, chunk, stats)
    assert cleaned.rows["a"].tolist() == [1.0, 2.0, 2.0]
    assert cleaned.rows["b"].tolist() == ["x", "x", "x"]
    assert cleaned.rows["c"].tolist() == ["?", "k", "k"]
    assert cleaned.rejects["rule"].tolist() == ["missing:drop"]
    assert quality.values_imputed == 3
    assert quality.rules[("missing:median", "a")] == 1
    assert quality.rules[("missing:mode", "b")] == 1
    assert quality.rules[("missing:constant", "c")] == 1


def test_value_rules_reject_with_rule_and_reason() -> None:
    spec = DatasetSpec(
        columns={
            "n": ColumnSpec(type="float", min=0, max=10),
            "k": ColumnSpec(type="category", categories=["A区", "B区"]),
            "p": ColumnSpec(type="string", pattern=r"\d{3}", nullable=False),
        },
        dedupe="none",
    )
    chunk = _chunk(
        n=["5", "-1", "11", "5", "5"],
        k=["A区", "A区", "B区", "D区", "B区"],
        p=["123", "123", "123", "123", "12a"],
    )
    _, cleaned, quality = _clean(spec, chunk)
    assert len(cleaned.rows) == 1
    assert list(zip(cleaned.rejects["rule"], cleaned.rejects["source_row"], strict=True)) == [
        ("range", 2),
        ("range", 3),
        ("category", 4),
        ("pattern", 5),
    ]
    assert "is below 0" in cleaned.rejects["reason"].iloc[0]
    assert "'D区' is not one of A区, B区" in cleaned.rejects["reason"].iloc[2]
    assert quality.rows_rejected == 4
    assert '"k":"D区"' in cleaned.rejects["raw"].iloc[2]


def test_outliers_are_flagged_or_dropped() -> None:
    values = [str(v) for v in [10, 11, 12, 10, 11, 12, 10, 11, 500]]
    for action, kept in (("flag", 9), ("drop", 8)):
        spec = DatasetSpec(
            columns={"v": ColumnSpec(type="float", outliers=Outliers(method="iqr", action=action))},
            dedupe="none",
        )
        chunk = _chunk(v=values)
        stats = {"v": ColumnStats(100)}
        stats["v"].add(coerce(chunk, spec)[0]["v"], numeric=True)
        _, cleaned, quality = _clean(spec, chunk, stats)
        assert len(cleaned.rows) == kept
        assert quality.outliers_flagged == 1
        assert quality.rules[("outlier:iqr", "v")] == 1
        if action == "flag":
            assert cleaned.rows["v_outlier"].tolist() == [False] * 8 + [True]
        else:
            assert cleaned.rejects["rule"].tolist() == ["outlier:iqr"]


def test_zscore_bounds_come_from_exact_running_sums() -> None:
    stats = ColumnStats(capacity=10)
    stats.add(pd.Series([1.0, 2.0, 3.0, 4.0]), numeric=True)
    stats.add(pd.Series([5.0, None]), numeric=True)
    assert stats.mean == 3.0
    assert stats.std == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))


def test_quartile_sample_is_bounded_and_exact_below_capacity() -> None:
    stats = ColumnStats(capacity=1000)
    stats.add(pd.Series(np.arange(1000, dtype=float)), numeric=True)
    assert stats.quantile(0.5) == 499.5
    stats.add(pd.Series(np.arange(5000, dtype=float)), numeric=True)
    assert len(stats._values) == 1000
    assert stats.count == 6000


@pytest.mark.parametrize("spill", [False, True])
def test_dedupe_index_finds_repeats_within_and_across_chunks(spill: bool, tmp_path) -> None:
    index = DedupeIndex(run_cap=4, spill_dir=str(tmp_path) if spill else None)
    assert index.first_seen(np.array([1, 2, 2, 3], dtype=np.uint64)).tolist() == [
        True,
        True,
        False,
        True,
    ]
    assert index.first_seen(np.array([3, 4, 1, 5], dtype=np.uint64)).tolist() == [
        False,
        True,
        False,
        True,
    ]
    for start in range(10, 100, 3):
        index.first_seen(np.arange(start, start + 3, dtype=np.uint64))
    assert index.first_seen(np.array([50, 1000], dtype=np.uint64)).tolist() == [False, True]
    assert len(index) == 5 + 90 + 1
    assert bool(list(tmp_path.iterdir())) == spill


def test_row_digests_by_key() -> None:
    spec = DatasetSpec(
        columns={"id": ColumnSpec(type="integer"), "v": ColumnSpec()}, unique=["id"], dedupe="key"
    )
    cleaner, cleaned, quality = _clean(spec, _chunk(id=["1", "1", "2"], v=["a", "b", "c"]))
    digests = cleaner.row_digests(cleaned.rows)
    assert digests is not None
    fresh = cleaner.first_seen(digests)
    assert fresh.tolist() == [True, False, True]
    assert quality.duplicates_removed == 1


def test_quality_summary_counts_every_rule() -> None:
    quality = Quality(rows_read=10, rows_rejected=2)
    quality.rules[("range", "a")] += 2
    quality.rules[("dedupe", None)] += 1
    summary = quality.summary()
    assert summary["rules"] == [
        {"rule": "dedupe", "column": None, "count": 1},
        {"rule": "range", "column": "a", "count": 2},
    ]


def test_spilled_index_agrees_with_the_in_memory_one(tmp_path) -> None:
    rng = np.random.default_rng(1)
    spilled = DedupeIndex(run_cap=1000, spill_dir=str(tmp_path))
    in_memory = DedupeIndex()
    previous = np.empty(0, dtype=np.uint64)
    for _ in range(50):
        digests = rng.integers(0, 2**63, 700, dtype=np.uint64)
        digests[:100] = rng.choice(digests[100:], 100)  # repeats within the chunk
        if len(previous):
            digests[100:200] = previous[:100]  # and of the chunk before
        previous = digests.copy()
        assert (spilled.first_seen(digests) == in_memory.first_seen(digests)).all()
    assert len(spilled) == len(in_memory)
    assert len(list(tmp_path.iterdir())) > 10


def test_a_repeated_unique_key_is_a_reject_unless_deduplicating_by_key() -> None:
    spec = DatasetSpec(
        columns={"id": ColumnSpec(type="integer"), "v": ColumnSpec()}, unique=["id"], dedupe="exact"
    )
    cleaner, cleaned, quality = _clean(spec, _chunk(id=["1", "2", "1"], v=["a", "b", "c"]))
    rows, rejects = cleaner.enforce_unique(cleaned.rows)
    assert rows["v"].tolist() == ["a", "b"]
    assert rejects["rule"].tolist() == ["unique"]
    assert rejects["source_row"].tolist() == [3]
    assert "(id) = (1) repeats an earlier row" in rejects["reason"].iloc[0]
    assert quality.rules[("unique", "id")] == 1
    later, more = cleaner.enforce_unique(cleaned.rows.iloc[[1]])
    assert later.empty
    assert len(more) == 1

    by_key = spec.model_copy(update={"dedupe": "key"})
    cleaner, cleaned, _ = _clean(by_key, _chunk(id=["1", "1"], v=["a", "b"]))
    rows, rejects = cleaner.enforce_unique(cleaned.rows)
    assert len(rows) == 2
    assert rejects.empty
