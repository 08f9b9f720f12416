"""Kafka refuses whoever is not a Lepton principal, and each actor may do exactly what the
table in lepton/contract/topics.py says: tried against the real secured broker, as each
actor's own SASL user."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import confluent_kafka
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from lepton import devstack
from lepton.bus import (
    BrokerUnavailableError,
    Publisher,
    PublishError,
    TopicsMissingError,
    apply_acls,
    ensure_topics,
    live_grants,
    provision,
)
from lepton.config import Actor, KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.contract.topics import Grant, Namespace, Topic, grants
from lepton.runtime.service import Service
from tests.samples import sample

pytestmark = pytest.mark.integration

StackAccess = Callable[[Actor], KafkaAccess]


@pytest.fixture
async def names(kafka: KafkaAccess) -> Namespace:
    """A namespace of this test's own, provisioned by the admin as `lepton up` does."""
    names = Namespace(f"s{uuid.uuid4().hex[:10]}.")
    await provision(kafka, names)
    return names


async def produce(access: KafkaAccess, codec: Codec, names: Namespace, declared: str) -> None:
    """Publish one sample event on a declared topic as ``access``."""
    topic = names.topic(declared)
    async with Publisher(access, codec, source="tests", connect_timeout_s=10) as publisher:
        await asyncio.wait_for(publisher.publish(topic, "k", sample(topic.event)), 30)


# Each actor reads in a group it owns, so that a refusal is the topic's.
OWN_GROUP: dict[Actor, str] = {
    "scheduler": "lepton-scheduler",
    "ingest": "lepton-ingest",
    "trainer": "lepton-trainer-probe",
    "evaluator": "lepton-evaluator",
    "monitor": "lepton-monitor",
    "client": "lepton-plan",
}
READ = "read"
TOPIC_DENIED = confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED
GROUP_DENIED = confluent_kafka.KafkaError.GROUP_AUTHORIZATION_FAILED


