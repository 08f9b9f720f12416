"""The SDK's transport to Kafka: publishing requests with the broker's acknowledgement,
and reading answers and events from positions taken by a consumer outside any group."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from lepton.bus import DLQ_HEADERS, BrokerUnavailableError, Publisher, partition_for
from lepton.contract import default_codec
from lepton.contract.codec import Codec, DecodeError, NotForThisReaderError
from lepton.contract.registry import attach_registry
from lepton.contract.topics import (
    ALL_TOPICS,
    DLQ_SUFFIX,
    Namespace,
    Topic,
    dead_letter_topic,
)
from lepton.errors import RequestError
from lepton.runtime import endpoints, identity

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Sequence

    from lepton.config import KafkaAccess, Settings
    from lepton.contract.codec import Record

_FETCH_MS = 500


@dataclass(frozen=True, slots=True)
class TailedEvent:
    """One message of a topic, as :meth:`lepton.LeptonClient.tail` reads it.

    On a dead-letter topic, ``dead_letter`` holds why it was set aside (the ``dlq_*``
    headers, without the prefix: ``error_type``, ``error_message``, ``source_topic``, …)
    and ``value`` a summary of the bytes set aside (their size and first bytes); the
    record is decoded when it can be, else ``error`` says why not."""

    topic: str
    offset: int
    key: str | None
    type: str | None = None
    record: Record | None = None
    error: str | None = None
    dead_letter: dict[str, str] | None = None
    value: dict[str, Any] | None = None


class KafkaTransport:
    """The broker, as the SDK uses it; connects on first use. Topics are named as
    declared (``lepton.jobs.requested``) and prefixed here."""

    def __init__(self, settings: Settings, source: str) -> None:
        self._settings = settings
        self._source = source
        self.names = Namespace(settings.topic_prefix)
        self._access: KafkaAccess | None = None
        self._publisher: Publisher | None = None
        self._codec: Codec | None = None
        self._registry_attached = False
        self._opening = asyncio.Lock()

    @property
    def access(self) -> KafkaAccess:
        """The Kafka cluster and credentials: the settings', else the local stack's (as
        the client)."""
        if self._access is None:
            given = self._settings.kafka_access()
            self._access = given or endpoints.resolve(self._settings, "client").kafka
        return self._access

    @property
    def codec(self) -> Codec:
        """The contract's codec, opening the answers sealed for this client (its tenant's;
        every tenant's for the local stack's operator)."""
        if self._codec is None:
            self._codec = default_codec().keyed(identity.keyring(self._settings))
        return self._codec

    async def _attach_registry(self) -> None:
        """In schema-registry mode (LEPTON_SCHEMA_REGISTRY_URL), the codec also reads the
        registry's framing, and writes it when LEPTON_SCHEMA_REGISTRY_WRITE says so: done
        once, before the first read or write (every path goes through here)."""
        if self._registry_attached or self._settings.schema_registry_url is None:
            return  # without a registry the codec is made when first used, as it was
        self._codec = (await attach_registry(default_codec(), self._settings, self.names)).keyed(
            identity.keyring(self._settings)
        )
        self._registry_attached = True

    async def _bus(self) -> Publisher:
        async with self._opening:
            await self._attach_registry()
            if self._publisher is None:
                publisher = Publisher(
                    self.access,
                    self.codec,
                    source=self._source,
                    client_id=self._settings.client_id,
                    connect_timeout_s=self._settings.connect_timeout_s,
                    signer=identity.signing_key(self._settings, identity.LOCAL_OPERATOR),
                )
                await publisher.start()
                self._publisher = publisher
            return self._publisher

    async def publish(self, declared: str, key: str, record: Record) -> None:
        """Publish ``record`` and return once the broker has acknowledged it."""
        bus = await self._bus()
        await bus.publish(self.names.topic(declared), key, record)

    async def publish_many(self, declared: str, keyed: list[tuple[str, Record]]) -> None:
        """Publish ``(key, record)`` pairs and return once the broker acknowledged all."""
        bus = await self._bus()
        await bus.publish_many(self.names.topic(declared), keyed)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.stop()
            self._publisher = None

    async def _consumer(
        self, partitions: Sequence[TopicPartition], access: KafkaAccess | None = None
    ) -> Any:
        """A consumer outside any group, reading exactly ``partitions`` (as the client, or
        with ``access``)."""
        access = access or self.access
        async with self._opening:
            await self._attach_registry()
        consumer = AIOKafkaConsumer(
            **access.aiokafka(),
            client_id=f"{self._settings.client_id}-{self._source}",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        try:
            async with asyncio.timeout(self._settings.connect_timeout_s):
                await consumer.start()
        except (KafkaError, TimeoutError) as exc:
            await consumer.stop()
            raise BrokerUnavailableError(
                f"Kafka at {access} did not answer within "
                f"{self._settings.connect_timeout_s:.0f} s ({type(exc).__name__}: {exc})",
                "is it running (`lepton stack status`), and are LEPTON_KAFKA_BOOTSTRAP and "
                "the LEPTON_KAFKA_SASL_* credentials right?",
            ) from exc
        consumer.assign(list(partitions))
        return consumer

    async def _partitions(self, topic: Topic) -> list[TopicPartition]:
        bus = await self._bus()
        return [TopicPartition(topic.name, p) for p in sorted(await bus.partitions(topic.name))]

    async def keyed(
        self, declared: str, key: str, since_ms: int | None
    ) -> AsyncGenerator[Record, None]:
        """Every record with ``key`` on a topic, from ``since_ms`` (else the beginning) on,
        read from the one partition the key maps to."""
        async with self.history(declared, key, since_ms) as records:
            async for record in records:
                yield record

    @contextlib.asynccontextmanager
    async def history(
        self, declared: str, key: str, since_ms: int | None
    ) -> AsyncIterator[KeyedRecords]:
        """A reader of the records with ``key`` on a topic, placed at ``since_ms`` (else
        the beginning) of the one partition the key maps to."""
        topic = self.names.topic(declared)
        bus = await self._bus()
        count = len(await bus.partitions(topic.name))
        partition = TopicPartition(topic.name, partition_for(key.encode(), count))
        consumer = await self._consumer([partition])
        try:
            if since_ms is None:
                await consumer.seek_to_beginning(partition)
            else:
                # The end is taken first: if nothing that recent is found, what came after
                # this end is newer. Seeking to the end *after* the search lost the records
                # appended in between (a scheduler answers a job within milliseconds), and
                # without its "assigned" a job's "succeeded" never ended the iteration.
                end = (await consumer.end_offsets([partition]))[partition]
                found = (await consumer.offsets_for_times({partition: since_ms}))[partition]
                consumer.seek(partition, end if found is None else found.offset)
            yield KeyedRecords(consumer, partition, key.encode(), self.codec, topic.event)
        finally:
            await consumer.stop()

    @contextlib.asynccontextmanager
    async def _from_now(self, *declared: str) -> AsyncIterator[Any]:
        """A consumer positioned at the end of the topics on entering the block, so that
        nothing published after that (an answer, an event) can slip past."""
        partitions = [
            p for name in declared for p in await self._partitions(self.names.topic(name))
        ]
        consumer = await self._consumer(partitions)
        try:
            await consumer.seek_to_end(*partitions)
            for partition in partitions:
                await consumer.position(partition)  # resolves the seek now, not at the fetch
            yield consumer
        finally:
            await consumer.stop()

    @contextlib.asynccontextmanager
    async def answers(self, *declared: str) -> AsyncIterator[Answers]:
        """Positions at the end of the answer topics, taken before a request is sent."""
        async with self._from_now(*declared) as consumer:
            yield Answers(consumer, self.codec)

    @contextlib.asynccontextmanager
    async def records_from_now(self, declared: str) -> AsyncIterator[AsyncIterator[Record]]:
        """The topic's records published after entering the block, as they come."""
        async with self._from_now(declared) as consumer:
            yield _records(consumer, self.codec)

    async def tail(
        self, declared: str, *, from_beginning: bool, key: str | None, idle_timeout_s: float | None
    ) -> AsyncGenerator[TailedEvent, None]:
        """See :meth:`lepton.LeptonClient.tail`."""
        source, dead_letters = declared.removesuffix(DLQ_SUFFIX), declared.endswith(DLQ_SUFFIX)
        try:
            topic = self.names.topic(source)
        except KeyError:
            raise RequestError(
                f"unknown topic {declared!r}",
                "one of: "
                + ", ".join(t.name for t in ALL_TOPICS)
                + f", or any of them with {DLQ_SUFFIX} (its dead letters)",
            ) from None
        name = dead_letter_topic(topic.name) if dead_letters else topic.name
        # Dead letters hold every tenant's rejected records: the operators' to read (the
        # admin on the local stack), never a client's (no ACL gives it them).
        access = self._operator_access() if dead_letters else self.access
        found = await _readable_partitions(access, name, self._settings.connect_timeout_s)
        if not found:
            raise RequestError(
                f"{name} does not exist, or {access.username or 'this reader'} may not read it",
                "`lepton stack up` (or `lepton up`) creates every topic; "
                "on a cluster of your own, ask its operators for read access",
            )
        partitions = [TopicPartition(name, p) for p in found]
        consumer = await self._consumer(partitions, access)
        try:
            if from_beginning:
                await consumer.seek_to_beginning(*partitions)
            else:
                await consumer.seek_to_end(*partitions)
            last = time.monotonic()
            while idle_timeout_s is None or time.monotonic() - last <= idle_timeout_s:
                batch = await consumer.getmany(timeout_ms=_FETCH_MS)
                for message in (message for records in batch.values() for message in records):
                    last = time.monotonic()
                    message_key = _text(message.key)
                    if key is not None and message_key != key:
                        continue
                    event = _tailed(self.codec, name, message, message_key)
                    yield _dead_letter(event, message) if dead_letters else event
        finally:
            await consumer.stop()

    def _operator_access(self) -> KafkaAccess:
        """The configured access (an operator's own credentials), else the local stack's
        administrator: who may read dead-letter topics."""
        given = self._settings.kafka_access()
        return given or endpoints.resolve(self._settings, "admin").kafka


