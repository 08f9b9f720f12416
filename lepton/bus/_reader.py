"""librdkafka's consumer behind an asyncio face: what :class:`lepton.bus.Subscriber` reads with.

Why not aiokafka here: its fetch protocol is pure Python, about a millisecond of CPU per
fetch round trip with a few dozen partitions. A service that answers events one at a
time (the scheduler at 1,000 requests/s) makes a round trip per event, so reading cost
more than deciding. librdkafka fetches in its own C threads (with incremental fetch
sessions) and hands over what it prefetched; the Python side pays microseconds a message.

Every call that may block runs in one worker thread of its own, so librdkafka never
blocks the event loop; calls never overlap (closing while polling is not safe), since a
reader's calls are awaited one after another. Taking what was already prefetched, and
committing without waiting, return at once and run on the event loop's thread.

In a consumer group, partitions move between members with the cooperative-sticky
assignor: a member joining or leaving moves only the partitions that must move, and the
others keep being read through the rebalance (the eager default stopped every member).
What a member handled of a partition it gives up is committed before the partition goes
(:meth:`Reader._revoked`), and nothing is committed for a partition it no longer owns: a
member's commit would otherwise move the new owner's position back, and that owner's
work would be done again by the next.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import confluent_kafka

from lepton.bus._writer import CredentialWatch

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lepton.config import KafkaAccess

__all__ = ["Message", "Reader", "ReaderError"]

log = logging.getLogger(__name__)


class Message(Protocol):
    """A message that was read (librdkafka's, seen as it is once errors are filtered out:
    a data message always has its topic, partition and offset)."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


# (topic, partition) -> the offset to read next
Positions = dict[tuple[str, int], int]
_T = TypeVar("_T")

# How long one fetch waits for a first message: also how soon an idle reader notices
# that it should stop.
_POLL_S = 0.25
# How long a stop waits for the consumer to leave its group. librdkafka's close has no
# timeout of its own and has been seen never to return (see the rebalance callbacks);
# past this, the group drops the member at its session timeout instead.
CLOSE_TIMEOUT_S = 15.0
# Errors librdkafka reports as messages that need no action: it retries on its own.
_BENIGN = frozenset(
    {
        confluent_kafka.KafkaError._PARTITION_EOF,
        confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,  # a topic not created yet
        confluent_kafka.KafkaError._TRANSPORT,  # a broker connection dropped: reconnecting
        confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
    }
)


# What a broker answers about a topic created a moment ago, or a group whose coordinator
# is still loading its offsets (a fresh broker): librdkafka does not retry these in
# committed() and get_watermark_offsets().
_NOT_READY_YET = frozenset(
    {
        confluent_kafka.KafkaError.NOT_COORDINATOR,
        confluent_kafka.KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        confluent_kafka.KafkaError.COORDINATOR_NOT_AVAILABLE,
        confluent_kafka.KafkaError.NOT_LEADER_FOR_PARTITION,
        confluent_kafka.KafkaError.LEADER_NOT_AVAILABLE,
        confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART,
        confluent_kafka.KafkaError._TRANSPORT,
    }
)


