"""A command that waits says what for and for how long, and ends with a clear message when
nothing comes (the finding: `lepton data ingest` and benchmarks sat idle, saying nothing)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lepton.bus import provision
from lepton.config import Actor, KafkaAccess
from lepton.contract.topics import Namespace
from tests.integration.processes import lepton_cli

pytestmark = pytest.mark.integration


async def test_ingest_with_no_ingest_service_says_what_it_waited_for(
    kafka: KafkaAccess, stack_access: Callable[[Actor], KafkaAccess], tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await provision(kafka, Namespace(prefix))  # topics and ACLs; no ingest service reads them
    source = tmp_path / "houses.csv"
    source.write_text("area,price\n50,1\n")
    env = stack_access("client").environment() | {"LEPTON_TOPIC_PREFIX": prefix}
    args = ("data", "ingest", str(source), "--name", "houses", "--tenant", "acme")
    result = lepton_cli(*args, "--timeout", "3", env=env)
    assert result.returncode == 1
    assert "waiting up to 3 s for the ingest service's answer to " in result.stderr
    assert "the ingest service did not answer request " in result.stderr
    assert "(dataset 'houses') within 3 s" in result.stderr
    assert "lepton status" in result.stderr
    assert "Traceback" not in result.stderr
