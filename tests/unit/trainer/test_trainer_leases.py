"""The trainer agent's lease handling on the in-memory broker, in milliseconds (the same
behaviours as tests/integration/test_trainer.py, without training anything)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from lepton.services.trainer.runs import model_id_for
from lepton.testing import Commit, InMemoryBroker, StoredMessage
from tests.unit.trainer.agent_support import (
    EVENTS,
    MODELS,
    NODE,
    RunsTable,
    agent,
    assignment,
)

RESULT = {
    "event": "result",
    "problem_type": "regression",
    "algorithm": "ridge",
    "parameters": {"alpha": 1.0},
    "scoring": "r2",
    "cv_score": 0.9,
    "cv_fold_scores": [0.9, 0.9, 0.9],
    "feature_columns": ["area"],
    "trials": [{"number": 0, "family": "ridge", "params": {}, "state": "COMPLETE"}],
    "training_seconds": 1.5,
    "holdout_fraction": 0.2,
    "split_seed": 7,
    "preparation": [],
    "artifact": {"uri": "file:///models/m.skops", "sha256": "0" * 64, "format": "skops"},
}


def of(job_id: str, wanted: str) -> Any:
    return lambda record: record["job_id"] == job_id and record["kind"] == wanted


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


async def test_a_run_reports_under_its_lease_and_succeeds_once(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        await node.instruct(assignment("j", epoch=3))
        await broker.until(EVENTS, of("j", "started"))
        [worker] = node.workers
        worker.say(json.dumps({"event": "progress", "percent": 40.0, "stage": "searching"}))
        await broker.until(EVENTS, of("j", "progress"))
        worker.say(json.dumps(RESULT))
        worker.exit(0)
        succeeded = await broker.until(EVENTS, of("j", "succeeded"))
        ready = await broker.until(MODELS, lambda r: r["job_id"] == "j")
    reports = node.reports("j")
    assert [r["kind"] for r in reports] == ["started", "progress", "succeeded"]
    for report in reports:
        assert (report["node_id"], report["lease_epoch"], report["worker_index"]) == (NODE, 3, 0)
    assert succeeded["model_id"] == ready["model_id"] == model_id_for("j", 3)
    assert node.table.runs[NODE, "j", 3, 0]["status"] == "succeeded"
    assert worker.job["study_name"] == "j@3"


async def test_the_start_is_reported_before_the_instruction_is_committed(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        await node.instruct(assignment("j"))
        await broker.until(EVENTS, of("j", "started"))
    [instruction] = [
        m for m in broker.history if isinstance(m, StoredMessage) and m.topic().endswith("assigned")
    ]
    started = next(
        m
        for m in broker.history
        if isinstance(m, StoredMessage) and m.topic() == EVENTS and m.key() == b"j"
    )
    where = (instruction.topic(), instruction.partition())
    commit = next(
        c for c in broker.history if isinstance(c, Commit) and c.positions.get(where, 0) > 0
    )
    assert broker.history.index(started) < broker.history.index(commit)
    assert node.workers, "the run started"


async def test_only_its_own_nodes_instructions_are_acted_on(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        # Keyed to this node's partition but naming another node: not ours.
        await node.instruct(assignment("theirs", node_id="n2"))
        await node.instruct(assignment("marker"))
        await broker.until(EVENTS, of("marker", "started"))
    assert node.reports("theirs") == []
    assert [worker.job["assignment"]["job_id"] for worker in node.workers] == ["marker"]


async def test_redelivered_and_stale_instructions_start_nothing(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        await node.instruct(assignment("j", epoch=5))
        await broker.until(EVENTS, of("j", "started"))
        # The same instruction again (redelivery), then an older lease of the same job.
        await node.instruct(assignment("j", epoch=5))
        await node.instruct(assignment("j", epoch=4))
        # Instructions are handled in order: once the marker starts, both were judged.
        await node.instruct(assignment("marker"))
        await broker.until(EVENTS, of("marker", "started"))
    assert [r["kind"] for r in node.reports("j")] == ["started"]
    assert len(node.workers) == 2
    assert node.table.runs[NODE, "j", 4, 0]["status"] == "stale"


async def test_a_stop_ends_the_run_and_voids_its_outcome(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        await node.instruct(assignment("j", epoch=2))
        await broker.until(EVENTS, of("j", "started"))
        [worker] = node.workers
        # Whatever it prints on its way out is void.
        worker.last_words = json.dumps(RESULT)
        await node.instruct(assignment("j", epoch=2, action="stop", reason="cancelled"))
        await node.instruct(assignment("marker"))
        await broker.until(EVENTS, of("marker", "started"))
        assert worker.signals == [signal.SIGTERM], "the worker was ended"
    assert [r["kind"] for r in node.reports("j")] == ["started"]
    assert node.table.runs[NODE, "j", 2, 0]["status"] == "stopped"


async def test_a_later_lease_of_the_same_job_supersedes_the_running_one(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with agent(broker, monkeypatch, tmp_path, RunsTable()) as node:
        await node.instruct(assignment("j", epoch=1))
        await broker.until(EVENTS, lambda r: of("j", "started")(r) and r["lease_epoch"] == 1)
        await node.instruct(assignment("j", epoch=2))
        await broker.until(EVENTS, lambda r: of("j", "started")(r) and r["lease_epoch"] == 2)
        old, new = node.workers
        assert old.signals == [signal.SIGTERM]
        assert new.returncode is None
        new.say(json.dumps(RESULT))
        new.exit(0)
        await broker.until(EVENTS, of("j", "succeeded"))
    assert [(r["kind"], r["lease_epoch"]) for r in node.reports("j")] == [
        ("started", 1),
        ("started", 2),
        ("succeeded", 2),
    ]
    assert node.table.runs[NODE, "j", 1, 0]["status"] == "stopped"


async def test_a_restarted_agent_reports_the_runs_it_lost_under_their_lease(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    table = RunsTable()
    async with agent(broker, monkeypatch, tmp_path, table) as node:
        await node.instruct(assignment("j", epoch=9))
        await broker.until(EVENTS, of("j", "started"))
    # The agent went down while the run was in progress: it ended its worker, and the
    # run stays marked running for the next agent on this node.
    assert table.runs[NODE, "j", 9, 0]["status"] == "running"
    async with agent(broker, monkeypatch, tmp_path, table) as node:
        lost = await broker.until(EVENTS, of("j", "lost"))
    assert (lost["node_id"], lost["lease_epoch"], lost["worker_index"]) == (NODE, 9, 0)
    assert NODE in lost["reason"]
    assert table.runs[NODE, "j", 9, 0]["status"] == "lost"
    assert [r["kind"] for r in node.reports("j")] == ["started", "lost"]
