"""Helpers for the scheduler's integration tests: a namespace per test, records, readers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from lepton.bus import Publisher, ensure_topics
from lepton.config import KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.contract.topics import Namespace
from lepton.runtime.identity import master_key
from lepton.services.scheduler.app import create_app
from lepton.services.scheduler.settings import SchedulerSettings
from lepton.testing import impersonating, leased


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def heartbeat(
    node: str,
    *,
    sequence: int,
    cpu: int = 8000,
    memory: int = 16384,
    started: int = 1,
    sent: int | None = None,
    region: str = "local",
    busy_cpu: int = 0,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "node_id": node,
        "region": region,
        "labels": labels or {},
        "gpu_type": None,
        "capacity": {"cpu_millicores": cpu, "memory_mib": memory, "gpus": 0, "network_mbps": 1000},
        "usage": {"cpu_millicores": busy_cpu, "memory_mib": 0, "gpus": 0, "network_mbps": 0},
        "running_job_ids": [],
        "sent_at": sent if sent is not None else now_ms(),
        "sequence": sequence,
        "agent_started_at": started,
        "interval_ms": 1000,
    }


def job(job_id: str, *, cpu: int = 1000, memory: int = 1024, **extra: Any) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "tenant": extra.pop("tenant", "acme"),
        "priority_class": "normal",
        "priority": extra.pop("priority", 100),
        "task": {"kind": "train", "algorithm": "auto", "target_column": "price"},
        "dataset": extra.pop("dataset", None),
        "demand": {"cpu_millicores": cpu, "memory_mib": memory, "gpus": 0, "network_mbps": 0},
        "constraints": {},
        "submitted_at": now_ms(),
    } | extra


class Namespaced:
    """One test's topics, with a publisher and readers of the scheduler's outputs."""

    def __init__(self, kafka: KafkaAccess, codec: Codec, publisher: Publisher) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.names = Namespace(self.prefix)
        self.kafka = kafka
        self.codec = codec
        self.publisher = publisher
        self._author = impersonating()  # the configured master key, read once

    async def create(self) -> None:
        await ensure_topics(self.kafka, self.names.all())

    async def send(self, declared: str, key: str, record: dict[str, Any]) -> None:
        """Publish as its natural author would: a model with the lease it was trained under."""
        if declared == "lepton.models.ready" and record.get("lease") is None:
            record = leased(record, master_key(Settings()), self.names, self.codec)
        await self.publisher.publish(self.names.topic(declared), key, record)

    def encoded(
        self, declared: str, key: str, record: dict[str, Any]
    ) -> tuple[str, bytes, list[tuple[str, bytes]]]:
        """Topic name, Avro bytes and headers (signed by the record's natural author) of a
        record, to send later as they are (``Publisher.send_raw``)."""
        topic = self.names.topic(declared)
        value = self.codec.encode(topic.event, record)
        author = self._author(topic.name, key.encode(), record)
        signature = author.sign(topic.name, key.encode(), value)
        return topic.name, value, self.publisher.headers(topic.event) + signature

    def settings(self, kafka: KafkaAccess, database_url: str, **extra: Any) -> SchedulerSettings:
        return SchedulerSettings(
            **kafka.settings(),
            database_url=database_url,
            topic_prefix=self.prefix,
            **extra,
        )

    @asynccontextmanager
    async def heartbeats(
        self, node: str, every_s: float = 0.2, **shape: Any
    ) -> AsyncIterator[None]:
        """A node agent's heartbeat, every ``every_s``, for as long as the block runs."""

        async def beat(sequence: int) -> None:
            while True:
                await asyncio.sleep(every_s)
                sequence += 1
                await self.send(
                    "lepton.node.heartbeats", node, heartbeat(node, sequence=sequence, **shape)
                )

        # The first one is in the log before the block runs: the node exists from then on.
        await self.send("lepton.node.heartbeats", node, heartbeat(node, sequence=1, **shape))
        task = asyncio.create_task(beat(1))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @asynccontextmanager
    async def reader(self, declared: str) -> AsyncIterator[Reader]:
        consumer = AIOKafkaConsumer(
            self.names.topic(declared).name,
            **self.kafka.aiokafka(),
            group_id=None,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            yield Reader(consumer, self.codec)
        finally:
            await consumer.stop()


@asynccontextmanager
async def signed_space(
    kafka: KafkaAccess, codec: Codec, *, create: bool = True
) -> AsyncIterator[Namespaced]:
    """A test's own topics, with a publisher that signs each record as its natural author
    (:func:`lepton.testing.impersonating`): a module's ``space`` fixture. ``create=False``
    leaves creating them to the caller (a topic with settings of its own first)."""
    async with Publisher(kafka, codec, source="tests", signer=impersonating()) as publisher:
        namespaced = Namespaced(kafka, codec, publisher)
        if create:
            await namespaced.create()
        yield namespaced


class Reader:
    def __init__(self, consumer: AIOKafkaConsumer, codec: Codec) -> None:
        self.consumer = consumer
        self.codec = codec
        self.seen: list[dict[str, Any]] = []

    async def until(self, predicate: Any, timeout_s: float = 30) -> dict[str, Any]:
        """The first record (already seen or arriving) that satisfies ``predicate``."""
        checked = 0
        async with asyncio.timeout(timeout_s):
            while True:
                for record in self.seen[checked:]:
                    if predicate(record):
                        return record
                checked = len(self.seen)
                batch = await self.consumer.getmany(timeout_ms=200)
                for messages in batch.values():
                    self.seen.extend(self.codec.decode(m.value)[1] for m in messages)

    async def everything(self, timeout_s: float = 60) -> list[dict[str, Any]]:
        """Every record of the topic up to its end now (its end offsets when called)."""
        consumer = self.consumer
        partitions = [
            TopicPartition(topic, number)
            for topic in consumer.subscription()
            for number in consumer.partitions_for_topic(topic) or ()
        ]
        ends = await consumer.end_offsets(partitions)

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        async with asyncio.timeout(timeout_s):
            while await behind():
                for messages in (await consumer.getmany(timeout_ms=200)).values():
                    self.seen.extend(self.codec.decode(m.value)[1] for m in messages)
        return self.seen


@asynccontextmanager
async def running_scheduler(settings: SchedulerSettings) -> AsyncIterator[Any]:
    service = create_app(settings)
    task = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        yield service
    finally:
        service.stop_soon()
        await asyncio.wait_for(task, 60)


def assignment(
    job_id: str,
    node: str,
    tenant: str,
    dataset: dict[str, str] | None,
    *,
    epoch: int = 1,
    action: str = "run",
    worker_index: int = 0,
    gang_size: int = 1,
    **task: Any,
) -> dict[str, Any]:
    """A trainer's instruction (``JobAssigned``) to run a small ridge job."""
    return {
        "job_id": job_id,
        "node_id": node,
        "action": action,
        "worker_index": worker_index,
        "gang_size": gang_size,
        "lease_epoch": epoch,
        "attempt": 0,
        "granted": {"cpu_millicores": 1000, "memory_mib": 1024, "gpus": 0, "network_mbps": 0},
        "tenant": tenant,
        "task": {
            "kind": "train",
            "algorithm": "ridge",
            "target_column": "price",
            "problem_type": None,
            "search_space": None,
            "trial_budget": 4,
            "time_budget_s": 120,
            "cv_folds": 3,
            "scoring": None,
            "seed": 7,
            "model_name": None,
            "model_ref": None,
            "options": {},
        }
        | task,
        "dataset": dataset,
        "reason": None,
        "assigned_at": now_ms(),
    }


async def dead_letter_for(consumer: AIOKafkaConsumer, key: str) -> dict[str, str]:
    """The reason headers of the next dead letter with ``key`` that ``consumer`` reads."""
    async with asyncio.timeout(120):
        while True:
            message = await consumer.getone()
            if message.key == key.encode():
                return {name: value.decode("utf-8", "replace") for name, value in message.headers}
