"""The check a subscriber makes before a record reaches its handler: signed, and by a
principal the topic's rule allows (:mod:`lepton.contract.identity`,
:mod:`lepton.contract.authorship`); and the audit event a refusal leaves."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lepton.contract import authorship
from lepton.contract.identity import PRINCIPAL_HEADER, Verifier

if TYPE_CHECKING:
    from lepton.bus._reader import Message
    from lepton.contract.codec import Record
    from lepton.contract.events import AuditEvent
    from lepton.contract.topics import Namespace, Topic
    from lepton.errors import ForgedRecordError

__all__ = ["Authenticator"]


class Authenticator:
    """Refuses, with :class:`~lepton.errors.ForgedRecordError`, a record that is unsigned,
    wrongly signed, or signed by a principal who may not write it."""

    def __init__(self, verifier: Verifier, names: Namespace) -> None:
        self._verifier = verifier
        self._prefix = names.prefix
        self.audit_topic: Topic = names.topic("lepton.audit")

    def _declared(self, topic: str) -> str:
        return topic[len(self._prefix) :] if topic.startswith(self._prefix) else topic

    def check(self, message: Message, record: Record | None) -> None:
        """Raises unless the message's signature and its writer's rights hold. With no
        ``record`` (not decoded yet), only a rule that reads the key alone can pass."""
        topic, key = message.topic(), message.key()
        principal = self._verifier.verify(topic, key, message.value(), message.headers())
        authorship.check(self._declared(topic), key, record, principal)

    def denial(
        self, message: Message, record: Record | None, error: ForgedRecordError
    ) -> tuple[str, AuditEvent]:
        """The audit event (and its key) recording that ``message`` was refused."""
        claimed = dict(message.headers() or ()).get(PRINCIPAL_HEADER, b"")
        actor = claimed.decode("utf-8", "replace")[:200] or "unsigned"
        tenant = str(record.get("tenant", "")) if record is not None else ""
        key = (message.key() or b"").decode("utf-8", "replace")[:200]
        event: AuditEvent = {
            "actor": actor,
            "tenant": tenant,
            "action": "publish",
            "resource": f"topic:{self._declared(message.topic())}/{key}",
            "outcome": "denied",
            "detail": str(error),
            "time": time.time_ns() // 1_000_000,
        }
        return tenant or actor, event
