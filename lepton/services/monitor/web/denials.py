"""Every refusal of the monitor's web app: logged at once, and queued for ``lepton.audit``.

A refusal is written to the service's structured log as it happens (who, what, why, from
where; never the credential) and becomes a ``lepton.AuditEvent`` with outcome ``denied``,
the shape ingest publishes. Requests never wait for the broker: the events wait in a
bounded queue that a background loop of the service publishes, and beyond the bound a
flood of refusals is counted, not stored (the log still has every one).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import structlog

    from lepton.contract.events import AuditEvent

__all__ = ["Denial", "Denials"]

_MAX_RESOURCE = 200  # a path is the client's choice: kept short in the log and the event
_BATCH = 500


@dataclass(frozen=True, slots=True)
class Denial:
    """One refused request."""

    status: int  # what the client was answered: 401, 403, or 404 for a hidden resource
    reason: str  # why, in words the log, the audit trail and (but for a 404) the client see
    method: str
    path: str
    client: str  # the peer's address
    actor: str  # the proven principal, or "anonymous" when there is none
    tenant: str  # the tenant the request acted (or claimed to act) for; "" when none
    claimed: str | None = None  # the principal an unproven token named
    owner: str | None = None  # the tenant owning what was asked for, when another's

    @property
    def resource(self) -> str:
        return f"monitor:{self.method} {self.path[:_MAX_RESOURCE]}"

    def event(self, time_ms: int) -> AuditEvent:
        detail = f"{self.status} {self.reason}; from {self.client}"
        if self.claimed is not None:
            detail += f"; the token named {self.claimed}"
        return {
            "actor": self.actor,
            "tenant": self.tenant,
            "action": "read",
            "resource": self.resource,
            "owner": self.owner,
            "outcome": "denied",
            "detail": detail,
            "region": None,
            "time": time_ms,
        }


class Denials:
    """Refusals waiting to be published on ``lepton.audit``, at most ``limit`` of them."""

    def __init__(self, log: structlog.stdlib.BoundLogger, *, limit: int = 10_000) -> None:
        self._log = log
        self._limit = limit
        self._waiting: list[AuditEvent] = []
        self._arrived = asyncio.Event()
        self.dropped = 0  # refusals only logged because the queue was full

    def record(self, denial: Denial) -> None:
        self._log.warning(
            "refused",
            status=denial.status,
            reason=denial.reason,
            actor=denial.actor,
            claimed=denial.claimed,
            tenant=denial.tenant or None,
            owner=denial.owner,
            resource=denial.resource,
            client=denial.client,
        )
        if len(self._waiting) >= self._limit:
            self.dropped += 1
            return
        self._waiting.append(denial.event(time.time_ns() // 1_000_000))
        self._arrived.set()

    async def next_batch(self) -> list[AuditEvent]:
        """The oldest waiting events (at least one), left waiting until :meth:`sent`."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        return self._waiting[:_BATCH]

    def sent(self, count: int) -> None:
        """The oldest ``count`` events are on the broker."""
        del self._waiting[:count]
