"""A trainer agent on the in-memory broker, with stand-ins for its database and workers.

The agent's service (subscriber on its node's key, publisher, heartbeats) is the real one;
two small stand-ins replace what needs a server or a process:

- :class:`RunsTable` stands for the trainer's PostgreSQL tables (``lepton/services/trainer/
  catalog.py``): the runs each node accepted and their status, judged by the same
  :func:`~lepton.services.trainer.runs.judge_run`.
- :class:`WorkerStandIn` stands for a training process (``lepton.services.trainer.worker``): the
  test writes the lines it would print; SIGTERM ends it.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lepton.contract.topics import Namespace
from lepton.services.trainer import app
from lepton.services.trainer.node import NodeSpec
from lepton.services.trainer.runs import Verdict, judge_run, run_key
from lepton.services.trainer.settings import TrainerSettings
from lepton.testing import InMemoryBroker, running
from tests.integration.scheduler_support import assignment as shared_assignment

NAMES = Namespace()
EVENTS = NAMES.topic("lepton.jobs.events").name
MODELS = NAMES.topic("lepton.models.ready").name
INSTRUCTIONS = NAMES.topic("lepton.jobs.assigned")
NODE = "n1"

RowKey = tuple[str, str, int, int]  # node, job, lease epoch, worker index


@dataclass
class RunsTable:
    """Stands for ``lepton_trainer.runs`` and ``lepton_trainer.models`` (see the module)."""

    runs: dict[RowKey, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def claim_run(self, pool: Any, node_id: str, assignment: dict[str, Any]) -> Verdict:
        key = run_key(assignment)
        known = [row[1:] for row in self.runs if row[:2] == (node_id, key[0])]
        verdict = judge_run(key, known)
        if verdict is not Verdict.DUPLICATE:
            status = "running" if verdict is Verdict.START else "stale"
            self.runs[node_id, *key] = {"status": status, **_row(assignment)}
        return verdict

    async def record_stop(
        self, pool: Any, node_id: str, assignment: dict[str, Any], reason: str
    ) -> None:
        row = self.runs.setdefault((node_id, *run_key(assignment)), {"status": "running"})
        if row["status"] == "running":
            row |= {"status": "stopped", "reason": reason, **_row(assignment)}

    async def finish_run(
        self, pool: Any, node_id: str, key: Any, status: str, **details: Any
    ) -> None:
        row = self.runs.get((node_id, *key))
        if row is not None and row["status"] == "running":
            row |= {"status": status, **details}

    async def unfinished(self, pool: Any, node_id: str) -> list[dict[str, Any]]:
        return [
            {"job_id": job, "lease_epoch": epoch, "worker_index": index, **_row(row)}
            for (node, job, epoch, index), row in self.runs.items()
            if node == node_id and row["status"] == "running"
        ]

    async def record_model(
        self, pool: Any, record: dict[str, Any], lease_epoch: int, trials: list[Any]
    ) -> None:
        self.models.setdefault(record["model_id"], record)


def _row(source: dict[str, Any]) -> dict[str, Any]:
    return {"attempt": source.get("attempt", 0), "tenant": source["tenant"]}


class WorkerStandIn:
    """Stands for a training process (see the module): what asyncio's Process offers."""

    pid = 0

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.stdout = asyncio.StreamReader()
        self.returncode: int | None = None
        self.signals: list[int] = []
        # What it prints as SIGTERM ends it (a result it had just finished, say).
        self.last_words: str | None = None
        self._ended = asyncio.Event()

    def say(self, line: str) -> None:
        self.stdout.feed_data(line.encode() + b"\n")

    def exit(self, code: int = 0) -> None:
        if self.returncode is None:
            self.returncode = code
            self.stdout.feed_eof()
            self._ended.set()

    def send_signal(self, number: int) -> None:
        self.signals.append(number)
        if number == signal.SIGTERM and self.returncode is None:
            if self.last_words is not None:
                self.say(self.last_words)
            self.exit(-number)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        self.exit(-signal.SIGKILL)

    async def wait(self) -> int:
        await self._ended.wait()
        assert self.returncode is not None
        return self.returncode


@dataclass
class Agent:
    broker: InMemoryBroker
    table: RunsTable
    workers: list[WorkerStandIn]

    async def instruct(self, assignment: dict[str, Any]) -> None:
        await self.broker.publisher().publish(INSTRUCTIONS, NODE, assignment)

    def reports(self, job_id: str) -> list[dict[str, Any]]:
        return [r for r in self.broker.records(EVENTS) if r["job_id"] == job_id]


@asynccontextmanager
async def agent(
    broker: InMemoryBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table: RunsTable
) -> AsyncIterator[Agent]:
    """The trainer agent of node n1 serving on the broker until the block ends."""
    workers: list[WorkerStandIn] = []

    async def start_worker(module: str, job: dict[str, Any], **_: Any) -> WorkerStandIn:
        assert module == "lepton.services.trainer.worker"
        workers.append(WorkerStandIn(job))
        return workers[-1]

    monkeypatch.setattr(app, "catalog", table)
    monkeypatch.setattr(app, "start_helper", start_worker)
    settings = TrainerSettings(
        kafka_bootstrap="in-memory",
        database_url="postgresql://stands-in/none",
        artifact_root=str(tmp_path),
        trainer_stop_grace_s=1.0,
    )
    service = app.create_app(NodeSpec(NODE, cpus=2, memory_mib=4096), settings, interval_s=60)
    async with running(service, broker):
        yield Agent(broker, table, workers)


def assignment(job_id: str, *, epoch: int = 1, action: str = "run", **extra: Any) -> dict[str, Any]:
    dataset = {"name": "houses", "version": "v1", "owner": "acme"}
    instruction = shared_assignment(job_id, NODE, "acme", dataset, epoch=epoch, action=action)
    return instruction | {"assigned_at": 0} | extra
