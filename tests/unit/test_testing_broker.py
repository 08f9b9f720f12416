"""The in-memory broker keeps the bus's promises: the same tests as against Kafka
(tests/integration/test_bus.py), in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from lepton.bus import Event, Subscriber, TransientError, partition_for
from lepton.contract.topics import Topic, dead_letter_topic
from lepton.testing import Commit, InMemoryBroker, StoredMessage
from tests.samples import sample

REQUESTS = Topic("t.requests", "lepton.JobRequested", "job id", partitions=4)
RECORD = sample("lepton.JobRequested")


@contextlib.asynccontextmanager
async def subscribed(
    broker: InMemoryBroker, group: str, handler: Any, **options: Any
) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber(
        "in-memory",
        broker.codec,
        broker.publisher(),
        topics=[REQUESTS],
        group_id=group,
        handler=handler,
        retry_backoff_s=(0.001, 0.01),
        transport=broker,
        **options,
    )
    await subscriber.start()
    task = asyncio.create_task(subscriber.run())
    try:
        yield subscriber
    finally:
        subscriber.stop_soon()
        await task
        await subscriber.close()


def collector(count: int) -> tuple[list[Event], asyncio.Event, Callable[[Event], Awaitable[None]]]:
    received: list[Event] = []
    enough = asyncio.Event()

    async def handle(event: Event) -> None:
        received.append(event)
        if len(received) >= count:
            enough.set()

    return received, enough, handle


async def publish(broker: InMemoryBroker, *keys: str) -> None:
    await broker.publisher().publish_many(REQUESTS, [(key, RECORD) for key in keys])


async def test_each_key_keeps_its_partition_and_its_order() -> None:
    broker = InMemoryBroker([REQUESTS])
    keys = [f"job-{n % 5}" for n in range(40)]
    publisher = broker.publisher()
    for n, key in enumerate(keys):
        await publisher.publish(REQUESTS, key, RECORD | {"priority": n})
    received, enough, handle = collector(len(keys))
    async with subscribed(broker, "g", handle):
        await asyncio.wait_for(enough.wait(), 5)
    for message in broker.messages(REQUESTS.name):
        assert message.key() is not None
        assert message.partition() == partition_for(message.key(), 4)
    for key in set(keys):
        mine = [event.record["priority"] for event in received if event.key == key]
        assert mine == sorted(mine)
        assert len(mine) == keys.count(key)
    assert len({event.partition for event in received}) > 1


async def test_a_failing_handler_dead_letters_the_message_with_the_reason_and_goes_on() -> None:
    broker = InMemoryBroker([REQUESTS])
    await publish(broker, "ok-1", "bad", "ok-2")
    handled: list[str | None] = []
    done = asyncio.Event()

    async def handle(event: Event) -> None:
        if event.key == "bad":
            raise ValueError("priority class 'urgent' is not configured")
        handled.append(event.key)
        if len(handled) == 2:
            done.set()

    async with subscribed(broker, "g", handle) as subscriber:
        await asyncio.wait_for(done.wait(), 5)
    assert sorted(handled) == ["ok-1", "ok-2"]
    assert subscriber.dead_lettered == 1
    [bad] = [m for m in broker.messages(REQUESTS.name) if m.key() == b"bad"]
    [letter] = broker.messages(dead_letter_topic(REQUESTS.name))
    assert letter.key() == b"bad"
    assert letter.value() == bad.value()
    assert letter.header("dlq_error_type") == b"ValueError"
    assert letter.header("dlq_error_message") == b"priority class 'urgent' is not configured"
    assert letter.header("dlq_source_topic") == REQUESTS.name.encode()
    assert letter.header("dlq_source_partition") == str(bad.partition()).encode()
    assert letter.header("dlq_source_offset") == str(bad.offset()).encode()
    assert letter.header("ce_type") == REQUESTS.event.encode(), "original headers are kept"
    # The dead-lettered message is done with: committed like the others.
    assert broker.committed("g")[REQUESTS.name, bad.partition()] > bad.offset()


async def test_undecodable_bytes_are_dead_lettered() -> None:
    broker = InMemoryBroker([REQUESTS])
    await broker.publisher().send_raw(REQUESTS.name, b"broken", b"{'json': 1}", [])
    await publish(broker, "ok")
    received, enough, handle = collector(1)
    async with subscribed(broker, "g", handle):
        await asyncio.wait_for(enough.wait(), 5)
        await broker.until_message(dead_letter_topic(REQUESTS.name), lambda _: True)
    [letter] = broker.messages(dead_letter_topic(REQUESTS.name))
    assert letter.header("dlq_error_type") == b"CorruptMessageError"
    assert [event.key for event in received] == ["ok"]


async def test_a_transient_failure_is_retried_not_dead_lettered() -> None:
    broker = InMemoryBroker([REQUESTS])
    await publish(broker, "flaky")
    attempts = 0
    done = asyncio.Event()

    async def handle(event: Event) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise TransientError("database restarting")
        done.set()

    async with subscribed(broker, "g", handle) as subscriber:
        await asyncio.wait_for(done.wait(), 5)
    assert attempts == 3
    assert subscriber.dead_lettered == 0
    assert broker.messages(dead_letter_topic(REQUESTS.name)) == []


async def test_an_offset_is_committed_only_after_its_handler_returned() -> None:
    broker = InMemoryBroker([REQUESTS])
    await publish(broker, "job-1")
    in_handler = asyncio.Event()
    release = asyncio.Event()

    async def slow(event: Event) -> None:
        in_handler.set()
        await release.wait()
        await broker.publisher().publish(REQUESTS, "answer", RECORD)

    async with subscribed(broker, "g", slow):
        await asyncio.wait_for(in_handler.wait(), 5)
        assert broker.committed("g") == {}
        release.set()
    [job] = broker.messages(REQUESTS.name)[:1]
    [commit] = [entry for entry in broker.history if isinstance(entry, Commit)]
    assert commit.positions == {(REQUESTS.name, job.partition()): 1}
    published = [entry for entry in broker.history if isinstance(entry, StoredMessage)]
    assert broker.history.index(commit) > broker.history.index(published[-1]), (
        "what the handler published went out before its message was committed"
    )


async def test_a_consumer_that_dies_before_committing_gets_the_message_again() -> None:
    broker = InMemoryBroker([REQUESTS])
    await publish(broker, "job-1", "job-2")
    in_handler = asyncio.Event()

    async def die_mid_handling(event: Event) -> None:
        in_handler.set()
        await asyncio.Event().wait()  # never returns: the consumer dies in here

    first = Subscriber(
        "in-memory",
        broker.codec,
        broker.publisher(),
        topics=[REQUESTS],
        group_id="g",
        handler=die_mid_handling,
        transport=broker,
    )
    await first.start()
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(in_handler.wait(), 5)
    task.cancel()  # the process dies: no commit happens
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await first.close()

    received, enough, handle = collector(2)
    async with subscribed(broker, "g", handle):
        await asyncio.wait_for(enough.wait(), 5)
    assert sorted(event.key or "" for event in received) == ["job-1", "job-2"]
    # Handled and committed now: the group's next member reads only what came since.
    received, enough, handle = collector(1)
    async with subscribed(broker, "g", handle):
        await publish(broker, "job-3")
        await asyncio.wait_for(enough.wait(), 5)
    assert [event.key for event in received] == ["job-3"]


async def test_a_replaying_subscriber_reads_everything_at_each_start_and_commits_nothing() -> None:
    broker = InMemoryBroker([REQUESTS])
    await publish(broker, "a", "b", "c")
    for _ in range(2):
        caught_up = asyncio.Event()
        received, _, handle = collector(3)
        async with subscribed(broker, "g", handle, replay=True, caught_up=caught_up):
            await asyncio.wait_for(caught_up.wait(), 5)
        assert sorted(event.key or "" for event in received) == ["a", "b", "c"]
    assert broker.committed("g") == {}


async def test_a_replaying_subscriber_of_empty_topics_is_caught_up_at_once() -> None:
    broker = InMemoryBroker([REQUESTS])
    caught_up = asyncio.Event()
    _, _, handle = collector(1)
    async with subscribed(broker, "g", handle, replay=True, caught_up=caught_up):
        assert caught_up.is_set()


async def test_a_keyed_subscriber_reads_only_its_keys_messages() -> None:
    broker = InMemoryBroker([REQUESTS])
    await publish(broker, *(f"node-{n}" for n in range(12)), "node-3")
    received, enough, handle = collector(2)
    async with subscribed(broker, "g", handle, only_key="node-3") as subscriber:
        await asyncio.wait_for(enough.wait(), 5)
        assert await subscriber.assignment() == {
            (REQUESTS.name, partition_for(b"node-3", REQUESTS.partitions))
        }
    assert [event.key for event in received] == ["node-3", "node-3"]


class Batches:
    """A batch handler that records what it applied and when it flushed."""

    def __init__(self, transient_flushes: int = 0) -> None:
        self.steps: list[str] = []
        self.transient_flushes = transient_flushes
        self.flushed = asyncio.Event()

    def apply(self, event: Event) -> None:
        if event.key == "bad":
            raise ValueError("cannot apply")
        self.steps.append(f"apply {event.key}")

    async def flush(self) -> None:
        if self.transient_flushes:
            self.transient_flushes -= 1
            raise TransientError("briefly down")
        self.steps.append("flush")
        self.flushed.set()


async def test_a_batch_applies_each_event_flushes_once_and_dead_letters_a_bad_one() -> None:
    broker = InMemoryBroker([REQUESTS])
    await publish(broker, "a", "bad", "b")
    batches = Batches(transient_flushes=2)
    async with subscribed(broker, "g", batches):
        await asyncio.wait_for(batches.flushed.wait(), 5)
    assert sorted(batches.steps[:-1]) == ["apply a", "apply b"], "applied once, not again"
    assert batches.steps[-1] == "flush"
    [letter] = broker.messages(dead_letter_topic(REQUESTS.name))
    assert letter.key() == b"bad"
    assert letter.header("dlq_error_message") == b"cannot apply"


async def test_a_refused_send_fails_its_acknowledgement() -> None:
    broker = InMemoryBroker([REQUESTS])
    broker.refuse(REQUESTS.name)
    [ack] = await broker.publisher().send_many(REQUESTS, [("k", RECORD)])
    assert isinstance(ack.exception(), Exception)
    assert broker.messages(REQUESTS.name) == []
