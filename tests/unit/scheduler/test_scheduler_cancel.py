"""Cancelling jobs, in the scheduler's shell on the in-memory broker: a cancel read before
its job's request, or while no scheduler ran, still cancels the job; a running job's
workers are stopped after its ``cancelled`` event, and its place goes to the next job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from lepton.contract.job_events import job_event
from lepton.scheduling.journal import Status
from lepton.testing import InMemoryBroker, StoredMessage
from tests.integration.scheduler_support import heartbeat, job
from tests.unit.scheduler.shell_support import ASSIGNED, EVENTS, kind, report, request, scheduler


def node(name: str, cpu: int = 4000) -> dict[str, object]:
    return heartbeat(name, sequence=1, cpu=cpu)


def cancel(job_id: str, tenant: str = "acme", reason: str | None = None) -> dict[str, object]:
    return dict(job_event(job_id, "cancel_requested", tenant, reason=reason))


async def until(condition: Callable[[], bool], what: str) -> None:
    """A bounded wait for state the scheduler keeps in memory (no event says it)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - nothing to await: the shell's memory
            await asyncio.sleep(0.001)
    assert condition(), what


def out(broker: InMemoryBroker) -> list[tuple[str, str, str]]:
    """(job, kind or action, worker index) of every event and instruction the scheduler
    published (not the test's), in order."""
    found = []
    for entry in broker.history:
        if (
            isinstance(entry, StoredMessage)
            and entry.topic() in (EVENTS, ASSIGNED)
            and ("ce_source", b"tests") not in entry.headers()
        ):
            record = broker.codec.decode(entry.value())[1]
            what = record.get("kind", record.get("action"))
            found.append((record["job_id"], what, str(record.get("worker_index"))))
    return found


async def test_a_cancel_read_before_its_request_cancels_the_job() -> None:
    """Requests and events are different topics: a tenant that cancels right after it
    submits may have its cancel read first. The job is cancelled, never placed."""
    broker = InMemoryBroker()
    async with scheduler(broker, node("n")) as running:
        await report(broker, cancel("j", reason="cancelled by alice"))
        await until(lambda: "j" in running.shell.journal.early, "the cancel was read first")
        await request(broker, job("j"))
        await broker.until(EVENTS, kind("j", "cancelled"))
        # A job asked after it is placed: j would have been too, had it been queued.
        await request(broker, job("after"))
        await broker.until(EVENTS, kind("after", "assigned"))
    assert [what for job_id, what, _ in out(broker) if job_id == "j"] == ["cancelled"]


async def test_a_job_cancelled_while_no_scheduler_ran_is_cancelled_not_placed() -> None:
    broker = InMemoryBroker()
    await request(broker, job("j"))
    await report(broker, cancel("j"))
    async with scheduler(broker, node("n")) as running:
        cancelled = await broker.until(EVENTS, kind("j", "cancelled"))
        await request(broker, job("after"))
        await broker.until(EVENTS, kind("after", "assigned"))
        assert running.shell.journal.jobs["j"].status is Status.DONE
    assert [what for job_id, what, _ in out(broker) if job_id == "j"] == ["cancelled"]
    assert cancelled["lease_epoch"] is None, "never placed: no lease"


async def test_a_cancelled_gangs_workers_stop_after_its_cancelled_event_and_its_place_frees() -> (
    None
):
    broker = InMemoryBroker()
    async with scheduler(broker, node("a"), node("b")):
        await request(broker, job("gang", cpu=4000, gang_size=2))
        assigned = await broker.until(EVENTS, kind("gang", "assigned"))
        await broker.until(ASSIGNED, lambda r: r["job_id"] == "gang" and r["worker_index"] == 1)
        await request(broker, job("waiting", cpu=4000))
        await broker.until(EVENTS, kind("waiting", "queued"))
        await report(broker, cancel("gang", reason="cancelled by alice: wrong target"))
        cancelled = await broker.until(EVENTS, kind("gang", "cancelled"))
        stops = [
            await broker.until(
                ASSIGNED,
                lambda r, i=index: (
                    r["job_id"] == "gang" and r["action"] == "stop" and r["worker_index"] == i
                ),
            )
            for index in (0, 1)
        ]
        # The cancelled gang held both nodes: the waiting job now fits on one of them.
        placed = await broker.until(EVENTS, kind("waiting", "assigned"))
    assert cancelled["reason"] == "cancelled by alice: wrong target"
    assert cancelled["lease_epoch"] == assigned["lease_epoch"]
    assert {stop["node_id"] for stop in stops} == {"a", "b"}
    assert all(stop["lease_epoch"] == assigned["lease_epoch"] for stop in stops)
    assert all(stop["reason"] == cancelled["reason"] for stop in stops)
    order = out(broker)
    assert order.index(("gang", "cancelled", "None")) < order.index(("gang", "stop", "0"))
    assert placed["node_id"] in {"a", "b"}


async def test_cancelling_twice_or_after_the_end_changes_nothing() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, node("n")):
        await request(broker, job("j"))
        assigned = await broker.until(EVENTS, kind("j", "assigned"))
        await report(broker, assigned, kind="succeeded")
        await report(broker, cancel("j"))
        await request(broker, job("k", cpu=4000))
        k = await broker.until(EVENTS, kind("k", "assigned"))
        await report(broker, cancel("k"))
        await report(broker, cancel("k"))
        await broker.until(EVENTS, kind("k", "cancelled"))
        # One plan later (a new job placed), the second cancel has been read too.
        await request(broker, job("probe"))
        await broker.until(EVENTS, kind("probe", "assigned"))
    # (An instruction may go out twice as the scheduler stops: at least once, and the
    # trainer ignores a lease it already has.)
    said = {name: [what for job_id, what, _ in out(broker) if job_id == name] for name in "jk"}
    assert set(said["j"]) == {"queued", "assigned", "run"}
    assert set(said["k"]) == {"queued", "assigned", "run", "cancelled", "stop"}
    assert said["k"].count("cancelled") == 1
    assert k["node_id"] == "n"


async def test_a_cancels_reason_is_kept_and_sent_on_bounded() -> None:
    """The reason is a tenant's free text, held until the job ends: clipped, not copied
    whole into memory and into the ``cancelled`` event."""
    broker = InMemoryBroker()
    async with scheduler(broker, node("n")):
        await report(broker, cancel("j", reason="x" * 100_000))
        await request(broker, job("j"))
        cancelled = await broker.until(EVENTS, kind("j", "cancelled"))
    assert len(cancelled["reason"]) <= 1024
    assert cancelled["reason"].startswith("xxx")
