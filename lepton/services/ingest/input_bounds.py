"""Limits on what a hostile file may make ingest hold or echo: pure checks, no I/O.

Each check raises :class:`IngestRejected` with its own code and a reason that names the
limit and its setting, so the requester learns which bound was hit and how to raise it.
Text quoted back (a reason, a sample value, a column name) is clipped, never echoed whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lepton.services.ingest.spec import IngestRejected

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "Bounds",
    "LineMeter",
    "check_categories",
    "check_cells",
    "check_columns",
    "check_text",
    "clip",
    "clip_bytes",
    "unsupported_format",
]

_NEWLINE = 0x0A
# Magic numbers of archives and compressions ingest does not read (gzip it does).
_UNSUPPORTED_MAGIC = (
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"BZh", "a bzip2 stream"),
    (b"\xfd7zXZ\x00", "an xz stream"),
    (b"\x28\xb5\x2f\xfd", "a zstd stream"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
)


@dataclass(frozen=True, slots=True)
class Bounds:
    """The sizes one request's data may reach (see the ``ingest_max_*`` settings)."""

    line_bytes: int
    columns: int
    cells: int
    name_bytes: int
    categories: int
    reason_bytes: int
    sample_chars: int


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    marker = f"… ({len(text) - limit} more characters)"
    if len(marker) * 2 > limit:  # a short limit keeps text rather than the count
        marker = "…"
    return text[: max(limit - len(marker), 0)] + marker


def clip_bytes(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (a reason on the wire)."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return text
    marker = f"… ({len(encoded)} bytes in all)"
    kept = encoded[: max(limit - len(marker.encode()), 0)]
    return kept.decode("utf-8", errors="ignore") + marker


def unsupported_format(head: bytes) -> str | None:
    """What a file that starts with ``head`` is, when ingest cannot read that."""
    for magic, what in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            return what
    return None


class LineMeter:
    """Measures the longest line of a byte stream fed block by block, in bounded time.

    A block no longer than the limit can only extend the line carried over from the
    previous block (two ``memchr`` scans); a longer block is scanned for every newline.
    """

    def __init__(self, limit: int, source: str) -> None:
        self.limit = limit
        self.source = source
        self._carried = 0  # bytes since the last newline

    def feed(self, block: bytes | memoryview) -> None:
        data = bytes(block) if isinstance(block, memoryview) else block
        if not data:
            return
        first = data.find(b"\n")
        if first < 0:
            self._carried += len(data)
            self._check(self._carried)
            return
        self._check(self._carried + first)
        if len(data) > self.limit:
            self._check(_longest_inner_line(data, first))
        self._carried = len(data) - data.rfind(b"\n") - 1
        self._check(self._carried)

    def _check(self, length: int) -> None:
        if length > self.limit:
            raise IngestRejected(
                "line_too_long",
                f"source {self.source!r} has a line longer than {self.limit} bytes "
                "(LEPTON_INGEST_MAX_LINE_BYTES)",
                source=self.source,
            )


def _longest_inner_line(data: bytes, first: int) -> int:
    """The longest line between two newlines of ``data`` (vectorised: blocks are big)."""
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8, offset=first) == _NEWLINE)
    return int((np.diff(newlines) - 1).max()) if len(newlines) > 1 else 0


def check_columns(names: Sequence[str], bounds: Bounds, source: str | None) -> None:
    """A source's (or the cleaned data's) column names: how many, how long, no NUL."""
    where = f"source {source!r}" if source is not None else "the cleaned dataset"
    if len(names) > bounds.columns:
        raise IngestRejected(
            "too_many_columns",
            f"{where} has {len(names)} columns, over the limit of {bounds.columns} "
            "(LEPTON_INGEST_MAX_COLUMNS)",
            source=source,
        )
    for name in names:
        size = len(name.encode("utf-8", errors="replace"))
        if size > bounds.name_bytes:
            raise IngestRejected(
                "column_name_too_long",
                f"{where} has a column name of {size} bytes, over the limit of "
                f"{bounds.name_bytes} (LEPTON_INGEST_MAX_COLUMN_NAME_BYTES): "
                f"{clip(name, bounds.sample_chars)!r}",
                source=source,
                column=clip(name, bounds.sample_chars),
            )
        if "\x00" in name:
            raise IngestRejected(
                "nul_byte",
                f"{where} has a NUL byte in a column name: {clip(name, bounds.sample_chars)!r}",
                source=source,
                column=clip(name, bounds.sample_chars),
            )


def check_cells(cells: int, bounds: Bounds) -> None:
    """The cells (rows times columns) read so far over all sources of a request."""
    if cells > bounds.cells:
        raise IngestRejected(
            "too_many_cells",
            f"the sources hold more than {bounds.cells} cells (rows times columns), the limit "
            "of a dataset (LEPTON_INGEST_MAX_CELLS)",
        )


def check_text(
    batch: pa.RecordBatch | pa.Table, source: str, first_row: int, *, check_utf8: bool = False
) -> None:
    """No text value holds a NUL byte (PostgreSQL text cannot store one) and, with
    ``check_utf8`` (Parquet does not promise it; the CSV and JSON parsers check it
    themselves), every text value is valid UTF-8. ``first_row``: the 1-based source row of
    the batch's first row, to say where."""
    for index, column in enumerate(batch.columns):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        name = batch.schema.names[index]
        try:
            if check_utf8:
                column.validate(full=True)
        except pa.ArrowInvalid:
            raise IngestRejected(
                "encoding",
                f"source {source!r}: column {name!r} holds text that is not valid UTF-8",
                source=source,
                column=name,
            ) from None
        found = pc.match_substring(column, "\x00")
        if pc.any(found).as_py():
            row = first_row + pc.index(found, True).as_py()
            raise IngestRejected(
                "nul_byte",
                f"source {source!r}: row {row}, column {name!r} holds a NUL byte, which "
                "text cannot store",
                source=source,
                column=name,
                row=row,
            )


def check_categories(count: int, column: str, bounds: Bounds, *, why: str) -> None:
    """A category column (or one whose mode is counted) has at most so many values."""
    if count > bounds.categories:
        raise IngestRejected(
            "too_many_categories",
            f"column {column!r} {why} has more than {bounds.categories} distinct values "
            "(LEPTON_INGEST_MAX_CATEGORIES)",
            column=column,
        )
