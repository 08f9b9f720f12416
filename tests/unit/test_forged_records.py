"""A subscriber with an authenticator hands its handler only records signed by someone
allowed to write them; every other is dead-lettered with the reason and audited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from lepton.bus import Authenticator, Event, Publisher, Subscriber
from lepton.contract.codec import Record
from lepton.contract.identity import Principal, Verifier
from lepton.contract.topics import Namespace, Topic, dead_letter_topic
from lepton.testing import InMemoryBroker
from tests.samples import sample

NAMES = Namespace("t.")
REQUESTS = NAMES.topic("lepton.jobs.requested")
HEARTBEATS = NAMES.topic("lepton.node.heartbeats")
AUDIT = NAMES.topic("lepton.audit")


class Received:
    """A batch handler that skims heartbeats (as the scheduler's digester does)."""

    def __init__(self, expected: int) -> None:
        self.events: list[Event] = []
        self.skimmed: list[bytes | None] = []
        self.expected = expected
        self.enough = asyncio.Event()

    def apply(self, event: Event) -> None:
        self.events.append(event)
        self._count()

    def _count(self) -> None:
        if len(self.events) + len(self.skimmed) >= self.expected:
            self.enough.set()

    async def flush(self) -> None:
        pass

    def skim(self, key: bytes | None, value: bytes | None) -> bool:
        self.skimmed.append(key)
        self._count()
        return True


@contextlib.asynccontextmanager
async def consuming(
    broker: InMemoryBroker, handler: Any, topic: Topic = REQUESTS
) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber(
        "in-memory",
        broker.codec,
        broker.publisher(),
        topics=[topic],
        group_id="g",
        handler=handler,
        transport=broker,
        authenticator=Authenticator(Verifier(broker.identity), NAMES, broker.codec),
    )
    await subscriber.start()
    task = asyncio.create_task(subscriber.run())
    try:
        yield subscriber
    finally:
        subscriber.stop_soon()
        await task
        await subscriber.close()


def _about(key: str) -> Callable[[Record], bool]:
    return lambda audit: str(audit["resource"]).endswith(f"/{key}")


def signed_as(broker: InMemoryBroker, principal: Principal | None) -> Publisher:
    key = None if principal is None else broker.identity.derive(principal)
    return Publisher("in-memory", broker.codec, source="tests", transport=broker, signer=key)


async def test_a_forged_or_unsigned_request_is_refused_with_its_reason_and_audited() -> None:
    broker = InMemoryBroker(NAMES.all())
    acme = Principal("tenant", "acme")
    request = sample("lepton.JobRequested")
    await signed_as(broker, acme).publish(REQUESTS, "mine", request | {"tenant": "acme"})
    await signed_as(broker, acme).publish(REQUESTS, "theirs", request | {"tenant": "victim"})
    await signed_as(broker, None).publish(REQUESTS, "unsigned", request | {"tenant": "victim"})
    await broker.publisher().publish(REQUESTS, "last", request | {"tenant": "acme"})
    received = Received(expected=2)
    async with consuming(broker, received):
        await asyncio.wait_for(received.enough.wait(), 5)
        for key in ("theirs", "unsigned"):
            await broker.until(AUDIT.name, _about(key))
    assert sorted(event.key or "" for event in received.events) == ["last", "mine"]
    dead = {m.key(): dict(m.headers()) for m in broker.messages(dead_letter_topic(REQUESTS.name))}
    assert set(dead) == {b"theirs", b"unsigned"}
    assert dead[b"theirs"]["dlq_error_type"] == b"ForgedRecordError"
    assert dead[b"theirs"]["dlq_error_message"] == b"tenant:acme may not act for tenant victim"
    assert dead[b"unsigned"]["dlq_error_message"].startswith(b"unsigned record")
    audits = {a["resource"]: a for a in broker.records(AUDIT.name)}
    forged = audits["topic:lepton.jobs.requested/theirs"]
    assert (forged["actor"], forged["tenant"], forged["action"], forged["outcome"]) == (
        "tenant:acme",
        "victim",
        "publish",
        "denied",
    )
    assert forged["detail"] == "tenant:acme may not act for tenant victim"
    assert audits["topic:lepton.jobs.requested/unsigned"]["actor"] == "unsigned"


async def test_a_heartbeat_for_another_node_is_refused_before_it_is_skimmed() -> None:
    broker = InMemoryBroker(NAMES.all())
    beat = sample("lepton.NodeHeartbeat")
    n1 = signed_as(broker, Principal("node", "n1"))
    await n1.publish(HEARTBEATS, "n1", beat | {"node_id": "n1"})
    await n1.publish(HEARTBEATS, "evil-node", beat | {"node_id": "evil-node"})
    await n1.publish(HEARTBEATS, "n1", beat | {"node_id": "n1"})
    received = Received(expected=2)
    async with consuming(broker, received, HEARTBEATS):
        await asyncio.wait_for(received.enough.wait(), 5)
        audit = await broker.until(AUDIT.name, lambda audit: True)
    assert received.skimmed == [b"n1", b"n1"]
    assert received.events == []
    assert audit["detail"] == "node:n1 may not report for node evil-node"
    assert audit["resource"] == "topic:lepton.node.heartbeats/evil-node"


READY = NAMES.topic("lepton.models.ready")
ASSIGNED = NAMES.topic("lepton.jobs.assigned")


async def _lease(broker: InMemoryBroker, node: str, job: str, tenant: str) -> dict[str, bytes]:
    """A lease as the scheduler grants it: its signed instruction to ``node``."""
    scheduler = signed_as(broker, Principal("service", "scheduler"))
    assignment = sample("lepton.JobAssigned") | {
        "job_id": job,
        "node_id": node,
        "tenant": tenant,
        "action": "run",
    }
    await scheduler.publish(ASSIGNED, node, assignment)
    sent = broker.messages(ASSIGNED.name)[-1]
    return {
        "assignment": sent.value() or b"",
        "signature": dict(sent.headers())["lepton-signature"],
    }


async def test_a_model_is_accepted_only_with_the_lease_of_the_node_that_announces_it() -> None:
    broker = InMemoryBroker(NAMES.all())
    n1 = signed_as(broker, Principal("node", "n1"))
    ready = sample("lepton.ModelReady") | {"job_id": "j", "tenant": "victim"}
    cases = {
        "no-lease": None,
        "others-lease": await _lease(broker, "n2", "j", "victim"),
        "other-job": await _lease(broker, "n1", "k", "victim"),
        "other-tenant": await _lease(broker, "n1", "j", "attacker"),
        "held": await _lease(broker, "n1", "j", "victim"),
    }
    for model_id, lease in cases.items():
        await n1.publish(READY, model_id, ready | {"model_id": model_id, "lease": lease})
    received = Received(expected=1)
    async with consuming(broker, received, READY):
        await asyncio.wait_for(received.enough.wait(), 5)
        for model_id in ("no-lease", "others-lease", "other-job", "other-tenant"):
            await broker.until(AUDIT.name, _about(model_id))
    assert [event.key for event in received.events] == ["held"]
    reasons = {a["resource"].rpartition("/")[2]: a["detail"] for a in broker.records(AUDIT.name)}
    assert reasons["no-lease"] == "node:n1 announced a model without the lease it trained under"
    assert reasons["others-lease"] == "signature does not match for service:scheduler"
    assert reasons["other-job"] == (
        "node:n1's lease is for job k of tenant victim on node n1, not this model's"
    )
    assert "of tenant attacker" in reasons["other-tenant"]


async def test_the_audit_of_a_refusal_is_bounded_whatever_the_sender_wrote() -> None:
    """A forged request naming a tenant of 900,000 characters: its audit event (which
    names the tenant twice) must still fit lepton.audit, or the subscriber would stop."""
    broker = InMemoryBroker(NAMES.all())
    acme = signed_as(broker, Principal("tenant", "acme"))
    request = sample("lepton.JobRequested")
    await acme.publish(REQUESTS, "huge", request | {"tenant": "v" * 900_000})
    await acme.publish(REQUESTS, "after", request | {"tenant": "acme"})
    received = Received(expected=1)
    async with consuming(broker, received):
        await asyncio.wait_for(received.enough.wait(), 5)
        audit = await broker.until(AUDIT.name, _about("huge"))
    assert [event.key for event in received.events] == ["after"]
    assert len(audit["tenant"]) == 200
    assert len(audit["detail"]) == 4096
