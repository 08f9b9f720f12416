"""The *pipeline* loop: consumer lag and dead-letter counts from the broker's offsets."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import confluent_kafka
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from lepton.bus import PublishError
from lepton.contract.topics import ALL_TOPICS, dead_letter_topic
from lepton.runtime import endpoints
from lepton.services.monitor.entities import Lag

if TYPE_CHECKING:
    from lepton.runtime.service import Context
    from lepton.services.monitor.settings import MonitorSettings
    from lepton.services.monitor.views import Monitor

__all__ = ["OUTAGES", "LagTracker", "PipelineWatch"]

# What a loop survives and retries at its next turn: the broker or database being away
# (aiokafka's and librdkafka's words for it, a publish librdkafka gave up on).
OUTAGES = (
    OSError,
    KafkaError,
    confluent_kafka.KafkaException,
    PublishError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    TimeoutError,
)


@dataclass(slots=True)
class _Progress:
    time_ms: int
    committed: int
    advanced_at: int


class LagTracker:
    """Lag of each (group, topic) in messages, and in seconds estimated from how fast the
    group has been committing (or, when it stalled, from how long ago it last moved)."""

    def __init__(self) -> None:
        self._progress: dict[tuple[str, str], _Progress] = {}

    def update(self, key: tuple[str, str], committed: int, end: int, now: int) -> Lag:
        messages = max(0, end - committed)
        before = self._progress.get(key)
        self._progress[key] = progress = _Progress(now, committed, now)
        seconds: float | None = 0.0 if messages == 0 else None
        if before is not None and messages > 0:
            moved = committed - before.committed
            if moved > 0 and now > before.time_ms:
                seconds = messages / (moved / ((now - before.time_ms) / 1000))
            else:
                progress.advanced_at = before.advanced_at
                seconds = (now - before.advanced_at) / 1000
        return Lag(messages, seconds, committed, end)


class PipelineWatch:
    """Reads, every ``LEPTON_MONITOR_LAG_INTERVAL_S``, how far each consumer group is behind
    and how many messages the dead-letter topics hold, into the monitor's state."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self._lag = LagTracker()

    async def run(self, context: Context, monitor: Monitor) -> None:
        kafka = endpoints.resolve(self.settings, "monitor").kafka
        admin = AIOKafkaAdminClient(**kafka.aiokafka(), client_id="lepton-monitor")
        offsets = AIOKafkaConsumer(**kafka.aiokafka(), group_id=None, enable_auto_commit=False)
        await admin.start()
        await offsets.start()
        try:
            while True:
                try:
                    await self._read(context, monitor, admin, offsets)
                except OUTAGES as exc:
                    context.log.warning("pipeline check failed", error=repr(exc))
                await asyncio.sleep(self.settings.monitor_lag_interval_s)
        finally:
            await offsets.stop()
            await admin.close()

    async def _read(
        self,
        context: Context,
        monitor: Monitor,
        admin: AIOKafkaAdminClient,
        offsets: AIOKafkaConsumer,
    ) -> None:
        prefix = self.settings.topic_prefix
        declared = {context.topic(t.name).name: t.name for t in ALL_TOPICS}
        dead_letters = {dead_letter_topic(name): source for name, source in declared.items()}
        partitions = [
            TopicPartition(name, number)
            for name in [*declared, *dead_letters]
            for number in sorted(await context.publisher.partitions(name))
        ]
        ends = await offsets.end_offsets(partitions)
        begins = await offsets.beginning_offsets(partitions)
        now = monitor.clock()
        lag: dict[tuple[str, str], Lag] = {}
        for group_id, *_ in await admin.list_consumer_groups():
            if not group_id.startswith(prefix):
                continue
            committed = await admin.list_consumer_group_offsets(group_id)
            totals: dict[str, tuple[int, int]] = {}
            for partition, position in committed.items():
                if partition.topic not in declared or partition not in ends:
                    continue
                done = position.offset if position.offset >= 0 else begins[partition]
                total = totals.get(partition.topic, (0, 0))
                totals[partition.topic] = total[0] + done, total[1] + ends[partition]
            for topic, (done, end) in totals.items():
                key = group_id[len(prefix) :], declared[topic]
                lag[key] = self._lag.update(key, done, end, now)
        counts: dict[str, int] = {}
        for partition in partitions:
            source = dead_letters.get(partition.topic)
            if source is not None:
                held = ends[partition] - begins[partition]
                counts[source] = counts.get(source, 0) + held
        monitor.state.set_pipeline(lag, counts, now)
