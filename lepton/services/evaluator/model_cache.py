"""Loaded models by id, shared by evaluation (challenger and champion) and prediction."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton.data import artifacts
from lepton.services.evaluator import instruments
from lepton.services.evaluator.failures import ArtifactInvalid
from lepton.services.evaluator.inputs import InputSchema, declared_columns_read, input_schema

if TYPE_CHECKING:
    from lepton.data.artifacts import ArtifactStore

__all__ = ["COLUMNS_UNDECLARED", "Loaded", "ModelCache"]

COLUMNS_UNDECLARED = "the artifact's model reads other columns than its ModelReady lists"


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model ready to score: its pipeline, what it reads and its ModelReady."""

    model_id: str
    pipeline: Any
    schema: InputSchema
    ready: dict[str, Any]


class ModelCache:
    """Loaded models by id, least recently used out first. An artifact is immutable under
    its checksum, so a cached model never goes stale. Artifacts are read from ``store``
    only (confined to their tenant's directory and bounded in size)."""

    def __init__(self, size: int, store: ArtifactStore) -> None:
        self._size = size
        self._store = store
        self._models: OrderedDict[str, Loaded] = OrderedDict()

    async def load(self, ready: dict[str, Any], *, sealed: bool = False) -> Loaded:
        """The model a ModelReady announces; ``sealed``: it reads sensitive columns, so
        only a sealed artifact is accepted (checked before the file is read)."""
        model_id = ready["model_id"]
        cached = self._models.get(model_id)
        if cached is not None and (
            not sealed or cached.ready["artifact_format"] == artifacts.SEALED_FORMAT
        ):
            self._models.move_to_end(model_id)
            instruments.MODEL_CACHE.labels("hit").inc()
            return cached
        instruments.MODEL_CACHE.labels("miss").inc()
        try:
            with instruments.MODEL_LOAD_DURATION.time():
                pipeline = await asyncio.to_thread(
                    self._store.load,
                    ready["artifact_uri"],
                    tenant=ready["tenant"],
                    sha256=ready["artifact_sha256"],
                    format=ready["artifact_format"],
                    sealed=sealed,
                )
        except artifacts.ArtifactError as exc:
            # The reason only: it never quotes the file's content or hash.
            raise ArtifactInvalid(f"model {model_id}: {exc}") from None
        features = list(ready["feature_columns"])
        if not declared_columns_read(pipeline, features):
            raise ArtifactInvalid(f"model {model_id}: {COLUMNS_UNDECLARED}")
        loaded = Loaded(model_id, pipeline, input_schema(pipeline, features), ready)
        self._models[model_id] = loaded
        if len(self._models) > self._size:
            self._models.popitem(last=False)
        return loaded
