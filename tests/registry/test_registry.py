"""Lepton and a real schema registry (Apicurio Registry, started by conftest.py) on the
real stack: the contract registered completely and idempotently, registry-framed requests
accepted by the real scheduler, registry-framed events written by it, an unknown schema
id dead-lettered with the reason."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from lepton.config import KafkaAccess, Settings
from lepton.contract import default_codec, schemas_dir
from lepton.contract.codec import Codec
from lepton.contract.registry import (
    CONTRACT_COMPATIBILITY,
    RegistryIds,
    RegistryRefusedError,
    SchemaRegistry,
    attach_registry,
    register_contract,
    subject,
)
from lepton.contract.topics import ALL_TOPICS, Namespace, dead_letter_topic
from lepton.contract.vectors import schema_file_stem
from lepton.testing import impersonating
from tests.integration.scheduler_support import (
    Namespaced,
    heartbeat,
    job,
    running_scheduler,
    signed_space,
)
from tests.integration.test_java_interop import avro_json
from tests.registry.conftest import RegistryServer, Serde, running_registry

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def versions_kept() -> dict[str, int]:
    """How many versions each event type has: its history plus the current one."""
    counts = {topic.event: 1 for topic in ALL_TOPICS}
    for path in schemas_dir().glob("history/*/*.avsc"):
        definition = json.loads(path.read_text(encoding="utf-8"))
        counts[f"{definition['namespace']}.{definition['name']}"] += 1
    return counts


def latest(registry: SchemaRegistry, topic: str) -> dict[str, Any]:
    """The latest version of the topic's subject: its id and schema text."""
    found = httpx.get(f"{registry.url}/subjects/{subject(topic)}/versions/latest").json()
    assert isinstance(found, dict)
    return found


def serialized(serde: Serde, server: RegistryServer, topic: str, record: dict[str, Any]) -> bytes:
    """``record`` as the registry-aware serializer writes it to ``topic``."""
    event = next(t.event for t in ALL_TOPICS if topic.endswith(t.name))
    schema = schemas_dir() / f"{schema_file_stem(event)}.avsc"
    # Every field spelled out (Avro's JSON encoding has no defaults): through the codec.
    codec = default_codec()
    record = codec.decode(codec.encode(event, record))[1]
    [value] = serde.run(
        "serialize", server, topic, [json.dumps(avro_json(event, record))], str(schema)
    )
    return bytes.fromhex(value)


@pytest.fixture
def registry(registry_server: RegistryServer) -> Iterator[SchemaRegistry]:
    with SchemaRegistry(registry_server.url) as client:
        yield client


@asynccontextmanager
async def registered_space(
    kafka: KafkaAccess, registry: SchemaRegistry
) -> AsyncIterator[tuple[Namespaced, Codec]]:
    """A test's own topics, their schemas registered, and a codec that reads what a
    registry-aware writer wrote to them."""
    async with signed_space(kafka, default_codec()) as space:
        register_contract(registry, space.names)
        ids = RegistryIds(registry, space.codec, space.names, write=False)
        ids.prepare()
        yield space, space.codec.with_registry(ids)


async def send_signed(
    space: Namespaced, declared: str, key: str, value: bytes, record: Any
) -> None:
    """Send ``value`` as it is, signed by the record's natural author over those bytes."""
    topic = space.names.topic(declared)
    author = impersonating()(topic.name, key.encode(), record)
    headers = space.publisher.headers(topic.event) + author.sign(topic.name, key.encode(), value)
    await space.publisher.send_raw(topic.name, key.encode(), value, headers)


