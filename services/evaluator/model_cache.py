"""Loaded models by id, shared by evaluation (challenger and champion) and prediction."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lepton.data import artifacts
from services.evaluator.failures import ArtifactInvalid
from services.evaluator.inputs import InputSchema, input_schema

if TYPE_CHECKING:
    from lepton.data.artifacts import ArtifactStore

__all__ = ["Loaded", "ModelCache"]


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

    async def load(self, ready: dict[str, Any]) -> Loaded:
        model_id = ready["model_id"]
        cached = self._models.get(model_id)
        if cached is not None:
            self._models.move_to_end(model_id)
            return cached
        try:
            pipeline = await asyncio.to_thread(
                self._store.load,
                ready["artifact_uri"],
                tenant=ready["tenant"],
                sha256=ready["artifact_sha256"],
                format=ready["artifact_format"],
            )
        except artifacts.ArtifactError as exc:
            # The reason only: it never quotes the file's content or hash.
            raise ArtifactInvalid(f"model {model_id}: {exc}") from None
        loaded = Loaded(
            model_id, pipeline, input_schema(pipeline, list(ready["feature_columns"])), ready
        )
        self._models[model_id] = loaded
        if len(self._models) > self._size:
            self._models.popitem(last=False)
        return loaded
