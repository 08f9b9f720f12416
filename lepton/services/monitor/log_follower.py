"""Follow a log file another process appends to and rolls over: its complete lines, from a
position that survives a restart, a rotation (the file renamed and a new one started) and
a truncation, each line bounded in length.

A :class:`Position` names the file by its inode, not its name, so a follower that stopped
in a file since renamed (``denials.log`` → ``denials.log.1``) finds it among its siblings
and finishes it before it starts the new one; and by a digest of its first bytes, since a
file deleted and created again often gets the same inode. Reading never blocks:
:meth:`LogFollower.read` returns what is there now; a line the writer has not finished
stays unread.
"""

from __future__ import annotations

import glob
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MAX_LINE", "LogFollower", "Position", "fingerprint"]

_CHUNK = 64 * 1024
_BUDGET = 4 * 1024 * 1024  # bytes read per call, so one call never holds a whole log
# A line longer than this keeps its start and its end, where a log line's meaning is (who
# and what at the start; why at the end), joined by a marker: a line's length is the
# writer's choice (a group name a client made up), the memory is ours.
_HEAD, _TAIL = 6 * 1024, 2 * 1024
_CUT = b" [...] "
MAX_LINE = _HEAD + len(_CUT) + _TAIL
_HEAD_PRINT = 256  # bytes of a file's start that tell it from another file on the inode


@dataclass(frozen=True, slots=True)
class Position:
    """Where a follower is: the file (by inode and a digest of its first bytes, see
    :func:`fingerprint`) and the offset after its last whole line."""

    inode: int
    offset: int
    head: str


def fingerprint(file: BinaryIO, length: int) -> str:
    """``<n>:<digest>`` of the file's first ``n`` bytes, ``n`` at most ``length``."""
    start = os.pread(file.fileno(), min(length, _HEAD_PRINT), 0)
    return f"{len(start)}:{hashlib.sha256(start).hexdigest()[:32]}"


def _same_start(file: BinaryIO, head: str) -> bool:
    length = int(head.split(":", 1)[0])
    return fingerprint(file, length) == head


class LogFollower:
    """Complete lines appended to ``path``, from ``start`` (the beginning when None)."""

    def __init__(self, path: Path, start: Position | None) -> None:
        self.path = path
        self._start = start
        self._file: BinaryIO | None = None
        self._inode = 0
        self._offset = 0  # after the last line handed out
        self._read_at = 0  # where the file is read next (past a partial line)
        self._partial = b""
        self._cut = False
        self.behind = False  # the last read stopped at its budget, not at the end
        self.lost = False  # the file a start position named was gone: lines may be lost

    @property
    def position(self) -> Position | None:
        """Everything before it was handed out; None before the file exists."""
        if self._file is None:
            return None
        # Only bytes already handed out: they are what the file will always start with.
        return Position(self._inode, self._offset, fingerprint(self._file, self._offset))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self) -> list[str]:
        """The lines completed since the last call (UTF-8, invalid bytes replaced)."""
        if self._file is None and not self._open():
            return []
        # Whether the name is someone else's now is asked before reading the old file to
        # its end: what its writer added before moving on is then read, not skipped.
        renamed = self._renamed()
        lines, at_end = self._drain()
        if renamed and at_end:
            try:
                successor = self.path.open("rb")
            except FileNotFoundError:  # renamed again meanwhile: asked at the next read
                successor = None
            if successor is not None:
                if self._partial:  # the old file's last line had no line break
                    lines.append(self._take())
                self.close()
                self._attach(successor, 0)
                more, at_end = self._drain()
                lines += more
        self.behind = not at_end
        return lines

    def _open(self) -> bool:
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return False  # not written yet: asked again at the next read
        start, self._start = self._start, None
        if start is None:
            self._attach(file, 0)
            return True
        if self._is(file, start):
            self._attach(file, start.offset)
            return True
        file.close()
        # Rolled over while the follower was stopped: finish that file first.
        for sibling in self.path.parent.glob(glob.escape(self.path.name) + ".*"):
            try:
                old = sibling.open("rb")
            except OSError:
                continue
            if self._is(old, start):
                self._attach(old, start.offset)
                return True
            old.close()
        self.lost = True
        self._attach(self.path.open("rb"), 0)
        return True

    @staticmethod
    def _is(file: BinaryIO, position: Position) -> bool:
        """Whether ``file`` is the one ``position`` is in."""
        return os.fstat(file.fileno()).st_ino == position.inode and _same_start(file, position.head)

    def _attach(self, file: BinaryIO, offset: int) -> None:
        size = os.fstat(file.fileno()).st_size
        offset = offset if offset <= size else 0  # truncated since
        file.seek(offset)
        self._file, self._inode = file, os.fstat(file.fileno()).st_ino
        self._offset = self._read_at = offset
        self._partial, self._cut = b"", False

    def _renamed(self) -> bool:
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:  # renamed, its successor not created yet
            return False

    def _drain(self) -> tuple[list[str], bool]:
        """Lines up to the end of the file or the budget; whether the end was reached."""
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size < self._read_at:  # truncated in place
            self._file.seek(0)
            self._offset = self._read_at = 0
            self._partial, self._cut = b"", False
        lines: list[str] = []
        budget = _BUDGET
        while budget > 0:
            chunk = self._file.read(_CHUNK)
            if not chunk:
                return lines, True
            budget -= len(chunk)
            self._read_at += len(chunk)
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                self._append(chunk[start:end])
                lines.append(self._take())
                self._offset = self._read_at - (len(chunk) - end - 1)
                start = end + 1
            self._append(chunk[start:])
        return lines, False

    def _append(self, data: bytes) -> None:
        self._partial += data
        if len(self._partial) > _HEAD + _TAIL:
            self._partial = self._partial[:_HEAD] + self._partial[-_TAIL:]
            self._cut = True

    def _take(self) -> str:
        line = self._partial
        if self._cut:
            line = line[:_HEAD] + _CUT + line[_HEAD:]
        self._partial, self._cut = b"", False
        return line.rstrip(b"\r").decode("utf-8", "replace")
