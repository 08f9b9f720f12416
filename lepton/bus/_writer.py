"""librdkafka's producer behind an asyncio face: what :class:`lepton.bus.Publisher` sends with.

Why not aiokafka here: each of its produce requests is built and parsed in Python, and
each ``send`` waits on metadata through a new task; a service that answers events one at
a time paid about a millisecond per message. librdkafka batches, retries and talks to
the brokers in its own C threads; ``produce`` only queues.

Delivery reports come back through ``poll``, which a thread of the writer's own calls in
a loop: the reports of one poll are handed to the event loop together, where they
resolve the futures that :meth:`Writer.send` returned.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, cast

import confluent_kafka
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType

from lepton.errors import MessageError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lepton.config import KafkaAccess

__all__ = [
    "CLIENT_MAX_MESSAGE_BYTES",
    "KAFKA_DEFAULT_MAX_MESSAGE_BYTES",
    "CredentialWatch",
    "PublishError",
    "Writer",
]

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
# librdkafka's header values may also be text or absent; ours are always bytes.
_Headers = list[tuple[str, str | bytes | None]]

# What the broker answers a principal that may not even describe the topic: no use waiting.
_DENIED = frozenset(
    {
        confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED,
        confluent_kafka.KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)
# How long the delivery thread waits in one poll: also how soon it notices a stop.
_POLL_S = 0.1
# The broker's ``message.max.bytes`` by default: the limit of a topic that sets none, and
# what is assumed when this principal may not read the topic's configuration.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588
# librdkafka's own ``message.max.bytes`` (its default is 1,000,000, below Kafka's): set
# above the limit of any topic Lepton uses, so that the topic's limit is the one that
# binds; a topic configured higher still is held to this.
CLIENT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class PublishError(MessageError, RuntimeError):
    """The broker did not take a message (after librdkafka's own retries)."""


class CredentialWatch:
    """librdkafka's ``error_cb``: remembers whether the broker refused the credentials.

    librdkafka reports a refused SASL login only to this callback and keeps retrying; a
    first request then just times out. With this, a client that cannot start says why.
    """

    __slots__ = ("refused",)

    def __init__(self) -> None:
        self.refused: confluent_kafka.KafkaError | None = None

    def __call__(self, error: confluent_kafka.KafkaError) -> None:
        # Every error is also in librdkafka's own log (routed to ``logger``): none is lost.
        if error.code() == confluent_kafka.KafkaError._AUTHENTICATION:
            self.refused = error

    def reason(self, failure: confluent_kafka.KafkaException) -> confluent_kafka.KafkaException:
        """The refusal, if there was one, else ``failure`` itself."""
        return confluent_kafka.KafkaException(self.refused) if self.refused else failure


class _Pending:
    """The delivery of one message, or of every message of a batch: resolves once all of
    them are acknowledged, or at the first failure."""

    __slots__ = ("future", "remaining")

    def __init__(self, future: asyncio.Future[None], remaining: int) -> None:
        self.future = future
        self.remaining = remaining


class Writer:
    """One idempotent librdkafka producer and the thread that collects its reports."""

    def __init__(
        self, kafka: KafkaAccess, *, client_id: str, linger_ms: int, max_batch_bytes: int
    ) -> None:
        self._credentials = CredentialWatch()
        self._access = {**kafka.librdkafka(), "client.id": client_id}
        self._producer = confluent_kafka.Producer(
            {
                **self._access,
                "logger": log,
                "error_cb": self._credentials,
                "message.max.bytes": CLIENT_MAX_MESSAGE_BYTES,
                "enable.idempotence": True,  # implies acks=all, ordered retries
                "linger.ms": linger_ms,
                "batch.size": max_batch_bytes,
                # Java's default partitioner, so every language puts a key in one place.
                "partitioner": "murmur2_random",
            }
        )
        self._admin: AdminClient | None = None  # made on first use: most writers need one
        self._limits: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reports: list[tuple[_Pending, Any]] = []
        self._reports_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._metadata: dict[str, list[int]] = {}

    async def start(self, timeout_s: float) -> None:
        """Raise :class:`confluent_kafka.KafkaException` unless a broker answers in time."""
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=timeout_s)
        except confluent_kafka.KafkaException as exc:
            self._producer.poll(0)  # serves the error callbacks queued meanwhile
            raise self._credentials.reason(exc) from None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._deliver, name="kafka-deliveries", daemon=True)
        self._thread.start()

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Send what is queued (waiting up to ``timeout_s``), then stop the thread."""
        if self._thread is None:
            return
        await asyncio.to_thread(self._producer.flush, timeout_s)
        self._stopping.set()
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        self._admin = None
        self._hand_over()

    async def partitions(self, topic: str, timeout_s: float = 30.0) -> list[int]:
        """The topic's partition numbers, once the cluster's metadata shows every one of
        them with a leader (cached: one metadata request per topic and process).

        Sending waits for this first: librdkafka fails messages it partitioned from the
        metadata of a topic created a moment ago ("Unknown partition", librdkafka#4904).
        """
        known = self._metadata.get(topic)
        if known is not None:
            return known
        deadline = time.monotonic() + timeout_s
        while True:
            metadata = await asyncio.to_thread(self._producer.list_topics, topic, timeout_s)
            found = metadata.topics.get(topic)
            if found is not None and found.error is not None and found.error.code() in _DENIED:
                raise PublishError(f"not allowed to use topic {topic}: {found.error.str()}")
            if (
                found is not None
                and found.error is None
                and found.partitions
                and all(partition.leader >= 0 for partition in found.partitions.values())
            ):
                known = self._metadata[topic] = sorted(found.partitions)
                return known
            if time.monotonic() > deadline:
                why = found.error if found is not None and found.error else "no leader yet"
                raise PublishError(f"topic {topic} is not ready in the cluster: {why}")
            await asyncio.sleep(0.1)  # a new topic's leaders are being elected

    async def max_message_bytes(self, topic: str, timeout_s: float = 30.0) -> int:
        """The largest message ``topic`` takes: its ``max.message.bytes``, read from the
        cluster once per topic and process (Kafka's default when this principal may not
        read the topic's configuration), never above this producer's own limit."""
        known = self._limits.get(topic)
        if known is None:
            described = await asyncio.to_thread(self._configured_limit, topic, timeout_s)
            known = self._limits[topic] = min(described, CLIENT_MAX_MESSAGE_BYTES)
        return known

    def _configured_limit(self, topic: str, timeout_s: float) -> int:
        if self._admin is None:
            self._admin = AdminClient({**self._access}, logger=log)
        resource = ConfigResource(ResourceType.TOPIC, topic)
        try:
            described = self._admin.describe_configs([resource], request_timeout=timeout_s)
            entries = described[resource].result(timeout=timeout_s)
            return int(entries["max.message.bytes"].value)
        except (confluent_kafka.KafkaException, KeyError, ValueError, TimeoutError) as exc:
            log.info(
                "assuming Kafka's default limit of %d bytes a message for %s: %s",
                KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
                topic,
                exc,
            )
            return KAFKA_DEFAULT_MAX_MESSAGE_BYTES

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> asyncio.Future[None]:
        """Queue one message; the future resolves when the broker has acknowledged it."""
        pending = self._pending(1)
        self._produce(topic, key, value, headers, self._reporter(pending))
        return pending.future

    def send_all(
        self, topic: str, messages: Sequence[tuple[bytes, bytes, Headers]]
    ) -> asyncio.Future[None]:
        """Queue messages in order; the future resolves when all are acknowledged."""
        pending = self._pending(len(messages))
        report = self._reporter(pending)
        for key, value, headers in messages:
            self._produce(topic, key, value, headers, report)
        return pending.future

    def _pending(self, count: int) -> _Pending:
        assert self._loop is not None, "Writer.start() first"
        future: asyncio.Future[None] = self._loop.create_future()
        if count == 0:
            future.set_result(None)
        return _Pending(future, count)

    def _reporter(self, pending: _Pending) -> Callable[[Any, Any], None]:
        """The delivery callback of the messages of ``pending`` (runs in the delivery
        thread, inside ``poll``)."""

        def delivered(error: Any, _message: Any) -> None:
            with self._reports_lock:
                self._reports.append((pending, error))

        return delivered

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        delivered: Callable[[Any, Any], None],
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=cast("_Headers", headers), on_delivery=delivered
                )
                return
            except BufferError:
                # librdkafka's queue is full: the broker is far behind. Serve reports (this
                # frees room) and try again; this blocks the loop, as the backlog should.
                self._producer.poll(0.05)

    def _deliver(self) -> None:
        """The delivery thread: serve reports, hand them to the event loop in one go."""
        while not self._stopping.is_set():
            self._producer.poll(_POLL_S)
            if self._reports:
                assert self._loop is not None
                try:
                    self._loop.call_soon_threadsafe(self._hand_over)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    return

    def _hand_over(self) -> None:
        with self._reports_lock:
            reports, self._reports = self._reports, []
        for pending, error in reports:
            future = pending.future
            if future.done():
                continue
            if error is not None:
                future.set_exception(PublishError(f"the broker did not take a message: {error}"))
                continue
            pending.remaining -= 1
            if pending.remaining == 0:
                future.set_result(None)
