"""The Kafka bus that every service and the SDK share: librdkafka reads and writes, aiokafka admin.

- :class:`Publisher`: idempotent producer (``acks=all``) that Avro-encodes records and adds
  CloudEvents headers and a W3C ``traceparent`` to every message.
- :class:`Subscriber`: decodes, calls a handler, and commits an offset only after the
  handler returned (at-least-once). A message that cannot be decoded, or whose handler
  fails, goes to ``<topic>.dlq`` with the reason in its headers; the stream goes on.
  A :class:`TransientError` (or a lost connection) is retried instead: the message is
  neither dead-lettered nor committed until it succeeds. The handler is either an async
  function of one event, or a :class:`BatchHandler` that folds each event of a fetch in
  memory and then acts on the whole fetch at once (one placement pass, one batch of
  events published), which is how a busy service keeps up.
- :func:`ensure_topics`: creates the declared topics and their dead-letter topics.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import logging
import os
import struct
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import confluent_kafka
import prometheus_client
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from lepton.bus._reader import Message, Positions
from lepton.bus._transport import Kafka, Reading, Transport, Writing
from lepton.bus._writer import PublishError
from lepton.contract.codec import Codec, DecodeError, MessageOrigin, Record, WrongSchemaError
from lepton.contract.events import EVENT_NAMES
from lepton.contract.topics import Topic, dead_letter_topic
from lepton.errors import UnavailableError

__all__ = [
    "BatchHandler",
    "BrokerUnavailableError",
    "Event",
    "Message",
    "MessageCounts",
    "Positions",
    "PublishError",
    "Publisher",
    "Selective",
    "Skimming",
    "Subscriber",
    "TransientError",
    "Transport",
    "continue_trace",
    "current_trace",
    "delete_topics",
    "ensure_topics",
    "murmur2",
    "partition_for",
]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
Handler = Callable[["Event"], Awaitable[None]]
TypedRecord = TypeVar("TypedRecord")


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that takes a whole fetch at once: every event, then one :meth:`flush`.

    The subscriber calls :meth:`apply` for each event of a fetch that decoded, in
    partition order (the order of each partition is kept; partitions follow one another),
    then :meth:`flush` once, then commits. What a fetch's events cause (planning,
    publishing, writing) belongs in :meth:`flush`, done once for all of them.

    Failures, so that no event is lost or applied twice:

    - :meth:`apply` folds one event into memory and does no I/O. If it raises, it must
      have changed nothing: that event alone is dead-lettered, as with a per-message
      handler, and the others of the fetch are applied as usual. A decoding failure is
      dead-lettered before :meth:`apply` ever sees the event.
    - :meth:`flush` raising a :class:`TransientError` (or a lost connection) is retried
      with backoff, :meth:`apply` is not called again: a flush must be safe to retry.
    - :meth:`flush` raising anything else ends :meth:`Subscriber.run` with that error and
      nothing of the fetch committed: its events were applied and cannot be blamed on any
      one of them, so the process stops and a restart reads them again (at-least-once).

    While :meth:`apply` runs, :func:`current_trace` is the event's trace: a handler keeps
    it to publish the event's consequences in the same trace (``traces`` of
    :meth:`Publisher.send_many`, or :func:`continue_trace`).
    """

    def apply(self, event: Event) -> None: ...

    async def flush(self) -> None: ...


@runtime_checkable
class Selective(Protocol):
    """A handler (of either kind) that can turn a message down before it is decoded.

    :meth:`wants` sees the message's topic and raw headers (``(name, value)`` pairs). A
    message it turns down is neither decoded nor handled nor dead-lettered, only
    committed and counted as ``skipped``: for messages the handler would drop anyway
    (a service's own events echoed back to it), decoding is most of their cost.
    """

    def wants(self, topic: str, headers: Sequence[tuple[str, bytes]]) -> bool: ...


