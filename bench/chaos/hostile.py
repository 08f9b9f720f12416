"""The hostile-file battery: files no ingest should accept, each made on disk by streaming
(a gigabyte is never held in memory), each to be answered with ``data.rejected`` while
ingest stays up.
"""

from __future__ import annotations

import gzip
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from lepton.sdk.builders import Source

if TYPE_CHECKING:
    from collections.abc import Callable

_CHUNK = b"0" * 2**20  # 1 MiB of one byte: compresses about 1000:1


def _stream(write: Callable[[bytes], object], mib: int) -> None:
    for _ in range(mib):
        write(_CHUNK)


def gzip_bomb(inbox: Path, mib: int) -> Source:
    """A .csv.gz inflating to ``mib`` MiB of a single enormous row."""
    path = inbox / "bomb.csv.gz"
    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(b"a,b\n")
        _stream(out.write, mib)
    return Source.file(path)


def zip_bomb(inbox: Path, mib: int) -> Source:
    """A zip archive holding one CSV of ``mib`` MiB (a zip is not a format ingest reads:
    named .csv, it must be refused as what it is, not inflated)."""
    path = inbox / "bomb.zip.csv"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive,
        archive.open("inner.csv", "w", force_zip64=True) as out,
    ):
        out.write(b"a,b\n")
        _stream(out.write, mib)
    return Source.file(path, kind="csv")


def single_line(inbox: Path, mib: int) -> Source:
    """``mib`` MiB with no newline."""
    path = inbox / "one-line.csv"
    with path.open("wb") as out:
        out.write(b"a,b\n")
        _stream(out.write, mib)
    return Source.file(path)


def wide(inbox: Path, columns: int = 100_000) -> Source:
    path = inbox / "wide.csv"
    with path.open("w") as out:
        out.write(",".join(f"c{i}" for i in range(columns)) + "\n")
        for row in range(2):
            out.write(",".join(str(row) for _ in range(columns)) + "\n")
    return Source.file(path)


def nul_bytes(inbox: Path) -> Source:
    path = inbox / "nul.csv"
    path.write_bytes(b"a,b\n1,\x00\x00\x002\n3,4\x00\n")
    return Source.file(path)


def invalid_encoding(inbox: Path) -> Source:
    """Bytes that are not the UTF-8 the request declares. Undeclared, they would be
    read as a legacy single-byte encoding (every byte is valid in cp1252, and detection
    cannot tell such a file from a real one), so the request says what it claims."""
    path = inbox / "latin.csv"
    path.write_bytes(b"a,b\n\xff\xfe\xc3\x28,\xa0\xa1\n\xed\xa0\x80,1\n")
    source = Source.file(path)
    return source.model_copy(update={"options": {"encoding": "utf-8"}})


def truncated_parquet(inbox: Path) -> Source:
    import pandas as pd

    path = inbox / "truncated.parquet"
    pd.DataFrame({"x": range(1000), "y": [float(i) for i in range(1000)]}).to_parquet(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Source.file(path)


def outside_root(inbox: Path) -> Source:
    return Source(name="passwd", kind="csv", uri="/etc/passwd")


def dot_dot(inbox: Path) -> Source:
    return Source(name="passwd", kind="csv", uri=f"{inbox}/../../../../../../etc/passwd")


def symlink_out(inbox: Path) -> Source:
    link = inbox / "innocent.csv"
    link.unlink(missing_ok=True)
    os.symlink("/etc/passwd", link)
    return Source(name="innocent.csv", kind="csv", uri=str(link))


SHELL_SQL_NAME = "x'; DROP TABLE datasets; --$(touch pwned)`id`"


def metacharacter_file(inbox: Path) -> Source:
    """A CSV whose file name is shell and SQL: sent with a dataset of the same name."""
    path = inbox / "a;b$(touch pwned)'--.csv"
    path.write_text("x1,x2,y\n1,2,3\n")
    return Source.file(path)


# label -> (maker, dataset name or None for a plain one, takes a size in MiB). The cheap
# files first: a file that hangs ingest must not hide what it does with the others.
BATTERY: dict[str, tuple[Callable[..., Source], str | None, bool]] = {
    "NUL bytes": (nul_bytes, None, False),
    "invalid encoding": (invalid_encoding, None, False),
    "truncated Parquet": (truncated_parquet, None, False),
    "path outside the roots": (outside_root, None, False),
    "../ out of the roots": (dot_dot, None, False),
    "symlink out of the roots": (symlink_out, None, False),
    "shell and SQL metacharacters": (metacharacter_file, SHELL_SQL_NAME, False),
    "gzip bomb": (gzip_bomb, None, True),
    "zip bomb": (zip_bomb, None, True),
    "gigabyte single line": (single_line, None, True),
    "100,000 columns": (wide, None, False),
}


def make(label: str, inbox: Path, mib: int) -> tuple[Source, str | None]:
    maker, dataset, sized = BATTERY[label]
    return (maker(inbox, mib) if sized else maker(inbox)), dataset
