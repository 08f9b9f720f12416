"""A consumer group that is not Lepton's (a console consumer, a Kafka Connect worker)
reading Lepton's topics on the real broker: the monitor shows its lag but never alerts on
it, while a stalled group of Lepton's own does raise consumer_lag_seconds_high."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from lepton.bus import Publisher
from lepton.config import KafkaAccess
from tests.integration.test_monitor import (
    eventually,
    fresh_prefix,
    job_request,
    now_ms,
    running,
    settings_for,
    topic,
)

pytestmark = pytest.mark.integration

FOREIGN = ("console-consumer-4711", "connect-lepton-sink")
OWN = "lepton-ingest"  # stands for a service of Lepton's that stopped reading


async def stalled_group(
    kafka: KafkaAccess, group_id: str, partitions: list[TopicPartition]
) -> None:
    """A group that committed the start of ``partitions`` and read nothing since."""
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), group_id=group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.commit({partition: 0 for partition in partitions})
    finally:
        await consumer.stop()


async def test_a_foreign_consumer_group_never_raises_the_lag_alerts(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    async with running(settings_for(kafka, database_for("monitor"), prefix)) as service:
        monitor = service.monitor
        assert monitor is not None
        requested = topic(prefix, "lepton.jobs.requested")
        for index in range(3):
            await publisher.publish(
                requested, "same-key", job_request(f"j{index}", submitted_at=now_ms())
            )
        partitions = [
            TopicPartition(requested.name, number)
            for number in sorted(await publisher.partitions(requested.name))
        ]
        for group in (*FOREIGN, OWN):
            await stalled_group(kafka, prefix + group, partitions)
        subjects = {f"{group}/lepton.jobs.requested" for group in (*FOREIGN, OWN)}

        async def all_behind() -> bool | None:
            lag = monitor.state.lag
            seen = {f"{g}/{t}" for (g, t), behind in lag.items() if behind.messages == 3}
            return True if subjects <= seen else None

        await eventually(all_behind, what="the lag of every group")
        # The monitor's clock moves on while no group reads: 90 s (each is a minute and
        # a half behind, the condition holds), then 180 s (it has held long enough).
        for shift_ms in (90_000, 180_000):
            monitor.clock = lambda shift_ms=shift_ms: now_ms() + shift_ms
            checked_from = now_ms() + shift_ms

            async def measured_since(checked_from: int = checked_from) -> bool | None:
                checked = monitor.state.pipeline_checked_at
                return True if checked is not None and checked >= checked_from else None

            await eventually(measured_since, what="a lag reading at the shifted clock")

        def firing() -> set[tuple[str, str]]:
            return {(alert.rule, alert.subject) for alert in monitor.engine.firing()}

        async def own_alert() -> set[tuple[str, str]] | None:
            found = firing()
            return (
                found
                if ("consumer_lag_seconds_high", f"{OWN}/lepton.jobs.requested") in found
                else None
            )

        found = await eventually(
            own_alert, timeout_s=60, what=f"consumer_lag_seconds_high for {OWN}"
        )
        assert {subject.partition("/")[0] for _, subject in found} == {OWN}
        # Still shown: the foreign groups' lag is on the monitor's view and /metrics.
        for group in FOREIGN:
            assert monitor.state.lag[group, "lepton.jobs.requested"].seconds > 60
