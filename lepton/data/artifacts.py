"""Model artifacts: skops files with a SHA-256, in a local directory or any fsspec store.

skops stores a fitted pipeline as data and, on load, builds only the types it is told to
trust; nothing in the file runs code. Loading here trusts scikit-learn's and NumPy's own
types, and LightGBM's fitted estimators and boosters, and refuses a file that needs
anything else.

An artifact's location comes from a ``lepton.models.ready`` event, so it is not trusted
either. :class:`ArtifactStore` reads one only from its tenant's directory under the
configured root (after ``..`` and symbolic links are resolved), only if it is a regular
file no larger than the configured limit, and never reads more than that limit: a
location outside the root, a device, a FIFO or a huge file is refused before anything
is opened. Each refusal is an :class:`ArtifactError` whose message is a stable reason
(the constants below) that never quotes the content or the hash of a file.

Local artifacts are written 0600 in 0700 directories. A model that reads sensitive
columns is stored sealed (:data:`SEALED_FORMAT`, see :mod:`lepton.data.sealing`), and a
model that does is loaded only from a sealed file.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import fsspec
import skops.io as sio
from pydantic import Field

from lepton.config import Settings
from lepton.data import sealing
from lepton.data.files import local_path, path_component, write_private
from lepton.errors import LeptonError

if TYPE_CHECKING:
    from collections.abc import Callable

    from lepton.data.files import Reader

__all__ = [
    "CHECKSUM_MISMATCH",
    "DEFAULT_MAX_BYTES",
    "FORMAT",
    "MISSING",
    "NOT_REGULAR",
    "NOT_SEALED",
    "OUTSIDE_ROOT",
    "OUTSIDE_TENANT",
    "SEALED_FORMAT",
    "UNKNOWN_FORMAT",
    "UNREADABLE",
    "WRONG_FORMAT",
    "ArtifactError",
    "ArtifactSettings",
    "ArtifactStore",
    "StoredArtifact",
    "artifact_uri",
    "dump",
    "sha256_hex",
    "too_large",
]

FORMAT = "skops"
SEALED_FORMAT = sealing.FORMAT
DEFAULT_MAX_BYTES = 512 * 2**20

# Why an artifact is refused: stable texts, the end of the evaluator's dead-letter message.
OUTSIDE_ROOT = "artifact outside the artifact root"
OUTSIDE_TENANT = "artifact outside its tenant's directory of the artifact root"
NOT_REGULAR = "artifact is not a regular file"
MISSING = "artifact does not exist"
CHECKSUM_MISMATCH = "artifact checksum does not match"
UNKNOWN_FORMAT = f"artifact format is not {FORMAT} or {SEALED_FORMAT}"
NOT_SEALED = "artifact of a model that reads sensitive columns is not encrypted"
WRONG_FORMAT = "artifact is not in its declared format"
UNREADABLE = "artifact is not a readable skops file"

_CHUNK = 2**20

# Types outside skops' default trust list that the trainer's fitted pipelines hold (tree
# structures, neighbour indexes, distance metrics, fold splitters, LightGBM's models): data
# containers, and one function of Lepton's own.
_TRUSTED_EXACT = frozenset(
    {
        "numpy.dtype",
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        # A target encoder's cross-fitting folds: parameters only.
        "sklearn.model_selection._split.KFold",
        # A voting ensemble's named members (a dict): the trainer's final ensemble.
        "sklearn.utils._bunch.Bunch",
        # Lepton's own reader of numbers written as text (a pure function), the first step
        # the trainer puts before such a column.
        "lepton.data.modeling.as_numbers",
        # The lightgbm family: its scikit-learn estimators (parameters and fitted
        # attributes) and their booster, whose state is the model as LightGBM's own text
        # format, parsed by LightGBM without running code (>= 4.6, see pyproject.toml).
        # A callable objective or metric would be a function type: still refused.
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "lightgbm.basic.Booster",
        # A fitted booster's best scores: a defaultdict of these.
        "collections.OrderedDict",
    }
)
_TRUSTED_PREFIXES = ("sklearn.metrics._dist_metrics.",)
# Untrusted type names quoted in a refusal at most (they come from the file).
_QUOTED_TYPES = 5


class ArtifactError(LeptonError, RuntimeError):
    """An artifact that is refused (location, kind, size), missing, altered (checksum),
    not sealed when it must be, sealed for another tenant or needing an untrusted type;
    the message says which."""


def too_large(limit: int) -> str:
    return f"artifact larger than {limit} bytes"


class ArtifactSettings(Settings):
    """Where artifacts live and how large one may be: shared by the trainer, which writes
    them, and the evaluator, which reads them."""

    artifact_root: str | None = Field(
        default=None,
        description="LEPTON_ARTIFACT_ROOT: where trained models are stored: a directory or "
        "an fsspec URL (s3://bucket/models, with that store's fsspec package installed). "
        "The evaluator reads an artifact only from its tenant's directory under it. "
        "Unset: <LEPTON_STATE_DIR>/artifacts.",
    )
    artifact_max_bytes: int = Field(
        default=DEFAULT_MAX_BYTES,
        ge=1,
        description="LEPTON_ARTIFACT_MAX_BYTES: the largest artifact the evaluator reads "
        "(it reads at most this many bytes of a file, so a huge or endless one cannot "
        "exhaust its memory).",
    )

    def artifact_location(self) -> str:
        return self.artifact_root or str(self.state_dir / "artifacts")

    def artifact_store(self) -> ArtifactStore:
        return ArtifactStore(self.artifact_location(), self.artifact_max_bytes)


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    uri: str
    sha256: str
    size: int
    format: str = FORMAT


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _component(name: str, what: str) -> str:
    try:
        return path_component(name)
    except ValueError:
        raise ArtifactError(f"the {what} cannot name a directory or file") from None


def artifact_uri(root: str, tenant: str, model_id: str) -> str:
    """Where a model lives under the store's root (a directory or an fsspec URL)."""
    tenant_dir, model = _component(tenant, "tenant"), _component(model_id, "model id")
    return f"{root.rstrip('/')}/{tenant_dir}/{model}.skops"


