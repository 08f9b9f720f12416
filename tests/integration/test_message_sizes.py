"""Message sizes against the real broker: a record over its topic's ``max.message.bytes`` is
refused before it is sent, and a message just under the broker's limit is still
dead-lettered (cut to fit) instead of stopping the subscriber."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from lepton.bus import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    MessageTooLargeError,
    Publisher,
    UnsendableRecordError,
    ensure_topics,
    message_bytes,
    provision,
)
from lepton.config import KafkaAccess
from lepton.contract.topics import Namespace, Topic, dead_letter_topic
from tests.integration.test_bus import collector, read_raw, subscribed
from tests.samples import sample

pytestmark = pytest.mark.integration


async def end_offset(kafka: KafkaAccess, topic: str) -> int:
    consumer = AIOKafkaConsumer(**kafka.aiokafka(), group_id=None)
    await consumer.start()
    try:
        where = TopicPartition(topic, 0)
        return int((await consumer.end_offsets([where]))[where])
    finally:
        await consumer.stop()


def _garbage(size: int) -> bytes:
    """Bytes that no reader decodes (an unknown schema fingerprint), of ``size``."""
    return (b"\xc3\x01" + bytes(range(256)) * (size // 256 + 1))[:size]


@pytest.mark.parametrize("size", [1_040_000, None], ids=["issue-1040000", "broker-limit"])
async def test_a_message_just_under_the_broker_limit_is_dead_lettered_and_the_stream_goes_on(
    kafka, codec, publisher, make_topic, unique, size
) -> None:
    """The issue's crash loop: 1,040,000 bytes fit the input topic, but its dead letter did
    not (librdkafka's own 1,000,000-byte limit), and the subscriber stopped on
    MSG_SIZE_TOO_LARGE. A message as large as the topic takes (``None``) cannot carry the
    reason headers besides: its dead letter is cut to fit, and says so."""
    topic = await make_topic("lepton.DatasetRequested")
    origin = [("origin", b"outside")]
    if size is None:
        size = KAFKA_DEFAULT_MAX_MESSAGE_BYTES - message_bytes(b"huge", b"", origin)
    huge = _garbage(size)
    good = codec.encode(topic.event, sample(topic.event))
    await publisher.send_raw(topic.name, b"huge", huge, origin)
    await publisher.send_raw(topic.name, b"after", good, [])

    received, enough, handle = collector(1)
    async with subscribed(kafka, codec, publisher, topic, unique("g"), handle) as sub:
        await asyncio.wait_for(enough.wait(), 30)
    assert [event.key for event in received] == ["after"], "the stream went on"
    assert sub.dead_lettered == 1

    (letter,) = await read_raw(kafka, dead_letter_topic(topic.name), 1)
    headers = dict(letter.headers)
    assert headers["dlq_error_type"] == b"UnknownFingerprintError"
    assert headers["dlq_source_topic"] == topic.name.encode()
    assert headers["origin"] == b"outside", "the original headers fit, so they are kept"
    assert letter.key == b"huge"
    if size == 1_040_000:
        assert letter.value == huge, "it fits whole, so it is kept whole"
        assert "dlq_truncated" not in headers
        return
    assert headers["dlq_truncated"] == b"value"
    assert headers["dlq_original_value_bytes"] == str(size).encode()
    assert headers["dlq_original_value_sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert size - 10_000 < len(letter.value) < size
    assert huge.startswith(letter.value), "the dead letter keeps the value's beginning"


async def test_a_record_over_its_topic_limit_is_refused_before_anything_is_sent(
    kafka, codec, publisher, unique
) -> None:
    topic = Topic(
        unique("rejected"), "lepton.DataRejected", "test key", 1, {"max.message.bytes": "20000"}
    )
    await ensure_topics(kafka, [topic], with_dead_letters=False)
    small = sample(topic.event)
    large = {**small, "reason": "x" * 30_000}

    with pytest.raises(MessageTooLargeError) as refused:
        await publisher.publish(topic, "t/d", large)
    assert refused.value.limit == 20_000, "the limit is the topic's own, read from the broker"
    assert refused.value.size > 30_000
    with pytest.raises(MessageTooLargeError) as refused:
        await publisher.publish_many(topic, [("t/d", small), ("t/d", large), ("t/d", small)])
    assert refused.value.index == 1
    assert await end_offset(kafka, topic.name) == 0, "nothing of the batch was sent"

    with pytest.raises(UnsendableRecordError) as invalid:
        await publisher.publish(topic, "t/d", {**small, "row": "not a number"})
    assert invalid.value.index == 0
    await publisher.publish(topic, "t/d", small)
    assert await end_offset(kafka, topic.name) == 1


async def test_a_service_weighs_against_its_topic_own_limit_read_under_its_acls(
    kafka, stack_access, codec
) -> None:
    """A service reads the configuration of the topics it writes (its ACLs allow it), so a
    topic's own limit binds it, not Kafka's default."""
    names = Namespace(f"s{uuid.uuid4().hex[:10]}.")
    ready = names.topic("lepton.data.ready")
    await ensure_topics(kafka, [dataclasses.replace(ready, config={"max.message.bytes": "20000"})])
    await provision(kafka, names)
    async with Publisher(stack_access("ingest"), codec, source="tests") as ingest:
        assert await ingest.max_message_bytes(ready.name) == 20_000
        with pytest.raises(MessageTooLargeError, match="20,000-byte limit"):
            await ingest.publish(ready, "t/d", {**sample(ready.event), "location": "x" * 30_000})
