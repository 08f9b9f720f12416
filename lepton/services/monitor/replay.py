"""From the bus into the monitor's state: the batch handler that folds each event in, and
the catch-up that replays what was committed after the restored snapshot was taken."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from lepton.contract.topics import ALL_TOPICS
from lepton.runtime import endpoints

if TYPE_CHECKING:
    from lepton.bus import Event
    from lepton.runtime.service import Context
    from lepton.services.monitor.settings import MonitorSettings
    from lepton.services.monitor.state import MonitorState

__all__ = ["EventFold", "catch_up"]


class EventFold:
    """The monitor's batch handler: every event of a fetch folded into the state; the
    loops read the state on their own schedule, so a flush has nothing to do."""

    def __init__(self, state: MonitorState, prefix_length: int) -> None:
        self._apply = state.apply
        assert state.positions is not None
        self._positions = state.positions
        self._skip = prefix_length

    def apply(self, event: Event) -> None:
        # Topics are shown by their declared names, whatever the installation's prefix.
        topic = event.topic[self._skip :]
        self._apply(event.type, topic, event.record)
        self._positions[topic, event.partition] = event.offset + 1

    async def flush(self) -> None:
        return None


async def catch_up(context: Context, settings: MonitorSettings, state: MonitorState) -> int:
    """Applies what the consumer group committed after the snapshot was taken.

    The group resumes from its committed offsets, the snapshot holds the state up to
    its own positions; after a crash the events in between would be lost from the
    view. They are read here, before the consumer starts, so each is applied once.
    """
    if state.positions is None:
        return 0  # a snapshot without positions: nothing to measure the gap against
    prefix = settings.topic_prefix
    kafka = endpoints.resolve(settings, "monitor").kafka
    admin = AIOKafkaAdminClient(**kafka.aiokafka(), client_id="lepton-monitor")
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(context.topics.group("lepton-monitor"))
    finally:
        await admin.close()
    declared = {context.topic(t.name).name: t for t in ALL_TOPICS}
    gaps: dict[TopicPartition, tuple[int | None, int]] = {}
    for partition, position in committed.items():
        if partition.topic in declared:
            start = state.positions.get((partition.topic[len(prefix) :], partition.partition))
            if start is None or position.offset > start:
                gaps[partition] = start, position.offset
    if not gaps:
        return 0
    codec = context.codec
    reader = AIOKafkaConsumer(
        **kafka.aiokafka(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await reader.start()
    replayed = 0
    try:
        reader.assign(list(gaps))
        for partition, (start, _) in gaps.items():
            if start is None:
                await reader.seek_to_beginning(partition)
            else:
                reader.seek(partition, start)
        remaining = {partition: end for partition, (_, end) in gaps.items()}
        while remaining:
            batches = await reader.getmany(*remaining, timeout_ms=1000)
            for partition, messages in batches.items():
                topic = partition.topic[len(prefix) :]
                for message in messages:
                    if message.offset >= remaining.get(partition, 0):
                        break
                    state.positions[topic, partition.partition] = message.offset + 1
                    try:
                        event_type, record = codec.decode(
                            message.value, expected=declared[partition.topic].event
                        )
                        state.apply(event_type, topic, record)
                    except Exception as exc:  # it was dead-lettered when first read
                        context.log.debug("skipped", topic=topic, error=repr(exc))
                        continue
                    replayed += 1
            for partition in list(remaining):
                if await reader.position(partition) >= remaining[partition]:
                    del remaining[partition]
    finally:
        await reader.stop()
    return replayed