class KeyedRecords:
    """One key's records on its partition, read forward from where the reader was placed:
    :meth:`until_now` returns those on the log when it is called, iterating goes on with
    what follows (nothing falls between the two)."""

    def __init__(
        self, consumer: Any, partition: TopicPartition, key: bytes, codec: Codec, event: str
    ) -> None:
        self._consumer = consumer
        self._partition = partition
        self._key = key
        self._codec = codec
        self._event = event

    async def _fetch(self) -> list[Record]:
        batch = await self._consumer.getmany(self._partition, timeout_ms=_FETCH_MS)
        found = []
        for message in batch.get(self._partition, ()):
            if message.key != self._key:
                continue
            try:
                found.append(self._codec.decode(message.value, expected=self._event)[1])
            except NotForThisReaderError:
                continue  # another tenant's record under the same key
        return found

    async def until_now(self) -> list[Record]:
        """The key's records from the reader's position to the partition's end as it is
        now (and any that arrived meanwhile in the same fetches)."""
        end = (await self._consumer.end_offsets([self._partition]))[self._partition]
        found: list[Record] = []
        while await self._consumer.position(self._partition) < end:
            found += await self._fetch()
        return found

    async def __aiter__(self) -> AsyncIterator[Record]:
        while True:
            for record in await self._fetch():
                yield record


