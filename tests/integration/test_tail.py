"""`lepton tail` on a dead-letter topic: each entry with why it was set aside and a summary
of the bytes, read as the operator (the client's principal may not read dead letters)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from lepton.bus import ensure_topics
from lepton.config import Actor, KafkaAccess, Settings
from lepton.contract.topics import Namespace
from tests.integration.processes import lepton_cli

pytestmark = pytest.mark.integration

GARBAGE = b"\xc3\x01not avro at all" + bytes(200)


async def test_tail_reads_a_dead_letter_topic_with_its_reasons(
    kafka: KafkaAccess,
    stack_settings: Settings,
    stack_access: Callable[[Actor], KafkaAccess],
    tmp_path: Path,
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka, Namespace(prefix).all())
    producer = AIOKafkaProducer(**kafka.aiokafka())
    await producer.start()
    try:
        # As a service's subscriber sets a message aside: its key, value and the reasons.
        await producer.send_and_wait(
            f"{prefix}lepton.data.requested.dlq",
            GARBAGE,
            key=b"acme",
            headers=[
                ("ce_type", b"lepton.DatasetRequested"),
                ("dlq_error_type", b"DecodeError"),
                ("dlq_error_message", b"unknown schema fingerprint 6e6f7420"),
                ("dlq_source_topic", f"{prefix}lepton.data.requested".encode()),
                ("dlq_source_partition", b"2"),
                ("dlq_source_offset", b"41"),
                ("dlq_time", b"2026-12-04T18:00:00Z"),
            ],
        )
    finally:
        await producer.stop()

    local_stack = stack_settings.kafka_access() is None
    # The operator: on the local stack the CLI reads dead letters as its administrator.
    operator = (
        {"LEPTON_STATE_DIR": str(stack_settings.state_dir)} if local_stack else kafka.environment()
    )
    args = ("tail", "lepton.data.requested.dlq", "--from-beginning", "--max", "1")
    tailed = lepton_cli(*args, "--timeout", "60", env=operator | {"LEPTON_TOPIC_PREFIX": prefix})
    assert tailed.returncode == 0, tailed.stderr
    entry = json.loads(tailed.stdout.splitlines()[0])
    assert entry["topic"] == f"{prefix}lepton.data.requested.dlq"
    assert entry["key"] == "acme"
    assert entry["dead_letter"] == {
        "error_type": "DecodeError",
        "error_message": "unknown schema fingerprint 6e6f7420",
        "source_topic": f"{prefix}lepton.data.requested",
        "source_partition": "2",
        "source_offset": "41",
        "time": "2026-12-04T18:00:00Z",
    }
    assert entry["value"] == {"bytes": len(GARBAGE), "head": GARBAGE[:64].hex()}
    assert "error" in entry, "the value does not decode, and the line says why"

    # A client's principal has no ACL on dead letters: a clear refusal, not a hang.
    client = stack_access("client")
    refused = lepton_cli(
        *args, "--timeout", "5", env=client.environment() | {"LEPTON_TOPIC_PREFIX": prefix}
    )
    assert refused.returncode == 1
    assert "lepton.data.requested.dlq does not exist, or lepton-client may not read it" in (
        refused.stderr
    )


def test_tail_names_the_dead_letter_topics_among_those_it_knows(tmp_path: Path) -> None:
    unknown = lepton_cli("tail", "lepton.nothing.dlq", env={"LEPTON_STATE_DIR": str(tmp_path)})
    assert unknown.returncode == 1
    assert "unknown topic 'lepton.nothing.dlq'" in unknown.stderr
    assert "or any of them with .dlq" in unknown.stderr