@runtime_checkable
class Skimming(Protocol):
    """A :class:`BatchHandler` that can apply some messages straight from their bytes.

    :meth:`skim` sees a message's key and value before anything decodes them. It either
    applies the message as :meth:`BatchHandler.apply` would have (returns True: the
    message counts as handled), or changes nothing and returns False: the message is
    then decoded and applied, or dead-lettered, as usual. It must take only bytes it has
    read in full and found valid, and it sees no topic: it vouches for the event type
    itself (by the schema fingerprint), so it is subscribed only to topics of that type.
    No trace is current while it runs. For a high-rate
    topic whose messages mostly repeat what the handler already knows (heartbeats),
    where decoding each in full is most of the cost.
    """

    def skim(self, key: bytes | None, value: bytes | None) -> bool: ...


# The trace of the message being handled, so that what a handler publishes continues it:
# the raw header, or the event being handled (its headers are read only if someone asks,
# which for most messages nobody does: reading them costs more than decoding the value).
_current_trace: contextvars.ContextVar[bytes | Event | None] = contextvars.ContextVar(
    "lepton_traceparent", default=None
)


def current_trace() -> bytes | None:
    """The ``traceparent`` of the message being handled (None outside a handler)."""
    current = _current_trace.get()
    if isinstance(current, Event):
        return current.headers.get("traceparent")
    return current


@contextlib.contextmanager
def continue_trace(traceparent: bytes | None) -> Iterator[None]:
    """What is published inside continues this trace (as if its message were handled)."""
    token = _current_trace.set(traceparent)
    try:
        yield
    finally:
        _current_trace.reset(token)


class _SubscriberCounts(Collector):
    """``lepton_messages_total`` read from the live :class:`MessageCounts` when scraped.

    Counting in a plain dict and reporting at scrape time keeps the per-message cost at
    one dictionary update instead of a locked metric increment.
    """

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "lepton_messages",
            "Messages a consumer group finished with, by topic and outcome.",
            labels=["group", "topic", "outcome"],
        )
        for counted in list(_LIVE_COUNTS):
            for (topic, outcome), count in counted.counts.items():
                family.add_metric([counted.group_id, topic, outcome], count)
        yield family


class MessageCounts:
    """Counts, by (topic, outcome), of the messages a consumer group finished with,
    exported as ``lepton_messages_total`` for as long as the object lives. Each subscriber
    keeps one; a process may keep one for a subscriber in another process whose counts it
    receives (the scheduler's heartbeat digester's)."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        _LIVE_COUNTS.add(self)


_LIVE_COUNTS: weakref.WeakSet[MessageCounts] = weakref.WeakSet()
prometheus_client.REGISTRY.register(_SubscriberCounts())

DLQ_HEADERS = (
    "dlq_error_type",
    "dlq_error_message",
    "dlq_source_topic",
    "dlq_source_partition",
    "dlq_source_offset",
    "dlq_time",
)


class TransientError(Exception):
    """A handler failure worth retrying (a dependency is down), not the message's fault."""


class BrokerUnavailableError(UnavailableError, RuntimeError):
    """Kafka could not be reached within the configured time."""


class Event:
    """A decoded message, as a handler sees it."""

    __slots__ = (
        "_headers",
        "_message",
        "key",
        "offset",
        "partition",
        "record",
        "timestamp_ms",
        "topic",
        "type",
    )

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: str | None,
        type: str,
        record: Record,
        timestamp_ms: int,
        message: Message,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.type = type
        self.record = record
        self.timestamp_ms = timestamp_ms
        self._message = message
        self._headers: dict[str, bytes] | None = None

    def record_as(self, event_type: type[TypedRecord]) -> TypedRecord:
        """The record, typed as ``event_type`` (a TypedDict of :mod:`lepton.contract.events`).

        The record is returned as it is, not converted; a record of another event type is a
        :class:`~lepton.contract.codec.WrongSchemaError` (the message goes to the DLQ).
        """
        if EVENT_NAMES[event_type] != self.type:
            origin = MessageOrigin(self.topic, self.partition, self.offset)
            raise WrongSchemaError(f"{self.type} is not a {EVENT_NAMES[event_type]}", origin)
        return cast("TypedRecord", self.record)

    @property
    def headers(self) -> Mapping[str, bytes]:
        """The message's headers (read from it on first use)."""
        if self._headers is None:
            raw = self._message.headers()
            self._headers = dict(raw) if raw else {}
        return self._headers

    @property
    def trace_id(self) -> str | None:
        return _trace_id(self.headers.get("traceparent"))

    def __repr__(self) -> str:
        return f"Event({self.type} {self.topic}[{self.partition}]@{self.offset} key={self.key!r})"


