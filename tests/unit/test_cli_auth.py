"""``lepton auth``: keys issued from the master key sign as their principal, and tokens
minted from them are what the monitor accepts."""

from __future__ import annotations

import time

import pytest
from typer.testing import CliRunner

from lepton.cli import app
from lepton.contract.identity import IdentityKey, Principal, SigningKey, Verifier

MASTER = IdentityKey.generate()


@pytest.fixture(autouse=True)
def _master(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEPTON_IDENTITY_KEY", MASTER.to_text())
    monkeypatch.delenv("LEPTON_SIGNING_KEY", raising=False)


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_an_issued_key_is_that_principals_and_signs_as_it() -> None:
    line = _run("auth", "issue", "tenant:acme")
    key = SigningKey.from_text(line.removeprefix("LEPTON_SIGNING_KEY="))
    assert key == MASTER.derive(Principal("tenant", "acme"))


def test_a_token_is_minted_from_the_processs_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run("auth", "whoami") == "operator:local"
    monkeypatch.setenv("LEPTON_SIGNING_KEY", MASTER.derive(Principal("tenant", "acme")).to_text())
    monkeypatch.delenv("LEPTON_IDENTITY_KEY")
    assert _run("auth", "whoami") == "tenant:acme"
    token = _run("auth", "token", "--ttl", "60")
    assert Verifier(MASTER).verify_token(token, time.time()) == Principal("tenant", "acme")


def test_a_service_key_is_not_issued() -> None:
    result = CliRunner().invoke(app, ["auth", "issue", "service:scheduler"])
    assert result.exit_code != 0
    assert "services derive their own keys" in result.output