@asynccontextmanager
async def raw_reader(kafka: KafkaAccess, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        topic, **kafka.aiokafka(), group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


def test_register_is_complete_idempotent_and_enforces_the_contract(
    registry_server: RegistryServer, registry: SchemaRegistry
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    names = Namespace(prefix)
    # Another tool registered the current JobRequested first, laid out its own way: it is
    # the same schema, not a version to add.
    current = json.loads((schemas_dir() / "job_requested.avsc").read_text(encoding="utf-8"))
    registry.register(subject(prefix + "lepton.jobs.requested"), json.dumps(current, indent=2))
    first = register_contract(registry, names)

    counts = versions_kept()
    subjects = set(httpx.get(f"{registry.url}/subjects").json())
    codec = default_codec()
    for topic in ALL_TOPICS:
        name = subject(prefix + topic.name)
        assert name in subjects
        versions = httpx.get(f"{registry.url}/subjects/{name}/versions").json()
        assert len(versions) == counts[topic.event], name
        assert registry.compatibility(name) == CONTRACT_COMPATIBILITY
        # The latest version is the current schema (its fingerprint is the codec's).
        reparsed = Codec([json.loads(latest(registry, prefix + topic.name)["schema"])])
        assert reparsed.schema(topic.event).fingerprint == codec.schema(topic.event).fingerprint
    assert sum(done.added for done in first) == sum(counts.values()) - 1

    # Again, through the CLI: nothing is added, the ids stay.
    again = subprocess.run(
        [sys.executable, "-m", "lepton", "contract", "register", "--registry", registry.url],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "LEPTON_TOPIC_PREFIX": prefix},
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert f"{len(ALL_TOPICS)} subjects, 0 versions added" in again.stdout
    for done in first:
        assert f"{done.subject}: ids {', '.join(map(str, done.ids))}; 0 added" in again.stdout

    # The registry enforces the contract's compatibility: a field without a default is refused.
    current["fields"].append({"name": "surprise", "type": "string"})
    with pytest.raises(RegistryRefusedError, match="409"):
        registry.register(subject(prefix + "lepton.jobs.requested"), json.dumps(current))


async def test_a_registry_aware_serializers_request_is_accepted_by_the_scheduler(
    kafka, database_for, registry: SchemaRegistry, registry_server: RegistryServer, serde: Serde
) -> None:
    async with registered_space(kafka, registry) as (space, codec):
        await space.send("lepton.node.heartbeats", "n1", heartbeat("n1", sequence=1, cpu=4000))
        settings = space.settings(
            kafka, database_for("scheduler"), schema_registry_url=registry.url
        )
        request = job("r1", cpu=1000)
        requests = space.names.topic("lepton.jobs.requested").name
        value = serialized(serde, registry_server, requests, request)
        assert value[:5] == b"\x00" + int(latest(registry, requests)["id"]).to_bytes(4, "big")
        async with running_scheduler(settings), space.reader("lepton.jobs.events") as events:
            await send_signed(space, "lepton.jobs.requested", "r1", value, request)
            events.codec = codec
            assigned = await events.until(lambda r: r["job_id"] == "r1" and r["kind"] == "assigned")
    assert assigned["node_id"] == "n1"


async def test_in_write_mode_lepton_writes_what_a_registry_aware_deserializer_reads(
    kafka, database_for, registry: SchemaRegistry, registry_server: RegistryServer, serde: Serde
) -> None:
    async with registered_space(kafka, registry) as (space, codec):
        await space.send("lepton.node.heartbeats", "n1", heartbeat("n1", sequence=1, cpu=4000))
        settings = space.settings(
            kafka,
            database_for("scheduler"),
            schema_registry_url=registry.url,
            schema_registry_write=True,
        )
        events_topic = space.names.topic("lepton.jobs.events").name
        async with (
            running_scheduler(settings),
            raw_reader(kafka, events_topic) as events,
        ):
            await space.send("lepton.jobs.requested", "w1", job("w1", cpu=1000))
            message = await events.getone()
    # The scheduler's "queued" event, as a registry-aware deserializer reads it...
    [line] = serde.run("deserialize", registry_server, events_topic, [message.value.hex()])
    record = json.loads(line)
    assert record["job_id"] == "w1"
    assert record["kind"] == "queued"
    assert message.value[1:5] == int(latest(registry, events_topic)["id"]).to_bytes(4, "big")
    # ... signed over those bytes, and read by Lepton in registry mode too.
    headers = dict(message.headers)
    assert headers["lepton-principal"] == b"service:scheduler"
    assert codec.decode(message.value)[1]["job_id"] == "w1"


async def test_an_unknown_schema_id_is_dead_lettered_with_the_reason(
    kafka, database_for, registry: SchemaRegistry, registry_server: RegistryServer, serde: Serde
) -> None:
    async with registered_space(kafka, registry) as (space, _):
        settings = space.settings(
            kafka, database_for("scheduler"), schema_registry_url=registry.url
        )
        request = job("u1")
        requests = space.names.topic("lepton.jobs.requested").name
        value = serialized(serde, registry_server, requests, request)
        unknown = b"\x00" + (2**31 - 1).to_bytes(4, "big") + value[5:]
        async with (
            running_scheduler(settings),
            raw_reader(kafka, dead_letter_topic(requests)) as letters,
        ):
            await send_signed(space, "lepton.jobs.requested", "u1", unknown, request)
            letter = await letters.getone()
    headers = dict(letter.headers)
    assert letter.value == unknown
    assert headers["dlq_error_type"] == b"UnknownSchemaIdError"
    assert b"schema id 2147483647 is not in the schema registry" in headers["dlq_error_message"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_a_service_waits_out_a_registry_that_is_down(tmp_path: Path) -> None:
    """What a service does at start in registry mode (lepton.runtime): the registry's ids
    are awaited, with back-off, until it answers; it does not fail."""
    port = free_port()
    prefix = f"t{uuid.uuid4().hex[:10]}."
    settings = Settings(
        schema_registry_url=f"http://127.0.0.1:{port}/apis/ccompat/v7",
        schema_registry_write=True,
        topic_prefix=prefix,
    )
    retrying = asyncio.Event()

    class Retries(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "trying again" in record.getMessage():
                retrying.set()

    logger = logging.getLogger("lepton.contract.registry")
    handler = Retries(logging.WARNING)
    logger.addHandler(handler)
    try:
        waiting = asyncio.create_task(attach_registry(default_codec(), settings, Namespace(prefix)))
        await asyncio.wait_for(retrying.wait(), 30)
        assert not waiting.done()
        with running_registry(tmp_path / "late.log", port) as late:
            with SchemaRegistry(late.url) as client:
                register_contract(client, Namespace(prefix))
                writer_id = int(latest(client, prefix + "lepton.jobs.requested")["id"])
            codec = await asyncio.wait_for(waiting, 90)
    finally:
        logger.removeHandler(handler)
    encoded = codec.encode("lepton.JobRequested", job("late"))
    assert encoded[:5] == b"\x00" + writer_id.to_bytes(4, "big")