def dump(
    model: Any, uri: str, *, sealed_for: str | None = None, master_key: bytes | None = None
) -> StoredArtifact:
    """Write the model (never half a file under its name; 0600 in 0700 directories when
    local: see :func:`lepton.data.files.write_private`).

    With ``sealed_for`` (a tenant) the file is sealed with that tenant's key, derived from
    ``master_key`` (default: ``LEPTON_MASTER_KEY``).
    """
    data = sio.dumps(model)
    kind = FORMAT
    if sealed_for is not None:
        data = _sealing(lambda: sealing.seal(data, sealed_for, master_key))
        kind = SEALED_FORMAT
    write_private(uri, data)
    return StoredArtifact(uri=uri, sha256=sha256_hex(data), size=len(data), format=kind)


def _sealing(operation: Callable[[], bytes]) -> bytes:
    try:
        return operation()
    except sealing.SealingError as exc:
        raise ArtifactError(str(exc)) from None


def _trusted(name: str) -> bool:
    return name in _TRUSTED_EXACT or name.startswith(_TRUSTED_PREFIXES)


def _loads(data: bytes) -> Any:
    """The model in a skops file's bytes, if it needs no type beyond scikit-learn's and
    NumPy's."""
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception:  # any parse error of bytes from outside: the file is not skops
        raise ArtifactError(UNREADABLE) from None
    refused = sorted(name[:100] for name in untrusted if not _trusted(name))
    if refused:
        more = f" and {len(refused) - _QUOTED_TYPES} more" if len(refused) > _QUOTED_TYPES else ""
        raise ArtifactError(
            f"artifact needs types that are not trusted: {', '.join(refused[:_QUOTED_TYPES])}{more}"
        )
    try:
        return sio.loads(data, trusted=untrusted)
    except Exception:
        raise ArtifactError(UNREADABLE) from None


