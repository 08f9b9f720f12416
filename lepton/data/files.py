"""Locations of files Lepton writes and reads back (artifacts, plots): a local path or an
fsspec URL, names that must stay one path component, and private writes."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import fsspec

__all__ = ["Reader", "local_path", "path_component", "write_private"]

# Reads at most n bytes; b"" at the end.
Reader = Callable[[int], bytes]


def local_path(uri: str) -> str | None:
    """The local path a location names (a plain path or a ``file://`` URL), or None for
    any other fsspec URL. The path is taken as fsspec takes it: no percent-decoding."""
    parts = urlsplit(uri)
    if parts.scheme == "":
        return uri
    if parts.scheme not in ("file", "local") or "::" in uri or parts.query or parts.fragment:
        return None
    # file://host/... names another machine's file: not a path here.
    return parts.path if parts.netloc in ("", "localhost") else None


def path_component(name: str) -> str:
    """``name`` if it is one path component, else ValueError: a tenant or a model id from
    an event becomes a directory or file name, and must not climb out of its parent."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
        raise ValueError(f"{name[:100]!r} is not a single path component")
    return name


def write_private(uri: str, data: bytes) -> None:
    """Write ``data`` at ``uri`` under a temporary name first, so a reader never sees half
    a file under the final one.

    A local file is created 0600 (never through a link: ``O_EXCL``); the directories it
    creates are 0700, and its own directory is made 0700, so models trained on a tenant's
    data are readable by the services' user alone. An fsspec store keeps its own access
    control.
    """
    path = local_path(uri)
    if path is None:
        fs, remote = fsspec.core.url_to_fs(uri)
        fs.makedirs(fs._parent(remote), exist_ok=True)
        partial = f"{remote}.{secrets.token_hex(8)}.partial"
        with fs.open(partial, "wb") as out:
            out.write(data)
        fs.mv(partial, remote)
        return
    directory = os.path.dirname(os.path.abspath(path))
    _private_directory(directory)
    partial = f"{path}.{secrets.token_hex(8)}.partial"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with os.fdopen(os.open(partial, flags, 0o600), "wb") as out:
            out.write(data)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def _private_directory(directory: str) -> None:
    missing = []
    while not os.path.isdir(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    for created in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another writer
            os.mkdir(created, 0o700)
    # The file's own directory (a tenant's, a model's plots) was made by Lepton for such
    # files: one of ours left from before with wider permissions is tightened.
    own = missing[0] if missing else directory
    status = os.stat(own)
    if status.st_mode & 0o077 and status.st_uid == os.geteuid():
        os.chmod(own, 0o700)
