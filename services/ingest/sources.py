"""Reading sources in bounded chunks: CSV, Parquet, JSON Lines (local or fsspec), and
PostgreSQL queries (spooled to a temporary Parquet file first, so every source streams the
same way).

Every failure a user's file can cause becomes :class:`IngestRejected` with a specific code:
a path outside the allowed roots, a file too large or inflating too much, a wrong encoding,
ragged rows, no rows.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import charset_normalizer
import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from services.ingest.coercion import ROW, SOURCE
from services.ingest.spec import IngestRejected

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    import asyncpg

__all__ = ["Limits", "SourceReader", "SourceRequest", "resolve_location", "spool_query"]

_GZIP_MAGIC = b"\x1f\x8b"
_PROBE_BYTES = 1 << 20
_READ_BLOCK = 1 << 20
_PREFERRED_ENCODINGS = ("utf_8", "gb18030", "big5", "cp1252")
_DETECT_BYTES = 256 * 1024
_ROW_IN_ERROR = re.compile(r"Row #(\d+)")


@dataclass(frozen=True, slots=True)
class Limits:
    roots: tuple[Path, ...]
    remote_protocols: frozenset[str]
    max_bytes: int
    max_ratio: float
    chunk_bytes: int
    chunk_rows: int


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """One source of a request, as the ``Source`` record gives it."""

    name: str
    kind: str
    uri: str | None
    query: str | None
    options: dict[str, str] = field(default_factory=dict)


def resolve_location(uri: str | None, limits: Limits, source: str) -> str:
    """A path under an allowed root, or an allowed remote URL; ``path_not_allowed`` else."""
    if not uri:
        raise IngestRejected("path_not_allowed", f"source {source!r} has no uri", source=source)
    protocol, _, rest = uri.partition("://")
    if rest and protocol != "file":
        if protocol not in limits.remote_protocols:
            raise IngestRejected(
                "path_not_allowed",
                f"source {source!r}: protocol {protocol}:// is not enabled "
                "(LEPTON_INGEST_REMOTE_PROTOCOLS)",
                source=source,
            )
        if ".." in PurePosixPath(rest).parts:
            raise IngestRejected(
                "path_not_allowed", f"source {source!r}: '..' in {uri}", source=source
            )
        return uri
    path_text = rest if protocol == "file" and rest else uri
    if ".." in Path(path_text).parts:
        raise IngestRejected(
            "path_not_allowed", f"source {source!r}: '..' is not allowed in {uri}", source=source
        )
    if not limits.roots:
        raise IngestRejected(
            "path_not_allowed",
            f"source {source!r}: no local roots are configured (LEPTON_INGEST_ROOTS)",
            source=source,
        )
    candidate = Path(path_text)
    candidate = candidate if candidate.is_absolute() else limits.roots[0] / candidate
    # Symbolic links count where they lead, so a link cannot point out of a root.
    real = Path(os.path.realpath(candidate))
    for root in limits.roots:
        if real.is_relative_to(Path(os.path.realpath(root))):
            return str(real)
    raise IngestRejected(
        "path_not_allowed",
        f"source {source!r}: {uri} is outside the allowed roots",
        source=source,
    )


class _Guarded(io.RawIOBase):
    """A byte stream that hashes what it reads and stops a decompression bomb.

    Wraps the compressed file and, for gzip, the inflated stream: the inflated size may
    never exceed ``max_bytes`` nor ``max_ratio`` times the compressed bytes read so far
    (after a first megabyte, so tiny files with high ratios are not refused).
    """

    def __init__(self, raw: IO[bytes], limits: Limits, source: str) -> None:
        self._raw = raw
        self._limits = limits
        self._source = source
        self.digest = hashlib.sha256()
        self.compressed_read = 0
        self._counting = _Counting(raw, self)
        head = raw.read(2)
        self._counting.push(head)
        self._stream: IO[bytes] = (
            gzip.GzipFile(fileobj=self._counting, mode="rb")
            if head == _GZIP_MAGIC
            else self._counting  # type: ignore[assignment]
        )
        self.inflated = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.inflated += size
        if self.inflated > (1 << 20) and self.inflated > self._limits.max_ratio * max(
            self.compressed_read, 1
        ):
            raise IngestRejected(
                "compression_ratio",
                f"source {self._source!r} inflates more than {self._limits.max_ratio:g} times "
                "(a decompression bomb?)",
                source=self._source,
            )
        if self.inflated > self._limits.max_bytes:
            raise IngestRejected(
                "too_large",
                f"source {self._source!r} is larger than {self._limits.max_bytes} bytes "
                "once decompressed",
                source=self._source,
            )
        return size


class _Counting(io.RawIOBase):
    def __init__(self, raw: IO[bytes], owner: _Guarded) -> None:
        self._raw = raw
        self._owner = owner
        self._pushed = b""

    def push(self, data: bytes) -> None:
        self._pushed = data
        self._owner.compressed_read += len(data)
        self._owner.digest.update(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._pushed:
            size = min(len(buffer), len(self._pushed))
            buffer[:size] = self._pushed[:size]
            self._pushed = self._pushed[size:]
            return size
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self._owner.compressed_read += len(data)
        self._owner.digest.update(data)
        return len(data)


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
                size = os.stat(self.location).st_size
                opened = open(self.location, "rb")  # noqa: SIM115 - the caller closes it
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise IngestRejected(
                "source_unreadable",
                f"source {self.name!r}: {type(exc).__name__}: {exc.strerror}",
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
                sample = io.BufferedReader(_Guarded(raw, self.limits, self.name)).read(
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
            guarded = _Guarded(raw, self.limits, self.name)
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
                        block_size=min(self._block, _READ_BLOCK),
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
                yield from _gathered(reader, self._block)
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

    def _csv_header(self, encoding: str, delimiter: str, header: bool) -> list[str]:
        # Read on its own so the header, too, is checked for its encoding, and so every chunk
        # gets the same names whatever the data's types.
        with self._open() as raw:
            first = io.BufferedReader(_Guarded(raw, self.limits, self.name)).readline(1 << 20)
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
        cells = next(csv.reader([line], delimiter=delimiter))
        if not header:
            return [f"column_{i + 1}" for i in range(len(cells))]
        names = [cell.strip() for cell in cells]
        if len(set(names)) != len(names) or any(not name for name in names):
            raise IngestRejected(
                "spec_invalid",
                f"source {self.name!r}: the header has empty or repeated names: {names}",
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
            guarded = _Guarded(raw, self.limits, self.name)
            try:
                reader = pajson.open_json(
                    io.BufferedReader(guarded, buffer_size=1 << 20),
                    read_options=pajson.ReadOptions(
                        use_threads=False, block_size=min(self._block, _READ_BLOCK)
                    ),
                )
                yield from _gathered(reader, self._block)
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
                for batch in parquet.iter_batches(batch_size=self.limits.chunk_rows):
                    yield batch.to_pandas(types_mapper=pd.ArrowDtype)
            except (pa.ArrowInvalid, OSError) as exc:
                raise IngestRejected(
                    "source_unreadable",
                    f"source {self.name!r} is not a readable Parquet file: {exc}",
                    source=self.name,
                ) from None
        if self.content_hash is None:
            self.content_hash = "sha256:" + digest.hexdigest()


def _gathered(batches: Iterator[pa.RecordBatch], chunk_bytes: int) -> Iterator[pd.DataFrame]:
    """Record batches gathered into data frames of about ``chunk_bytes``."""
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
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


async def spool_query(
    connection: asyncpg.Connection,
    query: str,
    source: str,
    chunk_rows: int,
    timeout_s: float,
    directory: str | None = None,
) -> tuple[str, str, int]:
    """Run a read-only query and spool its rows to a temporary Parquet file.

    Returns the file, the rows' content hash and the row count; the caller deletes the file.
    """
    digest = hashlib.sha256()
    handle, path = tempfile.mkstemp(prefix="lepton-ingest-", suffix=".parquet", dir=directory)
    os.close(handle)
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        async with connection.transaction(readonly=True, isolation="repeatable_read"):
            await connection.execute(
                "SELECT set_config('statement_timeout', $1, true)", f"{int(timeout_s * 1000)}ms"
            )
            cursor = await connection.cursor(query)
            while True:
                records = await cursor.fetch(chunk_rows)
                if not records:
                    break
                columns = list(records[0].keys())
                table = pa.Table.from_pylist(
                    [dict(zip(columns, r.values(), strict=True)) for r in records]
                )
                sink = io.BytesIO()
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
                digest.update(sink.getvalue())
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += len(records)
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        os.unlink(path)
        raise IngestRejected(
            "empty", f"source {source!r}: the query returned no rows", source=source
        )
    return path, "sha256:" + digest.hexdigest(), rows
