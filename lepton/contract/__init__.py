"""The published contract: where the Avro schemas live and the codec built from them."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from lepton.contract.codec import Codec, load_schema_files

__all__ = ["default_codec", "schemas_dir"]


def schemas_dir() -> Path:
    """``schemas/`` of a source checkout, or the copy packaged inside a built wheel."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parents[1] / "schemas", package / "_schemas"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no schemas/ directory next to {package}")


@cache
def default_codec() -> Codec:
    """The codec for every current schema, plus their earlier versions in ``schemas/history``.

    Built on first use (never at import time) and then shared: schemas are parsed once.
    """
    root = schemas_dir()
    return Codec(
        load_schema_files(root.glob("*.avsc")),
        history=load_schema_files(root.glob("history/*/*.avsc")),
    )
