"""A decoded message as a handler sees it and its headers (the trace it continues is
:mod:`lepton.bus._tracing`'s)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from lepton.bus._tracing import _trace_id
from lepton.contract.codec import MessageOrigin, Record, WrongSchemaError
from lepton.contract.events import EVENT_NAMES

if TYPE_CHECKING:
    from lepton.bus._reader import Message

log = logging.getLogger("lepton.bus")


Headers = list[tuple[str, bytes]]
Handler = Callable[["Event"], Awaitable[None]]
TypedRecord = TypeVar("TypedRecord")


DLQ_HEADERS = (
    "dlq_error_type",
    "dlq_error_message",
    "dlq_source_topic",
    "dlq_source_partition",
    "dlq_source_offset",
    "dlq_time",
    # Only when the message had to be cut to fit (lepton.bus._sizes.dead_letter).
    "dlq_truncated",
    "dlq_original_value_bytes",
    "dlq_original_value_sha256",
)


class TransientError(Exception):
    """A handler failure worth retrying (a dependency is down), not the message's fault."""


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
    def value(self) -> bytes:
        """The record's bytes as they were published: to pass a signed record on as proof
        (with its ``lepton-signature`` header)."""
        return self._message.value() or b""

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


@functools.lru_cache(maxsize=1)
def _format_time(epoch_ms: int) -> bytes:
    """RFC 3339 time of a millisecond; cached, as many events share one millisecond."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").encode()


def _event_time() -> bytes:
    return _format_time(time.time_ns() // 1_000_000)
