"""The scheduler's shell on the in-memory broker: effect ordering, lease fencing and crash
recovery, in milliseconds (the same behaviours as tests/integration/test_scheduler*.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from lepton.runtime.service import BackgroundTaskError
from lepton.scheduling.journal import Status
from lepton.testing import InMemoryBroker, StoredMessage
from tests.integration.scheduler_support import heartbeat, job
from tests.unit.scheduler.shell_support import (
    ASSIGNED,
    EVENTS,
    kind,
    report,
    request,
    scheduler,
)


@pytest.fixture(autouse=True)
def logs() -> Iterator[list[dict[str, Any]]]:
    """What the scheduler logs, kept rather than rendered (a rendered traceback of an
    expected failure costs more than the test)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def node(name: str, cpu: int = 4000) -> dict[str, object]:
    return heartbeat(name, sequence=1, cpu=cpu)


def published(broker: InMemoryBroker) -> list[tuple[str, str, str]]:
    """(topic, job, kind or action) of what went out, in the order it was appended."""
    found = []
    for entry in broker.history:
        if isinstance(entry, StoredMessage) and entry.topic() in (EVENTS, ASSIGNED):
            record = broker.codec.decode(entry.value())[1]
            found.append(
                (entry.topic(), record["job_id"], record.get("kind", record.get("action")))
            )
    return found


async def failure_after(broker: InMemoryBroker, record: dict[str, object]) -> Exception:
    """How the scheduler (on node n, in term 1) stops by itself once asked for ``record``."""
    try:
        async with scheduler(broker, node("n"), term=1) as running:
            await request(broker, record)
            await asyncio.wait_for(asyncio.shield(running.task), 5)
    except BackgroundTaskError as stopped:
        return stopped
    raise AssertionError("the scheduler went on")


async def test_a_job_is_queued_then_assigned_and_its_instruction_follows_the_event() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("small", cpu=500), node("big"), term=3):
        await request(broker, job("j1", cpu=2000))
        instruction = await broker.until(ASSIGNED, lambda r: r["job_id"] == "j1")
    assigned = await broker.until(EVENTS, kind("j1", "assigned"))
    assert published(broker) == [
        (EVENTS, "j1", "queued"),
        (EVENTS, "j1", "assigned"),
        (ASSIGNED, "j1", "run"),
    ]
    assert assigned["node_id"] == instruction["node_id"] == "big"
    assert instruction["lease_epoch"] == assigned["lease_epoch"]
    assert assigned["lease_epoch"] >> 32 == 3, "the lease is of this leader's term"
    assert instruction["granted"]["cpu_millicores"] == 2000


async def test_an_instruction_is_never_sent_for_an_event_the_broker_did_not_take(
    logs: list[dict[str, Any]],
) -> None:
    broker = InMemoryBroker()
    broker.refuse(EVENTS)
    # The instruction task fails on the refused acknowledgement: the session ends (a real
    # scheduler steps down and reads the log again).
    failure = await failure_after(broker, job("j1"))
    assert "PublishError" in str(failure)
    assert broker.messages(ASSIGNED) == []
    assert "background task failed; ending the session" in [entry["event"] for entry in logs]


async def test_invalid_and_impossible_requests_are_rejected_with_the_reason() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("n")):
        await request(broker, job("bad", gang_size=0))
        await request(broker, job("huge", cpu=64000))
        bad = await broker.until(EVENTS, kind("bad", "rejected"))
        huge = await broker.until(EVENTS, kind("huge", "rejected"))
    assert bad["field"] == "gang_size"
    assert huge["field"] == "demand"
    assert broker.messages(ASSIGNED) == []


async def test_a_dead_nodes_job_is_reassigned_and_its_old_lease_cannot_finish_it() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("a")) as running:
        await request(broker, job("j", cpu=3000))
        first = await broker.until(EVENTS, kind("j", "assigned"))
        running.digester.nodes(node("b"))
        running.digester.dead("a")
        requeued = await broker.until(EVENTS, kind("j", "requeued"))
        second = await broker.until(
            EVENTS, lambda r: kind("j", "assigned")(r) and r["node_id"] == "b"
        )
        assert "node a dead" in requeued["reason"]
        assert second["node_id"] == "b"
        assert second["lease_epoch"] > first["lease_epoch"]

        # Node a's agent reports success under its old lease, late: it changes nothing.
        await report(broker, first, kind="succeeded")
        await request(broker, job("k", cpu=3000))
        await broker.until(EVENTS, kind("k", "queued"))
        # A small, more urgent job placed after k was queued proves a plan ran with k in
        # the queue: k did not fit, so j still holds b.
        await request(broker, job("probe", cpu=500, priority=200))
        await broker.until(EVENTS, kind("probe", "assigned"))
        assert running.shell.journal.jobs["j"].status is Status.ASSIGNED
        assert not [r for r in broker.records(EVENTS) if kind("k", "assigned")(r)]

        # Under its current lease, the report counts: j's place goes to k.
        await report(broker, second, kind="succeeded")
        k = await broker.until(EVENTS, kind("k", "assigned"))
    assert k["node_id"] == "b"


