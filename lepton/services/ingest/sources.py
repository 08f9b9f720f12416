"""Reading sources in bounded chunks: CSV, Parquet, JSON Lines (local or fsspec), and
PostgreSQL queries (spooled to a temporary Parquet file first, so every source streams the
same way).

Every failure a user's file can cause becomes :class:`IngestRejected` with a specific code:
a path outside the allowed roots, a file too large or inflating too much, a wrong encoding,
ragged rows, no rows, and every bound of :mod:`lepton.services.ingest.input_bounds` (line length,
columns, column names, NUL bytes).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING

import charset_normalizer
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from lepton.services.ingest.coercion import ROW, SOURCE
from lepton.services.ingest.input_bounds import Bounds, check_columns, check_text, clip
from lepton.services.ingest.source_limits import GuardedStream, Limits
from lepton.services.ingest.spec import IngestRejected

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["SourceReader", "SourceRequest"]

_PROBE_BYTES = 1 << 20
_READ_BLOCK = 1 << 20
_PREFERRED_ENCODINGS = ("utf_8", "gb18030", "big5", "cp1252")
_DETECT_BYTES = 256 * 1024
_ROW_IN_ERROR = re.compile(r"Row #(\d+)")
# A cell costs at least this many bytes in a chunk: Parquet batches are sized by it, so a
# wide file gets fewer rows per batch and every chunk stays near ``chunk_bytes``.
_CELL_BYTES = 8


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """One source of a request, as the ``Source`` record gives it."""

    name: str
    kind: str
    uri: str | None
    query: str | None
    options: dict[str, str] = field(default_factory=dict)


class SourceReader:
    """One source, readable any number of times as chunks of strings (CSV) or typed
    columns (Parquet, JSON Lines), each chunk carrying ``SOURCE`` and ``ROW``."""

    def __init__(self, request: SourceRequest, location: str, limits: Limits, kind: str) -> None:
        self.request = request
        self.location = location
        self.limits = limits
        self.kind = kind  # csv, parquet or jsonl: how the bytes are read
        self.content_hash: str | None = None
        self.rows = 0
        self._encoding: str | None = None
        self._block = limits.chunk_bytes

    @property
    def name(self) -> str:
        return self.request.name

    def _open(self) -> IO[bytes]:
        try:
            if "://" in self.location:
                opened = fsspec.open(self.location, "rb").open()
                size = int(opened.size) if hasattr(opened, "size") else None
            else:
                opened, size = _open_regular(self.location, self.name)
        except OSError as exc:
            # The file's fault (missing, a loop of links, a name too long, ...): an answer,
            # never a retry as if the database were away.
            raise IngestRejected(
                "source_unreadable",
                f"source {self.name!r}: cannot open {self.location}: "
                f"{(exc.strerror or str(exc)).lower()}",
                source=self.name,
            ) from None
        if size is not None and size > self.limits.max_bytes:
            opened.close()
            raise IngestRejected(
                "too_large",
                f"source {self.name!r} is {size} bytes, over the limit of "
                f"{self.limits.max_bytes} (LEPTON_INGEST_MAX_FILE_BYTES)",
                source=self.name,
            )
        if size == 0:
            opened.close()
            raise IngestRejected(
                "empty", f"source {self.name!r} is an empty file", source=self.name
            )
        return opened  # type: ignore[no-any-return]

    def chunks(self, *, probe: bool = False) -> Iterator[pd.DataFrame]:
        """The source's rows, chunk by chunk; sets ``content_hash`` and ``rows`` at the end.

        ``probe``: small chunks, for a look at the first one.
        """
        self._block = (
            min(self.limits.chunk_bytes, _PROBE_BYTES) if probe else self.limits.chunk_bytes
        )
        readers: dict[str, Callable[[], Iterator[pd.DataFrame]]] = {
            "csv": self._csv,
            "jsonl": self._jsonl,
            "parquet": self._parquet,
        }
        row = 0
        for chunk in readers[self.kind]():
            chunk.insert(0, ROW, pd.RangeIndex(row + 1, row + 1 + len(chunk)))
            chunk.insert(0, SOURCE, self.name)
            row += len(chunk)
            yield chunk
        if row == 0:
            raise IngestRejected("empty", f"source {self.name!r} has no rows", source=self.name)
        self.rows = row

    def _detect_encoding(self) -> str:
        declared = self.request.options.get("encoding")
        if declared:
            try:
                return codecs.lookup(declared).name
            except LookupError:
                raise IngestRejected(
                    "encoding",
                    f"source {self.name!r}: unknown encoding {declared!r}",
                    source=self.name,
                ) from None
        if self._encoding is None:
            with self._open() as raw:
                sample = io.BufferedReader(GuardedStream(raw, self.limits, self.name)).read(
                    _DETECT_BYTES
                )
            try:
                sample.decode("utf-8")
            except UnicodeDecodeError as exc:
                # A multi-byte character cut at the sample's end is still UTF-8.
                if exc.start < len(sample) - 4:
                    best = _best_encoding(sample)
                    if best is None:
                        raise IngestRejected(
                            "encoding",
                            f"source {self.name!r}: the encoding could not be detected; "
                            "declare it in options.encoding",
                            source=self.name,
                        ) from None
                    self._encoding = codecs.lookup(best).name
                    return self._encoding
            self._encoding = "utf-8"
        return self._encoding

    def _csv(self, *, threads: bool = True) -> Iterator[pd.DataFrame]:
        options = self.request.options
        encoding = self._detect_encoding()
        delimiter = options.get("delimiter", ",")
        if len(delimiter) != 1:
            raise IngestRejected(
                "spec_invalid",
                f"source {self.name!r}: delimiter must be one character",
                source=self.name,
            )
        header = options.get("header", "true").lower() not in ("false", "0", "no")
        names = self._csv_header(encoding, delimiter, header)
        with self._open() as raw:
            guarded = GuardedStream(raw, self.limits, self.name)
            stream = io.BufferedReader(guarded, buffer_size=1 << 20)
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(
                        # Threads parse faster but do not know row numbers: an error is
                        # located by reading again on one thread.
                        use_threads=threads,
                        # Small blocks: the reader reads ahead a number of blocks, so its
                        # memory follows the block size; chunks are gathered from them.
                        block_size=self._block_size(),
                        # pyarrow transcodes any other name through Python, much slower.
                        encoding="utf8" if encoding == "utf-8" else encoding,
                        column_names=names,
                        skip_rows=1 if header else 0,
                    ),
                    parse_options=pacsv.ParseOptions(delimiter=delimiter),
                    convert_options=pacsv.ConvertOptions(
                        column_types=dict.fromkeys(names, pa.string()),
                        strings_can_be_null=True,
                    ),
                )
                yield from _gathered(reader, self._block, self.name, self.limits.bounds)
            except pa.ArrowInvalid as exc:
                if threads and "Row #" not in str(exc):
                    for _ in self._csv(threads=False):
                        pass  # reading again on one thread raises the error with its row
                raise self._csv_error(exc) from None
            except UnicodeDecodeError as exc:
                raise IngestRejected(
                    "encoding",
                    f"source {self.name!r} is not valid {encoding}: {exc.reason} at byte "
                    f"{exc.start}",
                    source=self.name,
                ) from None
            self.content_hash = "sha256:" + guarded.digest.hexdigest()

    def _block_size(self) -> int:
        # pyarrow refuses a row longer than its block ("straddling object"): every line the
        # line limit lets through must fit in one.
        return max(min(self._block, _READ_BLOCK), self.limits.bounds.line_bytes + 2)

    def _csv_header(self, encoding: str, delimiter: str, header: bool) -> list[str]:
        # Read on its own so the header, too, is checked for its encoding, and so every chunk
        # gets the same names whatever the data's types.
        bounds = self.limits.bounds
        with self._open() as raw:
            # The stream refuses a line over the limit before readline returns.
            first = io.BufferedReader(GuardedStream(raw, self.limits, self.name)).readline(
                bounds.line_bytes + 2
            )
        if not first.strip():
            raise IngestRejected("empty", f"source {self.name!r} has no header", source=self.name)
        try:
            line = first.decode(encoding).lstrip("\ufeff").rstrip("\r\n")
        except UnicodeDecodeError as exc:
            raise IngestRejected(
                "encoding",
                f"source {self.name!r} is not valid {encoding}: {exc.reason} in the first line",
                source=self.name,
            ) from None
        cells = _header_cells(line, delimiter, self.name, bounds)
        if not header:
            names = [f"column_{i + 1}" for i in range(len(cells))]
            check_columns(names, bounds, self.name)
            return names
        names = [cell.strip() for cell in cells]
        check_columns(names, bounds, self.name)
        repeated = sorted(name for name, count in Counter(names).items() if count > 1 or not name)
        if repeated:
            raise IngestRejected(
                "spec_invalid",
                f"source {self.name!r}: the header has empty or repeated names: "
                f"{[clip(name, bounds.sample_chars) for name in repeated[:20]]}",
                source=self.name,
            )
        return names

    def _csv_error(self, exc: pa.ArrowInvalid) -> IngestRejected:
        message = str(exc)
        if "Expected" in message and "columns" in message:
            match = _ROW_IN_ERROR.search(message)
            row = int(match[1]) if match else None
            return IngestRejected(
                "ragged_rows",
                f"source {self.name!r}: {message.removeprefix('CSV parse error: ')}",
                source=self.name,
                row=row,
            )
        if "UTF8" in message or "UTF-8" in message:
            return IngestRejected(
                "encoding", f"source {self.name!r} is not valid UTF-8: {message}", source=self.name
            )
        return IngestRejected(
            "source_unreadable", f"source {self.name!r}: {message}", source=self.name
        )

    def _jsonl(self) -> Iterator[pd.DataFrame]:
        with self._open() as raw:
            guarded = GuardedStream(raw, self.limits, self.name)
            try:
                reader = pajson.open_json(
                    io.BufferedReader(guarded, buffer_size=1 << 20),
                    read_options=pajson.ReadOptions(
                        use_threads=False, block_size=self._block_size()
                    ),
                )
                yield from _gathered(reader, self._block, self.name, self.limits.bounds)
            except pa.ArrowInvalid as exc:
                message = str(exc)
                code = "encoding" if "UTF8" in message else "source_unreadable"
                raise IngestRejected(
                    code, f"source {self.name!r}: {message}", source=self.name
                ) from None
            self.content_hash = "sha256:" + guarded.digest.hexdigest()

    def _parquet(self) -> Iterator[pd.DataFrame]:
        digest = hashlib.sha256()
        with self._open() as raw:
            for block in iter(lambda: raw.read(1 << 20), b""):
                digest.update(block)
            raw.seek(0)
            try:
                parquet = pq.ParquetFile(raw)
                names = parquet.schema_arrow.names
                check_columns(names, self.limits.bounds, self.name)
                rows = max(
                    1, min(self.limits.chunk_rows, self._block // (_CELL_BYTES * len(names) or 1))
                )
                first = 1
                for batch in parquet.iter_batches(batch_size=rows):
                    check_text(batch, self.name, first, check_utf8=True)
                    first += batch.num_rows
                    yield batch.to_pandas(types_mapper=pd.ArrowDtype)
            except (pa.ArrowException, OSError) as exc:
                raise IngestRejected(
                    "source_unreadable",
                    f"source {self.name!r} is not a readable Parquet file: {exc}",
                    source=self.name,
                ) from None
        if self.content_hash is None:
            self.content_hash = "sha256:" + digest.hexdigest()


def _open_regular(path: str, source: str) -> tuple[IO[bytes], int]:
    """A regular file opened for reading, and its size.

    Opened without blocking and without following a final link, then checked: a FIFO
    would block the reader for ever, a device never ends, and the path was resolved (links
    followed, checked against the roots) before, so a link now is a swap since.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode):
        os.close(descriptor)
        raise IngestRejected(
            "source_unreadable", f"source {source!r} is not a regular file", source=source
        )
    os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb"), info.st_size


