"""The bus against the real broker: round trips, headers, dead letters, redelivery."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from lepton.bus import (
    BatchHandler,
    Event,
    Publisher,
    Selective,
    Subscriber,
    TransientError,
    current_trace,
    ensure_topics,
    partition_for,
)
from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.contract.topics import ALL_TOPICS, Topic, dead_letter_topic
from tests.samples import sample

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def subscribed(
    kafka: KafkaAccess,
    codec: Codec,
    publisher: Publisher,
    topic: Topic,
    group: str,
    handler: Callable[[Event], Awaitable[None]] | BatchHandler,
    **options: Any,
) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber(
        kafka, codec, publisher, topics=[topic], group_id=group, handler=handler, **options
    )
    await subscriber.start()
    task = asyncio.create_task(subscriber.run())
    try:
        yield subscriber
    finally:
        subscriber.stop_soon()
        await task
        await subscriber.close()


async def read_raw(kafka: KafkaAccess, topic: str, count: int) -> list[Any]:
    """The first ``count`` messages of ``topic``, as aiokafka returns them."""
    consumer = AIOKafkaConsumer(
        topic, **kafka.aiokafka(), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        messages: list[Any] = []
        async with asyncio.timeout(30):
            while len(messages) < count:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    messages.extend(records)
        return messages
    finally:
        await consumer.stop()


def collector(count: int) -> tuple[list[Event], asyncio.Event, Callable[[Event], Awaitable[None]]]:
    received: list[Event] = []
    enough = asyncio.Event()

    async def handle(event: Event) -> None:
        received.append(event)
        if len(received) >= count:
            enough.set()

    return received, enough, handle


@pytest.mark.parametrize("topic_spec", ALL_TOPICS, ids=lambda topic: topic.event)
async def test_every_schema_round_trips_through_the_broker(
    topic_spec: Topic, kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic(topic_spec.event)
    record = sample(topic_spec.event)
    received, enough, handle = collector(1)
    await publisher.publish(topic, "key-1", record)
    async with subscribed(kafka, codec, publisher, topic, unique("g"), handle):
        await asyncio.wait_for(enough.wait(), 30)
    event = received[0]
    assert event.type == topic_spec.event
    assert event.record == codec.decode(codec.encode(topic_spec.event, record))[1]
    assert event.key == "key-1"
    assert event.headers["ce_type"] == topic_spec.event.encode()
    assert event.headers["ce_specversion"] == b"1.0"
    assert event.headers["ce_source"] == b"tests"
    assert len(event.headers["ce_id"]) == 32
    assert event.trace_id is not None
    assert len(event.trace_id) == 32


async def test_what_a_handler_publishes_continues_its_trace(
    kafka, codec, publisher, make_topic, unique
) -> None:
    first = await make_topic("lepton.JobRequested")
    second = await make_topic("lepton.JobEvent")
    await publisher.publish(first, "job-1", sample("lepton.JobRequested"))

    async def forward(event: Event) -> None:
        await publisher.publish(second, "job-1", sample("lepton.JobEvent"))

    received, enough, handle = collector(1)
    async with (
        subscribed(kafka, codec, publisher, first, unique("fwd"), forward),
        subscribed(kafka, codec, publisher, second, unique("end"), handle),
    ):
        await asyncio.wait_for(enough.wait(), 30)
    (original,) = await read_raw(kafka, first.name, 1)
    origin_trace = dict(original.headers)["traceparent"].decode().split("-")[1]
    assert received[0].trace_id == origin_trace


async def test_corrupt_bytes_are_dead_lettered_and_the_stream_goes_on(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.NodeHeartbeat")
    good = codec.encode(topic.event, sample(topic.event))
    wrong_schema = codec.encode("lepton.JobRequested", sample("lepton.JobRequested"))
    unknown_fingerprint = b"\xc3\x01" + bytes(8) + good[10:]
    poison = [
        (b"truncated", good[:-3]),
        (b"not-avro", b"{'json': 'perhaps'}"),
        (b"unknown-fingerprint", unknown_fingerprint),
        (b"wrong-schema", wrong_schema),
    ]
    await publisher.send_raw(topic.name, b"before", good, [])
    for key, value in poison:
        await publisher.send_raw(topic.name, key, value, [("origin", b"test")])
    await publisher.send_raw(topic.name, b"after", good, [])

    received, enough, handle = collector(2)
    async with subscribed(kafka, codec, publisher, topic, unique("g"), handle) as sub:
        await asyncio.wait_for(enough.wait(), 30)
    assert [event.key for event in received] == ["before", "after"]
    assert sub.dead_lettered == len(poison)

    letters = await read_raw(kafka, dead_letter_topic(topic.name), len(poison))
    by_key = {letter.key: letter for letter in letters}
    expected_errors = {
        b"truncated": "TruncatedMessageError",
        b"not-avro": "CorruptMessageError",
        b"unknown-fingerprint": "UnknownFingerprintError",
        b"wrong-schema": "WrongSchemaError",
    }
    for key, value in poison:
        letter = by_key[key]
        headers = dict(letter.headers)
        assert letter.value == value, "the dead letter keeps the original bytes"
        assert headers["origin"] == b"test", "and the original headers"
        assert headers["dlq_error_type"].decode() == expected_errors[key]
        assert headers["dlq_source_topic"].decode() == topic.name
        assert headers["dlq_source_partition"] == b"0"
        assert int(headers["dlq_source_offset"]) >= 1
        assert topic.name in headers["dlq_error_message"].decode(), "the reason names the topic"
        assert headers["dlq_time"]


async def test_a_failing_handler_dead_letters_the_message_and_goes_on(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    for key in ("ok-1", "bad", "ok-2"):
        await publisher.publish(topic, key, sample(topic.event))
    handled: list[str | None] = []
    done = asyncio.Event()

    async def handle(event: Event) -> None:
        if event.key == "bad":
            raise ValueError("priority class 'urgent' is not configured")
        handled.append(event.key)
        if len(handled) == 2:
            done.set()

    async with subscribed(kafka, codec, publisher, topic, unique("g"), handle):
        await asyncio.wait_for(done.wait(), 30)
    assert handled == ["ok-1", "ok-2"]
    (letter,) = await read_raw(kafka, dead_letter_topic(topic.name), 1)
    headers = dict(letter.headers)
    assert letter.key == b"bad"
    assert headers["dlq_error_type"] == b"ValueError"
    assert headers["dlq_error_message"] == b"priority class 'urgent' is not configured"
    assert headers["ce_type"] == topic.event.encode(), "original CloudEvents headers are kept"
    assert (
        codec.decode(letter.value)[1]
        == codec.decode(codec.encode(topic.event, sample(topic.event)))[1]
    )


async def test_a_transient_failure_is_retried_not_dead_lettered(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    await publisher.publish(topic, "flaky", sample(topic.event))
    attempts = 0
    done = asyncio.Event()

    async def handle(event: Event) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise TransientError("database restarting")
        done.set()

    async with subscribed(kafka, codec, publisher, topic, unique("g"), handle) as sub:
        await asyncio.wait_for(done.wait(), 30)
    assert attempts == 3
    assert sub.dead_lettered == 0


async def test_a_consumer_that_dies_before_committing_gets_the_message_again(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    group = unique("redelivery")
    await publisher.publish(topic, "job-1", sample(topic.event))
    await publisher.publish(topic, "job-2", sample(topic.event))
    in_handler = asyncio.Event()

    async def die_mid_handling(event: Event) -> None:
        in_handler.set()
        await asyncio.Event().wait()  # never returns: the consumer dies in here

    first = Subscriber(
        kafka, codec, publisher, topics=[topic], group_id=group, handler=die_mid_handling
    )
    await first.start()
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(in_handler.wait(), 30)
    task.cancel()  # the process dies: no commit happens
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await first.close()

    received, enough, handle = collector(2)
    async with subscribed(kafka, codec, publisher, topic, group, handle):
        await asyncio.wait_for(enough.wait(), 30)
    assert [event.key for event in received] == ["job-1", "job-2"]


async def test_a_stopped_consumer_commits_what_it_handled(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    group = unique("graceful")
    await publisher.publish(topic, "job-1", sample(topic.event))
    _received, enough, handle = collector(1)
    async with subscribed(kafka, codec, publisher, topic, group, handle):
        await asyncio.wait_for(enough.wait(), 30)
    await publisher.publish(topic, "job-2", sample(topic.event))
    received_again, enough_again, handle_again = collector(1)
    async with subscribed(kafka, codec, publisher, topic, group, handle_again):
        await asyncio.wait_for(enough_again.wait(), 30)
    assert [event.key for event in received_again] == ["job-2"]


async def test_creating_topics_twice_is_harmless(kafka, unique) -> None:
    topics = [
        Topic(unique("a"), "lepton.Alert", "k", 2, {"cleanup.policy": "compact"}),
        Topic(unique("b"), "lepton.AuditEvent", "k", 3),
    ]
    first, second = await asyncio.gather(ensure_topics(kafka, topics), ensure_topics(kafka, topics))
    third = await ensure_topics(kafka, topics)
    expected = {t.name for t in topics} | {dead_letter_topic(t.name) for t in topics}
    assert set(first) | set(second) == expected
    assert third == []


async def test_send_many_keeps_per_key_order_and_the_default_partitioning(
    kafka, codec, publisher, make_topic
) -> None:
    topic = await make_topic("lepton.NodeHeartbeat", partitions=4)
    template = sample(topic.event)
    events = [
        (f"node-{i % 7}", {**template, "node_id": f"node-{i % 7}", "sequence": i})
        for i in range(3000)
    ]
    assert await publisher.publish_many(topic, events) == 3000
    await publisher.publish(topic, "node-3", {**template, "node_id": "node-3", "sequence": -1})

    messages = await read_raw(kafka, topic.name, 3001)
    partition_of: dict[bytes, int] = {}
    sequences: dict[bytes, list[int]] = {}
    for message in messages:
        assert partition_of.setdefault(message.key, message.partition) == message.partition
        sequences.setdefault(message.key, []).append(codec.decode(message.value)[1]["sequence"])
        assert dict(message.headers)["ce_type"] == topic.event.encode()
    for i in range(7):
        key = f"node-{i}".encode()
        expected = list(range(i, 3000, 7)) + ([-1] if i == 3 else [])
        assert sequences[key] == expected, "one key's events arrive in the order sent"
    # `send` (aiokafka's partitioner) put node-3's last event where send_many put the rest.
    assert len({m.partition for m in messages if m.key == b"node-3"}) == 1


async def test_a_keyed_subscriber_reads_only_its_keys_partition(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobAssigned", partitions=12)
    record = sample(topic.event, 1)
    await publisher.publish_many(topic, [(f"node-{i}", record) for i in range(30)])
    received: list[Event] = []
    first, second = asyncio.Event(), asyncio.Event()

    async def handle(event: Event) -> None:
        received.append(event)
        (first if len(received) == 1 else second).set()

    subscriber = Subscriber(
        kafka,
        codec,
        publisher,
        topics=[topic],
        group_id=unique("agent"),
        handler=handle,
        only_key="node-7",
    )
    await subscriber.start()
    try:
        assert await subscriber.assignment() == {
            TopicPartition(topic.name, partition_for(b"node-7", 12))
        }
        task = asyncio.create_task(subscriber.run())
        await asyncio.wait_for(first.wait(), 30)
        await publisher.publish(topic, "node-7", record)  # one more, sent while it runs
        await asyncio.wait_for(second.wait(), 30)
        subscriber.stop_soon()
        await task
    finally:
        await subscriber.close()
    assert [event.key for event in received] == ["node-7", "node-7"]


async def test_a_replaying_subscriber_reads_everything_each_start_and_says_when_caught_up(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobEvent", partitions=3)
    history = [(f"job-{i}", sample(topic.event)) for i in range(9)]
    await publisher.publish_many(topic, history)
    for _ in range(2):  # a restart reads it all again: nothing was committed
        received: list[Event] = []

        async def handle(event: Event, into: list[Event] = received) -> None:
            into.append(event)

        subscriber = Subscriber(
            kafka,
            codec,
            publisher,
            topics=[topic],
            group_id=unique("replayer"),
            handler=handle,
            replay=True,
        )
        await subscriber.start()
        task = asyncio.create_task(subscriber.run())
        try:
            await asyncio.wait_for(subscriber.caught_up.wait(), 30)
            assert sorted(event.key for event in received) == sorted(key for key, _ in history)
        finally:
            subscriber.stop_soon()
            await task
            await subscriber.close()


async def test_a_replaying_subscriber_of_empty_topics_is_caught_up_at_once(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobEvent", partitions=2)

    async def handle(event: Event) -> None:
        raise AssertionError("nothing to read")

    subscriber = Subscriber(
        kafka,
        codec,
        publisher,
        topics=[topic],
        group_id=unique("r"),
        handler=handle,
        replay=True,
    )
    await subscriber.start()
    try:
        assert subscriber.caught_up.is_set()
    finally:
        await subscriber.close()


class Batches:
    """A batch handler that records what it was given, and fails where it is told to."""

    def __init__(
        self, want: int, *, poison_key: str | None = None, flush_failures: list[Exception] = ()
    ) -> None:
        self.applied: list[Event] = []
        self.traces: list[bytes | None] = []
        self.flushed: list[int] = []  # events applied before each flush
        self.want = want
        self.poison_key = poison_key
        self.flush_failures = list(flush_failures)
        self.enough = asyncio.Event()
        self.tried = asyncio.Event()  # a flush was tried

    def apply(self, event: Event) -> None:
        if event.key == self.poison_key:
            raise ValueError(f"cannot apply {event.key}")
        self.applied.append(event)
        self.traces.append(current_trace())

    async def flush(self) -> None:
        self.flushed.append(len(self.applied))
        self.tried.set()
        if self.flush_failures:
            raise self.flush_failures.pop(0)
        if len(self.applied) >= self.want:
            self.enough.set()


async def test_a_batch_handler_applies_a_fetch_in_partition_order_then_flushes_once(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobEvent", partitions=3)
    events = [(f"job-{i % 5}", {**sample(topic.event), "attempt": i}) for i in range(300)]
    await publisher.publish_many(topic, events)
    batches = Batches(len(events))
    group = unique("batch")
    async with subscribed(kafka, codec, publisher, topic, group, batches) as sub:
        await asyncio.wait_for(batches.enough.wait(), 30)
    assert isinstance(batches, BatchHandler)
    attempts: dict[str | None, list[int]] = {}
    for event in batches.applied:
        attempts.setdefault(event.key, []).append(event.record["attempt"])
    for key, seen in attempts.items():
        assert seen == sorted(seen), f"{key}'s events are applied in the order sent"
    assert len(batches.applied) == len(events)
    assert len(batches.flushed) < len(events), "one flush per fetch, not per event"
    assert sub.handled == len(events)
    assert batches.traces == [event.headers["traceparent"] for event in batches.applied], (
        "while an event is applied, its trace is the current one"
    )
    # Everything flushed was committed: the group has nothing left to read.
    await publisher.publish(topic, "job-last", sample(topic.event))
    after = Batches(1)
    async with subscribed(kafka, codec, publisher, topic, group, after):
        await asyncio.wait_for(after.enough.wait(), 30)
    assert [event.key for event in after.applied] == ["job-last"]


async def test_a_batch_dead_letters_what_fails_to_decode_or_apply_and_keeps_the_rest(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    good = codec.encode(topic.event, sample(topic.event))
    await publisher.send_raw(topic.name, b"ok-1", good, [])
    await publisher.send_raw(topic.name, b"truncated", good[:-3], [("origin", b"test")])
    await publisher.send_raw(topic.name, b"bad", good, [("origin", b"test")])
    await publisher.send_raw(topic.name, b"ok-2", good, [])
    batches = Batches(2, poison_key="bad")
    async with subscribed(kafka, codec, publisher, topic, unique("g"), batches) as sub:
        await asyncio.wait_for(batches.enough.wait(), 30)
    assert [event.key for event in batches.applied] == ["ok-1", "ok-2"]
    assert sub.dead_lettered == 2
    letters = await read_raw(kafka, dead_letter_topic(topic.name), 2)
    by_key = {letter.key: dict(letter.headers) for letter in letters}
    assert by_key[b"truncated"]["dlq_error_type"] == b"TruncatedMessageError"
    assert by_key[b"bad"]["dlq_error_type"] == b"ValueError"
    assert by_key[b"bad"]["dlq_error_message"] == b"cannot apply bad"
    for headers in by_key.values():
        assert headers["origin"] == b"test", "the original headers are kept"
        assert headers["dlq_source_topic"].decode() == topic.name


class Turning(Batches):
    """A batch handler that turns down, unread, what carries its own ``ce_source``."""

    def __init__(self, want: int, source: bytes) -> None:
        super().__init__(want)
        self.source = source
        self.asked: list[str] = []

    def wants(self, topic: str, headers: Sequence[tuple[str, bytes]]) -> bool:
        self.asked.append(topic)
        return ("ce_source", self.source) not in headers


async def test_a_selective_handler_turns_messages_down_before_they_are_decoded(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    good = codec.encode(topic.event, sample(topic.event))
    ours = [("ce_source", b"lepton/ours")]
    await publisher.send_raw(topic.name, b"ours-1", good, ours)
    await publisher.send_raw(topic.name, b"ok-1", good, [])
    # Turned down unread: corrupt bytes of its own are not even dead-lettered.
    await publisher.send_raw(topic.name, b"ours-corrupt", good[:-3], ours)
    await publisher.send_raw(topic.name, b"theirs-corrupt", good[:-3], [("origin", b"test")])
    await publisher.send_raw(topic.name, b"ok-2", good, [])
    batches = Turning(2, b"lepton/ours")
    group = unique("g")
    async with subscribed(kafka, codec, publisher, topic, group, batches) as sub:
        await asyncio.wait_for(batches.enough.wait(), 30)
    assert isinstance(batches, Selective)
    assert [event.key for event in batches.applied] == ["ok-1", "ok-2"]
    assert batches.asked == [topic.name] * 5, "asked once per message, with the topic"
    assert sub.counts[topic.name, "skipped"] == 2
    assert sub.dead_lettered == 1, "what it wants still goes to the dead letters"
    (letter,) = await read_raw(kafka, dead_letter_topic(topic.name), 1)
    assert letter.key == b"theirs-corrupt"
    # The ones turned down were committed with the rest: the group has nothing left.
    await publisher.send_raw(topic.name, b"ok-last", good, [])
    after = Turning(1, b"lepton/ours")
    async with subscribed(kafka, codec, publisher, topic, group, after):
        await asyncio.wait_for(after.enough.wait(), 30)
    assert [event.key for event in after.applied] == ["ok-last"]


async def test_a_transient_flush_failure_is_retried_without_applying_again(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    await publisher.publish_many(topic, [(f"job-{i}", sample(topic.event)) for i in range(3)])
    batches = Batches(3, flush_failures=[TransientError("db away"), ConnectionError("reset")])
    async with subscribed(kafka, codec, publisher, topic, unique("g"), batches) as sub:
        await asyncio.wait_for(batches.enough.wait(), 30)
    assert [event.key for event in batches.applied] == ["job-0", "job-1", "job-2"]
    assert len(batches.flushed) >= 3, "the flush was tried until it went through"
    assert sub.dead_lettered == 0


async def test_a_stop_ends_the_retries_of_a_failing_message_which_is_read_again(
    kafka, codec, publisher, make_topic, unique
) -> None:
    """A stop must not wait out an outage: the message in hand that keeps failing is left
    uncommitted, and the group's next reader gets it."""
    topic = await make_topic("lepton.JobRequested")
    group = unique("g")
    await publisher.publish(topic, "stuck", sample(topic.event))
    failing = asyncio.Event()

    async def outage(event: Event) -> None:
        failing.set()
        raise TransientError("database away")

    async with asyncio.timeout(60):  # the outage never ends: only the stop can end the run
        async with subscribed(
            kafka, codec, publisher, topic, group, outage, retry_backoff_s=(0.05, 0.05)
        ) as stopped:
            await failing.wait()
    assert stopped.dead_lettered == 0
    received: list[Event] = []
    got = asyncio.Event()

    async def collect(event: Event) -> None:
        received.append(event)
        got.set()

    async with subscribed(kafka, codec, publisher, topic, group, collect):
        await asyncio.wait_for(got.wait(), 30)
    assert [event.key for event in received] == ["stuck"]