def read_first(access: KafkaAccess, topic: Topic, group: str, *, join: bool) -> object:
    """Reads the first message of a topic as ``access``, in ``group`` (joining it, or only
    naming it); ``READ``, or the error code the broker answered (librdkafka hands it over
    as a message)."""
    consumer = confluent_kafka.Consumer(
        {
            **access.librdkafka(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        if join:
            consumer.subscribe([topic.name])
        else:
            consumer.assign(
                [
                    confluent_kafka.TopicPartition(topic.name, p, confluent_kafka.OFFSET_BEGINNING)
                    for p in range(topic.partitions)
                ]
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is None:
                return READ
            if error.code() != confluent_kafka.KafkaError._PARTITION_EOF:
                return error.code()
        raise AssertionError(f"nothing read from {topic.name} in 30 s")
    finally:
        consumer.close()


async def reads(
    stack_access: StackAccess, actor: Actor, names: Namespace, declared: str, *, join: str = ""
) -> object:
    """What ``actor`` gets reading the message the admin put on a topic, in the group
    ``join`` (else one the actor owns): ``READ``, or the broker's refusal. (Joining: a
    consumer that only assigns a topic it may not read waits in silence.)"""
    group = names.group(join or OWN_GROUP[actor])
    access = stack_access(actor)
    topic = names.topic(declared)
    return await asyncio.to_thread(read_first, access, topic, group, join=True)


async def test_unauthenticated_clients_are_refused(
    kafka: KafkaAccess, codec: Codec, names: Namespace
) -> None:
    anonymous = KafkaAccess(kafka.bootstrap)  # PLAINTEXT: the broker has no such listener
    with pytest.raises(BrokerUnavailableError, match="did not answer"):
        await produce(anonymous, codec, names, "lepton.jobs.requested")
    with pytest.raises(BrokerUnavailableError):
        await ensure_topics(anonymous, names.all(), connect_timeout_s=5)
    consumer = AIOKafkaConsumer(**anonymous.aiokafka(), request_timeout_ms=5000)
    with pytest.raises(Exception, match=r"(?i)connect|bootstrap"):
        await asyncio.wait_for(consumer.start(), 15)
    await consumer.stop()


async def test_a_wrong_password_is_refused_and_said_so(
    stack_access: StackAccess, codec: Codec, names: Namespace
) -> None:
    wrong = dataclasses.replace(stack_access("client"), password=SecretStr("not-the-password"))
    # librdkafka (the publisher) and aiokafka (the admin and readers) both say why.
    with pytest.raises(BrokerUnavailableError, match="refused the credentials"):
        await produce(wrong, codec, names, "lepton.jobs.requested")
    with pytest.raises(BrokerUnavailableError, match="refused the credentials"):
        await ensure_topics(wrong, names.all(), connect_timeout_s=10)


ALLOWED_WRITES = [
    ("trainer", "lepton.node.heartbeats"),
    ("scheduler", "lepton.jobs.assigned"),
    ("client", "lepton.jobs.requested"),
    ("evaluator", "lepton.models.promoted"),
]
REFUSED_WRITES = [
    ("trainer", "lepton.jobs.assigned"),  # the scheduler alone assigns work
    ("client", "lepton.models.evaluated"),  # the evaluator alone evaluates
    ("trainer", "lepton.models.promoted"),
    ("ingest", "lepton.jobs.events"),
    ("monitor", "lepton.data.ready"),
]


@pytest.mark.parametrize(("actor", "declared"), ALLOWED_WRITES)
async def test_an_actor_writes_what_the_table_grants(
    stack_access: StackAccess, codec: Codec, names: Namespace, actor: Actor, declared: str
) -> None:
    await produce(stack_access(actor), codec, names, declared)


@pytest.mark.parametrize(("actor", "declared"), REFUSED_WRITES)
async def test_an_actor_cannot_write_what_the_table_does_not_grant(
    stack_access: StackAccess, codec: Codec, names: Namespace, actor: Actor, declared: str
) -> None:
    with pytest.raises(PublishError, match=r"(?i)authoriz"):
        await produce(stack_access(actor), codec, names, declared)


async def test_reading_follows_the_table(
    kafka: KafkaAccess, stack_access: StackAccess, codec: Codec, names: Namespace
) -> None:
    await produce(kafka, codec, names, "lepton.jobs.assigned")
    await produce(kafka, codec, names, "lepton.audit")
    assigned = "lepton.jobs.assigned"
    assert await reads(stack_access, "trainer", names, assigned) == READ
    assert await reads(stack_access, "monitor", names, assigned) == READ
    for stranger in ("client", "ingest", "evaluator"):
        assert await reads(stack_access, stranger, names, assigned) == TOPIC_DENIED, stranger
    assert await reads(stack_access, "trainer", names, "lepton.audit") == TOPIC_DENIED


async def test_a_client_cannot_read_in_the_schedulers_group(
    kafka: KafkaAccess, stack_access: StackAccess, codec: Codec, names: Namespace
) -> None:
    await produce(kafka, codec, names, "lepton.jobs.events")
    events = "lepton.jobs.events"  # the client may read the topic itself
    assert await reads(stack_access, "client", names, events) == READ
    joined = await reads(stack_access, "client", names, events, join="lepton-scheduler")
    assert joined == GROUP_DENIED
    assert await reads(stack_access, "scheduler", names, events, join="lepton-scheduler") == READ


async def test_a_service_may_not_create_topics(stack_access: StackAccess) -> None:
    fresh = Namespace(f"s{uuid.uuid4().hex[:10]}.")
    with pytest.raises(TopicsMissingError, match="User:lepton-scheduler may not create it"):
        await ensure_topics(stack_access("scheduler"), fresh.all(), connect_timeout_s=10)


async def test_the_live_acls_are_the_table(kafka: KafkaAccess, names: Namespace) -> None:
    table = grants(names)
    assert await live_grants(kafka, table) == set(table)
    assert await apply_acls(kafka, table) == (0, 0), "applying again changes nothing"

    # An ACL the table does not hold, on one of its resources, is removed.
    extra = Grant("client", "topic", names.topic("lepton.jobs.assigned").name, "write")
    assert await apply_acls(kafka, [*table, extra]) == (1, 0)
    assert await apply_acls(kafka, table) == (0, 1)
    assert await live_grants(kafka, table) == set(table)


async def test_the_tls_stack_connects_only_with_its_ca(
    tmp_path_factory: pytest.TempPathFactory, codec: Codec
) -> None:
    settings = Settings(state_dir=tmp_path_factory.mktemp("tls-stack"), stack_kafka_tls=True)
    status = await asyncio.to_thread(devstack.up, settings)  # it runs an event loop of its own
    try:
        assert status.kafka_security_protocol == "SASL_SSL"
        admin = devstack.endpoints(settings).kafka
        assert admin.ssl_cafile is not None
        assert admin.ssl_cafile.is_file()
        keystore = Path(admin.ssl_cafile).with_name("broker.pem")
        assert keystore.stat().st_mode & 0o777 == 0o600

        names = Namespace("tls.")
        await provision(admin, names)
        client = devstack.endpoints(settings, "client").kafka
        await produce(client, codec, names, "lepton.jobs.requested")
        found = await asyncio.to_thread(
            read_first,
            client,
            names.topic("lepton.jobs.requested"),
            names.group("lepton-plan"),
            join=False,
        )
        assert found == READ

        # Without the stack's CA, the broker's certificate is not trusted.
        untrusting = dataclasses.replace(client, ssl_cafile=None)
        with pytest.raises(BrokerUnavailableError):
            await produce(untrusting, codec, names, "lepton.jobs.requested")
    finally:
        await asyncio.to_thread(devstack.down, settings)


def service_of(actor: Actor, settings: dict[str, object]) -> Service:
    """The service that acts as ``actor``, configured with ``settings``."""
    if actor == "scheduler":
        from lepton.services.scheduler.app import create_app as scheduler
        from lepton.services.scheduler.settings import SchedulerSettings

        return scheduler(SchedulerSettings(**settings))
    if actor == "ingest":
        from lepton.services.ingest.app import create_app as ingest
        from lepton.services.ingest.settings import IngestSettings

        return ingest(IngestSettings(**settings))
    if actor == "evaluator":
        from lepton.services.evaluator.app import create_app as evaluator
        from lepton.services.evaluator.settings import EvaluatorSettings

        return evaluator(EvaluatorSettings(**settings))
    if actor == "monitor":
        from lepton.services.monitor.app import create_app as monitor
        from lepton.services.monitor.settings import MonitorSettings

        return monitor(MonitorSettings(**settings, monitor_port=0))
    from lepton.services.trainer.app import create_app as trainer
    from lepton.services.trainer.node import NodeSpec
    from lepton.services.trainer.settings import TrainerSettings

    return trainer(NodeSpec("probe-node"), TrainerSettings(**settings))


@pytest.mark.parametrize("actor", ["scheduler", "ingest", "trainer", "evaluator", "monitor"])
async def test_each_service_starts_as_its_own_principal(
    stack_access: StackAccess,
    names: Namespace,
    database_for: Callable[[str], str],
    actor: Actor,
    tmp_path: Path,
) -> None:
    settings = {
        **stack_access(actor).settings(),
        "database_url": database_for(actor),
        "topic_prefix": names.prefix,
        "state_dir": tmp_path,
        "log_level": "warning",
    }
    service = service_of(actor, settings)
    running = asyncio.create_task(service.run())
    try:
        await asyncio.wait_for(asyncio.shield(service.ready.wait()), 60)
        assert not running.done(), running.exception()
    finally:
        service.stop_soon()
        await asyncio.wait_for(running, 60)
