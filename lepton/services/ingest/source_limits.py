"""What a source may read: the allowed locations, and streams that enforce the byte limits.

A path outside the allowed roots, a file larger than ``max_bytes``, a compressed file
that inflates more than ``max_ratio``, an archive ingest cannot read or a line longer than
the bounds allow becomes :class:`IngestRejected` with its own code.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from lepton.services.ingest.input_bounds import Bounds, LineMeter, unsupported_format
from lepton.services.ingest.spec import IngestRejected

__all__ = ["GuardedStream", "Limits", "resolve_location"]

_GZIP_MAGIC = b"\x1f\x8b"
_HEAD = 8  # bytes enough to tell gzip and the archives ingest refuses


@dataclass(frozen=True, slots=True)
class Limits:
    roots: tuple[Path, ...]
    remote_protocols: frozenset[str]
    max_bytes: int
    max_ratio: float
    chunk_bytes: int
    chunk_rows: int
    bounds: Bounds


def resolve_location(uri: str | None, limits: Limits, source: str) -> str:
    """A path under an allowed root, or an allowed remote URL; ``path_not_allowed`` else."""
    if not uri:
        raise IngestRejected("path_not_allowed", f"source {source!r} has no uri", source=source)
    if "\x00" in uri:
        raise IngestRejected(
            "path_not_allowed", f"source {source!r}: the uri holds a NUL byte", source=source
        )
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
        f"source {source!r}: {uri} is outside the directories this ingest service may read "
        "(its LEPTON_INGEST_ROOTS)",
        source=source,
    )


class GuardedStream(io.RawIOBase):
    """A byte stream that hashes what it reads and stops a decompression bomb.

    Wraps the compressed file and, for gzip, the inflated stream: the inflated size may
    never exceed ``max_bytes`` nor ``max_ratio`` times the compressed bytes read so far
    (after a first megabyte, so tiny files with high ratios are not refused), and no line
    of it may be longer than the bounds' ``line_bytes``: all checked as the bytes stream,
    so a bomb or a file with no newline costs at most the limit. A zip (or another archive
    or compression ingest does not read) is refused by its first bytes.
    """

    def __init__(self, raw: IO[bytes], limits: Limits, source: str) -> None:
        self._raw = raw
        self._limits = limits
        self._source = source
        self.digest = hashlib.sha256()
        self.compressed_read = 0
        self._counting = _Counting(raw, self)
        head = raw.read(_HEAD)
        what = unsupported_format(head)
        if what is not None:
            raise IngestRejected(
                "unsupported_format",
                f"source {source!r} is {what}; ingest reads CSV and JSON Lines (plain or "
                "gzip) and Parquet",
                source=source,
            )
        self._counting.push(head)
        self._stream: IO[bytes] = (
            gzip.GzipFile(fileobj=self._counting, mode="rb")
            if head.startswith(_GZIP_MAGIC)
            else self._counting  # type: ignore[assignment]
        )
        self.inflated = 0
        self._lines = LineMeter(limits.bounds.line_bytes, source)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._stream.read(len(buffer))
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise IngestRejected(
                "source_unreadable",
                f"source {self._source!r} is a damaged or truncated gzip stream: {exc}",
                source=self._source,
            ) from None
        size = len(data)
        buffer[:size] = data
        self.inflated += size
        self._lines.feed(data)
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
    def __init__(self, raw: IO[bytes], owner: GuardedStream) -> None:
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