async def test_a_stop_ends_the_retries_of_a_failing_flush_and_its_fetch_is_read_again(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    group = unique("g")
    await publisher.publish_many(topic, [(f"job-{i}", sample(topic.event)) for i in range(3)])
    failing = Batches(3, flush_failures=[TransientError("db away")] * 10_000)
    async with asyncio.timeout(60):
        async with subscribed(
            kafka, codec, publisher, topic, group, failing, retry_backoff_s=(0.05, 0.05)
        ):
            await failing.tried.wait()
    again = Batches(3)
    async with subscribed(kafka, codec, publisher, topic, group, again):
        await asyncio.wait_for(again.enough.wait(), 30)
    assert [event.key for event in again.applied] == ["job-0", "job-1", "job-2"]


async def test_a_failing_flush_stops_the_subscriber_and_its_fetch_is_read_again(
    kafka, codec, publisher, make_topic, unique
) -> None:
    topic = await make_topic("lepton.JobRequested")
    group = unique("g")
    await publisher.publish_many(topic, [(f"job-{i}", sample(topic.event)) for i in range(3)])
    failing = Batches(3, flush_failures=[RuntimeError("the database refused the batch")])
    subscriber = Subscriber(
        kafka, codec, publisher, topics=[topic], group_id=group, handler=failing
    )
    await subscriber.start()
    try:
        with pytest.raises(RuntimeError, match="refused the batch"):
            await asyncio.wait_for(subscriber.run(), 30)
    finally:
        await subscriber.close()
    assert len(failing.applied) == 3, "applied, but not committed"
    again = Batches(3)
    async with subscribed(kafka, codec, publisher, topic, group, again) as sub:
        await asyncio.wait_for(again.enough.wait(), 30)
    assert [event.key for event in again.applied] == ["job-0", "job-1", "job-2"]
    assert sub.dead_lettered == 0, "no event is blamed for a failed flush"


async def test_send_many_continues_the_trace_given_for_each_event(
    kafka, publisher, make_topic
) -> None:
    topic = await make_topic("lepton.JobEvent", partitions=2)
    traces = [f"00-{i:032x}-{i:016x}-01".encode() for i in range(1, 41)]
    events = [(f"job-{i}", sample(topic.event)) for i in range(40)]
    await publisher.publish_many(topic, events[:5], traces=traces[:5])  # few: through send()
    await publisher.publish_many(topic, events[5:], traces=traces[5:])  # many: batches
    messages = await read_raw(kafka, topic.name, 40)
    sent = {key.encode(): trace for (key, _), trace in zip(events, traces, strict=True)}
    for message in messages:
        trace_id = dict(message.headers)["traceparent"].split(b"-")[1]
        assert trace_id == sent[message.key].split(b"-")[1]
