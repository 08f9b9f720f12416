"""Every error a user of the SDK or the CLI can see is a ``LeptonError``, importable from
``lepton``, and the CLI prints any of them as its one line and its hint."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

import lepton
from lepton.cli import app
from lepton.contract.codec import DecodeError, MessageOrigin, TruncatedMessageError
from lepton.data.access import DatasetError, DatasetNotFound
from lepton.errors import CatalogMissing, LeptonError, LeptonTimeout
from lepton.sdk.client import LeptonClient

PUBLIC_ERRORS = [
    exported
    for exported in (getattr(lepton, name) for name in lepton.__all__)
    if isinstance(exported, type) and issubclass(exported, BaseException)
]


def test_lepton_exports_the_errors_the_sdk_and_cli_raise() -> None:
    names = {error.__name__ for error in PUBLIC_ERRORS}
    assert {
        "BrokerUnavailableError",
        "DatabaseUnavailableError",
        "StackError",
        "DecodeError",
        "PublishError",
        "DatasetError",
        "ArtifactError",
        "InvalidRequest",
        "DatasetRejected",
        "PredictionFailed",
        "MonitorUnavailable",
        "LeptonTimeout",
    } <= names


@pytest.mark.parametrize("error", PUBLIC_ERRORS, ids=lambda error: error.__name__)
def test_every_public_error_is_a_lepton_error(error: type[BaseException]) -> None:
    assert issubclass(error, LeptonError)


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (lepton.BrokerUnavailableError, RuntimeError),
        (lepton.DatabaseUnavailableError, RuntimeError),
        (lepton.StackError, RuntimeError),
        (lepton.PublishError, RuntimeError),
        (lepton.ArtifactError, RuntimeError),
        (lepton.DecodeError, ValueError),
        (lepton.InvalidRequest, ValueError),
        (lepton.LeptonTimeout, TimeoutError),
    ],
    ids=lambda value: value.__name__,
)
def test_errors_keep_the_builtin_base_code_catches_them_by(
    error: type[BaseException], builtin: type[BaseException]
) -> None:
    assert issubclass(error, builtin)


def test_an_error_says_what_in_one_line_and_how_in_its_hint() -> None:
    timeout = LeptonTimeout("no answer within 5 s", "is the ingest service running?")
    assert str(timeout) == "no answer within 5 s"
    assert timeout.hint == "is the ingest service running?"
    assert LeptonError("plain").hint is None


def test_a_class_hint_applies_unless_the_error_gives_its_own() -> None:
    assert DatasetNotFound("no dataset d").hint == DatasetError.hint is not None
    assert DatasetNotFound("no dataset d", "try e").hint == "try e"


def test_a_decode_error_is_still_a_decode_error_after_naming_its_origin() -> None:
    error = TruncatedMessageError("3 bytes", MessageOrigin()).at(MessageOrigin("t", 0, 7))
    assert isinstance(error, DecodeError)
    assert isinstance(error, LeptonError)
    assert str(error) == "3 bytes (at t[0]@7)"


def test_importing_the_errors_imports_nothing_else_of_lepton() -> None:
    probe = "import sys, lepton.errors; print(sorted(m for m in sys.modules if 'lepton' in m))"
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert loaded.strip() == "['lepton', 'lepton.errors']"


def test_the_cli_prints_a_lepton_errors_message_and_hint_and_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def no_catalog(self: LeptonClient) -> None:
        raise CatalogMissing()

    monkeypatch.setattr(LeptonClient, "datasets", no_catalog)
    result = CliRunner().invoke(app, ["data", "list", "--tenant", "a"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: this database has no dataset catalog yet",
        "hint: start the ingest service once (`lepton up`)",
    ]
