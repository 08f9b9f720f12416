"""The demo's flow (``make demo``) against every service, each started as ``lepton up``
starts it: two trainer agents of different sizes, ingest, scheduler, evaluator, monitor.

A recorder reads every topic the flow touches while ``lepton.cli.demo.run`` drives it through
the SDK, and the test checks each example's events, in order: requested, queued,
assigned, started, progress, succeeded, model ready, evaluated, promoted, prediction.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from lepton.bus import ensure_topics
from lepton.cli import demo
from lepton.config import KafkaAccess, Settings
from lepton.contract.topics import Namespace
from lepton.testing import service_codec
from tests.integration.processes import BIN, data_service_env, running

pytestmark = pytest.mark.integration

RECORDED = (
    "lepton.jobs.requested",
    "lepton.jobs.events",
    "lepton.jobs.assigned",
    "lepton.models.ready",
    "lepton.models.evaluated",
    "lepton.models.promoted",
    "lepton.predict.requested",
    "lepton.predict.results",
)


@pytest.fixture
async def cluster(
    kafka: KafkaAccess, database_for: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[tuple[Settings, Path]]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka, Namespace(prefix).all())
    env = data_service_env(kafka, database_for("client"), prefix, tmp_path)
    trainer = str(BIN / "lepton-trainer")
    commands = [
        ([str(BIN / "lepton-ingest")], "health"),
        ([str(BIN / "lepton-scheduler")], "health"),
        ([str(BIN / "lepton-evaluator")], "health"),
        ([trainer, "--node-id", "small", "--cpus", "1", "--memory", "2048"], "health"),
        ([trainer, "--node-id", "large", "--cpus", "2", "--memory", "4096"], "health"),
        ([str(BIN / "lepton-monitor")], "dashboard"),
    ]
    async with running(commands, env, database_for) as started:
        settings = Settings(
            **kafka.settings(),
            database_url=database_for("client"),
            topic_prefix=prefix,
            monitor_url=started[-1].entry["url"].rstrip("/"),
        )
        yield settings, tmp_path


async def record(
    settings: Settings, into: list[tuple[str, dict[str, Any]]], arrived: asyncio.Condition
) -> None:
    """Every message on the recorded topics, decoded, as (declared topic, record); each
    arrival is announced on ``arrived``."""
    names = Namespace(settings.topic_prefix)
    declared = {names.topic(name).name: name for name in RECORDED}
    consumer = AIOKafkaConsumer(
        *declared, **settings.kafka_access().aiokafka(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        codec = service_codec()  # opens every tenant's answers
        async for message in consumer:
            async with arrived:
                into.append((declared[message.topic], codec.decode(message.value)[1]))
                arrived.notify_all()
    finally:
        await consumer.stop()


def first(seen: list[tuple[str, dict[str, Any]]], topic: str, **match: Any) -> dict[str, Any]:
    found = [r for t, r in seen if t == topic and all(r[k] == v for k, v in match.items())]
    assert found, f"no {topic} with {match}"
    return found[0]


async def test_the_demo_flow_produces_every_event_in_order(
    cluster: tuple[Settings, Path],
) -> None:
    settings, inbox = cluster
    seen: list[tuple[str, dict[str, Any]]] = []
    arrived = asyncio.Condition()
    recorder = asyncio.create_task(record(settings, seen, arrived))
    lines: list[str] = []
    try:
        reports = await demo.run(
            settings, inbox, lines.append, tenant_prefix=f"e2e{uuid.uuid4().hex[:6]}-"
        )
        # The SDK read its answers on its own consumer: the recorder may still be behind.
        answered = {request for report in reports for request in report.request_ids}

        def all_answers_recorded() -> bool:
            recorded = {r["request_id"] for t, r in seen if t == "lepton.predict.results"}
            return answered <= recorded

        async with asyncio.timeout(60), arrived:
            await arrived.wait_for(all_answers_recorded)
    finally:
        recorder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recorder
    assert [r.example.dataset for r in reports] == [e.dataset for e in demo.EXAMPLES]

    for report in reports:
        requested = first(seen, "lepton.jobs.requested", job_id=report.job_id)
        # One job's events share a key, hence a partition: this is their order on the log.
        events = [r for t, r in seen if t == "lepton.jobs.events" and r["job_id"] == report.job_id]
        kinds = [e["kind"] for e in events]
        progress = kinds.count("progress")
        assert progress >= 3
        assert kinds == ["queued", "assigned", "started", *["progress"] * progress, "succeeded"]
        assert kinds == report.events  # the SDK followed the same events
        assigned = first(seen, "lepton.jobs.assigned", job_id=report.job_id)
        assert assigned["node_id"] == events[1]["node_id"]
        assert requested["submitted_at"] <= events[0]["time"]
        times = [e["time"] for e in events]
        assert times == sorted(times)

        # The model is stored and announced before its job is declared succeeded, so that a
        # succeeded job always has its model; the succeeded event names it.
        ready = first(seen, "lepton.models.ready", job_id=report.job_id)
        assert events[-1]["model_id"] == ready["model_id"] == report.model["model_id"]
        assert events[2]["time"] <= ready["ready_at"] <= events[-1]["time"]

        evaluated = first(seen, "lepton.models.evaluated", model_id=ready["model_id"])
        assert evaluated["holdout_rows"] > 0
        assert evaluated["evaluated_at"] >= ready["ready_at"]
        promoted = first(seen, "lepton.models.promoted", model_id=ready["model_id"])
        assert promoted["verdict"] == "promoted"  # a fresh tenant: the first model wins
        assert promoted["decided_at"] >= evaluated["evaluated_at"]

        asked = first(seen, "lepton.predict.requested", request_id=report.request_ids[0])
        answer = first(seen, "lepton.predict.results", request_id=report.request_ids[0])
        assert asked["model"] == f"{report.example.model_name}@champion"
        assert promoted["decided_at"] <= asked["requested_at"] <= answer["scored_at"]
        assert answer["model_id"] == ready["model_id"]
        assert answer["error"] is None

    houses, diagnosis = reports
    # The seed's question: a 150 m² 普通住宅 in B区 (about 45,000 yuan per m² there).
    assert isinstance(houses.prediction, float)
    assert 4_000_000 < houses.prediction < 10_000_000
    assert diagnosis.prediction in {"0", "1"}
    assert set(diagnosis.probabilities) == {"0", "1"}
    assert any(line.startswith("prediction for a 150 m² 普通住宅 in B区") for line in lines)
