"""Lepton: an open, event-driven control plane for AI infrastructure.

The Python SDK is :class:`LeptonClient` with the request builders of
:mod:`lepton.sdk.builders`; see ``examples/`` and the README's "Python SDK" section.

The SDK's names are imported on first use: every service imports ``lepton.*`` modules,
and importing the whole client (aiokafka, httpx, pydantic) with each would cost about a
second for nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lepton.sdk.builders import (
        Constraints,
        DatasetRef,
        DatasetRequest,
        Integration,
        InvalidRequest,
        JobRequest,
        PredictRequest,
        Resources,
        Source,
        TrainingTask,
    )
    from lepton.sdk.client import (
        DatasetRejected,
        JobEvent,
        JobOutcome,
        LeptonClient,
        LeptonError,
        LeptonTimeout,
        ModelVerdict,
        MonitorUnavailable,
        PredictionFailed,
        PredictionResult,
    )

_CLIENT = (
    "DatasetRejected",
    "JobEvent",
    "JobOutcome",
    "LeptonClient",
    "LeptonError",
    "LeptonTimeout",
    "ModelVerdict",
    "MonitorUnavailable",
    "PredictionFailed",
    "PredictionResult",
)
_REQUESTS = (
    "Constraints",
    "DatasetRef",
    "DatasetRequest",
    "Integration",
    "InvalidRequest",
    "JobRequest",
    "PredictRequest",
    "Resources",
    "Source",
    "TrainingTask",
)
_HOME = {name: "lepton.sdk.client" for name in _CLIENT} | {
    name: "lepton.sdk.builders" for name in _REQUESTS
}

__all__ = [
    "Constraints",
    "DatasetRef",
    "DatasetRejected",
    "DatasetRequest",
    "Integration",
    "InvalidRequest",
    "JobEvent",
    "JobOutcome",
    "JobRequest",
    "LeptonClient",
    "LeptonError",
    "LeptonTimeout",
    "ModelVerdict",
    "MonitorUnavailable",
    "PredictRequest",
    "PredictionFailed",
    "PredictionResult",
    "Resources",
    "Source",
    "TrainingTask",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'lepton' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
