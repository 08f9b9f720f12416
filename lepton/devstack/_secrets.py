"""Secrets the local stack generates once and keeps in its state directory, readable by
the user who started it alone (files 0600 in a 0700 directory)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["kept_secret"]


def kept_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret stored at ``path``, generated and written there (0600) on first use."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        # O_EXCL: two processes starting at once agree on one secret, the first one's.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as file:
        secret = generate()
        file.write(secret + "\n")
    return secret
