"""Helpers shared by the ingest integration tests: a running service and its events."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from lepton.bus import Publisher
from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.contract.topics import Namespace, dead_letter_topic
from lepton.services.ingest.app import create_app
from lepton.services.ingest.settings import IngestSettings
from lepton.testing import impersonating

MASTER_KEY = base64.b64encode(b"k" * 32).decode()


def request(
    tenant: str,
    dataset: str,
    sources: list[dict[str, Any]],
    *,
    spec: str | None = None,
    integration: dict[str, Any] | None = None,
    request_id: str | None = None,
    region: str | None = None,
) -> dict[str, Any]:
    return {
        "request_id": request_id or uuid.uuid4().hex,
        "tenant": tenant,
        "dataset": dataset,
        "sources": [{"query": None, "options": {}, "uri": None, **source} for source in sources],
        "spec": spec,
        "integration": integration or {"mode": "union", "join_keys": [], "join_how": "inner"},
        "region": region,
        "description": None,
        "requested_at": 1767225600000,
        "requested_by": "tests",
    }


@dataclass
class Running:
    prefix: str
    names: Namespace
    publisher: Publisher
    kafka: KafkaAccess
    codec: Codec
    root: Path
    consumers: dict[str, AIOKafkaConsumer] = field(default_factory=dict)

    async def send(self, record: dict[str, Any]) -> None:
        await self.publisher.publish(
            self.names.topic("lepton.data.requested"),
            f"{record['tenant']}/{record['dataset']}",
            record,
        )

    async def next(
        self, topic: str, *, request_id: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The next event on the prefixed topic (for ``request_id`` when given)."""
        consumer = self.consumers[topic]
        async with asyncio.timeout(90):
            while True:
                message = await consumer.getone()
                _, record = self.codec.decode(message.value)
                if request_id is None or record.get("request_id") == request_id:
                    return message.topic, record

    async def outcome(self, request_id: str) -> tuple[str, dict[str, Any]]:
        """data.ready or data.rejected for the request, whichever comes."""
        ready = asyncio.create_task(self.next("lepton.data.ready", request_id=request_id))
        rejected = asyncio.create_task(self.next("lepton.data.rejected", request_id=request_id))
        dead = asyncio.create_task(self.dead_letter())
        done, pending = await asyncio.wait(
            {ready, rejected, dead}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        topic, record = done.pop().result()
        assert not topic.endswith(".dlq"), f"the request was dead-lettered: {record}"
        return ("ready" if topic.endswith("data.ready") else "rejected"), record

    async def dead_letter(self) -> tuple[str, dict[str, Any]]:
        message = await self.consumers["lepton.data.requested.dlq"].getone()
        headers = {key: value.decode(errors="replace") for key, value in message.headers}
        return message.topic, headers

    async def submit(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        await self.send(record)
        return await self.outcome(record["request_id"])


@asynccontextmanager
async def consumers(
    kafka: KafkaAccess, names: Namespace
) -> AsyncIterator[dict[str, AIOKafkaConsumer]]:
    opened = {}
    try:
        for topic in (
            "lepton.data.ready",
            "lepton.data.rejected",
            "lepton.audit",
            "lepton.audit.dlq",
            "lepton.data.requested.dlq",
        ):
            name = (
                names.topic(topic).name
                if not topic.endswith(".dlq")
                else dead_letter_topic(names.topic(topic.removesuffix(".dlq")).name)
            )
            consumer = AIOKafkaConsumer(
                name,
                **kafka.aiokafka(),
                auto_offset_reset="earliest",
                enable_auto_commit=False,
            )
            await consumer.start()
            opened[topic] = consumer
        yield opened
    finally:
        for consumer in opened.values():
            await consumer.stop()


async def delete_topics(kafka: KafkaAccess, prefix: str) -> None:
    """Remove a test's topics: unique prefixes would otherwise pile up partitions (and open
    files) on a shared broker."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def settings(
    kafka: KafkaAccess, database_url: str, prefix: str, root: Path, **extra: Any
) -> IngestSettings:
    values: dict[str, Any] = {
        **kafka.settings(),
        "database_url": database_url,
        "topic_prefix": prefix,
        "ingest_roots": [root],
        "master_key": MASTER_KEY,
        "ingest_postgres_sources": {"warehouse": database_url},
    }
    return IngestSettings(**(values | extra))


@asynccontextmanager
async def running_ingest(
    kafka: KafkaAccess,
    database_url: str,
    codec: Codec,
    root: Path,
    *,
    prefix: str | None = None,
    **extra: Any,
) -> AsyncIterator[Running]:
    """The ingest service on its own topics (under ``prefix``, a new one by default)."""
    prefix = prefix or unique_prefix()
    service = create_app(settings(kafka, database_url, prefix, root, **extra))
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    names = Namespace(prefix)
    try:
        async with (
            Publisher(kafka, codec, source="tests", signer=impersonating()) as publisher,
            consumers(kafka, names) as opened,
        ):
            yield Running(prefix, names, publisher, kafka, codec, root, opened)
    finally:
        service.stop_soon()
        await task
        await delete_topics(kafka, prefix)


async def as_tenant_fetch(pool: asyncpg.Pool, tenant: str, query: str, *args: Any) -> list[Any]:
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SET LOCAL ROLE lepton_tenant")
        await connection.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)
        return list(await connection.fetch(query, *args))


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


def unique_tenant() -> str:
    return "tenant-" + uuid.uuid4().hex[:8]


os.environ.setdefault("LEPTON_MASTER_KEY", MASTER_KEY)
