"""A run its node lost (an agent restarted, or PostgreSQL went away under it) is requeued
under the job's ``max_retries``, with the node's reason; past them, the job fails."""

from __future__ import annotations

from lepton.testing import InMemoryBroker
from tests.integration.scheduler_support import heartbeat, job
from tests.unit.scheduler.shell_support import ASSIGNED, EVENTS, kind, report, request, scheduler

_WHY = "the run failed while the database was away (ConnectionRefusedError: refused)"


async def test_a_lost_run_is_requeued_with_the_nodes_reason_until_its_retries_run_out() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, heartbeat("a", sequence=1)):
        await request(broker, job("j", max_retries=1))
        first = await broker.until(EVENTS, kind("j", "assigned"))
        await report(broker, first, kind="lost", reason=_WHY)
        requeued = await broker.until(EVENTS, kind("j", "requeued"))
        second = await broker.until(
            EVENTS, lambda r: kind("j", "assigned")(r) and r["lease_epoch"] > first["lease_epoch"]
        )
        await report(broker, second, kind="lost", reason=_WHY)
        failed = await broker.until(EVENTS, kind("j", "failed"))
    assert requeued["reason"] == f"node a lost it: {_WHY}"
    assert (requeued["attempt"], second["attempt"]) == (1, 1)
    assert failed["reason"] == f"node a lost it: {_WHY}; 2 failures exceed max_retries=1"


async def test_a_gang_that_lost_one_worker_stops_the_others_under_the_void_lease() -> None:
    """A gang requeued whole after one worker was lost used to leave its other workers
    training (and worker 0 able to publish a model) for a lease that was void."""
    broker = InMemoryBroker()
    async with scheduler(
        broker, heartbeat("a", sequence=1, cpu=3000), heartbeat("b", sequence=1, cpu=3000)
    ):
        await request(broker, job("g", cpu=3000, gang_size=2))
        first = await broker.until(EVENTS, kind("g", "assigned"))
        second = await broker.until(
            EVENTS,
            lambda r: kind("g", "assigned")(r) and r["worker_index"] != first["worker_index"],
        )
        await report(broker, first, kind="lost", reason=_WHY)
        stop = await broker.until(ASSIGNED, lambda r: r["job_id"] == "g" and r["action"] == "stop")
        await broker.until(EVENTS, kind("g", "requeued"))
    assert (stop["node_id"], stop["worker_index"]) == (second["node_id"], second["worker_index"])
    assert stop["lease_epoch"] == first["lease_epoch"]
    assert f"node {first['node_id']} lost it" in stop["reason"]
