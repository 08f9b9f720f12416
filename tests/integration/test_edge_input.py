"""Names, numbers and heartbeats checked where they come in, against the real broker: the
monitor and the scheduler refuse what no producer of the contract writes (dead-lettered
with the field at fault), the monitor's node table is bounded, and many nodes dead at once
are one alert."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from lepton.bus import Publisher
from lepton.config import KafkaAccess
from lepton.contract import default_codec
from lepton.contract.codec import Codec
from lepton.contract.identity import Principal
from lepton.contract.topics import dead_letter_topic
from tests.integration.scheduler_support import Namespaced, job, running_scheduler
from tests.integration.scheduler_support import heartbeat as node_beat
from tests.integration.test_bus import read_raw
from tests.integration.test_monitor import (
    beating_for_a_minute,
    fresh_prefix,
    get,
    heartbeat,
    job_event,
    json_when,
    key_of,
    now_ms,
    running,
    settings_for,
    topic,
)

pytestmark = pytest.mark.integration

YEAR_9999_MS = 253_402_300_799_000
NEGATIVE = {"cpu_millicores": -64_000, "memory_mib": 8192, "gpus": 0, "network_mbps": 0}


def reasons(letters: list[Any]) -> list[tuple[bytes, str]]:
    """(error type, message) of each dead letter."""
    return [
        (dict(m.headers)["dlq_error_type"], dict(m.headers)["dlq_error_message"].decode())
        for m in letters
    ]


async def alerts_until_quiet(consumer: AIOKafkaConsumer, quiet_s: float) -> list[dict[str, Any]]:
    """Every alert on the topic, read until none arrived for ``quiet_s``."""
    codec = default_codec()
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while batch := await consumer.getmany(timeout_ms=int(quiet_s * 1000)):
            for messages in batch.values():
                found.extend(dict(codec.decode(m.value)[1]) for m in messages)
    return found


async def test_the_monitor_refuses_impossible_records_bounds_its_nodes_and_raises_one_alert(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    beats = topic(prefix, "lepton.node.heartbeats")
    events = topic(prefix, "lepton.jobs.events")
    settings = settings_for(kafka, database_for("monitor"), prefix, monitor_max_nodes=50)
    alerts = AIOKafkaConsumer(
        topic(prefix, "lepton.alerts").name,
        **kafka.aiokafka(),
        group_id=None,
        auto_offset_reset="earliest",
    )
    async with running(settings) as monitor:
        assert monitor.url is not None
        now = now_ms()
        negative = heartbeat("neg", sent_at=now) | {"capacity": NEGATIVE}
        await publisher.publish(beats, "neg", negative)
        await publisher.publish(beats, "future", heartbeat("future", sent_at=YEAR_9999_MS))
        ghost = job_event("ghost", "failed", time=now, node_id="n1", reason="x" * 200_000)
        await publisher.publish(events, "ghost", ghost)
        # One node beating for a minute, and known to the monitor before the flood (the
        # flood's partitions could otherwise be read first and fill the table); then 120
        # nodes nobody knows, a minute behind it: past the table's bound of 50.
        await publisher.publish_many(beats, beating_for_a_minute("alive", now))
        await json_when(monitor.url, "/api/nodes/alive", lambda n: n["sequence"] == 7)
        flood = [(f"flood-{i}", heartbeat(f"flood-{i}", sent_at=now - 60_000)) for i in range(120)]
        await publisher.publish_many(beats, flood)

        letters = reasons(await read_raw(kafka, dead_letter_topic(beats.name), 2))
        assert {kind for kind, _ in letters} == {b"InvalidField"}
        assert sorted(message.split(":")[0] for _, message in letters) == [
            "capacity.cpu_millicores",
            "sent_at",
        ]
        [(kind, message)] = reasons(await read_raw(kafka, dead_letter_topic(events.name), 1))
        assert kind == b"InvalidField"
        assert message.startswith("reason: must be text of at most 1024 characters")
        overview = await json_when(
            monitor.url, "/api/overview", lambda o: o["nodes"]["total"] == 50
        )
        assert overview["nodes"]["alive"] == 1
        for refused in ("neg", "future"):
            assert (await get(monitor.url, f"/api/nodes/{refused}"))[0] == 404

        await alerts.start()
        try:
            fired = await alerts_until_quiet(alerts, quiet_s=3.0)
        finally:
            await alerts.stop()
    dead = [a for a in fired if a["rule"] == "node_dead" and a["state"] == "firing"]
    # One alert for the nodes that stopped at once, not one each (a first evaluation may
    # catch the first few of them alone, never more than the group's threshold).
    grouped = [a for a in dead if a["subject"] == "*"]
    assert len(grouped) == 1, dead
    assert len(dead) <= 21
    assert grouped[0]["value"] >= 30
    assert "at once" in grouped[0]["summary"]


async def test_the_scheduler_refuses_bad_names_zero_demands_bulky_job_events_and_future_beats(
    kafka: KafkaAccess, codec: Codec, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    space = Namespaced(kafka, codec, publisher)
    await space.create()
    events_topic = space.names.topic("lepton.jobs.events").name
    beats_topic = space.names.topic("lepton.node.heartbeats").name
    # A 10,000-character tenant is no principal: an operator's tool sends it for the tenant.
    operator = key_of(Principal("operator", "tests"))
    async with (
        Publisher(kafka, codec, source="tests", signer=operator) as as_operator,
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
    ):
        await space.send("lepton.jobs.requested", "zero", job("zero", memory=0))
        tabbed = job("tabbed", dataset={"name": "house\tprices", "version": None})
        await space.send("lepton.jobs.requested", "tabbed", tabbed)
        long_tenant = job("long", tenant="t" * 10_000)
        await as_operator.publish(space.names.topic("lepton.jobs.requested"), "long", long_tenant)
        for job_id, field in (
            ("zero", "demand.memory_mib"),
            ("tabbed", "dataset.name"),
            ("long", "tenant"),
        ):
            rejected = await events.until(
                lambda r, j=job_id: r["job_id"] == j and r["kind"] == "rejected"
            )
            assert rejected["field"] == field, rejected

        for index in range(5):
            bulky = job_event(f"ghost-{index}", "failed", time=now_ms(), node_id="n1")
            await space.send(
                "lepton.jobs.events", f"ghost-{index}", bulky | {"reason": "x" * 200_000}
            )
        await space.send(
            "lepton.node.heartbeats", "future", node_beat("future", sequence=1, sent=YEAR_9999_MS)
        )
        letters = reasons(await read_raw(kafka, dead_letter_topic(events_topic), 5))
        [beat_letter] = reasons(await read_raw(kafka, dead_letter_topic(beats_topic), 1))
    assert {kind for kind, _ in letters} == {b"InvalidField"}
    assert all(message.startswith("reason: must be text of at most 1024") for _, message in letters)
    assert beat_letter[0] == b"InvalidField"
    assert beat_letter[1].startswith("sent_at: ")


async def test_ingest_answers_a_dataset_name_that_is_no_name_with_a_rejection(
    kafka: KafkaAccess, database_for: Callable[[str], str], codec: Codec, tmp_path: Path
) -> None:
    from tests.integration.ingest_support import request, running_ingest, unique_tenant

    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        outcome, record = await ingest.submit(
            request(
                unique_tenant(),
                "house\tprices\u202e",
                [{"name": "s", "kind": "csv", "uri": "x.csv"}],
            )
        )
    assert outcome == "rejected"
    assert record["code"] == "spec_invalid"
    assert record["reason"].startswith("dataset: character 6 (U+0009)")
