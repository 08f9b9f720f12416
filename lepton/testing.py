"""A Kafka cluster in memory, for tests that must run in milliseconds and start no server.

:class:`InMemoryBroker` is a :class:`~lepton.bus.Transport`: give it to a
:class:`~lepton.bus.Publisher` or :class:`~lepton.bus.Subscriber` (``transport=``), or
run a whole :class:`~lepton.runtime.service.Service` on it with :func:`running`. As with
FastStream's ``TestKafkaBroker``, only the bytes' journey is replaced: the publisher and
subscriber are the real ones, so encoding, headers, dead letters (``<topic>.dlq`` with
the ``dlq_*`` headers), retries of a :class:`~lepton.bus.TransientError`, batch handlers
and commits after the handler behave as they do on Kafka. The broker keeps what Kafka
would: topics of partitions (a key's partition is :func:`~lepton.bus.partition_for`'s, so
each key's messages stay in order), offsets, and each consumer group's committed offsets,
so a subscriber that stops without committing (a crash) gets its messages again, and a
replaying subscriber reads everything from the start.

What it leaves out: consumer-group rebalancing (each reader of a group reads every
partition it asked for), retention, transactions. A message without a key goes to
partition 0. Every send is acknowledged at once, unless its topic was :meth:`refused
<InMemoryBroker.refuse>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from lepton.bus import KAFKA_DEFAULT_MAX_MESSAGE_BYTES, Publisher, PublishError, partition_for
from lepton.config import KafkaAccess, Settings
from lepton.contract import authorship, default_codec
from lepton.contract.identity import SIGNATURE_HEADER, IdentityKey, Principal, SigningKey
from lepton.contract.sealed import Keyring
from lepton.contract.topics import ALL_TOPICS, Namespace, Topic
from lepton.runtime.identity import master_key

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

    from lepton.bus import Message, Positions
    from lepton.contract.codec import Codec, Record
    from lepton.runtime.service import Service

__all__ = [
    "Commit",
    "InMemoryBroker",
    "StoredMessage",
    "impersonating",
    "leased",
    "running",
    "service_codec",
]

Headers = list[tuple[str, bytes]]

# How long an idle fetch waits for a message: also how soon a stopping subscriber notices.
_IDLE_FETCH_S = 0.01


class StoredMessage:
    """A message in a partition, as a subscriber reads it (:class:`lepton.bus._reader.Message`)."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_timestamp_ms", "_topic", "_value")

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
    ) -> None:
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._key = key
        self._value = value
        self._headers = list(headers)
        self._timestamp_ms = time.time_ns() // 1_000_000

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return 1, self._timestamp_ms  # (TIMESTAMP_CREATE_TIME, ms), as librdkafka says

    def header(self, name: str) -> bytes | None:
        """The value of a header (the last one of that name), or None."""
        found = [value for header, value in self._headers if header == name]
        return found[-1] if found else None

    def __repr__(self) -> str:
        return f"StoredMessage({self._topic}[{self._partition}]@{self._offset} key={self._key!r})"


class Commit(NamedTuple):
    """A consumer group committed these positions (in :attr:`InMemoryBroker.history`)."""

    group_id: str
    positions: dict[tuple[str, int], int]


