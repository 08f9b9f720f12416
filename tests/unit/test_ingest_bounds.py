"""The pure limits of ingest: lines, columns, cells, names, categories, NUL, clipping."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lepton.services.ingest.input_bounds import (
    Bounds,
    LineMeter,
    check_categories,
    check_cells,
    check_columns,
    check_text,
    clip,
    clip_bytes,
    unsupported_format,
)
from lepton.services.ingest.spec import IngestRejected

BOUNDS = Bounds(
    line_bytes=100,
    columns=5,
    cells=1000,
    name_bytes=10,
    categories=3,
    reason_bytes=1024,
    sample_chars=20,
)


def _rejected(call: object, *args: object, **kwargs: object) -> IngestRejected:
    with pytest.raises(IngestRejected) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def test_clip_keeps_short_text_and_says_how_much_it_cut() -> None:
    assert clip("short", 20) == "short"
    cut = clip("x" * 1_000_000, 200)
    assert len(cut) == 200
    assert cut.endswith("more characters)")


def test_clip_bytes_counts_utf8_bytes_and_never_splits_a_character() -> None:
    cut = clip_bytes("价" * 10_000, 1024)
    assert len(cut.encode()) <= 1024
    assert cut.startswith("价")
    assert "30000 bytes in all" in cut
    assert clip_bytes("ok", 1024) == "ok"


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (b"PK\x03\x04rest", "a zip archive"),
        (b"BZh91AY", "a bzip2 stream"),
        (b"\xfd7zXZ\x00\x00", "an xz stream"),
        (b"\x28\xb5\x2f\xfd\x00", "a zstd stream"),
    ],
)
def test_archives_ingest_does_not_read_are_named(head: bytes, what: str) -> None:
    assert unsupported_format(head) == what


@pytest.mark.parametrize("head", [b"\x1f\x8b\x08", b"a,b\n1,2", b"PAR1", b""])
def test_readable_formats_are_not_refused(head: bytes) -> None:
    assert unsupported_format(head) is None


def test_a_line_across_many_blocks_is_refused_once_over_the_limit() -> None:
    meter = LineMeter(100, "s")
    meter.feed(b"a,b\n" + b"x" * 60)
    error = _rejected(meter.feed, b"y" * 41)
    assert error.code == "line_too_long"
    assert "100 bytes" in error.reason
    assert "LEPTON_INGEST_MAX_LINE_BYTES" in error.reason


def test_lines_at_the_limit_pass_in_small_and_large_blocks() -> None:
    line = b"x" * 100 + b"\n"
    small = LineMeter(100, "s")
    for _ in range(5):
        small.feed(line)
    LineMeter(100, "s").feed(line * 50)  # a block longer than the limit is scanned whole


def test_a_long_line_inside_one_large_block_is_found() -> None:
    block = b"a\n" * 100 + b"x" * 101 + b"\n" + b"b\n" * 100
    assert _rejected(LineMeter(100, "s").feed, block).code == "line_too_long"


def test_the_line_carried_into_the_next_block_counts() -> None:
    meter = LineMeter(100, "s")
    meter.feed(b"a\n" + b"x" * 90)
    assert _rejected(meter.feed, b"x" * 20 + b"\n").code == "line_too_long"


def test_columns_count_and_name_length() -> None:
    check_columns(["a", "b"], BOUNDS, "s")
    many = _rejected(check_columns, [f"c{i}" for i in range(100_000)], BOUNDS, "s")
    assert many.code == "too_many_columns"
    assert "100000 columns" in many.reason
    assert "LEPTON_INGEST_MAX_COLUMNS" in many.reason
    long = _rejected(check_columns, ["ok", "n" * 5000], BOUNDS, "s")
    assert long.code == "column_name_too_long"
    assert "LEPTON_INGEST_MAX_COLUMN_NAME_BYTES" in long.reason
    assert len(long.reason) < 300
    assert long.column == "n" * 19 + "…"
    # Bytes, not characters: three-byte characters reach the limit sooner.
    assert _rejected(check_columns, ["价格价格"], BOUNDS, "s").code == "column_name_too_long"


def test_a_nul_in_a_column_name_is_refused() -> None:
    assert _rejected(check_columns, ["a\x00b"], BOUNDS, "s").code == "nul_byte"


def test_cells_over_the_limit() -> None:
    check_cells(1000, BOUNDS)
    error = _rejected(check_cells, 1001, BOUNDS)
    assert error.code == "too_many_cells"
    assert "LEPTON_INGEST_MAX_CELLS" in error.reason


def test_categories_over_the_limit() -> None:
    check_categories(3, "kind", BOUNDS, why="(a category)")
    error = _rejected(check_categories, 4, "kind", BOUNDS, why="(a category)")
    assert error.code == "too_many_categories"
    assert error.column == "kind"
    assert "LEPTON_INGEST_MAX_CATEGORIES" in error.reason


def test_a_nul_byte_in_text_is_located() -> None:
    batch = pa.record_batch({"n": [1, 2, 3], "t": ["a", "b", "c\x00d"]})
    error = _rejected(check_text, batch, "s", 11)
    assert (error.code, error.column, error.row) == ("nul_byte", "t", 13)
    check_text(pa.record_batch({"t": ["a", None]}), "s", 1)


def test_text_that_is_not_utf8_is_refused_when_asked() -> None:
    broken = pa.Array.from_buffers(
        pa.string(),
        1,
        [None, pa.py_buffer(b"\x00\x00\x00\x00\x02\x00\x00\x00"), pa.py_buffer(b"\xff\xfe")],
    )
    batch = pa.record_batch({"t": broken})
    check_text(batch, "s", 1)  # the CSV and JSON parsers have checked already
    assert _rejected(check_text, batch, "s", 1, check_utf8=True).code == "encoding"
