"""Where a :class:`~lepton.bus.Publisher`'s and a :class:`~lepton.bus.Subscriber`'s bytes
go: Kafka (:class:`Kafka`, the default), or memory (:class:`lepton.testing.InMemoryBroker`).

The publisher and subscriber keep every rule of their own (encoding, headers, dead
letters, retries, when to commit); a transport only moves bytes and remembers offsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lepton.bus._reader import Message, Positions, Reader
from lepton.bus._writer import Writer

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable, Sequence

    from lepton.config import KafkaAccess

__all__ = ["Kafka", "Reading", "Transport", "Writing"]

Headers = list[tuple[str, bytes]]


class Writing(Protocol):
    """What a publisher sends with (:class:`~lepton.bus._writer.Writer`'s face)."""

    async def start(self, timeout_s: float) -> None: ...
    async def stop(self) -> None: ...
    async def partitions(self, topic: str) -> list[int]: ...
    async def max_message_bytes(self, topic: str) -> int: ...
    def send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> asyncio.Future[None]: ...
    def send_all(
        self, topic: str, messages: Sequence[tuple[bytes, bytes, Headers]]
    ) -> asyncio.Future[None]: ...


class Reading(Protocol):
    """What a subscriber reads with (:class:`~lepton.bus._reader.Reader`'s face)."""

    async def check_broker(self, timeout_s: float) -> None: ...
    async def subscribe(self, topics: Iterable[str]) -> None: ...
    async def assign(self, partitions: Iterable[tuple[str, int]], *, from_start: bool) -> None: ...
    async def assignment(self) -> set[tuple[str, int]]: ...
    async def end_offsets(self, partitions: Iterable[tuple[str, int]]) -> Positions: ...
    async def fetch(self, max_messages: int, commit: Positions | None) -> list[Message]: ...
    async def commit(self, positions: Positions) -> None: ...
    async def close(self) -> None: ...


class Transport(Protocol):
    """Makes the writers and readers of one cluster."""

    def writer(self, *, client_id: str, linger_ms: int, max_batch_bytes: int) -> Writing: ...
    def reader(self, *, group_id: str, client_id: str, gather_ms: int) -> Reading: ...


@dataclass(frozen=True, slots=True)
class Kafka:
    """The Kafka cluster ``access`` reaches, through librdkafka."""

    access: KafkaAccess

    def writer(self, *, client_id: str, linger_ms: int, max_batch_bytes: int) -> Writing:
        return Writer(
            self.access,
            client_id=client_id,
            linger_ms=linger_ms,
            max_batch_bytes=max_batch_bytes,
        )

    def reader(self, *, group_id: str, client_id: str, gather_ms: int) -> Reading:
        return Reader(self.access, group_id=group_id, client_id=client_id, gather_ms=gather_ms)
