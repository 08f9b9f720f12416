"""Locations of files Lepton writes and reads back (artifacts, plots): a local path or an
fsspec URL, and names that must stay one path component."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

__all__ = ["Reader", "local_path", "path_component"]

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
