"""Kafka or PostgreSQL away for a while, with a training job running: every service stays
up, says so on ``/healthz`` (503 and the reason) while degraded and is healthy again after,
and the job ends in a state once the server is back.

This module runs its own stack (the session's is shared and must stay up); each outage
here lasts about 12 s. Longer ones (30, 90 s) belong to the chaos suite.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from lepton import devstack
from lepton.config import KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.contract.identity import IdentityKey
from lepton.devstack._process import free_port
from lepton.runtime.identity import master_key
from lepton.runtime.service import start_helper
from lepton.testing import service_codec
from tests.integration.ingest_support import request, running_ingest, unique_tenant
from tests.integration.outage_support import OwnStack
from tests.integration.processes import BIN, Service, stop_all
from tests.integration.scheduler_support import (
    Namespaced,
    Reader,
    assignment,
    job,
    signed_space,
)
from tests.integration.test_trainer import houses

pytestmark = pytest.mark.integration

# How long each outage lasts: long enough for the training run to end inside it.
_OUTAGE_S = 12.0
# The run's search budget: it ends during the outage that starts once its data is loaded.
_SEARCH_S = 4


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnStack]:
    # One broker, whatever the session's: its loss is Kafka away (a cluster's is
    # test_cluster's).
    settings = Settings(
        state_dir=tmp_path_factory.mktemp("outage-stack"),
        kafka_bootstrap=None,
        database_url=None,
        stack_kafka_brokers=1,
    )
    devstack.up(settings)
    with pytest.MonkeyPatch.context() as environment:
        # What this module signs and checks records with: its own stack's master key.
        environment.setenv("LEPTON_IDENTITY_KEY", devstack.identity_key(settings))
        try:
            yield OwnStack(settings)
        finally:
            devstack.down(settings)


# The conftest's fixtures of the same names, on this module's stack.
@pytest.fixture(scope="module")
def kafka(own_stack: OwnStack) -> KafkaAccess:
    return devstack.endpoints(own_stack.settings).kafka


@pytest.fixture(scope="module")
def identity(own_stack: OwnStack) -> IdentityKey:
    return master_key(Settings())


@pytest.fixture(scope="module")
def codec(identity: IdentityKey) -> Codec:
    return service_codec(identity)


@pytest.fixture(scope="module")
def database_url(own_stack: OwnStack) -> str:
    return devstack.endpoints(own_stack.settings).database_url


@pytest.fixture(scope="module")
async def dataset(
    own_stack: OwnStack, kafka: KafkaAccess, codec: Codec, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A dataset made by the ingest service: its ``lepton.data.ready`` record."""
    root = tmp_path_factory.mktemp("outage-data")
    houses(200).to_csv(root / "houses.csv", index=False)
    tenant = unique_tenant()
    ingest_url = devstack.endpoints(own_stack.settings, "ingest").database_url
    async with running_ingest(kafka, ingest_url, codec, root) as ingest:
        outcome, ready = await ingest.submit(
            request(tenant, "houses", [{"name": "s", "kind": "csv", "uri": "houses.csv"}])
        )
    assert outcome == "ready", ready
    return ready


@pytest.fixture
async def space(
    kafka: KafkaAccess, codec: Codec, dataset: dict[str, Any]
) -> AsyncIterator[Namespaced]:
    async with signed_space(kafka, codec) as namespaced:
        await namespaced.send("lepton.data.ready", dataset["dataset"], dataset)
        yield namespaced


class Cluster:
    """The services of one test, as processes on the module's stack."""

    def __init__(self, stack: OwnStack, space: Namespaced, artifacts: Path) -> None:
        self.stack = stack
        self.space = space
        self.artifacts = artifacts
        self.node = f"n-{uuid.uuid4().hex[:6]}"
        self.started: list[Service] = []

    async def start(self, *, monitor: bool) -> None:
        env = self.stack.env
        prefix = self.space.prefix
        # The node reports the host's measured CPU: on a CI machine the suite itself keeps
        # both cores busy, and with headroom below 1 the node would get no work at all.
        self.scheduler = await self._start(
            [str(BIN / "lepton-scheduler")], env("scheduler", prefix, LEPTON_NODE_HEADROOM="1")
        )
        trainer = [str(BIN / "lepton-trainer"), "--node-id", self.node, "--cpus", "2"]
        self.trainer = await self._start(
            [*trainer, "--memory", "4096", "--interval", "0.5"],
            env("trainer", prefix, LEPTON_ARTIFACT_ROOT=str(self.artifacts)),
        )
        if monitor:
            self.monitor = await self._start([str(BIN / "lepton-monitor")], env("monitor", prefix))
            await self.monitor.event("consuming")
        await self.scheduler.event("leading")
        await self.trainer.event("consuming")
        # A job that comes before the scheduler has heard of any node is rejected.
        await self.scheduler.metric_reaches("lepton_scheduler_nodes", 1)

    async def _start(self, command: list[str], env: dict[str, str]) -> Service:
        started = await Service.launch(command, env)
        self.started.append(started)
        return started

    async def stop(self) -> list[int]:
        return await stop_all(self.started)


