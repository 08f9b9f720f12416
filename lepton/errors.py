"""Every error a user of the SDK or the CLI can see is a :class:`LeptonError`.

Its ``str()`` is one line saying what went wrong, and :attr:`LeptonError.hint` (when there
is one) says how to fix it. The hierarchy (classes marked with a module are defined
there, on a category of this module, and are also importable from ``lepton``)::

    LeptonError
    ├── LeptonTimeout                   also TimeoutError: no answer in the time given
    ├── ConfigError                     also ValueError: a setting cannot be used as given
    ├── UnavailableError                a part of Lepton did not answer
    │   ├── BrokerUnavailableError      also RuntimeError    lepton.bus
    │   ├── TopicsMissingError          lepton.bus: and this principal may not create them
    │   ├── DatabaseUnavailableError    also RuntimeError    lepton.runtime.database
    │   ├── CatalogMissing              the database has no dataset catalog yet
    │   ├── MonitorUnavailable          the monitor's JSON API
    │   └── StackError                  also RuntimeError    lepton.errors (the local stack)
    ├── MessageError                    a message could not be sent or read
    │   ├── PublishError                also RuntimeError    lepton.bus
    │   └── DecodeError                 also ValueError      lepton.contract.codec
    │       ├── TruncatedMessageError
    │       ├── CorruptMessageError
    │       ├── UnknownFingerprintError
    │       └── WrongSchemaError
    ├── RequestError                    Lepton refused a request
    │   ├── InvalidRequest              also ValueError      lepton.sdk.builders
    │   ├── DatasetRejected             the ingest service's answer
    │   └── PredictionFailed            the evaluator's answer
    ├── IdentityError                   who acts is not proven
    │   ├── ForgedRecordError           a record unsigned, or signed by someone else
    │   └── InvalidTokenError           an HTTP token malformed, forged or expired
    ├── DatasetError                    lepton.data.access
    │   ├── DatasetNotFound
    │   ├── AccessDenied
    │   └── KeyUnavailable
    └── ArtifactError                   also RuntimeError    lepton.data.artifacts

The classes that keep a built-in base do so because code catches them by it (``except
ValueError`` around a decode, ``except TimeoutError`` around a wait).

This module imports nothing: every service imports its categories.
"""

from __future__ import annotations

__all__ = [
    "CatalogMissing",
    "ConfigError",
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
    "UnavailableError",
]


class LeptonError(Exception):
    """A failure the caller can act on: ``str(error)`` says what, :attr:`hint` how."""

    # A class may give all its instances one hint; an instance's own one wins.
    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class LeptonTimeout(LeptonError, TimeoutError):
    """No answer came in the time given."""


class ConfigError(LeptonError, ValueError):
    """A setting (or a file a setting names) cannot be used as given."""


class UnavailableError(LeptonError):
    """A part of Lepton (the broker, the database, the monitor, the local stack) did not
    answer."""


# Here, in the foundation, so that a service can catch it without importing the stack.
class StackError(UnavailableError, RuntimeError):
    """A one-line reason the local stack cannot do what was asked, with what to do."""


class CatalogMissing(UnavailableError):
    """The database has no dataset catalog: the ingest service has never run against it."""

    hint = "start the ingest service once (`lepton up`)"

    def __init__(self) -> None:
        super().__init__("this database has no dataset catalog yet")


class MonitorUnavailable(UnavailableError):
    """The monitor's JSON API did not answer."""


class MessageError(LeptonError):
    """A message could not be published, or bytes read could not be decoded."""


class RequestError(LeptonError):
    """Lepton refused a request: it was malformed, or a service answered with an error."""


class IdentityError(LeptonError):
    """Who sent a record or a request is not proven (:mod:`lepton.contract.identity`)."""


class ForgedRecordError(IdentityError):
    """A record is unsigned, or its signature does not match the principal it names."""


class InvalidTokenError(IdentityError):
    """An HTTP bearer token is malformed, forged or expired."""

    hint = "mint a new one: `lepton auth token`"


_DATASET_HINTS = {
    "path_not_allowed": "put the file in the inbox `lepton up` names, or add its directory to "
    "the ingest service's LEPTON_INGEST_ROOTS and restart it",
    "source_unreadable": "the ingest service opens the path on its own machine: check it there",
}


class DatasetRejected(RequestError):
    """The ingest service refused a dataset request (``lepton.DataRejected``)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"rejected ({code}): {reason}", _DATASET_HINTS.get(code))
        self.code = code
        self.reason = reason


_PREDICTION_HINTS = {
    "unknown_model": "`lepton models --tenant T` lists the tenant's models and their versions",
    "no_champion": "name a version: --model NAME@<model id> (`lepton models` lists them)",
    "missing_columns": "give every feature column the model was trained on",
}


class PredictionFailed(RequestError):
    """The evaluator answered a prediction request with an error (``PredictionError``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"prediction failed ({code}): {message}", _PREDICTION_HINTS.get(code))
        self.code = code
        self.message = message
