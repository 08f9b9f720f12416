"""Hostile files read by the source reader and the pipeline: each a specific rejection,
reached in bounded memory (the service-level answers: tests/integration/test_ingest_hostile.py)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lepton.services.ingest.pipeline import Integration, Pipeline
from lepton.services.ingest.source_limits import GuardedStream, resolve_location
from lepton.services.ingest.sources import SourceReader, SourceRequest
from lepton.services.ingest.spec import IngestRejected, parse_spec
from tests.unit.test_ingest_sources import BOUNDS, _limits, _reader


def _refused(reader: SourceReader) -> IngestRejected:
    with pytest.raises(IngestRejected) as caught:
        for _ in reader.chunks():
            pass
    return caught.value


def _pipeline(root: Path, uri: str, spec: str | None = None, **bounds: int) -> Pipeline:
    limits = _limits(root, bounds=dataclasses.replace(BOUNDS, **bounds))
    reader = SourceReader(
        SourceRequest("s", "csv", uri, None, {}), resolve_location(uri, limits, "s"), limits, "csv"
    )
    return Pipeline(
        [reader],
        parse_spec(spec) if spec else None,
        Integration(),
        stats_sample_rows=1000,
        max_join_rows=10,
        max_reject_fraction=0.5,
        bounds=limits.bounds,
    )


def _drain(pipeline: Pipeline) -> None:
    pipeline.prepare()
    for _ in pipeline.pieces():
        pass


def _run(pipeline: Pipeline) -> IngestRejected:
    with pytest.raises(IngestRejected) as caught:
        _drain(pipeline)
    return caught.value


def test_a_file_with_no_newline_is_refused_at_the_line_limit(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_bytes(b"a," + b"x" * (3 << 20))
    error = _refused(_reader(tmp_path, "one.csv"))
    assert error.code == "line_too_long"
    assert "LEPTON_INGEST_MAX_LINE_BYTES" in error.reason


def test_one_enormous_gzip_row_is_refused_while_inflating(tmp_path: Path) -> None:
    # Incompressible text, so the ratio guard does not stop it first.
    with gzip.open(tmp_path / "row.csv.gz", "wb", compresslevel=1) as out:
        out.write(b"a,b\n1,")
        for _ in range(8):
            out.write(os.urandom(1 << 20).hex().encode())
        out.write(b"\n")
    assert _refused(_reader(tmp_path, "row.csv.gz")).code == "line_too_long"


def test_a_truncated_gzip_is_unreadable_not_an_error(tmp_path: Path) -> None:
    whole = gzip.compress(b"a,b\n" + b"1,2\n" * 100_000)
    (tmp_path / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    assert _refused(_reader(tmp_path, "cut.csv.gz")).code == "source_unreadable"


def test_a_zip_is_an_unsupported_format(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.csv", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.csv", "a,b\n" + "0,0\n" * 1_000_000)
    error = _refused(_reader(tmp_path, "x.csv"))
    assert error.code == "unsupported_format"
    assert "zip archive" in error.reason


def test_a_hundred_thousand_columns_are_refused_at_the_header(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(100_000))
    (tmp_path / "wide.csv").write_text(header + "\n" + ",".join("1" * 100_000) + "\n")
    error = _refused(_reader(tmp_path, "wide.csv"))
    assert error.code == "too_many_columns"
    assert "100000 columns" in error.reason


def test_a_json_record_with_too_many_keys_is_refused(tmp_path: Path) -> None:
    record = json.dumps({f"k{i}": i for i in range(2000)})
    (tmp_path / "wide.jsonl").write_text(record + "\n")
    assert _refused(_reader(tmp_path, "wide.jsonl", "jsonl")).code == "too_many_columns"


def test_a_parquet_file_with_too_many_columns_is_refused_from_its_schema(tmp_path: Path) -> None:
    pq.write_table(pa.table({f"c{i}": [1] for i in range(1500)}), tmp_path / "wide.parquet")
    assert _refused(_reader(tmp_path, "wide.parquet", "parquet")).code == "too_many_columns"


def test_parquet_batches_of_a_wide_file_hold_fewer_rows(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({f"c{i}": list(range(5000)) for i in range(100)}), tmp_path / "w.parquet"
    )
    chunks = list(_reader(tmp_path, "w.parquet", "parquet").chunks())
    # 64 KiB chunks at 8 bytes a cell and 100 columns: 81 rows, not chunk_rows (1000).
    assert max(len(chunk) for chunk in chunks) == 64 * 1024 // (8 * 100)


def test_a_truncated_parquet_file_is_unreadable(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": list(range(10_000))}), tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    error = _refused(_reader(tmp_path, "cut.parquet", "parquet"))
    assert error.code == "source_unreadable"


def test_a_nul_byte_in_a_value_is_refused_with_its_row(tmp_path: Path) -> None:
    (tmp_path / "nul.csv").write_bytes(b"a,b\n" + b"1,x\n" * 10 + b"2,x\x00y\n")
    error = _refused(_reader(tmp_path, "nul.csv"))
    assert (error.code, error.column, error.row) == ("nul_byte", "b", 11)


def test_a_nul_byte_in_parquet_text_is_refused(tmp_path: Path) -> None:
    pq.write_table(pa.table({"t": ["ok", "a\x00b"]}), tmp_path / "nul.parquet")
    assert _refused(_reader(tmp_path, "nul.parquet", "parquet")).code == "nul_byte"


def test_a_column_name_over_the_limit_is_refused_briefly(tmp_path: Path) -> None:
    (tmp_path / "long.csv").write_text("a," + "n" * 500_000 + "\n1,2\n")
    error = _refused(_reader(tmp_path, "long.csv"))
    assert error.code == "column_name_too_long"
    assert len(error.reason) < 1024


def test_a_fifo_and_a_link_loop_are_unreadable_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.csv")
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    assert _refused(_reader(tmp_path, "pipe.csv")).code == "source_unreadable"
    assert _refused(_reader(tmp_path, "a")).code == "source_unreadable"


def test_a_nul_in_the_path_is_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(IngestRejected) as caught:
        resolve_location("x\x00.csv", _limits(tmp_path), "s")
    assert caught.value.code == "path_not_allowed"


def test_a_symlinked_directory_out_of_the_root_is_not_allowed(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.csv").write_text("a\n1\n")
    os.symlink(outside, root / "door")
    with pytest.raises(IngestRejected) as caught:
        resolve_location("door/secret.csv", _limits(root), "s")
    assert caught.value.code == "path_not_allowed"
    with pytest.raises(IngestRejected):
        resolve_location(f"file://{outside}/secret.csv", _limits(root), "s")


def test_cells_over_the_limit_are_refused_while_reading(tmp_path: Path) -> None:
    pd.DataFrame({"a": range(5000), "b": range(5000)}).to_csv(tmp_path / "x.csv", index=False)
    error = _run(_pipeline(tmp_path, "x.csv", cells=4000))
    assert error.code == "too_many_cells"


def test_a_category_with_too_many_values_is_refused(tmp_path: Path) -> None:
    pd.DataFrame({"k": [f"v{i}" for i in range(500)]}).to_csv(tmp_path / "k.csv", index=False)
    spec = json.dumps({"columns": {"k": {"type": "category"}}})
    error = _run(_pipeline(tmp_path, "k.csv", spec, categories=100))
    assert (error.code, error.column) == ("too_many_categories", "k")


def test_a_spec_with_too_many_categories_is_refused(tmp_path: Path) -> None:
    pd.DataFrame({"k": ["a"]}).to_csv(tmp_path / "k.csv", index=False)
    spec = json.dumps({"columns": {"k": {"type": "category", "categories": list("abcdef")}}})
    assert _run(_pipeline(tmp_path, "k.csv", spec, categories=5)).code == "too_many_categories"


def test_a_mode_over_too_many_distinct_values_is_refused(tmp_path: Path) -> None:
    values = [f"v{i}" if i % 10 else None for i in range(2000)]
    pd.DataFrame({"k": values}).to_csv(tmp_path / "k.csv", index=False)
    spec = json.dumps({"columns": {"k": {"type": "string", "missing": "mode"}}})
    assert _run(_pipeline(tmp_path, "k.csv", spec, categories=100)).code == "too_many_categories"


def test_cleaned_columns_with_outlier_flags_count(tmp_path: Path) -> None:
    pd.DataFrame({f"c{i}": [1.0, 2.0] for i in range(3)}).to_csv(tmp_path / "w.csv", index=False)
    spec = json.dumps(
        {"columns": {f"c{i}": {"type": "float", "outliers": {"method": "iqr"}} for i in range(3)}}
    )
    error = _run(_pipeline(tmp_path, "w.csv", spec, columns=5))
    assert error.code == "too_many_columns"
    assert "the cleaned dataset has 6 columns" in error.reason


def test_a_rejected_value_is_quoted_clipped(tmp_path: Path) -> None:
    long = "z" * 100_000
    pd.DataFrame({"k": ["a", "b", long]}).to_csv(tmp_path / "k.csv", index=False)
    spec = json.dumps({"columns": {"k": {"type": "string", "categories": ["a", "b"]}}})
    pipeline = _pipeline(tmp_path, "k.csv", spec)
    pipeline.prepare()
    rejects = pd.concat([piece.rejects for piece in pipeline.pieces()])
    assert len(rejects) == 1
    assert len(rejects["reason"].iloc[0]) < 300


def test_a_gzip_bomb_is_stopped_after_a_few_megabytes_not_after_inflating(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "bomb.csv.gz", "wb", compresslevel=9) as out:
        out.write(b"a\n")
        for _ in range(256):
            out.write(b"0\n" * (1 << 19))  # 256 MiB inflated, about 250 KiB on disk
    limits = _limits(tmp_path, max_ratio=100.0)
    with (tmp_path / "bomb.csv.gz").open("rb") as raw:
        stream = GuardedStream(raw, limits, "s")
        with pytest.raises(IngestRejected) as caught:
            _drain_stream(stream)
    assert caught.value.code == "compression_ratio"
    assert stream.inflated < 8 << 20


def _drain_stream(stream: GuardedStream) -> None:
    while stream.read(1 << 20):
        pass
