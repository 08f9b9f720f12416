"""Every service starts against the real stack, answers its health check and stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from lepton.bus import ensure_topics
from lepton.contract import default_codec
from lepton.topics import Namespace

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


async def start(
    command: list[str], bootstrap: str, database_url: str, prefix: str
) -> tuple[Any, dict[str, Any]]:
    """Start a service under a topic prefix of its own; returns it and its ``health`` log."""
    env = {
        **os.environ,
        "LEPTON_KAFKA_BOOTSTRAP": bootstrap,
        "LEPTON_DATABASE_URL": database_url,
        "LEPTON_TOPIC_PREFIX": prefix,
        "LEPTON_MONITOR_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        *command, stderr=asyncio.subprocess.PIPE, env=env
    )
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = await process.stderr.readline()
            assert line, f"{command[0]} exited early with {await process.wait()}"
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == "health":
                return process, entry


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        assert response.status == 200
        return response.read().decode()


def get_json(url: str) -> dict[str, Any]:
    return json.loads(get_text(url))


@pytest.mark.parametrize("service", ["scheduler", "ingest", "evaluator", "monitor"])
async def test_service_starts_answers_health_and_stops_on_sigterm(
    service: str, bootstrap: str, database_url: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    process, health = await start([str(BIN / f"lepton-{service}")], bootstrap, database_url, prefix)
    try:
        answer = await asyncio.to_thread(get_json, health["url"])
        assert answer["service"] == service
        assert answer["status"] == "ok"
        metrics_url = health["url"].replace("/healthz", "/metrics/")
        metrics = await asyncio.to_thread(get_text, metrics_url)
        assert "lepton_messages_total" in metrics
    finally:
        assert process.stderr is not None
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            remaining = await process.stderr.read()
            assert await process.wait() == 0
    events = [json.loads(line)["event"] for line in remaining.splitlines() if line.startswith(b"{")]
    assert "stopped" in events


async def test_trainer_agent_sends_heartbeats(bootstrap: str, database_url: str) -> None:
    node = f"node-{uuid.uuid4().hex[:8]}"
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(bootstrap, Namespace(prefix).all())
    consumer = AIOKafkaConsumer(
        f"{prefix}lepton.node.heartbeats",
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        group_id=None,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=100)  # take a position before the agent starts
    process, _ = await start(
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
        bootstrap,
        database_url,
        prefix,
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
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            await process.communicate()
    assert beats[0]["capacity"]["cpu_millicores"] == 1500
    assert beats[0]["capacity"]["memory_mib"] == 2048
    assert beats[0]["labels"] == {"zone": "a"}
    assert beats[1]["sequence"] == beats[0]["sequence"] + 1
    assert beats[1]["agent_started_at"] == beats[0]["agent_started_at"]
