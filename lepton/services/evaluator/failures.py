"""Why a model cannot be evaluated: each kind is its own exception, whose class name is
the dead letter's ``dlq_error_type`` and the stored failure's ``error_type``."""

from __future__ import annotations

__all__ = [
    "ArtifactInvalid",
    "DatasetMismatch",
    "DatasetUnavailable",
    "EvaluationFailed",
    "stored_failure",
]


class EvaluationFailed(Exception):
    """A model that cannot be evaluated; the subclass names why (the dead letter's
    ``dlq_error_type``)."""


class ArtifactInvalid(EvaluationFailed):
    """The artifact is missing, altered (checksum) or needs an untrusted type."""


class DatasetUnavailable(EvaluationFailed):
    """The dataset version is gone or not readable by the model's tenant."""


class DatasetMismatch(EvaluationFailed):
    """The dataset's columns no longer fit the model."""


def stored_failure(error_type: str | None, message: str) -> EvaluationFailed:
    """The stored failure as the exception it was, so a redelivery dead-letters alike."""
    kinds: dict[str | None, type[EvaluationFailed]] = {
        cls.__name__: cls for cls in (ArtifactInvalid, DatasetUnavailable, DatasetMismatch)
    }
    return kinds.get(error_type, EvaluationFailed)(message)