@pytest.fixture
async def cluster(own_stack: OwnStack, space: Namespaced, tmp_path: Path) -> AsyncIterator[Cluster]:
    running = Cluster(own_stack, space, tmp_path / "artifacts")
    try:
        yield running
    finally:
        await running.stop()


def training(job_id: str, dataset: dict[str, Any]) -> dict[str, Any]:
    """A job request whose search runs for a few seconds once its data is loaded."""
    return job(
        job_id,
        tenant=dataset["tenant"],
        dataset={"name": dataset["dataset"], "owner": dataset["tenant"], "version": None},
        task={
            "kind": "train",
            "algorithm": "auto",
            "target_column": "price",
            "problem_type": None,
            "search_space": None,
            "trial_budget": 10_000,
            "time_budget_s": _SEARCH_S,
            "cv_folds": 3,
            "scoring": None,
            "seed": 7,
            "model_name": None,
            "model_ref": None,
            "options": {},
        },
        max_retries=3,
    )


async def record_of(
    reader: Reader, predicate: Callable[[dict[str, Any]], bool], what: str, cluster: Cluster
) -> dict[str, Any]:
    """The first record that satisfies ``predicate``; if none comes within two minutes,
    an error with what did come and what the services last logged."""
    try:
        return await reader.until(predicate, 120)
    except TimeoutError:
        logs = {s.name: [e.get("event") for e in s.entries[-8:]] for s in cluster.started}
        kinds = [(r.get("job_id"), r.get("kind"), r.get("reason")) for r in reader.seen[-10:]]
        raise AssertionError(f"no {what} within 120 s; seen {kinds}; logs {logs}") from None


def of(job_id: str, kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record["job_id"] == job_id and record["kind"] == kind


def loaded(job_id: str) -> Callable[[dict[str, Any]], bool]:
    """A progress report past loading: the run needs the database no more until it ends."""
    return lambda record: of(job_id, "progress")(record) and (record["progress_percent"] or 0) >= 8


async def test_postgresql_away_is_waited_out_and_the_running_job_still_succeeds(
    cluster: Cluster, space: Namespaced, dataset: dict[str, Any], own_stack: OwnStack
) -> None:
    await cluster.start(monitor=False)
    first_term = cluster.scheduler.logged("leading")[-1]["term"]
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as readers:
        events = await readers.enter_async_context(space.reader("lepton.jobs.events"))
        models = await readers.enter_async_context(space.reader("lepton.models.ready"))
        await space.send("lepton.jobs.requested", job_id, training(job_id, dataset))
        await record_of(events, loaded(job_id), "run past loading", cluster)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(own_stack.stop_postgres)
        down_at = loop.time()
        for service in (cluster.scheduler, cluster.trainer):
            answer = await service.health_becomes(503, 30)
            assert answer["status"] == "degraded"
            assert "postgresql" in answer["problems"], answer
        # The run ends meanwhile: its model waits for the database, not failed for it.
        await cluster.trainer.until(
            lambda entry: entry.get("event") == "database unavailable; retrying",
            _OUTAGE_S,
            "the run's outcome waiting for the database",
        )
        await cluster.scheduler.event("stepped down; campaigning again", _OUTAGE_S)
        await asyncio.sleep(max(0.0, _OUTAGE_S - (loop.time() - down_at)))  # the outage
        await asyncio.to_thread(own_stack.start_postgres)

        succeeded = await record_of(events, of(job_id, "succeeded"), "success", cluster)
        ready = await record_of(models, lambda r: r["job_id"] == job_id, "model", cluster)
        for service in (cluster.scheduler, cluster.trainer):
            assert (await service.health_becomes(200, 60))["problems"] == {}
        leading_again = await cluster.scheduler.until(
            lambda entry: entry.get("event") == "leading" and entry["term"] > first_term,
            60,
            "leadership in a new term",
        )
    kinds = [record["kind"] for record in events.seen if record["job_id"] == job_id]
    assert "failed" not in kinds, kinds
    assert kinds.count("succeeded") == 1, kinds
    assert succeeded["model_id"] == ready["model_id"]
    assert leading_again["term"] == first_term + 1
    assert cluster.scheduler.alive
    assert cluster.trainer.alive
    # The acknowledged write (the model's catalog row) is there.
    connection = await asyncpg.connect(devstack.endpoints(own_stack.settings).database_url)
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM lepton_trainer.models WHERE model_id = $1", ready["model_id"]
        )
    finally:
        await connection.close()
    assert stored == 1
    assert await cluster.stop() == [0, 0]


