"""The subscriber: decode, call the handler, commit after it; dead letters and retries;
the message counts ``/metrics`` reads."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import weakref
from typing import TYPE_CHECKING

import confluent_kafka
import prometheus_client
from aiokafka.errors import KafkaConnectionError
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from lepton.bus import _tracing
from lepton.bus._event import DLQ_HEADERS, Event, Handler, TransientError, _LazyHeaders
from lepton.bus._handlers import BatchHandler, Selective, Skimming
from lepton.bus._publisher import Publisher, _unavailable, partition_for
from lepton.bus._sizes import dead_letter, reason_headers
from lepton.bus._transport import Kafka, Reading, Transport
from lepton.contract.codec import Codec, DecodeError, MessageOrigin
from lepton.contract.topics import Topic, dead_letter_topic
from lepton.errors import ForgedRecordError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from opentelemetry.trace import Span

    from lepton.bus._authenticator import Authenticator
    from lepton.bus._reader import Message, Positions
    from lepton.config import KafkaAccess
    from lepton.contract.codec import Record

log = logging.getLogger("lepton.bus")


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

# From a heartbeat's fold to an ingest of a large file or an evaluation: a wide range.
_DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
_HANDLER_SECONDS = prometheus_client.Histogram(
    "lepton_handler_duration_seconds",
    "Time a per-message handler took for one message, retries included, by consumer group "
    "and topic.",
    ["group", "topic"],
    buckets=_DURATION_BUCKETS,
)
_BATCH_SECONDS = prometheus_client.Histogram(
    "lepton_batch_duration_seconds",
    "Time a batch handler took for one fetch (every message applied, then the flush), by "
    "consumer group.",
    ["group"],
    buckets=_DURATION_BUCKETS,
)


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

    With ``transport``, it reads from there instead of the Kafka ``kafka`` reaches (as
    does a :class:`Publisher` given one): :class:`lepton.testing.InMemoryBroker`.
    """

    def __init__(
        self,
        kafka: KafkaAccess,
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
        authenticator: Authenticator | None = None,
    ) -> None:
        self._codec = codec
        self._authenticator = authenticator
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
        self._kafka = kafka
        self._connect_timeout_s = connect_timeout_s
        self._max_batch = max_batch
        self._retry_backoff_s = retry_backoff_s
        self._stopping = asyncio.Event()
        self.group_id = group_id
        self._counted = MessageCounts(group_id)
        self.counts = self._counted.counts
        # Made now, so that each series is exported (at zero) before the first message:
        # a rate or an increase over a series that appears already at 1 misses that 1.
        for name in self._topics:
            for outcome in ("handled", "dead_lettered"):
                self.counts[name, outcome] += 0
        self._handler_seconds = {
            name: _HANDLER_SECONDS.labels(group_id, name)
            for name in (self._topics if self._handler is not None else ())
        }
        self._batch_seconds = None if self._batch is None else _BATCH_SECONDS.labels(group_id)
        self._reader: Reading = (transport or Kafka(kafka)).reader(
            group_id=group_id, client_id=f"{client_id}-{group_id}", gather_ms=gather_ms
        )
        self._uncommitted: Positions = {}
        # With a tracer: the traces of the events applied since the last flush, which
        # the flush's span links to (it acts on all of them: no one is its parent).
        self._applied_traces: list[bytes | None] = []

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s + 5):
                await self._reader.check_broker(self._connect_timeout_s)
        except (TimeoutError, confluent_kafka.KafkaException) as exc:
            await self._reader.close()
            raise _unavailable(self._kafka, self._connect_timeout_s, exc) from exc
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
            fetched_at = time.perf_counter()
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
                    started = time.perf_counter()
                    if not await self._handle(message):
                        break  # stopped while it failed: not committed, read again later
                    if self._handler is not None:  # a batch handler's is its fetch's time
                        self._handler_seconds[topic].observe(time.perf_counter() - started)
                done[topic, message.partition()] = message.offset() + 1
                if self._stopping.is_set():
                    break
            if self._batch is not None and done:
                if self._applied_traces:
                    applied, self._applied_traces = self._applied_traces, []
                    with _tracing.span(f"flush {self.group_id}", links=applied, root=True):
                        flushed = await self._flush(self._batch)
                else:
                    flushed = await self._flush(self._batch)
                assert self._batch_seconds is not None
                self._batch_seconds.observe(time.perf_counter() - fetched_at)
                if not flushed:
                    done = {}  # stopped while the flush failed: the fetch is read again later
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
        if self._authenticator is not None:
            self._authenticator.check(message, record)
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
            if (
                self._skim is not None
                and (self._authenticator is None or self._authenticated_by_key(message))
                and self._skim(message.key(), message.value())
            ):
                self.counts[topic, "handled"] += 1
                return True
            event = self._event(message)
            if self._traced():
                self._apply_traced(batch, event)
            else:
                token = _tracing._current_trace.set(event)
                try:
                    batch.apply(event)
                finally:
                    _tracing._current_trace.reset(token)
        except Exception:  # the careful path, _handle, sorts it out
            return False
        self.counts[topic, "handled"] += 1
        return True

    async def _handle(self, message: Message) -> bool:
        """Handle ``message`` (or dead-letter it); False if a stop came while it failed
        transiently: it is then left uncommitted for whoever reads it next, as a stop must
        not wait out an outage."""
        attempt = 0
        while True:
            try:
                event = self._event(message)
                if self._handler is None:
                    assert self._batch is not None
                    if self._traced():
                        self._apply_traced(self._batch, event)
                    else:
                        token = _tracing._current_trace.set(event)
                        try:
                            self._batch.apply(event)
                        finally:
                            _tracing._current_trace.reset(token)
                elif self._traced():
                    with _tracing.handling(self._processing(event)):
                        await self._handler(event)
                else:
                    token = _tracing._current_trace.set(event)
                    try:
                        await self._handler(event)
                    finally:
                        _tracing._current_trace.reset(token)
            except _RETRIED as exc:
                attempt += 1
                if await self._back_off(attempt, _origin(message), exc):
                    continue
                return False
            except DecodeError as exc:
                await self._dead_letter(message, exc.at(_origin(message)))
            except ForgedRecordError as exc:
                await self._refuse(message, exc)
            except Exception as exc:
                origin = _origin(message)
                log.exception("handler failed for %s; dead-lettering it", origin)
                await self._dead_letter(message, exc)
            else:
                self.counts[event.topic, "handled"] += 1
            return True

    def _traced(self) -> bool:
        """Whether events are handled in spans: with a tracer, once a replaying
        subscriber has caught up (rebuilding state from the log is not new work)."""
        return _tracing.tracing() and (not self._replay or self.caught_up.is_set())

    def _processing(self, event: Event) -> Span:
        return _tracing.processing(event.topic, self.group_id, event.partition, event.offset, event)

    def _apply_traced(self, batch: BatchHandler, event: Event) -> None:
        started = self._processing(event)
        with _tracing.handling(started):
            batch.apply(event)
        self._applied_traces.append(_tracing.traceparent_of(started))

    def _authenticated_by_key(self, message: Message) -> bool:
        """Whether the message passes its check before decoding (a key-only rule)."""
        assert self._authenticator is not None
        try:
            self._authenticator.check(message, None)
        except ForgedRecordError:
            return False  # decoded and checked again on the careful path, which refuses it
        return True

    async def _refuse(self, message: Message, error: ForgedRecordError) -> None:
        """A forged or unauthorised record: dead-lettered with the reason, and audited."""
        assert self._authenticator is not None
        log.warning("refused %s: %s", _origin(message), error)
        await self._dead_letter(message, error)
        record: Record | None = None
        try:
            topic = self._topics[message.topic()]
            record = self._codec.decode(message.value(), expected=topic.event)[1]
        except (DecodeError, ConnectionError):
            # Undecodable, or its schema registry away: the audit then names no tenant
            # (the refusal itself never waits on a registry).
            pass
        key, event = self._authenticator.denial(message, record, error)
        await self._publisher.publish(self._authenticator.audit_topic, key, event)

    async def _flush(self, batch: BatchHandler) -> bool:
        """The batch handler acts on the fetch it applied; retried while transient. Any
        other failure propagates: its events are applied, none can be blamed for it.
        False if a stop came while it failed (see :meth:`_handle`)."""
        attempt = 0
        while True:
            try:
                await batch.flush()
            except _RETRIED as exc:
                attempt += 1
                if await self._back_off(attempt, "a batch flush", exc):
                    continue
                return False
            return True

    async def _back_off(self, attempt: int, what: object, error: Exception) -> bool:
        """Wait before the next attempt; False if a stop came first (no next attempt)."""
        delay = min(self._retry_backoff_s[0] * 2**attempt, self._retry_backoff_s[1])
        if not self._stopping.is_set():
            log.warning("retrying %s in %.1fs after %r", what, delay, error)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
        if self._stopping.is_set():
            log.warning("stopping: %s left for the next reader after %r", what, error)
            return False
        return True

    async def _dead_letter(self, message: Message, error: Exception) -> None:
        """The message to ``<topic>.dlq`` with the reason; cut to fit that topic when the
        reason makes it too large (:func:`~lepton.bus._sizes.dead_letter`), so that
        dead-lettering never fails on size."""
        topic = message.topic()
        letters = dead_letter_topic(topic)
        original = [
            (name, value) for name, value in message.headers() or () if name not in DLQ_HEADERS
        ]
        key, value, headers = dead_letter(
            topic,
            message.key(),
            message.value(),
            original,
            reason_headers(error, topic, message.partition(), message.offset()),
            await self._publisher.max_message_bytes(letters),
        )
        await self._publisher.send_raw(letters, key, value, headers)
        self.counts[topic, "dead_lettered"] += 1
