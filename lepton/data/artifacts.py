"""Model artifacts: skops files with a SHA-256, in a local directory or any fsspec store.

skops stores a fitted pipeline as data and, on load, builds only the types it is told to
trust; nothing in the file runs code. Loading here trusts scikit-learn's and NumPy's own
types and refuses a file that needs anything else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import fsspec
import skops.io as sio

from lepton.errors import LeptonError

__all__ = [
    "FORMAT",
    "ArtifactError",
    "StoredArtifact",
    "artifact_uri",
    "dump",
    "load",
    "sha256_hex",
]

FORMAT = "skops"

# Types outside skops' default trust list that fitted scikit-learn pipelines hold
# (tree structures, neighbour indexes, distance metrics); all are data containers.
_TRUSTED_EXACT = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
    }
)
_TRUSTED_PREFIXES = ("sklearn.metrics._dist_metrics.",)


class ArtifactError(LeptonError, RuntimeError):
    """An artifact that is missing, altered (checksum) or needs an untrusted type."""


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    uri: str
    sha256: str
    size: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_uri(root: str, tenant: str, model_id: str) -> str:
    """Where a model lives under the store's root (a directory or an fsspec URL)."""
    return f"{root.rstrip('/')}/{tenant}/{model_id}.skops"


def dump(model: Any, uri: str) -> StoredArtifact:
    """Write the model; the write goes to a temporary name first so that a reader never
    sees half a file under the final one."""
    data = sio.dumps(model)
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(fs._parent(path), exist_ok=True)
    partial = f"{path}.partial"
    with fs.open(partial, "wb") as out:
        out.write(data)
    fs.mv(partial, path)
    return StoredArtifact(uri=uri, sha256=sha256_hex(data), size=len(data))


def _trusted(name: str) -> bool:
    return name in _TRUSTED_EXACT or name.startswith(_TRUSTED_PREFIXES)


def load(uri: str, expected_sha256: str) -> Any:
    """The model at ``uri``, after checking its checksum and that it needs no type beyond
    scikit-learn's and NumPy's."""
    with fsspec.open(uri, "rb") as source:
        data: bytes = source.read()
    actual = sha256_hex(data)
    if actual != expected_sha256:
        raise ArtifactError(f"{uri}: sha256 {actual} does not match {expected_sha256}")
    untrusted = sio.get_untrusted_types(data=data)
    refused = [name for name in untrusted if not _trusted(name)]
    if refused:
        raise ArtifactError(f"{uri}: needs types that are not trusted: {', '.join(refused)}")
    return sio.loads(data, trusted=untrusted)
