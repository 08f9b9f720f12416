"""Who may write what: the rule a consumer applies to a record's proven writer.

Kafka's ACLs (:mod:`lepton.contract.topics`) let a *role* write a topic: any trainer may
write heartbeats, any client job requests. These rules narrow that to the *principal* a
record's signature proves (:mod:`lepton.contract.identity`): a node reports only for
itself, a tenant asks only in its own name, a verdict comes only from the evaluator (or a
rollback from someone acting for that tenant). What only a stateful consumer can know, that
a node holds the lease of the job it reports on, that consumer checks (the scheduler).

:func:`check` raises :class:`~lepton.errors.ForgedRecordError` saying who tried what; the
consumer dead-letters the record with that reason and audits it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lepton.contract.identity import Principal
from lepton.errors import ForgedRecordError

__all__ = ["NODE_JOB_EVENTS", "check", "natural_author"]

# The job events a node's trainer writes about the lease it holds.
NODE_JOB_EVENTS = frozenset({"started", "progress", "succeeded", "failed", "lost"})
# The verdict an operator or the tenant may publish itself: making an earlier version the
# champion again. Every other verdict is the evaluator's.
_CLIENT_VERDICTS = frozenset({"rolled_back"})

Record = Mapping[str, Any]
_Rule = Callable[[Principal, bytes | None, Record | None], None]


def check(topic: str, key: bytes | None, record: Record | None, principal: Principal) -> None:
    """Whether ``principal`` may have written ``record`` (``key``) to ``topic``, the
    topic's declared name. ``record`` may be None for a topic whose rule reads the key
    alone (heartbeats, checked before they are decoded)."""
    rule = _RULES.get(topic)
    if rule is None:
        raise ForgedRecordError(f"{principal} may not write {topic}: no rule allows it")
    rule(principal, key, record)


def _field(record: Record | None, name: str) -> str:
    if record is None:
        raise ForgedRecordError(f"the rule needs the record's {name}")
    return str(record.get(name))


def _services(*actors: str) -> _Rule:
    allowed = frozenset(actors)

    def rule(principal: Principal, key: bytes | None, record: Record | None) -> None:
        if principal.kind != "service" or principal.name not in allowed:
            writers = ", ".join(f"service:{actor}" for actor in sorted(allowed))
            raise ForgedRecordError(f"{principal} may not write this topic (only {writers})")

    return rule


def _acting_for_tenant(principal: Principal, key: bytes | None, record: Record | None) -> None:
    tenant = _field(record, "tenant")
    if principal.kind not in ("tenant", "operator") or not principal.may_act_for(tenant):
        raise ForgedRecordError(f"{principal} may not act for tenant {tenant}")


def _heartbeat(principal: Principal, key: bytes | None, record: Record | None) -> None:
    node = (key or b"").decode("utf-8", "replace")
    if principal.kind != "node" or principal.name != node:
        raise ForgedRecordError(f"{principal} may not report for node {node}")


def _job_event(principal: Principal, key: bytes | None, record: Record | None) -> None:
    kind = _field(record, "kind")
    if principal == Principal("service", "scheduler") and kind != "cancel_requested":
        return
    if kind == "cancel_requested":
        _acting_for_tenant(principal, key, record)
        return
    if kind in NODE_JOB_EVENTS and principal.kind == "node":
        node = _field(record, "node_id")
        if principal.name != node:
            raise ForgedRecordError(f"{principal} may not report a job event for node {node}")
        return
    raise ForgedRecordError(f"{principal} may not write a {kind!r} job event")


def _model_ready(principal: Principal, key: bytes | None, record: Record | None) -> None:
    if principal.kind != "node":
        raise ForgedRecordError(f"{principal} may not announce a model (only a trainer node)")


_EVALUATOR_ONLY = _services("evaluator")


def _verdict(principal: Principal, key: bytes | None, record: Record | None) -> None:
    if principal == Principal("service", "evaluator"):
        return
    verdict = _field(record, "verdict")
    if verdict not in _CLIENT_VERDICTS:
        raise ForgedRecordError(f"{principal} may not publish a {verdict!r} verdict")
    _acting_for_tenant(principal, key, record)


_RULES: dict[str, _Rule] = {
    "lepton.node.heartbeats": _heartbeat,
    "lepton.jobs.requested": _acting_for_tenant,
    "lepton.jobs.assigned": _services("scheduler"),
    "lepton.jobs.events": _job_event,
    "lepton.data.requested": _acting_for_tenant,
    "lepton.data.ready": _services("ingest"),
    "lepton.data.rejected": _services("ingest"),
    "lepton.models.ready": _model_ready,
    "lepton.models.evaluated": _EVALUATOR_ONLY,
    "lepton.models.promoted": _verdict,
    "lepton.predict.requested": _acting_for_tenant,
    "lepton.predict.results": _EVALUATOR_ONLY,
    "lepton.alerts": _services("monitor"),
    "lepton.audit": _services("scheduler", "ingest", "evaluator", "monitor"),
}


_SERVICE_WRITTEN = {
    "lepton.jobs.assigned": "scheduler",
    "lepton.data.ready": "ingest",
    "lepton.data.rejected": "ingest",
    "lepton.models.evaluated": "evaluator",
    "lepton.models.promoted": "evaluator",
    "lepton.predict.results": "evaluator",
    "lepton.alerts": "monitor",
    "lepton.audit": "ingest",
}


def natural_author(topic: str, key: bytes | None, record: Record) -> Principal:
    """The principal who would write ``record`` to ``topic`` (its declared name) in a
    running installation: the node a heartbeat or a node's job event is about, the tenant
    of a request, the service that owns a topic. For whoever holds the master key and
    writes on others' behalf: tests, load generators, replays of old data."""
    if topic == "lepton.node.heartbeats":
        return Principal("node", (key or b"").decode())
    if topic == "lepton.models.ready":
        return Principal("node", "trainer")
    if topic == "lepton.jobs.events":
        kind = str(record.get("kind"))
        if kind in NODE_JOB_EVENTS and record.get("node_id"):
            return Principal("node", str(record["node_id"]))
        if kind == "cancel_requested":
            return Principal("tenant", str(record["tenant"]))
        return Principal("service", "scheduler")
    service = _SERVICE_WRITTEN.get(topic)
    if service is not None:
        return Principal("service", service)
    return Principal("tenant", str(record["tenant"]))