def _header_cells(line: str, delimiter: str, source: str, bounds: Bounds) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter))
    except csv.Error as exc:
        # The csv module refuses a field over 128 KiB: far over any column name limit.
        code = "column_name_too_long" if "field limit" in str(exc) else "source_unreadable"
        raise IngestRejected(
            code,
            f"source {source!r}: the header cannot be read ({exc}); a column name may have "
            f"at most {bounds.name_bytes} bytes (LEPTON_INGEST_MAX_COLUMN_NAME_BYTES)",
            source=source,
        ) from None


def _gathered(
    batches: Iterator[pa.RecordBatch], chunk_bytes: int, source: str, bounds: Bounds
) -> Iterator[pd.DataFrame]:
    """Record batches gathered into data frames of about ``chunk_bytes``, each batch held to
    the bounds (its columns, no NUL in its text) before pandas sees it."""
    pending: list[pa.RecordBatch] = []
    size = 0
    first = 1
    for batch in batches:
        check_columns(batch.schema.names, bounds, source)
        check_text(batch, source, first)
        first += batch.num_rows
        pending.append(batch)
        size += batch.nbytes
        if size >= chunk_bytes:
            yield pa.Table.from_batches(pending).to_pandas(types_mapper=pd.ArrowDtype)
            pending, size = [], 0
    if pending:
        yield pa.Table.from_batches(pending).to_pandas(types_mapper=pd.ArrowDtype)


def _best_encoding(sample: bytes) -> str | None:
    """The most plausible encoding; among equally plausible ones, a Chinese one first.

    Short CJK samples often decode cleanly as several encodings (GB18030 and CP949 alike);
    the data this service was built for is mostly Chinese, so ties go to GB18030.
    """
    results = list(charset_normalizer.from_bytes(sample))
    if not results:
        return None
    best = results[0]
    tied = [r.encoding for r in results if (r.chaos, -r.coherence) == (best.chaos, -best.coherence)]
    for preferred in _PREFERRED_ENCODINGS:
        if preferred in tied:
            return preferred
    return str(best.encoding)
