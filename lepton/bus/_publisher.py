"""The publisher: Avro-encoded records with CloudEvents headers through one idempotent
producer; the partitioner that places a key as Kafka's Java client does."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import struct
from typing import TYPE_CHECKING, Any

import confluent_kafka
import prometheus_client
from aiokafka.errors import AuthenticationFailedError, KafkaError, SaslAuthenticationFailed

from lepton.bus import _tracing
from lepton.bus._event import Headers, _event_time
from lepton.bus._sizes import (
    MessageTooLargeError,
    UnsendableRecordError,
    dead_letter,
    message_bytes,
    reason_headers,
)
from lepton.bus._transport import Kafka, Transport, Writing
from lepton.contract.identity import SigningKey
from lepton.contract.topics import dead_letter_topic
from lepton.errors import UnavailableError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from opentelemetry.trace import Span

    from lepton.config import KafkaAccess
    from lepton.contract.codec import Codec
    from lepton.contract.topics import Topic

    # Who signs a record: one key for all a process writes, or a choice per record (topic,
    # key, record): a test or a load generator holding the master key, writing as many
    # nodes and tenants.
    Signer = SigningKey | Callable[[str, bytes, Mapping[str, Any]], SigningKey]

log = logging.getLogger("lepton.bus")

# The headers a publisher adds (CloudEvents, traceparent, signature) take well under this:
# a message whose key and value leave this much room under its topic's limit needs no
# weighing of its headers, which keeps the check off the path of nearly every message.
_HEADROOM = 64 * 1024
# What encoding a record that does not fit its schema raises (fastavro's, the codec's).
_INVALID = (ValueError, TypeError, KeyError, AttributeError, OverflowError)

_SET_ASIDE = prometheus_client.Counter(
    "lepton_records_set_aside_total",
    "Records a service produced that could never be sent (too large for their topic, or "
    "invalid), set aside instead, by topic and error.",
    ["topic", "error"],
)


class BrokerUnavailableError(UnavailableError, RuntimeError):
    """Kafka could not be reached within the configured time."""


class _RefusedLogins(logging.Handler):
    """Catches aiokafka's log of a refused SASL login: it logs the broker's answer and
    tries the next address, so the error that ends the start says only "no connection"."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.refused: Exception | None = None

    def emit(self, record: logging.LogRecord) -> None:
        arguments = record.args if isinstance(record.args, tuple) else ()
        for argument in arguments:
            if isinstance(argument, AuthenticationFailedError | SaslAuthenticationFailed):
                self.refused = argument


async def _start_within(client: Any, timeout_s: float, kafka: KafkaAccess) -> None:
    watch = _RefusedLogins()
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addHandler(watch)
    try:
        async with asyncio.timeout(timeout_s):
            await client.start()
    except (TimeoutError, KafkaError, OSError) as exc:
        # A client that never started may still hold sockets and tasks.
        await client.stop() if hasattr(client, "stop") else await client.close()
        raise _unavailable(kafka, timeout_s, watch.refused or exc) from exc
    finally:
        aiokafka_log.removeHandler(watch)


def _refused_credentials(cause: BaseException) -> bool:
    """Whether the broker turned the client's SASL credentials down (librdkafka, aiokafka)."""
    if isinstance(cause, confluent_kafka.KafkaException):
        return bool(cause.args[0].code() == confluent_kafka.KafkaError._AUTHENTICATION)
    return isinstance(cause, AuthenticationFailedError | SaslAuthenticationFailed)


def _unavailable(kafka: KafkaAccess, timeout_s: float, cause: Exception) -> BrokerUnavailableError:
    if _refused_credentials(cause):
        return BrokerUnavailableError(
            f"Kafka at {kafka} refused the credentials ({type(cause).__name__})",
            "check LEPTON_KAFKA_SASL_USERNAME and LEPTON_KAFKA_SASL_PASSWORD (or the client "
            "properties file); the local stack's are in its state directory",
        )
    return BrokerUnavailableError(
        f"Kafka at {kafka} did not answer within {timeout_s:.0f} s ({type(cause).__name__}); "
        "is the broker running (`lepton stack status`) and LEPTON_KAFKA_BOOTSTRAP right?"
    )


