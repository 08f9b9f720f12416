"""How large a message may be, what one weighs, and dead letters that always fit.

A topic takes record batches up to its ``max.message.bytes`` (Kafka's default 1,048,588
bytes); a message over it is refused by the broker, or already by librdkafka, with
``MSG_SIZE_TOO_LARGE``. A :class:`~lepton.bus.Publisher` weighs every message against
its topic's limit before it sends anything, and raises :class:`MessageTooLargeError`:
the caller decides (an error answer to the requester, a record set aside), nothing
fails later in the delivery thread where no one can act on it.

A dead letter carries a message that may have been just under its own topic's limit, plus
the reason headers: :func:`dead_letter` keeps it whole when it fits and otherwise keeps a
prefix, with the original value's size and SHA-256 in headers, so that dead-lettering
never fails on size.
"""

from __future__ import annotations

import hashlib
import traceback
from typing import TYPE_CHECKING

import prometheus_client

from lepton.bus._event import _event_time
from lepton.bus._writer import (
    CLIENT_MAX_MESSAGE_BYTES,
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    PublishError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CLIENT_MAX_MESSAGE_BYTES",
    "KAFKA_DEFAULT_MAX_MESSAGE_BYTES",
    "MessageTooLargeError",
    "UnsendableRecordError",
    "dead_letter",
    "message_bytes",
    "reason_headers",
]

Headers = list[tuple[str, bytes]]

# A record batch's header (magic v2): a message alone in its batch adds this to the batch.
_BATCH_OVERHEAD = 61
# A v2 record's fields besides key, value and headers, each varint at its longest: length
# (5), attributes (1), timestamp delta (10), offset delta (5), key and value lengths (5
# each), header count (5).
_RECORD_OVERHEAD = 36
# A header's two length varints at their longest.
_HEADER_OVERHEAD = 10
# A reason's text in a dead letter's header, at most.
_REASON_BYTES = 4096

_TRUNCATED = prometheus_client.Counter(
    "lepton_dead_letters_truncated_total",
    "Dead letters whose message was cut to fit the dead-letter topic, by source topic.",
    ["topic"],
)


class UnsendableRecordError(PublishError, ValueError):
    """A record that can never be sent as it is: not valid for its schema, or too large for
    its topic. Raised before anything is sent; ``index`` is its place among the records of
    the call (0 for a single one), so a caller sending many can set it aside and send the
    rest."""

    def __init__(self, message: str, *, topic: str, index: int = 0) -> None:
        super().__init__(message)
        self.topic = topic
        self.index = index


class MessageTooLargeError(UnsendableRecordError):
    """A message over its topic's ``max.message.bytes`` (``size`` and ``limit`` in bytes)."""

    def __init__(self, *, topic: str, size: int, limit: int, index: int = 0) -> None:
        super().__init__(
            f"a message of {size:,} bytes is over the {limit:,}-byte limit of topic {topic}",
            topic=topic,
            index=index,
        )
        self.size = size
        self.limit = limit


def header_bytes(headers: Sequence[tuple[str, bytes]]) -> int:
    """What headers take of a record, at most."""
    return sum(_HEADER_OVERHEAD + len(name.encode()) + len(value) for name, value in headers)


def message_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What a message takes of its topic's ``max.message.bytes`` when alone in its batch,
    at most (a few bytes more than it does: varints are counted at their longest)."""
    return (
        _BATCH_OVERHEAD
        + _RECORD_OVERHEAD
        + len(key or b"")
        + len(value or b"")
        + header_bytes(headers)
    )


def reason_headers(
    error: BaseException, topic: str, partition: int | None = None, offset: int | None = None
) -> Headers:
    """Why a message went to ``<topic>.dlq``: its error and where it came from (no
    partition and offset for a record that never was on its topic)."""
    headers = [
        ("dlq_error_type", type(error).__name__.encode()),
        ("dlq_error_message", _reason(error)),
        ("dlq_source_topic", topic.encode()),
    ]
    if partition is not None and offset is not None:
        headers += [
            ("dlq_source_partition", str(partition).encode()),
            ("dlq_source_offset", str(offset).encode()),
        ]
    return [*headers, ("dlq_time", _event_time())]


def _reason(error: BaseException) -> bytes:
    text = str(error) or "".join(traceback.format_exception_only(error)).strip()
    return text.encode("utf-8", "replace")[:_REASON_BYTES]


def dead_letter(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    reason: Headers,
    limit: int,
) -> tuple[bytes | None, bytes | None, Headers]:
    """The dead letter of a message of ``topic`` (key, value, headers): the message with
    ``reason`` added, whole when it fits in ``limit`` bytes.

    Otherwise what is kept is, in this order: the reason; a key up to an eighth of the
    room; the original headers if they take at most half of what remains (else none);
    then as much of the value as fits, from its start. ``dlq_truncated`` names what was
    cut (``key``, ``headers``, ``value``), and ``dlq_original_value_bytes`` and
    ``dlq_original_value_sha256`` describe the whole value, so an operator can tell what
    the sender sent and match it to another copy. The message itself is never sendable
    again from such a letter, and needs none: it was refused.
    """
    whole = headers + reason
    if message_bytes(key, value, whole) <= limit:
        return key, value, whole
    value = value or b""
    described = [
        ("dlq_original_value_bytes", str(len(value)).encode()),
        ("dlq_original_value_sha256", hashlib.sha256(value).hexdigest().encode()),
    ]
    # Counted with the longest list of what was cut, which the header may name.
    room = limit - message_bytes(b"", b"", [*reason, *described, ("dlq_truncated", b"x" * 20)])
    cut: list[str] = []
    if key is not None and len(key) > room // 8:
        key = key[: max(room // 8, 0)]
        cut.append("key")
    room -= len(key or b"")
    if headers and header_bytes(headers) > room // 2:
        headers = []
        cut.append("headers")
    room -= header_bytes(headers)
    if len(value) > room:
        value = value[: max(room, 0)]
        cut.append("value")
    _TRUNCATED.labels(topic).inc()
    return key, value, [*headers, *reason, ("dlq_truncated", ",".join(cut).encode()), *described]
