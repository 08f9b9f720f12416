"""Whether the scheduler took a run's lease back while its agent could not hear it.

An agent that was silent past ``LEPTON_TRAINER_LEASE_S`` (paused, cut off) may have been
declared dead meanwhile: the scheduler then requeued its jobs and sent each of their
leases a stop, to this node's partition of ``lepton.jobs.assigned``. Before reporting a
run that overlapped such a silence, the agent reads its partition from the run's own
instruction up to the end *now*: a stop for the run's lease, or a newer lease of its
job, means the result is void. No such instruction (every node was silent at once, which
the scheduler takes for its own fault and requeues nothing for) means the run still
holds its lease and reports as usual.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiokafka import AIOKafkaConsumer, TopicPartition

from lepton.contract.codec import DecodeError

if TYPE_CHECKING:
    from lepton.config import KafkaAccess
    from lepton.contract.codec import Codec
    from lepton.services.trainer.runs import RunKey

__all__ = ["revocation"]


async def revocation(
    kafka: KafkaAccess,
    codec: Codec,
    where: tuple[str, int, int],
    key: RunKey,
    timeout_s: float,
) -> str | None:
    """Why the run ``key`` lost its lease, if an instruction after its own (``where``:
    topic, partition, offset) says so; None if none does. Raises :class:`TimeoutError`
    when the partition cannot be read to its end within ``timeout_s``."""
    topic, partition, offset = where
    job_id, epoch, _worker = key
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), group_id=None, enable_auto_commit=False)
    async with asyncio.timeout(timeout_s):
        await consumer.start()
        try:
            place = TopicPartition(topic, partition)
            consumer.assign([place])
            consumer.seek(place, offset + 1)
            end = (await consumer.end_offsets([place]))[place]
            while await consumer.position(place) < end:
                for message in (await consumer.getmany(place, timeout_ms=500)).get(place, []):
                    try:
                        _, record = codec.decode(message.value, expected="lepton.JobAssigned")
                    except DecodeError:  # not ours to judge: the agent dead-letters it
                        continue
                    if record["job_id"] != job_id:
                        continue
                    if record["lease_epoch"] > epoch:
                        return f"the job was given lease {record['lease_epoch']} since"
                    if record["action"] == "stop" and record["lease_epoch"] == epoch:
                        return str(record.get("reason") or "stopped by the scheduler")
        finally:
            await consumer.stop()
    return None