@dataclass(eq=False)
class InMemoryBroker:
    """Topics, partitions, offsets and committed offsets in memory (see the module)."""

    # The topics there are at the start (else every declared topic, unprefixed).
    topics: InitVar[Iterable[Topic] | None] = None
    codec: Codec = field(default_factory=default_codec)
    # The installation's master key: the services run on it verify with it, and its
    # publisher signs every record as the principal who would write it.
    identity: IdentityKey = field(default_factory=IdentityKey.generate)
    # Every message appended and every commit, in the order they happened.
    history: list[StoredMessage | Commit] = field(default_factory=list, init=False)
    _partitions: dict[str, list[list[StoredMessage]]] = field(default_factory=dict, init=False)
    _committed: dict[str, dict[tuple[str, int], int]] = field(default_factory=dict, init=False)
    _refused: set[str] = field(default_factory=set, init=False)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def __post_init__(self, topics: Iterable[Topic] | None) -> None:
        self.declare(Namespace().all() if topics is None else topics)
        # Its records are read and written as the services would: sealed answers opened.
        self.codec = self.codec.keyed(Keyring(master=self.identity))

    def declare(self, topics: Iterable[Topic]) -> None:
        """Create these topics (with their partition counts), as ``ensure_topics`` would."""
        for topic in topics:
            self._partitions.setdefault(topic.name, [[] for _ in range(topic.partitions)])

    # ------------------------------------------------------------- the Transport

    def writer(self, *, client_id: str, linger_ms: int, max_batch_bytes: int) -> _Writer:
        return _Writer(self)

    def reader(self, *, group_id: str, client_id: str, gather_ms: int) -> _Reader:
        return _Reader(self, group_id)

    def publisher(self, source: str = "tests") -> Publisher:
        """A publisher on this broker (it needs no start), signing each record as the
        principal who would write it (:func:`impersonating`)."""
        return Publisher(
            KafkaAccess("in-memory"),
            self.codec,
            source=source,
            transport=self,
            signer=impersonating(self.identity),
        )

    # ------------------------------------------------------------- what tests look at

    def messages(self, topic: str) -> list[StoredMessage]:
        """A topic's messages, in the order they were appended."""
        return [m for m in self.history if isinstance(m, StoredMessage) and m.topic() == topic]

    def records(self, topic: str) -> list[Record]:
        """A topic's decoded records, in the order they were appended."""
        return [self.codec.decode(message.value())[1] for message in self.messages(topic)]

    def committed(self, group_id: str) -> dict[tuple[str, int], int]:
        """A consumer group's committed offsets: (topic, partition) -> next to read."""
        return dict(self._committed.get(group_id, {}))

    def refuse(self, topic: str) -> None:
        """From now on, sends to this topic fail (as when the broker refuses them)."""
        self._refused.add(topic)

    def accept(self, topic: str) -> None:
        """Sends to this topic succeed again."""
        self._refused.discard(topic)

    async def until(
        self, topic: str, predicate: Callable[[Record], bool], timeout_s: float = 5.0
    ) -> Record:
        """The first record of the topic (already there or arriving) that satisfies
        ``predicate``; raises TimeoutError if none does in time."""

        def decoded(message: StoredMessage) -> Record:
            return self.codec.decode(message.value())[1]

        found = await self.until_message(topic, lambda m: predicate(decoded(m)), timeout_s)
        return decoded(found)

    async def until_message(
        self, topic: str, predicate: Callable[[StoredMessage], bool], timeout_s: float = 5.0
    ) -> StoredMessage:
        """The first message of the topic (already there or arriving) that satisfies
        ``predicate``, as it is stored (undecoded: a dead letter, say)."""
        checked = 0
        async with asyncio.timeout(timeout_s):
            while True:
                arrived = self._arrived
                found = self.messages(topic)
                for message in found[checked:]:
                    if predicate(message):
                        return message
                checked = len(found)
                await arrived.wait()

    # ------------------------------------------------------------- inside

    def _topic(self, name: str) -> list[list[StoredMessage]]:
        """A topic's partitions; one not declared is created with one partition, as
        Kafka's automatic creation (and every dead-letter topic) has."""
        found = self._partitions.get(name)
        if found is None:
            found = self._partitions[name] = [[]]
        return found

    def _append(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        partitions = self._topic(topic)
        number = partition_for(key, len(partitions)) if key is not None else 0
        partition = partitions[number]
        message = StoredMessage(topic, number, len(partition), key, value, headers)
        partition.append(message)
        self.history.append(message)
        # Wake everyone waiting for a message; later waiters wait on a new event.
        self._arrived.set()
        self._arrived = asyncio.Event()

    def _commit(self, group_id: str, positions: Positions) -> None:
        self._committed.setdefault(group_id, {}).update(positions)
        self.history.append(Commit(group_id, dict(positions)))


class _Writer:
    """A publisher's side: appends at once and acknowledges at once."""

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker

    async def start(self, timeout_s: float) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def partitions(self, topic: str) -> list[int]:
        return list(range(len(self._broker._topic(topic))))

    async def max_message_bytes(self, topic: str) -> int:
        return KAFKA_DEFAULT_MAX_MESSAGE_BYTES  # every topic as Kafka configures it by default

    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> asyncio.Future[None]:
        return self.send_all(topic, [(key, value, headers)])

    def send_all(
        self, topic: str, messages: Sequence[tuple[bytes | None, bytes | None, Headers]]
    ) -> asyncio.Future[None]:
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if topic in self._broker._refused:
            acknowledged.set_exception(PublishError(f"the broker did not take {topic}"))
            return acknowledged
        for key, value, headers in messages:
            self._broker._append(topic, key, value, headers)
        acknowledged.set_result(None)
        return acknowledged


class _Reader:
    """A subscriber's side: its positions, read a partition after another."""

    def __init__(self, broker: InMemoryBroker, group_id: str) -> None:
        self._broker = broker
        self._group_id = group_id
        self._positions: dict[tuple[str, int], int] = {}
        self._closed = False

    async def check_broker(self, timeout_s: float) -> None:
        return None

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Every partition of the topics, from the group's committed offsets (else the
        beginning): the only member of its group."""
        await self.assign(
            [
                (topic, number)
                for topic in topics
                for number in range(len(self._broker._topic(topic)))
            ],
            from_start=False,
        )

    async def assign(self, partitions: Iterable[tuple[str, int]], *, from_start: bool) -> None:
        committed = {} if from_start else self._broker.committed(self._group_id)
        self._positions = {where: committed.get(where, 0) for where in partitions}

    async def assignment(self) -> set[tuple[str, int]]:
        return set(self._positions)

    async def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> Positions:
        return {
            (topic, number): len(self._broker._topic(topic)[number]) for topic, number in partitions
        }

    async def fetch(self, max_messages: int, commit: Positions | None) -> list[Message]:
        if commit:
            self._broker._commit(self._group_id, commit)
        if self._closed:
            return []
        arrived = self._broker._arrived
        taken = self._take(max_messages)
        if not taken:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_IDLE_FETCH_S):
                    await arrived.wait()
            taken = self._take(max_messages)
        return taken

    def _take(self, max_messages: int) -> list[Message]:
        taken: list[Message] = []
        for (topic, number), position in self._positions.items():
            partition = self._broker._topic(topic)[number]
            more = partition[position : position + max_messages - len(taken)]
            taken.extend(more)
            self._positions[topic, number] = position + len(more)
        return taken

    async def commit(self, positions: Positions) -> None:
        if positions:
            self._broker._commit(self._group_id, positions)

    async def close(self) -> None:
        self._closed = True


@contextlib.asynccontextmanager
async def running(
    service: Service, broker: InMemoryBroker, pool: Any = None, *, term: int | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """The service serving on the broker (:meth:`Service.serve`) while the block runs,
    ready (its subscriber started) when the block begins; on leaving, it stops as on
    SIGTERM, and whatever it failed with is raised. The block gets the serving task, to
    wait for a service that stops by itself.

    ``pool`` stands for the service's database (:class:`asyncpg.Pool`): a test's stand-in,
    for a service whose handler does not reach PostgreSQL or whose database calls the test
    replaces.
    """
    broker.declare(Namespace(service.settings.topic_prefix).all())
    task = asyncio.create_task(service.serve(broker, pool, term=term, master=broker.identity))
    ready = asyncio.create_task(service.ready.wait())
    try:
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # it failed while starting: say why
        yield task
    finally:
        ready.cancel()
        service.stop_soon()
        await task


_TEST_OPERATOR = Principal("operator", "tests")
_DECLARED_LONGEST_FIRST = sorted((t.name for t in ALL_TOPICS), key=len, reverse=True)


def service_codec(master: IdentityKey | None = None) -> Codec:
    """The contract's codec holding the master key (by default the configured one), as a
    service's does: it seals and opens every tenant's answers. For tests and benchmarks
    that read what the services answer."""
    return default_codec().keyed(Keyring(master=master or master_key(Settings())))


def impersonating(
    master: IdentityKey | None = None,
) -> Callable[[str, bytes, Mapping[str, Any]], SigningKey]:
    """A publisher's signer that signs each record as its natural author
    (:func:`lepton.contract.authorship.natural_author`): for tests and load generators,
    which hold the master key (by default the configured one,
    :func:`lepton.runtime.identity.master_key`) and write as many nodes and tenants.
    Topics are matched by their declared name's ending, whatever an installation's prefix."""
    if master is None:
        master = master_key(Settings())
    keys: dict[Any, SigningKey] = {}
    declared_names: dict[str, str | None] = {}
    nodes: dict[bytes, SigningKey] = {}  # a heartbeat's author is its key's node

    def sign_as(topic: str, key: bytes, record: Mapping[str, Any]) -> SigningKey:
        if topic not in declared_names:
            declared_names[topic] = next(
                (name for name in _DECLARED_LONGEST_FIRST if topic.endswith(name)), None
            )
        declared = declared_names[topic]
        heartbeat = declared == "lepton.node.heartbeats"
        if heartbeat and key in nodes:
            return nodes[key]
        principal = (
            _TEST_OPERATOR
            if declared is None  # a test's own topic: no rule applies to it
            else authorship.natural_author(declared, key, record)
        )
        found = keys.get(principal)
        if found is None:
            found = keys[principal] = master.derive(principal)
        if heartbeat:
            nodes[key] = found
        return found

    return sign_as


def leased(
    ready: Mapping[str, Any],
    master: IdentityKey,
    names: Namespace,
    codec: Codec,
    node: str = "trainer",
) -> dict[str, Any]:
    """``ready`` (a ``lepton.ModelReady``) with the lease a scheduler would have granted
    ``node`` for its job: what a test announcing a model as a trainer must carry (the
    natural author of a model is ``node:trainer``, see :func:`impersonating`)."""
    assignment = {
        "job_id": ready["job_id"],
        "node_id": node,
        "action": "run",
        "worker_index": 0,
        "gang_size": 1,
        "lease_epoch": 1,
        "attempt": ready.get("attempt", 0),
        "granted": {"cpu_millicores": 1000, "memory_mib": 1024, "gpus": 0, "network_mbps": 0},
        "tenant": ready["tenant"],
        "task": {"kind": "train"},
        "dataset": ready.get("dataset"),
        "assigned_at": ready["ready_at"],
    }
    topic = names.topic("lepton.jobs.assigned")
    value = codec.encode(topic.event, assignment)
    scheduler = master.derive(Principal("service", "scheduler"))
    signature = dict(scheduler.sign(topic.name, node.encode(), value))[SIGNATURE_HEADER]
    return {**ready, "lease": {"assignment": value, "signature": signature}}