class _LazyHeaders(Sequence[tuple[str, bytes]]):
    """A message's raw headers for :meth:`Selective.wants`, read only if it looks."""

    __slots__ = ("_message", "_read")

    def __init__(self, message: Message) -> None:
        self._message = message
        self._read: list[tuple[str, bytes]] | None = None

    def _headers(self) -> list[tuple[str, bytes]]:
        if self._read is None:
            self._read = self._message.headers() or []
        return self._read

    def __getitem__(self, index: Any) -> Any:
        return self._headers()[index]

    def __len__(self) -> int:
        return len(self._headers())

    # The list's own, not Sequence's: those index one item at a time in Python, and a
    # scheduler looks for its own source in every job event it reads.
    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._headers())

    def __contains__(self, item: object) -> bool:
        return item in self._headers()


def _trace_id(traceparent: bytes | None) -> str | None:
    # W3C traceparent: version-traceid-spanid-flags
    if traceparent is None:
        return None
    parts = traceparent.decode("ascii", "replace").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


@functools.lru_cache(maxsize=1)
def _format_time(epoch_ms: int) -> bytes:
    """RFC 3339 time of a millisecond; cached, as many events share one millisecond."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").encode()


def _event_time() -> bytes:
    return _format_time(time.time_ns() // 1_000_000)


def _ids(traceparent: bytes | None = None) -> tuple[bytes, bytes]:
    """A CloudEvents id and a W3C traceparent continuing the given trace, or the current
    one, if any."""
    # One call to the OS for all random bits: this runs for every message.
    random = os.urandom(40).hex()
    trace = _trace_id(traceparent or current_trace()) or random[48:80]
    return random[:32].encode(), f"00-{trace}-{random[32:48]}-01".encode()


async def _start_within(client: Any, timeout_s: float, bootstrap: str) -> None:
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        # A client that never started may still hold sockets and tasks.
        await client.stop() if hasattr(client, "stop") else await client.close()
        raise _unavailable(bootstrap, timeout_s, exc) from exc


def _unavailable(bootstrap: str, timeout_s: float, cause: Exception) -> BrokerUnavailableError:
    return BrokerUnavailableError(
        f"Kafka at {bootstrap} did not answer within {timeout_s:.0f} s ({type(cause).__name__}); "
        "is the broker running (`lepton stack status`) and LEPTON_KAFKA_BOOTSTRAP right?"
    )


class Publisher:
    """Encodes records and sends them through one idempotent producer."""

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        *,
        source: str,
        client_id: str = "lepton",
        connect_timeout_s: float = 20.0,
        linger_ms: int = 5,
        transport: Transport | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._codec = codec
        self._source = source.encode()
        self._connect_timeout_s = connect_timeout_s
        self._writer: Writing = (transport or Kafka(bootstrap)).writer(
            client_id=f"{client_id}-{source}",
            linger_ms=linger_ms,
            max_batch_bytes=256 * 1024,
        )

    async def start(self) -> None:
        try:
            await asyncio.wait_for(
                self._writer.start(self._connect_timeout_s), self._connect_timeout_s + 5
            )
        except (TimeoutError, confluent_kafka.KafkaException) as exc:
            raise _unavailable(self._bootstrap, self._connect_timeout_s, exc) from exc

    async def stop(self) -> None:
        await self._writer.stop()

    @property
    def bootstrap(self) -> str:
        """The brokers this publisher sends to."""
        return self._bootstrap

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def source(self) -> str:
        """The CloudEvents source of what this publisher sends (``lepton/<service>``)."""
        return self._source.decode()

    async def partitions(self, topic: str) -> set[int]:
        """The topic's partition numbers (from the cluster's metadata, cached)."""
        return set(await self._writer.partitions(topic))

    def headers(self, event_type: str, continues: bytes | None = None) -> Headers:
        """CloudEvents Kafka-binding headers plus a W3C traceparent that continues the
        ``continues`` trace, else the trace of the message being handled, else a new one."""
        event_id, traceparent = _ids(continues)
        return [
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id),
            ("ce_source", self._source),
            ("ce_type", event_type.encode()),
            ("ce_time", _event_time()),
            ("content-type", b"application/avro"),
            ("traceparent", traceparent),
        ]

    async def send(self, topic: Topic, key: str, record: Mapping[str, Any]) -> asyncio.Future[Any]:
        """Queue one event; the returned future resolves when the broker has acknowledged it."""
        value = self._codec.encode(topic.event, record)
        await self._writer.partitions(topic.name)
        return self._writer.send(topic.name, key.encode(), value, self.headers(topic.event))

    async def publish(self, topic: Topic, key: str, record: Mapping[str, Any]) -> None:
        """Send one event and wait for the broker's acknowledgement."""
        await (await self.send(topic, key, record))

    async def send_many(
        self,
        topic: Topic,
        events: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        traces: Sequence[bytes | None] | None = None,
    ) -> list[asyncio.Future[Any]]:
        """Queue many events at once; the returned futures resolve when all are acked.

        Events go to the partition Kafka's default partitioner picks for their key (murmur2,
        as a Java producer would), in order within each partition.

        ``traces``, one per event, are the ``traceparent`` each event continues (a batch
        handler's events each answer a different message); None continues the current one.
        """
        pending = list(events)
        continues = list(traces) if traces is not None else [None] * len(pending)
        if len(continues) != len(pending):
            raise ValueError(f"{len(continues)} traces for {len(pending)} events")
        encode, headers, event = self._codec.encode, self.headers, topic.event
        messages = [
            (key.encode(), encode(event, record), headers(event, trace))
            for (key, record), trace in zip(pending, continues, strict=True)
        ]
        await self._writer.partitions(topic.name)
        return [self._writer.send_all(topic.name, messages)]

    async def publish_many(
        self,
        topic: Topic,
        events: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        traces: Sequence[bytes | None] | None = None,
    ) -> int:
        """Send many events and wait until the broker acknowledged all of them."""
        counted = list(events)
        await asyncio.gather(*await self.send_many(topic, counted, traces=traces))
        return len(counted)

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        """Send bytes as they are (dead letters, replays) and wait for the acknowledgement."""
        await self._writer.partitions(topic)
        await self._writer.send(topic, key, value, headers)