async def test_kafka_away_is_waited_out_and_the_running_job_still_succeeds(
    cluster: Cluster, space: Namespaced, dataset: dict[str, Any], own_stack: OwnStack
) -> None:
    await cluster.start(monitor=True)
    job_id = f"j-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as readers:
        events = await readers.enter_async_context(space.reader("lepton.jobs.events"))
        models = await readers.enter_async_context(space.reader("lepton.models.ready"))
        await space.send("lepton.jobs.requested", job_id, training(job_id, dataset))
        await record_of(events, loaded(job_id), "run past loading", cluster)

        loop = asyncio.get_running_loop()
        own_stack.kill_kafka()
        down_at = loop.time()
        services = (cluster.scheduler, cluster.trainer, cluster.monitor)
        for service in services:
            answer = await service.health_becomes(503, 30)
            assert "kafka" in answer["problems"], answer
        await asyncio.sleep(max(0.0, _OUTAGE_S - (loop.time() - down_at)))  # the outage
        await asyncio.to_thread(own_stack.start_kafka)

        succeeded = await record_of(events, of(job_id, "succeeded"), "success", cluster)
        ready = await record_of(models, lambda r: r["job_id"] == job_id, "model", cluster)
        for service in services:
            assert (await service.health_becomes(200, 60))["problems"] == {}
    kinds = [record["kind"] for record in events.seen if record["job_id"] == job_id]
    assert "failed" not in kinds, kinds
    assert kinds.count("succeeded") == 1, kinds
    assert [r for r in models.seen if r["job_id"] == job_id] == [ready]
    assert succeeded["model_id"] == ready["model_id"]
    assert all(service.alive for service in services)
    assert await cluster.stop() == [0, 0, 0]


async def test_a_run_that_cannot_reach_the_database_reports_a_retryable_failure(
    tmp_path: Path,
) -> None:
    """The training process itself, with PostgreSQL away (nothing listens on its port)."""
    dataset = {"name": "houses", "version": "v1", "owner": "acme"}
    run = {
        "assignment": assignment("j", "n", "acme", dataset) | {"assigned_at": 0},
        "database_url": f"postgresql://trainer:secret@127.0.0.1:{free_port()}/lepton",
        "artifact_uri": (tmp_path / "model.skops").as_uri(),
        "study_name": "j@1",
        "cpus": [],
        "memory_mib": 4096,
        "log_level": "info",
    }
    worker = await start_helper("lepton.services.trainer.worker", run)
    assert worker.stdout is not None
    try:
        async with asyncio.timeout(120):
            reports = [json.loads(line) async for line in worker.stdout]
    finally:
        if worker.returncode is None:
            worker.kill()
        await worker.wait()
    outcome = reports[-1]
    assert outcome["event"] == "failed", reports
    assert outcome["error_type"] == "ConnectionRefusedError"
    assert outcome["retryable"] is True


async def test_a_standby_stops_when_asked_while_it_waits_for_the_lock(
    own_stack: OwnStack, space: Namespaced
) -> None:
    """A scheduler standing by (the lock held by another, or PostgreSQL away) still ends on
    SIGTERM, with status 0."""
    env = own_stack.env("scheduler", space.prefix)
    leader = await Service.launch([str(BIN / "lepton-scheduler")], env)
    try:
        await leader.event("leading")
        standby = await Service.launch([str(BIN / "lepton-scheduler")], env)
        await standby.event("standing by for leadership")
        assert await standby.stop(timeout_s=30) == 0
        assert not standby.logged("leading")
    finally:
        assert await leader.stop() == 0
