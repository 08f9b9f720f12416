"""What a consumer-group member may commit (only positions of partitions it owns), how its
rebalance callbacks hand each change of assignment to librdkafka, and that its close is
bounded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import confluent_kafka
import pytest

from lepton.bus._reader import Reader, owned
from lepton.config import KafkaAccess


def test_positions_of_partitions_given_up_are_not_committed() -> None:
    handled = {("t", 0): 12, ("t", 1): 11, ("u", 0): 3}
    assert owned(handled, {("t", 1), ("u", 0)}) == {("t", 1): 11, ("u", 0): 3}


def test_a_member_that_owns_nothing_commits_nothing() -> None:
    assert owned({("t", 0): 12}, set()) == {}


class _Consumer:
    """Records what a rebalance callback asks of the consumer."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, int]]]] = []

    def incremental_assign(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self.calls.append(("assign", [(tp.topic, tp.partition) for tp in partitions]))

    def incremental_unassign(self, partitions: list[confluent_kafka.TopicPartition]) -> None:
        self.calls.append(("unassign", [(tp.topic, tp.partition) for tp in partitions]))


async def test_each_rebalance_callback_changes_the_assignment_itself() -> None:
    """Left undone by a callback, the change is made by confluent-kafka after asking
    librdkafka for the protocol, a request that never returns inside close()."""
    reader = Reader(KafkaAccess(bootstrap="127.0.0.1:9"), group_id="g", client_id="c")
    consumer = _Consumer()
    t0, t1, t2 = (confluent_kafka.TopicPartition("t", p) for p in range(3))
    reader._assigned(consumer, [t0, t1, t2])  # type: ignore[arg-type]
    reader._revoked(consumer, [t1])  # type: ignore[arg-type]
    reader._lost(consumer, [t2])  # type: ignore[arg-type]
    reader._assigned(consumer, [])  # type: ignore[arg-type]  # a cooperative round's empty one
    assert consumer.calls == [
        ("assign", [("t", 0), ("t", 1), ("t", 2)]),
        ("unassign", [("t", 1)]),
        ("unassign", [("t", 2)]),
        ("assign", []),
    ]
    assert reader._owned == {("t", 0)}
    await reader.close()
    with pytest.raises(RuntimeError, match="after shutdown"):  # not a call that never runs
        await reader.assignment()


HANGING_CLOSE = textwrap.dedent(
    """
    import asyncio
    import threading

    from lepton.bus._reader import Reader
    from lepton.config import KafkaAccess


    class Hanging:
        def close(self):
            threading.Event().wait()  # as librdkafka's close once did: never returns


    async def main():
        reader = Reader(KafkaAccess(bootstrap="127.0.0.1:9"), group_id="g", client_id="c")
        reader._consumer.close()
        reader._consumer = Hanging()
        await reader.close(timeout_s=0.5)
        print("closed")


    asyncio.run(main())
    """
)


def test_a_close_that_never_returns_neither_stops_the_stop_nor_the_exit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", HANGING_CLOSE], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed"
    assert "did not close within 0 s" in done.stderr


class _Leaving(_Consumer):
    """A group member's consumer: unsubscribing revokes what it owns in the next poll, as
    librdkafka serves a rebalance callback; close records what was still owned."""

    def __init__(self, reader: Reader) -> None:
        super().__init__()
        self.reader = reader
        self.revoking: list[confluent_kafka.TopicPartition] = []

    def unsubscribe(self) -> None:
        self.calls.append(("unsubscribe", []))
        self.revoking = [
            confluent_kafka.TopicPartition(t, p) for t, p in sorted(self.reader._owned)
        ]

    def poll(self, timeout: float) -> None:
        if self.revoking:
            going, self.revoking = self.revoking, []
            self.reader._revoked(self, going)  # type: ignore[arg-type]

    def close(self) -> None:
        self.calls.append(("close", sorted(self.reader._owned)))


async def test_a_member_gives_its_partitions_up_in_poll_before_it_closes() -> None:
    """A revocation served inside close would call incremental_unassign there, which
    librdkafka may never answer while confluent-kafka holds the GIL: the process froze."""
    reader = Reader(KafkaAccess(bootstrap="127.0.0.1:9"), group_id="g", client_id="c")
    reader._consumer.close()
    consumer = _Leaving(reader)
    reader._consumer = consumer  # type: ignore[assignment]
    reader._grouped = True
    reader._assigned(consumer, [confluent_kafka.TopicPartition("t", p) for p in (0, 1)])  # type: ignore[arg-type]
    await reader.close()
    assert consumer.calls == [
        ("assign", [("t", 0), ("t", 1)]),
        ("unsubscribe", []),
        ("unassign", [("t", 0), ("t", 1)]),
        ("close", []),  # nothing left to revoke inside close
    ]