class Publisher:
    """Encodes records and sends them through one idempotent producer."""

    def __init__(
        self,
        kafka: KafkaAccess,
        codec: Codec,
        *,
        source: str,
        client_id: str = "lepton",
        connect_timeout_s: float = 20.0,
        linger_ms: int = 5,
        transport: Transport | None = None,
        signer: Signer | None = None,
    ) -> None:
        self._kafka = kafka
        self._signer = signer
        self._codec = codec
        self._source = source.encode()
        self._connect_timeout_s = connect_timeout_s
        self._limits: dict[str, int] = {}  # each topic's max.message.bytes, once read
        self._writer: Writing = (transport or Kafka(kafka)).writer(
            client_id=f"{client_id}-{source}",
            linger_ms=linger_ms,
            max_batch_bytes=256 * 1024,
        )

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s + 5):
                await self._writer.start(self._connect_timeout_s)
        except (TimeoutError, confluent_kafka.KafkaException) as exc:
            raise _unavailable(self._kafka, self._connect_timeout_s, exc) from exc

    async def stop(self) -> None:
        await self._writer.stop()

    @property
    def kafka(self) -> KafkaAccess:
        """The cluster this publisher sends to, and as whom."""
        return self._kafka

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

    def headers(
        self, event_type: str, continues: bytes | None = None, *, traceparent: bytes | None = None
    ) -> Headers:
        """CloudEvents Kafka-binding headers plus a W3C traceparent: ``traceparent`` (the
        span the message is sent in), else one that continues the ``continues`` trace,
        else the trace of the message being handled, else a new one."""
        event_id, continuing = _tracing._ids(continues)
        return [
            ("ce_specversion", b"1.0"),
            ("ce_id", event_id),
            ("ce_source", self._source),
            ("ce_type", event_type.encode()),
            ("ce_time", _event_time()),
            ("content-type", b"application/avro"),
            ("traceparent", traceparent or continuing),
        ]

    def _signed(
        self, topic: str, key: bytes, value: bytes, record: Mapping[str, Any], headers: Headers
    ) -> Headers:
        signer = self._signer
        if signer is None:
            return headers
        signing = signer if isinstance(signer, SigningKey) else signer(topic, key, record)
        return headers + signing.sign(topic, key, value)

    async def max_message_bytes(self, topic: str) -> int:
        """The largest message ``topic`` takes (its ``max.message.bytes``, read once), once
        the topic is ready to be sent to."""
        limit = self._limits.get(topic)
        if limit is None:
            await self._writer.partitions(topic)
            limit = self._limits[topic] = await self._writer.max_message_bytes(topic)
        return limit

    def _encoded(self, topic: Topic, record: Mapping[str, Any]) -> bytes:
        try:
            value = self._codec.encode(topic.event, record)
        except _INVALID as exc:
            raise _invalid(topic, 0, exc) from exc
        return self._codec.seal(record["tenant"], value) if topic.sealed else value

    async def send(self, topic: Topic, key: str, record: Mapping[str, Any]) -> asyncio.Future[Any]:
        """Queue one event; the returned future resolves when the broker has acknowledged it.

        Raises :class:`UnsendableRecordError` (:class:`MessageTooLargeError` when it is
        over the topic's ``max.message.bytes``) before sending anything. On a sealed topic
        the value is sealed for the record's tenant (the codec must be
        :meth:`~lepton.contract.codec.Codec.keyed`).
        """
        name = topic.name
        limit = self._limits.get(name) or await self.max_message_bytes(name)
        value = self._encoded(topic, record)
        raw_key = key.encode()
        if not _tracing.tracing():
            headers = self._signed(name, raw_key, value, record, self.headers(topic.event))
            if len(value) + len(raw_key) > limit - _HEADROOM:
                _weigh(name, raw_key, value, headers, limit, 0)
            return self._writer.send(name, raw_key, value, headers)
        sending, traceparent = _tracing.sending(name, None)
        try:
            headers = self._signed(
                name, raw_key, value, record, self.headers(topic.event, traceparent=traceparent)
            )
            if len(value) + len(raw_key) > limit - _HEADROOM:
                _weigh(name, raw_key, value, headers, limit, 0)
        except BaseException:
            sending.end()  # nothing was sent
            raise
        acknowledged = self._writer.send(name, raw_key, value, headers)
        _tracing.sent([sending], acknowledged)
        return acknowledged

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

        If any event cannot be sent (:class:`UnsendableRecordError`, its ``index`` the
        event's place), none is: the caller may set it aside and send the others.
        """
        pending = list(events)
        continues = list(traces) if traces is not None else [None] * len(pending)
        if len(continues) != len(pending):
            raise ValueError(f"{len(continues)} traces for {len(pending)} events")
        name = topic.name
        limit = self._limits.get(name) or await self.max_message_bytes(name)
        roomy = limit - _HEADROOM
        encode, headers, event, signed = self._codec.encode, self.headers, topic.event, self._signed
        seal = self._codec.seal if topic.sealed else None
        messages: list[tuple[bytes, bytes, Headers]] = []
        # With a tracer, each message is sent in a span of its own (ended on the answer).
        spans: list[Span] | None = [] if _tracing.tracing() else None
        try:
            for (key, record), trace in zip(pending, continues, strict=True):
                raw_key, value = key.encode(), encode(event, record)
                if seal is not None:
                    value = seal(record["tenant"], value)
                if spans is None:
                    added = signed(name, raw_key, value, record, headers(event, trace))
                else:
                    sending, traceparent = _tracing.sending(name, trace)
                    spans.append(sending)
                    added = signed(
                        name, raw_key, value, record, headers(event, traceparent=traceparent)
                    )
                if len(value) + len(raw_key) > roomy:
                    _weigh(name, raw_key, value, added, limit, len(messages))
                messages.append((raw_key, value, added))
        except BaseException as exc:
            for sending in spans or ():
                sending.end()  # nothing of the call was sent
            # Encoding the record at ``len(messages)`` failed.
            if isinstance(exc, _INVALID) and not isinstance(exc, UnsendableRecordError):
                raise _invalid(topic, len(messages), exc) from exc
            raise
        acknowledged = self._writer.send_all(name, messages)
        if spans is not None:
            _tracing.sent(spans, acknowledged)
        return [acknowledged]

    async def send_sendable(
        self,
        topic: Topic,
        events: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        traces: Sequence[bytes | None] | None = None,
        dead_letters: bool = True,
    ) -> tuple[list[asyncio.Future[Any]], list[tuple[int, UnsendableRecordError]]]:
        """:meth:`send_many`, but an event that can never be sent is set aside
        (:meth:`set_aside`; only counted and logged without ``dead_letters``, for a topic
        whose dead letters this service may not write) and the others are sent: one bad
        record never holds up the rest, nor stops a service. Returns the acknowledgements
        and, for each event set aside, its index in ``events`` and why."""
        pending = list(events)
        continues = list(traces) if traces is not None else [None] * len(pending)
        places = list(range(len(pending)))
        aside: list[tuple[int, UnsendableRecordError]] = []
        while True:
            try:
                return await self.send_many(topic, pending, traces=continues), aside
            except UnsendableRecordError as exc:
                key, record = pending.pop(exc.index)
                del continues[exc.index]
                aside.append((places.pop(exc.index), exc))
                if dead_letters:
                    await self.set_aside(topic, key, record, exc)
                else:
                    _counted_aside(topic, exc)

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
        """Send bytes as they are (dead letters, replays) and wait for the acknowledgement;
        :class:`MessageTooLargeError`, before sending, when they are over the topic's limit."""
        limit = self._limits.get(topic) or await self.max_message_bytes(topic)
        _weigh(topic, key, value, headers, limit, 0)
        await self._writer.send(topic, key, value, headers)

    async def set_aside(
        self, topic: Topic, key: str, record: Mapping[str, Any], error: Exception
    ) -> None:
        """A record of this service's own that can never be sent to ``topic`` (``error``,
        an :class:`UnsendableRecordError`): to ``<topic>.dlq`` instead, with the reason,
        cut to fit (:func:`~lepton.bus._sizes.dead_letter`), and counted in
        ``lepton_records_set_aside_total``. The record is Avro as usual, or JSON (its
        ``content-type`` says which) when it does not even encode. Needs the right to
        write ``<topic>.dlq``, which a service has for the topics it reads."""
        headers = self.headers(topic.event)
        value: bytes | None
        try:
            value = self._codec.encode(topic.event, record)
        except _INVALID:
            value = json.dumps(record, default=repr, ensure_ascii=False).encode()
            headers = [
                (name, b"application/json" if name == "content-type" else raw)
                for name, raw in headers
            ]
        letters = dead_letter_topic(topic.name)
        raw_key, value, headers = dead_letter(
            topic.name,
            key.encode(),
            value,
            headers,
            reason_headers(error, topic.name),
            await self.max_message_bytes(letters),
        )
        await self.send_raw(letters, raw_key, value, headers)
        _counted_aside(topic, error)


def _counted_aside(topic: Topic, error: Exception) -> None:
    _SET_ASIDE.labels(topic.name, type(error).__name__).inc()
    log.error("set aside a record for %s that can never be sent: %s", topic.name, error)


def _invalid(topic: Topic, index: int, error: Exception) -> UnsendableRecordError:
    return UnsendableRecordError(
        f"not a valid {topic.event} for {topic.name}: {error!r}"[:4096],
        topic=topic.name,
        index=index,
    )


def _weigh(
    topic: str, key: bytes | None, value: bytes | None, headers: Headers, limit: int, index: int
) -> None:
    """Raises :class:`MessageTooLargeError` for a message over ``limit``."""
    size = message_bytes(key, value, headers)
    if size > limit:
        raise MessageTooLargeError(topic=topic, size=size, limit=limit, index=index)


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
