"""The trainer agent while PostgreSQL is away, on the in-memory broker: a run that failed
for the outage is reported lost (the scheduler requeues it), and what the agent records of
a run waits for the database instead of turning into a failure of the job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lepton.testing import InMemoryBroker
from tests.unit.trainer.agent_support import EVENTS, MODELS, NODE, RunsTable, agent, assignment
from tests.unit.trainer.test_trainer_leases import RESULT, of


class AwayAtFirst(RunsTable):
    """The runs table, with PostgreSQL refusing the first ``refusals`` calls that record a
    run's outcome (as asyncpg raises it: ConnectionRefusedError)."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    def _refuse(self) -> None:
        if self.refusals > 0:
            self.refusals -= 1
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    async def record_model(self, *args: Any) -> None:
        self._refuse()
        await super().record_model(*args)

    async def finish_run(self, *args: Any, **details: Any) -> None:
        self._refuse()
        await super().finish_run(*args, **details)


async def test_a_run_failed_by_a_database_outage_is_reported_lost_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broker = InMemoryBroker()
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        await node.instruct(assignment("j", epoch=3))
        await broker.until(EVENTS, of("j", "started"))
        [worker] = node.workers
        worker.say(
            json.dumps(
                {
                    "event": "failed",
                    "error_type": "ConnectionRefusedError",
                    "reason": "[Errno 111] Connect call failed",
                    "retryable": True,
                }
            )
        )
        worker.exit(0)
        lost = await broker.until(EVENTS, of("j", "lost"))
    assert [r["kind"] for r in node.reports("j")] == ["started", "lost"]
    assert lost["lease_epoch"] == 3
    assert lost["error_type"] == "ConnectionRefusedError"
    assert "database was away" in lost["reason"]
    assert "Connect call failed" in lost["reason"]
    assert node.table.runs[NODE, "j", 3, 0]["status"] == "lost"


async def test_a_failure_of_the_job_itself_is_still_final(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broker = InMemoryBroker()
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        await node.instruct(assignment("j"))
        await broker.until(EVENTS, of("j", "started"))
        [worker] = node.workers
        failure = {"event": "failed", "error_type": "MissingTargetColumn", "reason": "no price"}
        worker.say(json.dumps(failure | {"retryable": False}))
        worker.exit(0)
        failed = await broker.until(EVENTS, of("j", "failed"))
    assert failed["error_type"] == "MissingTargetColumn"


async def test_a_finished_runs_records_wait_for_the_database_and_it_succeeds_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broker = InMemoryBroker()
    table = AwayAtFirst(refusals=3)
    async with agent(broker, monkeypatch, tmp_path, table) as node:
        await node.instruct(assignment("j", epoch=2))
        await broker.until(EVENTS, of("j", "started"))
        [worker] = node.workers
        worker.say(json.dumps(RESULT))
        worker.exit(0)
        succeeded = await broker.until(EVENTS, of("j", "succeeded"))
        await broker.until(MODELS, lambda r: r["job_id"] == "j")
    assert table.refusals == 0, "the database refused the agent, which tried again"
    assert [r["kind"] for r in node.reports("j")] == ["started", "succeeded"]
    assert succeeded["model_id"] in table.models
    assert table.runs[NODE, "j", 2, 0]["status"] == "succeeded"