class Answers:
    """Answers read from positions taken before the questions were asked."""

    def __init__(self, consumer: Any, codec: Codec) -> None:
        self._consumer = consumer
        self._codec = codec

    async def collect(
        self, request_ids: set[str], timeout_s: float
    ) -> dict[str, tuple[str, Record]]:
        """``(event type, record)`` for each request id; TimeoutError after ``timeout_s``.

        Other clients' answers are skipped (other tenants' are sealed: they do not even
        open). A question is always asked before its answer is collected, and the reading
        only moves forward, so nothing is kept between calls.
        """
        found: dict[str, tuple[str, Record]] = {}
        async with asyncio.timeout(timeout_s):
            while len(found) < len(request_ids):
                for messages in (await self._consumer.getmany(timeout_ms=_FETCH_MS)).values():
                    for message in messages:
                        try:
                            kind, record = self._codec.decode(message.value)
                        except NotForThisReaderError:
                            continue
                        if record["request_id"] in request_ids:
                            found[record["request_id"]] = (kind, record)
        return found


async def _readable_partitions(access: KafkaAccess, topic: str, timeout_s: float) -> list[int]:
    """The topic's partitions as ``access`` sees them: none if it does not exist or that
    principal may not describe it (reading implies describing)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**access.aiokafka())
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            described = await admin.describe_topics([topic])
    except (KafkaError, TimeoutError) as exc:
        raise BrokerUnavailableError(
            f"Kafka at {access} did not answer within {timeout_s:.0f} s "
            f"({type(exc).__name__}: {exc})",
            "is it running (`lepton stack status`)?",
        ) from exc
    finally:
        await admin.close()
    return sorted(
        partition["partition"]
        for entry in described
        if entry["error_code"] == 0
        for partition in entry["partitions"]
    )


def _tailed(codec: Codec, topic: str, message: Any, key: str | None) -> TailedEvent:
    try:
        kind, record = codec.decode(message.value)
    except DecodeError as exc:
        return TailedEvent(topic, message.offset, key, error=str(exc))
    return TailedEvent(topic, message.offset, key, kind, record)


# The first bytes of a dead letter's value shown: enough to recognise a framing or a
# text, never megabytes of it.
_VALUE_HEAD_BYTES = 64


def _dead_letter(event: TailedEvent, message: Any) -> TailedEvent:
    """``event`` with why it was set aside and a summary of its raw value."""
    reasons = {
        name.removeprefix("dlq_"): value.decode("utf-8", "replace")
        for name, value in message.headers or ()
        if name in DLQ_HEADERS and value is not None
    }
    raw: bytes = message.value or b""
    summary = {"bytes": len(raw), "head": raw[:_VALUE_HEAD_BYTES].hex()}
    return dataclasses.replace(event, dead_letter=reasons, value=summary)


async def _records(consumer: Any, codec: Codec) -> AsyncIterator[Record]:
    while True:
        for messages in (await consumer.getmany(timeout_ms=_FETCH_MS)).values():
            for message in messages:
                try:
                    yield codec.decode(message.value)[1]
                except NotForThisReaderError:
                    continue


def _text(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None
