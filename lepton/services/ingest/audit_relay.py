"""Ingest's audit relay: audit rows, committed with what they record, published to
``lepton.audit`` from the database's outbox (``lepton_ingest.audit_outbox``).

A row that can never be published (too large for the topic, or not a valid
``lepton.AuditEvent``) is set aside: marked in the outbox with its reason, sent to
``lepton.audit.dlq`` (cut to fit), counted in ``lepton_records_set_aside_total``, and
never tried again, so no stored row can stop the service at every start. A failure of
PostgreSQL or Kafka is waited out with backoff (``lepton_ingest_audit_relay_failures_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import asyncpg
import prometheus_client
from aiokafka.errors import KafkaError

from lepton.bus import PublishError
from lepton.data.access import AUDIT_CHANNEL
from lepton.errors import UnavailableError
from lepton.services.ingest import storage

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from lepton.contract.topics import Topic
    from lepton.runtime.service import Context

__all__ = ["relay_audit"]

_AUDIT_BATCH = 500
_AUDIT_POLL_S = 5.0  # catches notifications missed while the listener reconnected
_FINISH_S = 10.0  # how long a stop waits for the batch in hand to be sent and committed
# The relay's wait after a failure: doubling from the first, up to the second (seconds).
_AUDIT_RETRY_S = (0.25, 30.0)
# What the relay waits out: PostgreSQL or Kafka away, or refusing for a while.
_RELAY_RETRIED = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    KafkaError,
    PublishError,
    UnavailableError,
)
_RELAY_FAILURES = prometheus_client.Counter(
    "lepton_ingest_audit_relay_failures_total",
    "Times the audit relay failed to reach PostgreSQL or Kafka and waited to retry.",
)


async def relay_audit(context: Context) -> None:
    """Publish audit rows to ``lepton.audit`` as they are committed (an outbox).

    A row that can never be published (too large, invalid) is set aside with its reason
    and dead-lettered, and the others go on; a failure of PostgreSQL or Kafka is retried
    with backoff, however long it lasts: none stops the service.
    """
    topic = context.topic("lepton.audit")
    wake = asyncio.Event()
    failures = 0

    def notified(*_: object) -> None:
        wake.set()

    while True:
        try:
            async with context.pool.acquire() as listener:
                await listener.add_listener(AUDIT_CHANNEL, notified)
                try:
                    while True:
                        wake.clear()
                        while (
                            await _finished(context, _relay_batch(context, topic)) == _AUDIT_BATCH
                        ):
                            pass
                        failures = 0
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(_AUDIT_POLL_S):
                                await wake.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await listener.remove_listener(AUDIT_CHANNEL, notified)
        except _RELAY_RETRIED as exc:
            # Rows stay in the outbox and are sent once PostgreSQL and Kafka answer again.
            failures += 1
            delay = min(_AUDIT_RETRY_S[0] * 2**failures, _AUDIT_RETRY_S[1])
            _RELAY_FAILURES.inc()
            context.log.warning("audit relay failed; retrying", error=str(exc), retry_in_s=delay)
            await asyncio.sleep(delay)


async def _finished(context: Context, batch: Coroutine[Any, Any, int]) -> int:
    """Run ``batch`` to its commit even when the relay is stopped meanwhile (for at most
    ``_FINISH_S``): rows it already sent are then marked sent, not sent again at the next
    start, and a stopped ingest leaves no half-relayed batch."""
    task = asyncio.ensure_future(batch)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            async with asyncio.timeout(_FINISH_S):
                await task
        except Exception as exc:  # the stop goes on; the outbox keeps the rows
            context.log.warning(
                "audit batch not committed at the stop; its rows are sent again at the next start",
                error=repr(exc),
            )
        raise


async def _relay_batch(context: Context, topic: Topic) -> int:
    """Publish one batch of the outbox; returns how many rows it took (sent or set aside)."""
    async with context.pool.acquire() as connection, connection.transaction():
        rows = await storage.pending_audit(connection, _AUDIT_BATCH)
        acks, aside = await context.publisher.send_sendable(
            topic, [(row["tenant"], _audit_event(row)) for row in rows]
        )
        await asyncio.gather(*acks)
        for index, error in aside:
            await storage.set_audit_aside(connection, rows[index]["id"], str(error))
        skipped = {index for index, _ in aside}
        await storage.published_audit(
            connection, [row["id"] for index, row in enumerate(rows) if index not in skipped]
        )
        return len(rows)


def _audit_event(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "actor": row["actor"],
        "tenant": row["tenant"],
        "action": row["action"],
        "resource": row["resource"],
        "owner": row["owner"],
        "outcome": row["outcome"],
        "detail": row["detail"],
        "region": row["region"],
        "time": int(row["time"].timestamp() * 1000),
    }
