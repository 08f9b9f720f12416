"""Reading sources: allowed paths, limits, encodings, ragged rows, canonical content."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from lepton.services.ingest.input_bounds import Bounds
from lepton.services.ingest.pipeline import Integration, Pipeline
from lepton.services.ingest.source_limits import Limits, resolve_location
from lepton.services.ingest.sources import SourceReader, SourceRequest
from lepton.services.ingest.spec import IngestRejected

BOUNDS = Bounds(
    line_bytes=1 << 20,
    columns=1000,
    cells=10**9,
    name_bytes=256,
    categories=10_000,
    reason_bytes=1024,
    sample_chars=200,
)


def _limits(root: Path, **changes: object) -> Limits:
    values = {
        "roots": (root,),
        "remote_protocols": frozenset({"memory"}),
        "max_bytes": 10_000_000,
        "max_ratio": 50.0,
        "chunk_bytes": 64 * 1024,
        "chunk_rows": 1000,
        "bounds": BOUNDS,
    }
    values.update(changes)
    return Limits(**values)  # type: ignore[arg-type]


def _reader(root: Path, uri: str, kind: str = "csv", **options: str) -> SourceReader:
    limits = _limits(root)
    return SourceReader(
        SourceRequest("s", kind, uri, None, options),
        resolve_location(uri, limits, "s"),
        limits,
        kind,
    )


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/etc/passwd", "outside the directories this ingest service may read"),
        ("a/../../b.csv", "'..'"),
        ("..", "'..'"),
        ("s3://bucket/key.csv", "s3:// is not enabled"),
        ("memory://x/../y.csv", "'..'"),
        ("", "has no uri"),
    ],
)
def test_paths_outside_the_roots_are_refused(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(IngestRejected) as caught:
        resolve_location(uri, _limits(tmp_path), "s")
    assert caught.value.code == "path_not_allowed"
    assert message in caught.value.reason


def test_relative_paths_resolve_under_the_first_root(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text("a\n1\n")
    assert resolve_location("x.csv", _limits(tmp_path), "s") == str((tmp_path / "x.csv").resolve())
    assert (
        resolve_location("memory://bucket/x.csv", _limits(tmp_path), "s") == "memory://bucket/x.csv"
    )


def test_no_roots_means_no_local_files(tmp_path: Path) -> None:
    with pytest.raises(IngestRejected) as caught:
        resolve_location("x.csv", _limits(tmp_path, roots=()), "s")
    assert "no local roots" in caught.value.reason


def test_csv_with_another_delimiter_and_detected_encoding(tmp_path: Path) -> None:
    frame = pd.DataFrame({"区域": ["A区", "B区"] * 500, "价格": range(1000)})
    frame.to_csv(tmp_path / "x.csv", sep="|", index=False, encoding="gb18030")
    reader = _reader(tmp_path, "x.csv", delimiter="|")
    chunks = list(reader.chunks())
    data = pd.concat(chunks)
    assert data["区域"].tolist()[:2] == ["A区", "B区"]
    assert data["__row"].tolist() == list(range(1, 1001))
    assert reader.rows == 1000
    assert reader.content_hash is not None
    assert reader.content_hash.startswith("sha256:")


def test_ragged_row_is_located(tmp_path: Path) -> None:
    lines = ["a,b"] + [f"{i},{i}" for i in range(20_000)] + ["1,2,3"]
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(IngestRejected) as caught:
        list(_reader(tmp_path, "r.csv").chunks())
    assert caught.value.code == "ragged_rows"
    assert caught.value.row == 20_002


def test_gzip_is_read_and_a_bomb_is_stopped(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "ok.csv.gz", "wt") as out:
        out.write("a,b\n" + "".join(f"{i},x{i}\n" for i in range(1000)))
    assert sum(len(c) for c in _reader(tmp_path, "ok.csv.gz").chunks()) == 1000
    with gzip.open(tmp_path / "bomb.csv.gz", "wb") as out:
        out.write(b"a\n" + b"0\n" * 5_000_000)
    with pytest.raises(IngestRejected) as caught:
        list(_reader(tmp_path, "bomb.csv.gz").chunks())
    assert caught.value.code == "compression_ratio"


def test_size_limit_is_checked_before_reading(tmp_path: Path) -> None:
    (tmp_path / "big.csv").write_text("a\n" + "1\n" * 1000)
    limits = _limits(tmp_path, max_bytes=100)
    reader = SourceReader(
        SourceRequest("s", "csv", "big.csv", None, {}), str(tmp_path / "big.csv"), limits, "csv"
    )
    with pytest.raises(IngestRejected) as caught:
        list(reader.chunks())
    assert caught.value.code == "too_large"


def test_same_rows_same_version_whatever_the_format_or_chunking(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"id": range(5000), "v": [i / 7 for i in range(5000)], "k": ["a", "b"] * 2500}
    )
    # Duplicates far apart: found across chunks, whatever the chunking.
    frame = pd.concat([frame, frame.iloc[::50]], ignore_index=True)
    frame.to_csv(tmp_path / "x.csv", index=False)
    frame.to_parquet(tmp_path / "x.parquet")
    versions = set()
    for uri, kind, chunk_bytes in (
        ("x.csv", "csv", 64 * 1024),
        ("x.csv", "csv", 1 << 20),
        ("x.parquet", "parquet", 0),
    ):
        limits = _limits(tmp_path, chunk_bytes=max(chunk_bytes, 64 * 1024), chunk_rows=700)
        reader = SourceReader(
            SourceRequest("s", kind, uri, None, {}), str(tmp_path / uri), limits, kind
        )
        pipeline = Pipeline(
            [reader],
            None,
            Integration(),
            stats_sample_rows=1000,
            max_join_rows=10,
            max_reject_fraction=0.5,
            bounds=BOUNDS,
        )
        pipeline.prepare()
        pieces = list(pipeline.pieces())
        assert sum(piece.rows for piece in pieces) == 5000
        assert pipeline.outcome is not None
        versions.add(pipeline.outcome.version)
    assert len(versions) == 1


def test_a_configured_fsspec_protocol_is_read(tmp_path: Path) -> None:
    import fsspec

    with fsspec.open("memory://lepton-tests/remote.jsonl", "wb") as out:
        out.write(b'{"a": 1, "b": "x"}\n{"a": 2, "b": null}\n')
    limits = _limits(tmp_path)
    uri = "memory://lepton-tests/remote.jsonl"
    reader = SourceReader(
        SourceRequest("s", "jsonl", uri, None, {}),
        resolve_location(uri, limits, "s"),
        limits,
        "jsonl",
    )
    frame = pd.concat(list(reader.chunks()))
    assert frame["a"].tolist() == [1, 2]
    assert reader.rows == 2
