"""Golden test vectors: example events and their exact single-object encoding.

``schemas/vectors/<schema file stem>.json`` holds, for every schema, a list of
``{"description", "record", "bytes_hex"}``. Another implementation checks itself by
encoding ``record`` and comparing with ``bytes_hex``, and by decoding ``bytes_hex`` back
to ``record``. Records hold Avro-level values: a ``timestamp-millis`` is the integer
number of milliseconds since the epoch, a union holds the plain value (JSON null or the
branch's value). JSON has no bytes, so the one ``bytes`` field (a ``ModelReady``'s
``lease``, in an optional record) is null in the vectors. Avro lets a writer choose the order of a
map's entries, so for a record with a map of several entries, another encoder may produce
different bytes that decode to the same record; the vectors keep the records' key order.

The examples in :mod:`lepton.contract.vector_examples` are the source of truth; the JSON
files are generated from them, and ``tests/unit/test_contract.py`` fails when the two
disagree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict

from lepton.contract import default_codec, schemas_dir
from lepton.contract.vector_examples import EXAMPLES

if TYPE_CHECKING:
    from pathlib import Path

    from lepton.contract.codec import Codec

__all__ = [
    "Vector",
    "build_vectors",
    "render_vector_file",
    "schema_file_stem",
    "stale_vector_files",
    "to_wire_values",
    "vectors_dir",
    "write_vectors",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class Vector(TypedDict):
    description: str
    record: dict[str, Any]
    bytes_hex: str


def schema_file_stem(event_name: str) -> str:
    """``lepton.NodeHeartbeat`` -> ``node_heartbeat``: the ``.avsc`` and vector file stem."""
    short = event_name.rsplit(".", 1)[-1]
    return re.sub(r"(?<!^)(?=[A-Z])", "_", short).lower()


def vectors_dir() -> Path:
    return schemas_dir() / "vectors"


def to_wire_values(value: Any) -> Any:
    """Turn decoded values back into Avro-level values: fastavro decodes
    ``timestamp-millis`` to aware datetimes, the vectors hold epoch milliseconds."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // _MS
    if isinstance(value, Mapping):
        return {key: to_wire_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_wire_values(item) for item in value]
    return value


def build_vectors(codec: Codec | None = None) -> dict[str, list[Vector]]:
    """Every example, encoded with the current schemas, by schema file stem."""
    codec = codec or default_codec()
    missing = set(codec.names) ^ set(EXAMPLES)
    if missing:
        raise ValueError(f"examples and schemas disagree on: {sorted(missing)}")
    return {
        schema_file_stem(name): [
            Vector(
                description=description,
                record=record,
                bytes_hex=codec.encode(name, record).hex(),
            )
            for description, record in examples
        ]
        for name, examples in sorted(EXAMPLES.items())
    }


def render_vector_file(vectors: list[Vector]) -> str:
    # Unicode stays readable: other implementations read the file as UTF-8 JSON.
    return json.dumps(vectors, indent=2, ensure_ascii=False) + "\n"


def stale_vector_files(directory: Path | None = None, codec: Codec | None = None) -> list[Path]:
    """Vector files that are missing or differ from what the codec produces now."""
    target = directory or vectors_dir()
    return [
        target / f"{stem}.json"
        for stem, vectors in build_vectors(codec).items()
        if not (target / f"{stem}.json").exists()
        or (target / f"{stem}.json").read_text(encoding="utf-8") != render_vector_file(vectors)
    ]


def write_vectors(directory: Path | None = None, codec: Codec | None = None) -> list[Path]:
    """Write (or rewrite) every vector file; returns the files that changed."""
    target = directory or vectors_dir()
    target.mkdir(parents=True, exist_ok=True)
    built = build_vectors(codec)
    changed = stale_vector_files(target, codec)
    for path in changed:
        path.write_text(render_vector_file(built[path.stem]), encoding="utf-8")
    return changed
