"""Why a training job cannot run: errors whose message says exactly what to fix."""

from __future__ import annotations

__all__ = [
    "AlgorithmMismatch",
    "ConstantTarget",
    "InvalidSearchSpace",
    "InvalidTask",
    "MissingTargetColumn",
    "NoUsableTrial",
    "SensitiveTarget",
    "TooFewRows",
    "TrainingInputError",
]


class TrainingInputError(ValueError):
    """The job cannot be trained as asked; the message says exactly why."""


class MissingTargetColumn(TrainingInputError):
    pass


class ConstantTarget(TrainingInputError):
    pass


class TooFewRows(TrainingInputError):
    pass


class InvalidSearchSpace(TrainingInputError):
    pass


class AlgorithmMismatch(TrainingInputError):
    pass


class InvalidTask(TrainingInputError):
    pass


class SensitiveTarget(TrainingInputError):
    """The target is a sensitive column and the job did not allow sensitive columns."""


class NoUsableTrial(RuntimeError):
    """Every search trial failed or was pruned, so there is no pipeline to refit."""