@functools.lru_cache(maxsize=65536)
def partition_for(key: bytes, count: int) -> int:
    """Kafka's default partitioner (murmur2), cached: node ids come back every heartbeat."""
    return (murmur2(key) & 0x7FFFFFFF) % count


_MURMUR_M = 0x5BD1E995
_U32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``Utils.murmur2``), as aiokafka's ``murmur2`` computes it.

    Reads whole 4-byte words at once: twice as fast as aiokafka's byte-by-byte version,
    which cost more than encoding the event when every job id is a new key.
    """
    length = len(data)
    h = 0x9747B28C ^ length
    whole = length & ~3
    for (k,) in struct.iter_unpack("<I", data[:whole]):
        k = (k * _MURMUR_M) & _U32
        k ^= k >> 24
        h = ((h * _MURMUR_M) & _U32) ^ ((k * _MURMUR_M) & _U32)
    extra = length - whole
    if extra:
        if extra >= 3:
            h ^= data[whole + 2] << 16
        if extra >= 2:
            h ^= data[whole + 1] << 8
        h ^= data[whole]
        h = (h * _MURMUR_M) & _U32
    h ^= h >> 13
    h = (h * _MURMUR_M) & _U32
    return h ^ (h >> 15)


def _origin(message: Message) -> MessageOrigin:
    return MessageOrigin(message.topic(), message.partition(), message.offset())


# Failures that are not the message's fault: retried, never dead-lettered.
_RETRIED = (TransientError, ConnectionError, KafkaConnectionError)


class Subscriber:
    """Consumes topics in a consumer group a fetch at a time, committing after each fetch.

    The handler is an async function called once per message, or a :class:`BatchHandler`
    that applies each message of a fetch and then flushes once. Only offsets of messages
    that were handled (for a batch handler: applied and flushed), dead-lettered (with
    the dead letter acknowledged) or turned down unread by a :class:`Selective` handler
    are committed, so a crash redelivers what was in flight.

    With ``only_key``, the subscriber reads just the partition that key maps to (Kafka's
    default partitioner) and hands over only the messages with that key: a trainer agent
    reads its own node's assignments, never every agent's.

    With ``replay``, it reads every partition from the beginning at each start, outside
    any consumer group and without committing: for a service whose state *is* the log
    (the scheduler). :attr:`caught_up` is set once it has read everything that was in
    the topics when it started.

    With ``gather_ms``, the broker may hold each fetch that long to gather more: for a
    high-rate topic whose messages may wait a little (heartbeats), it costs less CPU.

    With ``transport``, it reads from there instead of the Kafka at ``bootstrap`` (as
    does a :class:`Publisher` given one): :class:`lepton.testing.InMemoryBroker`.
    """

    def __init__(
        self,
        bootstrap: str,
        codec: Codec,
        publisher: Publisher,
        *,
        topics: Sequence[Topic],
        group_id: str,
        handler: Handler | BatchHandler,
        client_id: str = "lepton",
        connect_timeout_s: float = 20.0,
        max_batch: int = 500,
        retry_backoff_s: tuple[float, float] = (0.1, 10.0),
        only_key: str | None = None,
        replay: bool = False,
        caught_up: asyncio.Event | None = None,
        gather_ms: int = 0,
        transport: Transport | None = None,
    ) -> None:
        self._codec = codec
        self._replay = replay
        self.caught_up = caught_up or asyncio.Event()
        self._catch_up_to: Positions = {}
        self._only_key = only_key.encode() if only_key is not None else None
        self._publisher = publisher
        self._topics = {topic.name: topic for topic in topics}
        # One path for both kinds: a per-message handler is "apply" awaited per event
        # with nothing to flush.
        self._batch = handler if isinstance(handler, BatchHandler) else None
        self._handler = None if isinstance(handler, BatchHandler) else handler
        self._wants = handler.wants if isinstance(handler, Selective) else None
        self._skim = handler.skim if isinstance(handler, Skimming) else None
        self._bootstrap = bootstrap
        self._connect_timeout_s = connect_timeout_s
        self._max_batch = max_batch
        self._retry_backoff_s = retry_backoff_s
        self._stopping = asyncio.Event()
        self.group_id = group_id
        self._counted = MessageCounts(group_id)
        self.counts = self._counted.counts
        self._reader: Reading = (transport or Kafka(bootstrap)).reader(
            group_id=group_id, client_id=f"{client_id}-{group_id}", gather_ms=gather_ms
        )
        self._uncommitted: Positions = {}

    async def start(self) -> None:
        try:
            await asyncio.wait_for(
                self._reader.check_broker(self._connect_timeout_s), self._connect_timeout_s + 5
            )
        except (TimeoutError, confluent_kafka.KafkaException) as exc:
            await self._reader.close()
            raise _unavailable(self._bootstrap, self._connect_timeout_s, exc) from exc
        if self._replay:
            everything = [
                (name, partition)
                for name in self._topics
                for partition in sorted(await self._publisher.partitions(name))
            ]
            await self._reader.assign(everything, from_start=True)
            self._catch_up_to = {
                where: end
                for where, end in (await self._reader.end_offsets(everything)).items()
                if end > 0
            }
            self._note_progress({})
        elif self._only_key is not None:
            assigned = []
            for name in self._topics:
                count = len(await self._publisher.partitions(name))
                assigned.append((name, partition_for(self._only_key, count)))
            await self._reader.assign(assigned, from_start=False)
        else:
            await self._reader.subscribe(self._topics)

    async def assignment(self) -> set[tuple[str, int]]:
        """The (topic, partition) pairs this subscriber reads now."""
        return await self._reader.assignment()

    @property
    def handled(self) -> int:
        return sum(n for (_, outcome), n in self.counts.items() if outcome == "handled")

    @property
    def dead_lettered(self) -> int:
        return sum(n for (_, outcome), n in self.counts.items() if outcome == "dead_lettered")

    def stop_soon(self) -> None:
        """Ask :meth:`run` to finish the message in hand (and flush), commit and return."""
        self._stopping.set()

    async def close(self) -> None:
        await self._reader.close()

    async def run(self) -> None:
        """Consume until :meth:`stop_soon`; commits what was handled before returning."""
        commit: Positions | None = None
        while not self._stopping.is_set():
            # A fetch returns within a quarter of a second even when nothing comes, so a
            # stop is noticed that soon without racing each fetch against it.
            fetched = await self._reader.fetch(self._max_batch, commit)
            commit = None
            # A busy reader's fetch returns without suspending: let the other tasks (the
            # health server, a service's background work) run between fetches.
            await asyncio.sleep(0)
            done: Positions = {}
            for message in fetched:
                topic = message.topic()
                if self._wants is not None and not self._wants(topic, _LazyHeaders(message)):
                    self.counts[topic, "skipped"] += 1
                elif (
                    self._only_key is None or message.key() == self._only_key
                ) and not self._applied(message, topic):
                    await self._handle(message)
                done[topic, message.partition()] = message.offset() + 1
                if self._stopping.is_set():
                    break
            if self._batch is not None and done:
                await self._flush(self._batch)
            if self._replay:
                self._note_progress(done)
            elif done:
                commit = done
                self._uncommitted.update(done)
        if not self._replay and self._uncommitted:
            await self._reader.commit(self._uncommitted)
            self._uncommitted.clear()

    def _note_progress(self, done: Positions) -> None:
        if self.caught_up.is_set():
            return
        for where, position in done.items():
            end = self._catch_up_to.get(where)
            if end is not None and position >= end:
                del self._catch_up_to[where]
        if not self._catch_up_to:
            self.caught_up.set()

    def _event(self, message: Message) -> Event:
        """The message decoded (raises :class:`DecodeError`)."""
        topic = message.topic()
        key = message.key()
        event_type, record = self._codec.decode(message.value(), expected=self._topics[topic].event)
        return Event(
            topic,
            message.partition(),
            message.offset(),
            key.decode("utf-8", "replace") if key else None,
            event_type,
            record,
            message.timestamp()[1],
            message,
        )

    def _applied(self, message: Message, topic: str) -> bool:
        """A batch handler's fast path: skim (:class:`Skimming`), or decode and apply,
        without a coroutine per message.

        False for a per-message handler, or if anything failed: :meth:`_handle` then takes
        the message again and decides (retry, or dead-letter). Doing it twice is safe, as
        an ``apply`` that raises has changed nothing.
        """
        batch = self._batch
        if batch is None:
            return False
        try:
            if self._skim is not None and self._skim(message.key(), message.value()):
                self.counts[topic, "handled"] += 1
                return True
            event = self._event(message)
            token = _current_trace.set(event)
            try:
                batch.apply(event)
            finally:
                _current_trace.reset(token)
        except Exception:  # the careful path, _handle, sorts it out
            return False
        self.counts[topic, "handled"] += 1
        return True

    async def _handle(self, message: Message) -> None:
        attempt = 0
        while True:
            try:
                event = self._event(message)
                token = _current_trace.set(event)
                try:
                    if self._handler is not None:
                        await self._handler(event)
                    else:
                        assert self._batch is not None
                        self._batch.apply(event)
                finally:
                    _current_trace.reset(token)
            except _RETRIED as exc:
                attempt += 1
                await self._back_off(attempt, _origin(message), exc)
                continue
            except DecodeError as exc:
                await self._dead_letter(message, exc.at(_origin(message)))
            except Exception as exc:
                origin = _origin(message)
                log.exception("handler failed for %s; dead-lettering it", origin)
                await self._dead_letter(message, exc)
            else:
                self.counts[event.topic, "handled"] += 1
            return

    async def _flush(self, batch: BatchHandler) -> None:
        """The batch handler acts on the fetch it applied; retried while transient. Any
        other failure propagates: its events are applied, none can be blamed for it."""
        attempt = 0
        while True:
            try:
                await batch.flush()
            except _RETRIED as exc:
                attempt += 1
                await self._back_off(attempt, "a batch flush", exc)
                continue
            return

    async def _back_off(self, attempt: int, what: object, error: Exception) -> None:
        delay = min(self._retry_backoff_s[0] * 2**attempt, self._retry_backoff_s[1])
        log.warning("retrying %s in %.1fs after %r", what, delay, error)
        await asyncio.sleep(delay)

    async def _dead_letter(self, message: Message, error: Exception) -> None:
        topic = message.topic()
        reason = [
            ("dlq_error_type", type(error).__name__.encode()),
            ("dlq_error_message", str(error).encode("utf-8", "replace")[:4096]),
            ("dlq_source_topic", topic.encode()),
            ("dlq_source_partition", str(message.partition()).encode()),
            ("dlq_source_offset", str(message.offset()).encode()),
            ("dlq_time", _event_time()),
        ]
        original = [
            (name, value) for name, value in message.headers() or () if name not in DLQ_HEADERS
        ]
        await self._publisher.send_raw(
            dead_letter_topic(topic), message.key(), message.value(), original + reason
        )
        self.counts[topic, "dead_lettered"] += 1


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[Topic],
    *,
    with_dead_letters: bool = True,
    connect_timeout_s: float = 20.0,
) -> list[str]:
    """Create every topic (and its ``.dlq``) that does not exist yet; returns those created.

    Safe to run any number of times, from several processes at once.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await _start_within(admin, connect_timeout_s, bootstrap)
    try:
        cluster = await admin.describe_cluster()
        replication = min(3, len(cluster["brokers"]))
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for topic in topics:
            wanted.append(
                NewTopic(topic.name, topic.partitions, replication, topic_configs=topic.config)
            )
            if with_dead_letters:
                wanted.append(
                    NewTopic(
                        dead_letter_topic(topic.name), 1, replication, topic_configs=_DLQ_CONFIG
                    )
                )
        missing = [new for new in wanted if new.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(missing)
        created = []
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:
                raise KafkaError(f"creating topic {name} failed: error {code} {message}")
        await _until_led(admin, created, timeout_s=connect_timeout_s)
        return created
    finally:
        await admin.close()


async def _until_led(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float) -> None:
    """Wait until every partition of new topics has a leader, so first sends do not bounce."""
    async with asyncio.timeout(timeout_s):
        while topics:
            described = await admin.describe_topics(topics)
            topics = [
                topic["topic"]
                for topic in described
                if topic["error_code"] != 0
                or any(partition["leader"] < 0 for partition in topic["partitions"])
            ]
            if topics:
                await asyncio.sleep(0.05)  # the controller is electing: nothing to await


async def delete_topics(bootstrap: str, names: Iterable[str], *, timeout_s: float = 60.0) -> None:
    """Delete topics (with their data). For tests and benchmarks that made their own."""
    doomed = list(names)
    if not doomed:
        return
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
    )
    await _start_within(admin, timeout_s, bootstrap)
    try:
        # A few at a time: one huge request can outlast the broker's request timeout.
        for start in range(0, len(doomed), 50):
            await admin.delete_topics(doomed[start : start + 50], timeout_ms=int(timeout_s * 1000))
    finally:
        await admin.close()


# Dead letters are kept long enough for someone to look at them and replay them.
_DLQ_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(30 * 24 * 3600 * 1000)}


def _topic_errors(response: Any) -> Iterable[tuple[str, int, str | None]]:
    for entry in response.topic_errors:
        # v0 responses carry (name, code); later versions add a message.
        name, code = entry[0], entry[1]
        yield name, code, entry[2] if len(entry) > 2 else None
