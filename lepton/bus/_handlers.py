"""The kinds of handler a :class:`~lepton.bus.Subscriber` calls: per message, per fetch,
and the protocols that let a batch handler pick or skim messages before decoding."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lepton.bus._event import Event

log = logging.getLogger("lepton.bus")


@runtime_checkable
class BatchHandler(Protocol):
    """A handler that takes a whole fetch at once: every event, then one :meth:`flush`.

    The subscriber calls :meth:`apply` for each event of a fetch that decoded, in
    partition order (the order of each partition is kept; partitions follow one another),
    then :meth:`flush` once, then commits. What a fetch's events cause (planning,
    publishing, writing) belongs in :meth:`flush`, done once for all of them.

    Failures, so that no event is lost or applied twice:

    - :meth:`apply` folds one event into memory and does no I/O. If it raises, it must
      have changed nothing: that event alone is dead-lettered, as with a per-message
      handler, and the others of the fetch are applied as usual. A decoding failure is
      dead-lettered before :meth:`apply` ever sees the event.
    - :meth:`flush` raising a :class:`TransientError` (or a lost connection) is retried
      with backoff, :meth:`apply` is not called again: a flush must be safe to retry.
    - :meth:`flush` raising anything else ends :meth:`Subscriber.run` with that error and
      nothing of the fetch committed: its events were applied and cannot be blamed on any
      one of them, so the process stops and a restart reads them again (at-least-once).

    While :meth:`apply` runs, :func:`current_trace` is the event's trace: a handler keeps
    it to publish the event's consequences in the same trace (``traces`` of
    :meth:`Publisher.send_many`, or :func:`continue_trace`).
    """

    def apply(self, event: Event) -> None: ...

    async def flush(self) -> None: ...


@runtime_checkable
class Selective(Protocol):
    """A handler (of either kind) that can turn a message down before it is decoded.

    :meth:`wants` sees the message's topic and raw headers (``(name, value)`` pairs). A
    message it turns down is neither decoded nor handled nor dead-lettered, only
    committed and counted as ``skipped``: for messages the handler would drop anyway
    (a service's own events echoed back to it), decoding is most of their cost.
    """

    def wants(self, topic: str, headers: Sequence[tuple[str, bytes]]) -> bool: ...


@runtime_checkable
class Skimming(Protocol):
    """A :class:`BatchHandler` that can apply some messages straight from their bytes.

    :meth:`skim` sees a message's key and value before anything decodes them. It either
    applies the message as :meth:`BatchHandler.apply` would have (returns True: the
    message counts as handled), or changes nothing and returns False: the message is
    then decoded and applied, or dead-lettered, as usual. It must take only bytes it has
    read in full and found valid, and it sees no topic: it vouches for the event type
    itself (by the schema fingerprint), so it is subscribed only to topics of that type.
    No trace is current while it runs. For a high-rate
    topic whose messages mostly repeat what the handler already knows (heartbeats),
    where decoding each in full is most of the cost.
    """

    def skim(self, key: bytes | None, value: bytes | None) -> bool: ...
