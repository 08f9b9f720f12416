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


async def test_a_job_that_lost_a_worker_stops_every_worker_under_the_void_lease() -> None:
    """A gang requeued whole after one worker was lost used to leave its other workers
    training (and worker 0 able to publish a model) for a lease that was void."""
    broker = InMemoryBroker()
    async with scheduler(
        broker, heartbeat("a", sequence=1, cpu=3000), heartbeat("b", sequence=1, cpu=3000)
    ):
        await request(broker, job("g", cpu=3000, gang_size=2))
        first = await broker.until(EVENTS, kind("g", "assigned"))
        await broker.until(
            EVENTS,
            lambda r: kind("g", "assigned")(r) and r["worker_index"] != first["worker_index"],
        )
        await report(broker, first, kind="lost", reason=_WHY)
        await broker.until(EVENTS, kind("g", "requeued"))
        stops = [
            await broker.until(
                ASSIGNED,
                lambda r, n=node: (
                    r["job_id"] == "g" and r["action"] == "stop" and r["node_id"] == n
                ),
            )
            for node in ("a", "b")
        ]
    assert {stop["lease_epoch"] for stop in stops} == {first["lease_epoch"]}
    assert {stop["worker_index"] for stop in stops} == {0, 1}
    assert all(f"node {first['node_id']} lost it" in stop["reason"] for stop in stops)


async def test_a_restarted_agent_is_told_to_stop_the_runs_its_predecessor_was_given() -> None:
    """The chaos suite's finding: a restarted agent found a run instruction meant for
    its predecessor in its partition and ran it, while the scheduler, seeing the restart,
    had requeued the job onto another node: two models for one job. Now the requeue sends
    the old lease a stop, which the agent reads right after the old instruction."""
    broker = InMemoryBroker()
    async with scheduler(broker, heartbeat("a", sequence=1)) as running:
        await request(broker, job("j"))
        first = await broker.until(EVENTS, kind("j", "assigned"))
        running.digester.nodes(heartbeat("a", sequence=1, started=2), restarted=True)
        stop = await broker.until(ASSIGNED, lambda r: r["job_id"] == "j" and r["action"] == "stop")
        await broker.until(EVENTS, kind("j", "requeued"))
    assert (stop["node_id"], stop["lease_epoch"]) == ("a", first["lease_epoch"])
    assert "restarted" in stop["reason"]
