"""Every service starts against the real stack, answers its health check and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from lepton.bus import ensure_topics
from lepton.config import KafkaAccess
from lepton.contract import default_codec
from lepton.contract.topics import Namespace
from tests.integration.processes import BIN, service_env, start

pytestmark = pytest.mark.integration


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        assert response.status == 200
        return response.read().decode()


def get_json(url: str) -> dict[str, Any]:
    return json.loads(get_text(url))


@pytest.mark.parametrize("service", ["scheduler", "ingest", "evaluator", "monitor"])
async def test_service_starts_answers_health_and_stops_on_sigterm(
    service: str, kafka: KafkaAccess, database_for
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    running = await start(
        [str(BIN / f"lepton-{service}")], service_env(kafka, database_for(service), prefix)
    )
    try:
        answer = await asyncio.to_thread(get_json, running.entry["url"])
        assert answer["service"] == service
        assert answer["status"] == "ok"
        metrics_url = running.entry["url"].replace("/healthz", "/metrics/")
        metrics = await asyncio.to_thread(get_text, metrics_url)
        assert "lepton_messages_total" in metrics
        # Bytes that are not HTTP (a Kafka client reconnecting to a port the health
        # server now holds): the HTTP server's warning is a JSON line like every other.
        url = urllib.parse.urlsplit(running.entry["url"])
        _, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(b"\x00\x00\x00\x0fnot http at all\r\n\r\n")
        await writer.drain()
        writer.close()
        await running.until(
            lambda entry: "Invalid HTTP request" in str(entry.get("event")),
            30,
            "the HTTP server's warning",
        )
    finally:
        status = await running.stop()
    assert status == 0
    assert "stopped" in running.events()
    raw = running.raw_lines()
    assert not raw, f"lines that are not JSON: {raw[:3]}"


async def test_trainer_agent_sends_heartbeats(kafka: KafkaAccess, database_for) -> None:
    node = f"node-{uuid.uuid4().hex[:8]}"
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka, Namespace(prefix).all())
    consumer = AIOKafkaConsumer(
        f"{prefix}lepton.node.heartbeats",
        **kafka.aiokafka(),
        auto_offset_reset="latest",
        group_id=None,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=100)  # take a position before the agent starts
    agent = await start(
        [
            str(BIN / "lepton-trainer"),
            "--node-id",
            node,
            "--cpus",
            "1.5",
            "--memory",
            "2048",
            "--label",
            "zone=a",
            "--interval",
            "0.2",
        ],
        service_env(kafka, database_for("trainer"), prefix),
    )
    beats: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60):
            while len(beats) < 2:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for message in messages:
                        if message.key == node.encode():
                            beats.append(default_codec().decode(message.value)[1])
    finally:
        await consumer.stop()
        await agent.stop()
    assert beats[0]["capacity"]["cpu_millicores"] == 1500
    assert beats[0]["capacity"]["memory_mib"] == 2048
    assert beats[0]["labels"] == {"zone": "a"}
    assert beats[1]["sequence"] == beats[0]["sequence"] + 1
    assert beats[1]["agent_started_at"] == beats[0]["agent_started_at"]