@dataclass(frozen=True, slots=True)
class ArtifactStore:
    """Reads artifacts from the tenants' directories under ``root``, ``max_bytes`` at
    most; sealed ones are opened with keys derived from ``master_key`` (default:
    ``LEPTON_MASTER_KEY``)."""

    root: str
    max_bytes: int = DEFAULT_MAX_BYTES
    master_key: bytes | None = None

    def load(
        self,
        uri: str,
        *,
        tenant: str,
        sha256: str,
        format: str = FORMAT,
        sealed: bool = False,
    ) -> Any:
        """The model at ``uri``, a model of ``tenant`` stored in ``format``.

        ``sealed``: the model reads sensitive columns, so a file that is not sealed is
        refused before it is read.
        """
        if format not in (FORMAT, SEALED_FORMAT):
            raise ArtifactError(UNKNOWN_FORMAT)
        if sealed and format != SEALED_FORMAT:
            raise ArtifactError(NOT_SEALED)
        data = self.read(uri, tenant=tenant, sha256=sha256)
        if sealing.is_sealed(data) != (format == SEALED_FORMAT):
            raise ArtifactError(WRONG_FORMAT)
        if format == SEALED_FORMAT:
            data = _sealing(lambda: sealing.unseal(data, tenant, self.master_key))
        return _loads(data)

    def read(self, uri: str, *, tenant: str, sha256: str) -> bytes:
        """The bytes at ``uri``, if it lies in the tenant's directory, is a regular file of
        at most ``max_bytes`` and matches ``sha256``."""
        tenant_dir = _component(tenant, "tenant")
        root = local_path(self.root)
        if root is not None:
            path = local_path(uri)
            if path is None:
                raise ArtifactError(OUTSIDE_ROOT)
            data, digest = _read_local(self._confined(root, path, tenant_dir), self.max_bytes)
        else:
            data, digest = _read_remote(self.root, uri, tenant_dir, self.max_bytes)
        if digest != sha256.lower():
            raise ArtifactError(CHECKSUM_MISMATCH)
        return data

    @staticmethod
    def _confined(root: str, path: str, tenant_dir: str) -> str:
        """The real path of ``path`` (``..`` and links resolved), if it lies in the
        tenant's directory of ``root``."""
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
        if not _inside(real, real_root):
            raise ArtifactError(OUTSIDE_ROOT)
        if not _inside(real, os.path.join(real_root, tenant_dir)):
            raise ArtifactError(OUTSIDE_TENANT)
        return real


def _inside(path: str, directory: str) -> bool:
    return path != directory and os.path.commonpath([path, directory]) == directory


def _check_kind(status: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise ArtifactError(NOT_REGULAR)
    if status.st_size > limit:
        raise ArtifactError(too_large(limit))


def _unreadable(error: OSError) -> ArtifactError:
    # strerror only: the path is the event's own, the errno's text says why.
    return ArtifactError(f"artifact cannot be read: {error.strerror or type(error).__name__}")


def _read_local(path: str, limit: int) -> tuple[bytes, str]:
    """Read a confined local file: its kind and size are checked before it is opened;
    it is opened without following a link or blocking (a FIFO), checked again on the
    open descriptor, and read up to ``limit`` + 1 bytes."""
    try:
        _check_kind(os.stat(path), limit)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ArtifactError(MISSING) from None
    except OSError as exc:
        raise _unreadable(exc) from None
    try:
        _check_kind(os.fstat(fd), limit)  # it may have been replaced since the stat
        return _bounded(lambda size: os.read(fd, size), limit)
    except OSError as exc:
        raise _unreadable(exc) from None
    finally:
        os.close(fd)


def _bounded(read: Reader, limit: int) -> tuple[bytes, str]:
    """At most ``limit`` bytes from ``read``, and their SHA-256 (computed as they come);
    a source with more is refused once ``limit`` + 1 bytes are in."""
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    total = 0
    while chunk := read(min(_CHUNK, limit + 1 - total)):
        total += len(chunk)
        if total > limit:
            raise ArtifactError(too_large(limit))
        digest.update(chunk)
        chunks.append(chunk)
    return b"".join(chunks), digest.hexdigest()


def _read_remote(root: str, uri: str, tenant_dir: str, limit: int) -> tuple[bytes, str]:
    """Read an artifact from an fsspec store: same protocol and bucket as the root, under
    the tenant's prefix, no ``.`` or ``..`` segment and no chained URL."""
    base, where = urlsplit(root), urlsplit(uri)
    if (
        "::" in uri
        or where.query
        or where.fragment
        or (where.scheme, where.netloc) != (base.scheme, base.netloc)
        or any(segment in (".", "..") for segment in where.path.split("/"))
    ):
        raise ArtifactError(OUTSIDE_ROOT)
    prefix = base.path.rstrip("/") + "/"
    if not where.path.startswith(prefix):
        raise ArtifactError(OUTSIDE_ROOT)
    if not where.path.startswith(f"{prefix}{tenant_dir}/"):
        raise ArtifactError(OUTSIDE_TENANT)
    fs, path = fsspec.core.url_to_fs(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise ArtifactError(MISSING) from None
    except OSError as exc:
        raise _unreadable(exc) from None
    if info.get("type") != "file":
        raise ArtifactError(NOT_REGULAR)
    if int(info.get("size") or 0) > limit:
        raise ArtifactError(too_large(limit))
    try:
        with fs.open(path, "rb") as source:
            return _bounded(source.read, limit)
    except OSError as exc:
        raise _unreadable(exc) from None