async def test_a_preempted_jobs_stop_names_the_lease_it_ends() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("n")):
        await request(broker, job("batch", cpu=3000, priority=10))
        placed = await broker.until(EVENTS, kind("batch", "assigned"))
        await request(broker, job("urgent", cpu=3000, priority=1000, preemptible=False))
        preempted = await broker.until(EVENTS, kind("batch", "preempted"))
        stop = await broker.until(
            ASSIGNED, lambda r: r["job_id"] == "batch" and r["action"] == "stop"
        )
        await broker.until(EVENTS, kind("urgent", "assigned"))
    assert "urgent" in preempted["reason"]
    assert stop["lease_epoch"] == preempted["lease_epoch"] == placed["lease_epoch"]
    order = published(broker)
    assert order.index((EVENTS, "batch", "preempted")) < order.index((ASSIGNED, "urgent", "run"))


async def test_a_cancelled_running_job_is_stopped_under_its_lease() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("n")):
        await request(broker, job("j"))
        assigned = await broker.until(EVENTS, kind("j", "assigned"))
        await report(broker, assigned, kind="started")
        await report(broker, assigned, kind="cancel_requested", node_id=None, lease_epoch=None)
        cancelled = await broker.until(EVENTS, kind("j", "cancelled"))
        stop = await broker.until(ASSIGNED, lambda r: r["job_id"] == "j" and r["action"] == "stop")
    assert stop["reason"] == "cancelled"
    assert stop["lease_epoch"] == cancelled["lease_epoch"] == assigned["lease_epoch"]


async def test_a_new_leader_replays_the_log_to_the_same_state_and_assigns_nothing_twice() -> None:
    broker = InMemoryBroker()
    nodes = [node(f"n{i}") for i in range(3)]
    async with scheduler(broker, *nodes, term=1) as first:
        for n in range(6):
            await request(broker, job(f"j{n}", cpu=1500))
        for n in range(6):
            await broker.until(ASSIGNED, lambda r, n=n: r["job_id"] == f"j{n}")
        await report(broker, await broker.until(EVENTS, kind("j0", "assigned")), kind="succeeded")
    before = {
        job_id: (entry.status, entry.epoch, dict(entry.nodes), entry.attempt)
        for job_id, entry in first.shell.journal.jobs.items()
    }
    # Asked while no scheduler ran: the next leader answers it.
    await request(broker, job("late", cpu=1500))
    events_before = len(broker.messages(EVENTS))
    async with scheduler(broker, *nodes, term=2) as second:
        late = await broker.until(EVENTS, kind("late", "assigned"))
        after = {
            job_id: (entry.status, entry.epoch, dict(entry.nodes), entry.attempt)
            for job_id, entry in second.shell.journal.jobs.items()
            if job_id != "late"
        }
    assert after == before
    new = [r for r in broker.records(EVENTS)[events_before:] if r["job_id"] != "late"]
    assert new == [], "the new leader decided nothing again for jobs the log settled"
    assert late["lease_epoch"] >> 32 == 2


async def test_an_instruction_lost_in_a_crash_is_sent_again_under_the_same_lease() -> None:
    broker = InMemoryBroker()
    broker.refuse(ASSIGNED)  # the leader dies before its instruction goes out
    await failure_after(broker, job("j"))
    [assigned] = [r for r in broker.records(EVENTS) if kind("j", "assigned")(r)]
    assert broker.messages(ASSIGNED) == []

    broker.accept(ASSIGNED)
    async with scheduler(broker, node("n"), term=2):
        instruction = await broker.until(ASSIGNED, lambda r: r["job_id"] == "j")
    assert instruction["action"] == "run"
    assert instruction["lease_epoch"] == assigned["lease_epoch"], "the lease the log holds"
    assert [r for r in broker.records(EVENTS) if kind("j", "assigned")(r)] == [assigned]


async def test_a_node_that_does_not_hold_the_lease_cannot_end_the_job() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("holder"), node("other", cpu=500)) as running:
        await request(broker, job("j", cpu=2000))
        assigned = await broker.until(EVENTS, kind("j", "assigned"))
        # signed by node "other" (the broker's publisher signs as the node it names)
        await report(broker, assigned, kind="succeeded", node_id="other")
        audit = await broker.until("lepton.audit", lambda a: a["resource"].endswith("/j"))
        # refused as it was handled, so the job is still the holder's
        assert running.shell.journal.jobs["j"].status is Status.ASSIGNED
    dead = broker.messages(EVENTS + ".dlq")
    assert [dict(m.headers())["dlq_error_type"] for m in dead] == [b"ForgedRecordError"]
    assert audit["actor"] == "node:other"
    assert audit["detail"] == "node other does not hold the lease of job j (node holder does)"


async def test_a_tenant_cannot_cancel_another_tenants_job() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("n")):
        await request(broker, job("j", tenant="victim"))
        assigned = await broker.until(EVENTS, kind("j", "assigned"))
        # acme asks in its own name (its signature holds) to cancel victim's job
        await report(
            broker, assigned, kind="cancel_requested", tenant="acme", node_id=None, lease_epoch=None
        )
        audit = await broker.until("lepton.audit", lambda a: a["resource"].endswith("/j"))
        await report(broker, assigned, kind="cancel_requested", node_id=None, lease_epoch=None)
        await broker.until(EVENTS, kind("j", "cancelled"))
    assert audit["detail"] == "tenant acme may not cancel job j of another tenant"
    assert audit["actor"] == "tenant:acme"