def _retrying(call: Callable[[], _T], timeout_s: float) -> _T:
    """``call()``, again while it fails with what a broker says when it is not ready yet
    (in the reader's own thread, so sleeping blocks nothing else)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
            again = error.retriable() or error.code() in _NOT_READY_YET
            if not again or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def owned(positions: Positions, owner_of: set[tuple[str, int]]) -> Positions:
    """The positions of the partitions in ``owner_of``: all a group member may commit.

    The classic group protocol accepts a commit for any partition from any current member,
    so a member that commits a partition it gave up moves its new owner's position back.
    """
    return {where: at for where, at in positions.items() if where in owner_of}


class ReaderError(RuntimeError):
    """librdkafka reported a fatal consumer error."""


class _DaemonWorker(Executor):
    """One daemon thread running the calls it is given, in order. A call that never returns
    (librdkafka's close) then cannot keep the process from exiting, as the worker of a
    ``ThreadPoolExecutor``, which the interpreter joins at exit, would."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._calls = queue.SimpleQueue()
        self._shut = False
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        if self._shut:  # as ThreadPoolExecutor: an error, not a call that never runs
            raise RuntimeError("cannot schedule new calls after shutdown")
        future: Future[_T] = Future()
        self._calls.put((future, functools.partial(fn, *args, **kwargs)))
        return future

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            future, function = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(function())
                except BaseException as exc:  # handed to the caller, as an executor does
                    future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shut = True
        self._calls.put(None)  # ends the thread once the calls before it returned


class Reader:
    """One librdkafka consumer, driven from its own thread."""

    def __init__(
        self,
        kafka: KafkaAccess,
        *,
        group_id: str,
        client_id: str,
        max_prefetch_kib: int = 16_384,
        gather_ms: int = 0,
    ) -> None:
        """``gather_ms``: how long the broker may hold a fetch while it gathers up to
        1 MiB; fewer, larger fetches cost both sides less CPU at high rates, and delay
        each message by up to that long."""
        self._credentials = CredentialWatch()
        self._consumer = confluent_kafka.Consumer(
            {
                **kafka.librdkafka(),
                "error_cb": self._credentials,
                "group.id": group_id,
                "client.id": client_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                # Every member of a group must name the same assignor: a rolling upgrade
                # from an eager one (librdkafka's default) needs the group emptied once.
                "partition.assignment.strategy": "cooperative-sticky",
                # As aiokafka's default: a member killed without leaving (SIGKILL) hands its
                # partitions to the others after 10 s, not librdkafka's 45 s.
                "session.timeout.ms": 10_000,
                # How soon a member hears of a rebalance (a member joined or left): each
                # cooperative rebalance takes two rounds, every member rejoining in each.
                "heartbeat.interval.ms": 1_000,
                "queued.max.messages.kbytes": max_prefetch_kib,
                "fetch.min.bytes": 1 << 20 if gather_ms else 1,
                "fetch.wait.max.ms": gather_ms or 500,
                "logger": log,
            }
        )
        self._worker = _DaemonWorker(f"kafka-{client_id}")
        self._closed = False
        # In a group: the partitions this member owns, the positions it was last asked to
        # commit for them, and how many times the ownership changed (the rebalance
        # callbacks run inside consume and poll, on whichever thread called them).
        self._grouped = False
        self._owned: set[tuple[str, int]] = set()
        self._handled: Positions = {}
        self._moves = 0

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)

    async def check_broker(self, timeout_s: float) -> None:
        """Raise :class:`confluent_kafka.KafkaException` unless a broker answers in time."""
        try:
            await self._call(lambda: self._consumer.list_topics(timeout=timeout_s))
        except confluent_kafka.KafkaException as exc:
            await self._call(self._consumer.poll, 0)  # serves the queued error callbacks
            raise self._credentials.reason(exc) from None

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Join the consumer group for these topics (from the committed offsets)."""
        self._grouped = True
        await self._call(
            functools.partial(
                self._consumer.subscribe,
                list(topics),
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._lost,
            )
        )

    # Each rebalance callback changes the assignment itself. Left to confluent-kafka, the
    # change asks librdkafka for the group's protocol (rd_kafka_rebalance_protocol), and
    # that request never returns when the callback runs inside Consumer.close (librdkafka
    # issue 4041): a stopping service then hung for ever in close, in a group whose
    # members came and went. The protocol is known here: cooperative, set above.

    def _assigned(
        self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        consumer.incremental_assign(partitions)
        self._owned.update((tp.topic, tp.partition) for tp in partitions)
        self._moves += 1

    def _revoked(
        self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        """Partitions handed to another member: what was handled of them is committed, and
        waited for, before they go (the new owner starts from it)."""
        going = {(tp.topic, tp.partition) for tp in partitions}
        handled = {where: at for where, at in self._handled.items() if where in going}
        if handled:
            self._commit(handled, asynchronous=False)
        consumer.incremental_unassign(partitions)
        self._disown(going)

    def _lost(
        self, consumer: confluent_kafka.Consumer, partitions: list[confluent_kafka.TopicPartition]
    ) -> None:
        """Partitions taken away without a revocation (this member was silent past the
        session timeout): no commit is possible; their new owner redoes what followed its
        last commit."""
        consumer.incremental_unassign(partitions)
        self._disown({(tp.topic, tp.partition) for tp in partitions})

    def _disown(self, going: set[tuple[str, int]]) -> None:
        self._owned -= going
        for where in going:
            self._handled.pop(where, None)
        self._moves += 1

    async def assign(
        self, partitions: Iterable[tuple[str, int]], *, from_start: bool, timeout_s: float = 30
    ) -> None:
        """Read these partitions outside any group membership: from the beginning, or from
        the group's committed offsets (the beginning if none).

        The committed offsets are asked for first, and a failure to get them is an error:
        left to librdkafka (``OFFSET_STORED``), a group coordinator still loading on a
        fresh broker left the partitions silently unread.
        """
        wanted = [confluent_kafka.TopicPartition(t, p) for t, p in partitions]

        def assign() -> None:
            start: dict[tuple[str, int], int] = {}
            if not from_start:
                for tp in self._committed(wanted, timeout_s):
                    if tp.offset >= 0:
                        start[tp.topic, tp.partition] = tp.offset
            self._consumer.assign(
                [
                    confluent_kafka.TopicPartition(
                        tp.topic,
                        tp.partition,
                        start.get((tp.topic, tp.partition), confluent_kafka.OFFSET_BEGINNING),
                    )
                    for tp in wanted
                ]
            )

        await self._call(assign)

    def _committed(
        self, partitions: list[confluent_kafka.TopicPartition], timeout_s: float
    ) -> list[confluent_kafka.TopicPartition]:
        """The group's committed offsets."""
        return _retrying(lambda: self._consumer.committed(partitions, timeout=timeout_s), timeout_s)

    async def assignment(self) -> set[tuple[str, int]]:
        found = await self._call(self._consumer.assignment)
        return {(tp.topic, tp.partition) for tp in found}

    async def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> Positions:
        """Each partition's end, or 0 for one with nothing left to read (retention may
        have removed everything before its end)."""

        def watermarks(where: confluent_kafka.TopicPartition) -> tuple[int, int]:
            low, high = self._consumer.get_watermark_offsets(where, timeout=30, cached=False)
            return low, high

        def ends() -> Positions:
            found = {}
            for topic, partition in partitions:
                where = confluent_kafka.TopicPartition(topic, partition)
                low, high = _retrying(functools.partial(watermarks, where), 30)
                found[topic, partition] = high if high > low else 0
            return found

        return await self._call(ends)

    async def fetch(self, max_messages: int, commit: Positions | None) -> list[Message]:
        """Commit ``commit`` (without waiting for the broker), then whatever arrived: at
        most ``max_messages``, or none after a short wait.

        What librdkafka already prefetched is taken at once, on the caller's thread (both
        calls return without blocking); only an empty queue is waited on in the worker
        thread. A busy subscriber thus never pays a thread hop per fetch.
        """
        if commit:
            self._commit(commit, asynchronous=True)
        moves = self._moves
        messages = self._consumer.consume(max_messages, 0)
        if not messages:
            messages = await self._call(self._wait_for_messages, max_messages)
        if any(message.error() is not None for message in messages):
            messages = [message for message in messages if self._usable(message)]
        if self._moves != moves:
            # A rebalance was served while these were taken: those of a partition that went
            # meanwhile are its new owner's, from the position committed as it went.
            messages = [m for m in messages if (m.topic(), m.partition()) in self._owned]
        return cast("list[Message]", messages)

    def _wait_for_messages(self, max_messages: int) -> list[confluent_kafka.Message]:
        # poll returns at the first message; consume(…, 0) then takes what was prefetched
        # (consume with a timeout would wait for all max_messages).
        first = self._consumer.poll(_POLL_S)
        if first is None:
            return []
        return [first, *self._consumer.consume(max_messages - 1, 0)]

    @staticmethod
    def _usable(message: confluent_kafka.Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.fatal():
            raise ReaderError(f"Kafka consumer failed: {error.str()}")
        if error.code() not in _BENIGN:
            log.warning("Kafka consumer: %s", error.str())
        return False

    def _commit(self, positions: Positions, *, asynchronous: bool) -> None:
        if self._grouped:
            positions = owned(positions, self._owned)
            self._handled.update(positions)
            if not positions:
                return
        offsets = [confluent_kafka.TopicPartition(t, p, o) for (t, p), o in positions.items()]
        try:
            if asynchronous:
                self._consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self._consumer.commit(offsets=offsets, asynchronous=False)
        except confluent_kafka.KafkaException as exc:
            # After a rebalance took the partitions away: their new owner reads from the
            # last commit, so the events are handled again (at least once), not lost.
            log.warning("commit of %s failed: %s", positions, exc)

    async def commit(self, positions: Positions) -> None:
        """Commit and wait for the broker's answer."""
        if positions:
            await self._call(functools.partial(self._commit, positions, asynchronous=False))

    def _give_up_partitions(self, timeout_s: float) -> None:
        """Leave the group's subscription and serve the revocation here, in poll, so that
        close finds nothing to revoke. A revocation served inside close calls
        ``incremental_unassign`` there, which librdkafka may never answer once the consumer
        is closing (hangs of the kind of librdkafka issues 4041 and 4527), and
        confluent-kafka makes that call holding the
        GIL: the whole process stopped, its event loop and the close's own timeout with it
        (a stopping evaluator hung until SIGKILL). A message poll returns meanwhile is
        left, uncommitted, to the partition's next owner."""
        self._consumer.unsubscribe()
        deadline = time.monotonic() + timeout_s
        while self._owned and time.monotonic() < deadline:
            self._consumer.poll(_POLL_S)

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Leave the group (if in one) and stop the worker; safe to call twice. Bounded:
        a close still running after ``timeout_s`` is left to itself (see
        :data:`CLOSE_TIMEOUT_S`), so that a stop ends."""
        if self._closed:
            return
        self._closed = True
        try:
            async with asyncio.timeout(timeout_s):
                if self._grouped:
                    await self._call(self._give_up_partitions, timeout_s)
                await self._call(self._consumer.close)
        except TimeoutError:
            log.warning(
                "the Kafka consumer did not close within %.0f s; going on without it "
                "(the group drops the member at its session timeout)",
                timeout_s,
            )
        finally:
            self._worker.shutdown(wait=False)
