"""Lepton: an open, event-driven control plane for AI infrastructure.

The Python SDK is :class:`LeptonClient` with the request builders of
:mod:`lepton.sdk.builders`; see ``examples/`` and the README's "Python SDK" section. Every
error it raises is a :class:`LeptonError` (the hierarchy is drawn in :mod:`lepton.errors`).

The SDK's names are imported on first use: every service imports ``lepton.*`` modules,
and importing the whole client (aiokafka, httpx, pydantic) with each would cost about a
second for nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lepton.bus import BrokerUnavailableError, PublishError
    from lepton.contract.codec import (
        CorruptMessageError,
        DecodeError,
        TruncatedMessageError,
        UnknownFingerprintError,
        WrongSchemaError,
    )
    from lepton.data.access import AccessDenied, DatasetError, DatasetNotFound, KeyUnavailable
    from lepton.data.artifacts import ArtifactError
    from lepton.errors import (
        CatalogMissing,
        DatasetRejected,
        ForgedRecordError,
        IdentityError,
        InvalidTokenError,
        LeptonError,
        LeptonTimeout,
        MessageError,
        MonitorUnavailable,
        PredictionFailed,
        RequestError,
        StackError,
        UnavailableError,
    )
    from lepton.runtime.database import DatabaseUnavailableError
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
    from lepton.sdk.client import LeptonClient, Placement, TailedEvent
    from lepton.sdk.results import JobEvent, JobOutcome, ModelVerdict, PredictionResult

_HOMES: dict[str, tuple[str, ...]] = {
    "lepton.sdk.client": ("LeptonClient", "Placement", "TailedEvent"),
    "lepton.sdk.results": ("JobEvent", "JobOutcome", "ModelVerdict", "PredictionResult"),
    "lepton.sdk.builders": (
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
    ),
    "lepton.errors": (
        "CatalogMissing",
        "DatasetRejected",
        "ForgedRecordError",
        "IdentityError",
        "InvalidTokenError",
        "LeptonError",
        "LeptonTimeout",
        "MessageError",
        "MonitorUnavailable",
        "PredictionFailed",
        "RequestError",
        "StackError",
        "UnavailableError",
    ),
    "lepton.bus": ("BrokerUnavailableError", "PublishError"),
    "lepton.contract.codec": (
        "CorruptMessageError",
        "DecodeError",
        "TruncatedMessageError",
        "UnknownFingerprintError",
        "WrongSchemaError",
    ),
    "lepton.data.artifacts": ("ArtifactError",),
    "lepton.data.access": ("AccessDenied", "DatasetError", "DatasetNotFound", "KeyUnavailable"),
    "lepton.runtime.database": ("DatabaseUnavailableError",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "AccessDenied",
    "ArtifactError",
    "BrokerUnavailableError",
    "CatalogMissing",
    "Constraints",
    "CorruptMessageError",
    "DatabaseUnavailableError",
    "DatasetError",
    "DatasetNotFound",
    "DatasetRef",
    "DatasetRejected",
    "DatasetRequest",
    "DecodeError",
    "ForgedRecordError",
    "IdentityError",
    "Integration",
    "InvalidRequest",
    "InvalidTokenError",
    "JobEvent",
    "JobOutcome",
    "JobRequest",
    "KeyUnavailable",
    "LeptonClient",
    "LeptonError",
    "LeptonTimeout",
    "MessageError",
    "ModelVerdict",
    "MonitorUnavailable",
    "Placement",
    "PredictRequest",
    "PredictionFailed",
    "PredictionResult",
    "PublishError",
    "RequestError",
    "Resources",
    "Source",
    "StackError",
    "TailedEvent",
    "TrainingTask",
    "TruncatedMessageError",
    "UnavailableError",
    "UnknownFingerprintError",
    "WrongSchemaError",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'lepton' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
