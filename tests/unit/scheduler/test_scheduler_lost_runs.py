"""A run its node lost (an agent restarted, or PostgreSQL went away under it) is requeued
under the job's ``max_retries``, with the node's reason; past them, the job fails."""

from __future__ import annotations

from lepton.testing import InMemoryBroker
from tests.integration.scheduler_support import heartbeat, job
from tests.unit.scheduler.shell_support import EVENTS, kind, report, request, scheduler

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
