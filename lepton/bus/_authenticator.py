"""The check a subscriber makes before a record reaches its handler: signed, and by a
principal the topic's rule allows (:mod:`lepton.contract.identity`,
:mod:`lepton.contract.authorship`); and the audit event a refusal leaves."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from lepton.contract import authorship
from lepton.contract.codec import DecodeError
from lepton.contract.identity import PRINCIPAL_HEADER, SIGNATURE_HEADER, Principal, Verifier
from lepton.errors import ForgedRecordError

if TYPE_CHECKING:
    from lepton.bus._reader import Message
    from lepton.contract.codec import Codec, Record
    from lepton.contract.events import AuditEvent
    from lepton.contract.topics import Namespace, Topic

__all__ = ["Authenticator"]

# What a denial's audit event keeps of a name the sender chose, and of the reason.
_NAME_CHARS = 200
_DETAIL_CHARS = 4096


class Authenticator:
    """Refuses, with :class:`~lepton.errors.ForgedRecordError`, a record that is unsigned,
    wrongly signed, or signed by a principal who may not write it."""

    def __init__(self, verifier: Verifier, names: Namespace, codec: Codec) -> None:
        self._verifier = verifier
        self._codec = codec
        self._prefix = names.prefix
        self._assignments = names.topic("lepton.jobs.assigned").name
        self.audit_topic: Topic = names.topic("lepton.audit")

    def _declared(self, topic: str) -> str:
        return topic[len(self._prefix) :] if topic.startswith(self._prefix) else topic

    def check(self, message: Message, record: Record | None) -> None:
        """Raises unless the message's signature and its writer's rights hold. With no
        ``record`` (not decoded yet), only a rule that reads the key alone can pass."""
        topic, key = message.topic(), message.key()
        principal = self._verifier.verify(topic, key, message.value(), message.headers())
        declared = self._declared(topic)
        authorship.check(declared, key, record, principal)
        if declared == "lepton.models.ready":
            self._check_lease(principal, record)

    def _check_lease(self, node: Principal, ready: Record | None) -> None:
        """A model comes from the node that held its job's lease: the scheduler's signed
        instruction it carries must name this job, this tenant and that node."""
        if ready is None:
            raise ForgedRecordError("the lease check needs the record")
        lease = ready.get("lease")
        if lease is None:
            raise ForgedRecordError(f"{node} announced a model without the lease it trained under")
        proof = [
            (PRINCIPAL_HEADER, b"service:scheduler"),
            (SIGNATURE_HEADER, lease["signature"]),
        ]
        self._verifier.verify(self._assignments, node.name.encode(), lease["assignment"], proof)
        try:
            _, assigned = self._codec.decode(lease["assignment"], expected="lepton.JobAssigned")
        except DecodeError as exc:
            raise ForgedRecordError(f"{node}'s lease does not decode: {exc}") from None
        named = (assigned["job_id"], assigned["tenant"], assigned["node_id"], assigned["action"])
        if named != (ready["job_id"], ready["tenant"], node.name, "run"):
            raise ForgedRecordError(
                f"{node}'s lease is for job {assigned['job_id']} of tenant {assigned['tenant']} "
                f"on node {assigned['node_id']}, not this model's"
            )

    def denial(
        self, message: Message, record: Record | None, error: ForgedRecordError
    ) -> tuple[str, AuditEvent]:
        """The audit event (and its key) recording that ``message`` was refused."""
        # Everything here may come from the sender, up to a megabyte: cut, so that the
        # audit event always fits lepton.audit.
        claimed = dict(message.headers() or ()).get(PRINCIPAL_HEADER, b"")
        actor = claimed.decode("utf-8", "replace")[:_NAME_CHARS] or "unsigned"
        tenant = str(record.get("tenant", ""))[:_NAME_CHARS] if record is not None else ""
        key = (message.key() or b"").decode("utf-8", "replace")[:_NAME_CHARS]
        event: AuditEvent = {
            "actor": actor,
            "tenant": tenant,
            "action": "publish",
            "resource": f"topic:{self._declared(message.topic())}/{key}",
            "outcome": "denied",
            "detail": str(error)[:_DETAIL_CHARS],
            "time": time.time_ns() // 1_000_000,
        }
        return tenant or actor, event
