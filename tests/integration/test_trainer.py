"""The trainer agent against the real broker and database, with datasets made by ingest."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pandas as pd
import psutil
import pytest

from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.data.artifacts import ArtifactStore
from lepton.data.modeling import model_input
from lepton.runtime.service import Service
from lepton.services.trainer.app import create_app
from lepton.services.trainer.node import NodeSpec
from lepton.services.trainer.revocation import revocation
from lepton.services.trainer.runs import model_id_for
from lepton.services.trainer.settings import TrainerSettings
from tests.integration.ingest_support import request, running_ingest, unique_tenant
from tests.integration.processes import BIN, service_env, start
from tests.integration.scheduler_support import Namespaced, assignment

pytestmark = pytest.mark.integration


def houses(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 250, rows).round(1)
    district = rng.choice(["A区", "B区", "C区"], rows)
    bonus = pd.Series(district).map({"A区": 900_000, "B区": 400_000, "C区": 0}).to_numpy()
    price = (area * 30_000 + bonus + rng.normal(0, 80_000, rows)).round(0)
    return pd.DataFrame({"area": area, "district": district, "price": price})


@pytest.fixture(scope="module")
async def datasets(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """Datasets created through the ingest service: owner, other tenant and versions."""
    root = tmp_path_factory.mktemp("trainer-data")
    owner, stranger = unique_tenant(), unique_tenant()
    houses(120).to_csv(root / "houses.csv", index=False)
    constant = houses(40).assign(price=500_000.0)
    constant.to_csv(root / "constant.csv", index=False)
    houses(3).to_csv(root / "tiny.csv", index=False)
    versions: dict[str, dict[str, str]] = {}
    async with running_ingest(kafka, database_for("ingest"), codec, root) as ingest:
        for tenant, name, file in [
            (owner, "houses", "houses.csv"),
            (owner, "constant", "constant.csv"),
            (owner, "tiny", "tiny.csv"),
            (stranger, "private", "houses.csv"),
        ]:
            outcome, ready = await ingest.submit(
                request(tenant, name, [{"name": "s", "kind": "csv", "uri": file}])
            )
            assert outcome == "ready", ready
            versions[name] = {"name": name, "version": ready["version"], "owner": tenant}
    return {"tenant": owner, **versions}


@pytest.fixture
async def space(kafka: KafkaAccess, codec: Codec, publisher: Any) -> Namespaced:
    namespaced = Namespaced(kafka, codec, publisher)
    await namespaced.create()
    return namespaced


def settings_for(
    space: Namespaced, kafka: KafkaAccess, database_url: str, root: Path
) -> TrainerSettings:
    return TrainerSettings(
        **kafka.settings(),
        database_url=database_url,
        topic_prefix=space.prefix,
        artifact_root=str(root / "artifacts"),
        trainer_stop_grace_s=1.0,
    )


@asynccontextmanager
async def running_trainer(
    space: Namespaced, node: str, kafka: KafkaAccess, database_url: str, root: Path
) -> AsyncIterator[Service]:
    service = create_app(
        NodeSpec(node, cpus=2, memory_mib=4096),
        settings_for(space, kafka, database_url, root),
        interval_s=0.2,
    )
    task = asyncio.create_task(service.run())
    try:
        ready = asyncio.create_task(service.ready.wait())
        done, _ = await asyncio.wait({task, ready}, timeout=60, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()
        assert ready in done, "the trainer did not start"
        yield service
    finally:
        service.stop_soon()
        await asyncio.wait_for(task, 60)


def of(job_id: str, kind: str) -> Any:
    return lambda record: record["job_id"] == job_id and record["kind"] == kind


def workers() -> list[psutil.Process]:
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "lepton.services.trainer.worker" in " ".join(child.cmdline())
    ]


async def test_a_job_trains_and_its_model_is_stored_cataloged_and_announced(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    node, job = f"n-{uuid.uuid4().hex[:8]}", f"j-{uuid.uuid4().hex[:8]}"
    tenant = datasets["tenant"]
    async with (
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.models.ready") as models,
        space.reader("lepton.node.heartbeats") as beats,
        running_trainer(space, node, kafka, database_for("trainer"), tmp_path),
    ):
        await beats.until(lambda r: r["node_id"] == node)
        await space.send(
            "lepton.jobs.assigned",
            node,
            assignment(job, node, tenant, datasets["houses"], epoch=3, algorithm="auto"),
        )
        started = await events.until(of(job, "started"), 60)
        progress = await events.until(of(job, "progress"), 60)
        succeeded = await events.until(of(job, "succeeded"), 120)
        ready = await models.until(lambda r: r["job_id"] == job, 30)
    for report in (started, progress, succeeded):
        assert (report["node_id"], report["lease_epoch"], report["worker_index"]) == (node, 3, 0)
        assert report["tenant"] == tenant
    kinds = [r["kind"] for r in events.seen if r["job_id"] == job]
    assert kinds[0] == "started"
    assert kinds[-1] == "succeeded"
    assert kinds.count("succeeded") == 1
    assert 0 <= progress["progress_percent"] <= 100
    assert progress["stage"]
    assert succeeded["model_id"] == ready["model_id"] == model_id_for(job, 3)
    assert ready["problem_type"] == "regression"
    assert ready["feature_columns"] == ["area", "district"]
    assert ready["trials"] == 4
    assert ready["cv_score"] > 0.8
    assert ready["dataset"] == datasets["houses"]
    assert ready["artifact_format"] == "skops"
    model = ArtifactStore(str(tmp_path / "artifacts")).load(
        ready["artifact_uri"], tenant=tenant, sha256=ready["artifact_sha256"]
    )
    sample = pd.DataFrame({"area": [150.0], "district": ["B区"]})
    predicted = model.predict(model_input(sample))[0]
    assert 150 * 30_000 < predicted < 150 * 30_000 + 900_000
    row = await pool.fetchrow(
        "SELECT algorithm, parameters, trials, artifact_sha256, dataset_version "
        "FROM lepton_trainer.models WHERE model_id = $1",
        ready["model_id"],
    )
    assert row is not None
    assert row["algorithm"] == ready["algorithm"]
    assert json.loads(row["parameters"]) == json.loads(ready["parameters"])
    trials = json.loads(row["trials"])
    assert len(trials) == 4
    # Each trial says which rung of successive halving it ran in (the first is rung 0).
    assert trials[0]["rung"] == 0
    assert all("reason" in trial for trial in trials)
    assert row["artifact_sha256"] == ready["artifact_sha256"]
    assert row["dataset_version"] == datasets["houses"]["version"]


async def test_redelivered_and_stale_instructions_start_nothing(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
) -> None:
    node, job, marker = (f"x-{uuid.uuid4().hex[:8]}" for _ in range(3))
    tenant, houses_ds = datasets["tenant"], datasets["houses"]
    async with (
        space.reader("lepton.jobs.events") as events,
        running_trainer(space, node, kafka, database_for("trainer"), tmp_path),
    ):
        await space.send(
            "lepton.jobs.assigned", node, assignment(job, node, tenant, houses_ds, epoch=5)
        )
        await events.until(of(job, "succeeded"), 120)
        # The same instruction again (redelivery), then an older lease of the same job.
        await space.send(
            "lepton.jobs.assigned", node, assignment(job, node, tenant, houses_ds, epoch=5)
        )
        await space.send(
            "lepton.jobs.assigned", node, assignment(job, node, tenant, houses_ds, epoch=4)
        )
        # Instructions are handled in order: once the marker starts, both were judged.
        await space.send("lepton.jobs.assigned", node, assignment(marker, node, tenant, houses_ds))
        await events.until(of(marker, "succeeded"), 120)
    reports = [r for r in events.seen if r["job_id"] == job]
    assert [r["kind"] for r in reports].count("started") == 1
    assert [r["kind"] for r in reports].count("succeeded") == 1
    assert {r["lease_epoch"] for r in reports} == {5}


async def test_a_stop_instruction_ends_the_run_promptly_and_voids_its_outcome(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
) -> None:
    node, job, marker = (f"s-{uuid.uuid4().hex[:8]}" for _ in range(3))
    tenant, houses_ds = datasets["tenant"], datasets["houses"]
    slow = {"algorithm": "random_forest", "trial_budget": 1000, "time_budget_s": 600}
    async with (
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.node.heartbeats") as beats,
        running_trainer(space, node, kafka, database_for("trainer"), tmp_path),
    ):
        await space.send(
            "lepton.jobs.assigned", node, assignment(job, node, tenant, houses_ds, epoch=2, **slow)
        )
        await events.until(lambda r: of(job, "progress")(r) and r["stage"] == "searching", 60)
        await beats.until(lambda r: r["node_id"] == node and job in r["running_job_ids"])
        running = workers()
        assert len(running) == 1
        stop = assignment(job, node, tenant, houses_ds, epoch=2, action="stop")
        stop["reason"] = "preempted by urgent-1"
        sent = time.monotonic()
        await space.send("lepton.jobs.assigned", node, stop)
        _, alive = await asyncio.to_thread(psutil.wait_procs, running, timeout=10)
        assert alive == []
        assert time.monotonic() - sent < 5  # SIGTERM, at worst SIGKILL after the 1 s grace
        await beats.until(lambda r: r["node_id"] == node and r["running_job_ids"] == [], 10)
        # A later job on the same agent runs; the stopped one never reports an outcome.
        await space.send("lepton.jobs.assigned", node, assignment(marker, node, tenant, houses_ds))
        await events.until(of(marker, "succeeded"), 120)
    kinds = [r["kind"] for r in events.seen if r["job_id"] == job]
    assert "succeeded" not in kinds
    assert "failed" not in kinds


BAD_INPUTS = [
    ("no-target", "houses", {"target_column": "rent"}, "MissingTargetColumn", "'rent'"),
    ("constant", "constant", {}, "ConstantTarget", "single value"),
    ("tiny", "tiny", {"cv_folds": 5}, "TooFewRows", "left for training"),
    (
        "bad-space",
        "houses",
        {
            "search_space": json.dumps(
                {"ridge": {"alpha": {"type": "float", "low": -1, "high": 1, "log": True}}}
            )
        },
        "InvalidSearchSpace",
        "low > 0",
    ),
    ("not-shared", "private", {}, "AccessDenied", "not shared"),
]


async def test_bad_input_fails_with_a_specific_reason_and_the_agent_keeps_serving(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
) -> None:
    node, good = f"b-{uuid.uuid4().hex[:8]}", f"ok-{uuid.uuid4().hex[:8]}"
    tenant = datasets["tenant"]
    jobs = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name, *_ in BAD_INPUTS}
    async with (
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.models.ready") as models,
        running_trainer(space, node, kafka, database_for("trainer"), tmp_path),
    ):
        for name, dataset, task, _, _ in BAD_INPUTS:
            await space.send(
                "lepton.jobs.assigned",
                node,
                assignment(jobs[name], node, tenant, datasets[dataset], **task),
            )
        failures = {
            name: await events.until(of(jobs[name], "failed"), 120) for name, *_ in BAD_INPUTS
        }
        await space.send(
            "lepton.jobs.assigned", node, assignment(good, node, tenant, datasets["houses"])
        )
        await events.until(of(good, "succeeded"), 120)
        await models.until(lambda r: r["job_id"] == good, 30)
    for name, _, _, error_type, phrase in BAD_INPUTS:
        failed = failures[name]
        assert failed["error_type"] == error_type, failed
        assert phrase in failed["reason"], failed
        assert failed["lease_epoch"] == 1
        assert failed["node_id"] == node
    assert {r["job_id"] for r in models.seen} == {good}
    stored = {p.stem for p in (tmp_path / "artifacts").rglob("*.skops")}
    assert stored == {model_id_for(good, 1)}


async def test_a_restarted_agent_reports_the_runs_it_lost(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
) -> None:
    node, job = f"r-{uuid.uuid4().hex[:8]}", f"j-{uuid.uuid4().hex[:8]}"
    tenant = datasets["tenant"]
    slow = {"algorithm": "random_forest", "trial_budget": 1000, "time_budget_s": 600}
    async with space.reader("lepton.jobs.events") as events:
        async with running_trainer(space, node, kafka, database_for("trainer"), tmp_path):
            await space.send(
                "lepton.jobs.assigned",
                node,
                assignment(job, node, tenant, datasets["houses"], epoch=9, **slow),
            )
            await events.until(of(job, "progress"), 60)
        assert workers() == []  # the agent ended its worker as it went down
        async with running_trainer(space, node, kafka, database_for("trainer"), tmp_path):
            lost = await events.until(of(job, "lost"), 30)
    assert (lost["node_id"], lost["lease_epoch"], lost["worker_index"]) == (node, 9, 0)
    assert node in lost["reason"]
    kinds = [r["kind"] for r in events.seen if r["job_id"] == job]
    assert kinds.count("lost") == 1
    assert "succeeded" not in kinds


async def test_a_gang_shares_one_study_and_worker_zero_reports_the_model(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    first, second = (f"g-{uuid.uuid4().hex[:8]}" for _ in range(2))
    job, tenant = f"gang-{uuid.uuid4().hex[:8]}", datasets["tenant"]
    gang = {"gang_size": 2, "epoch": 4, "trial_budget": 6, "algorithm": "auto"}
    async with (
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.models.ready") as models,
        running_trainer(space, first, kafka, database_for("trainer"), tmp_path),
        running_trainer(space, second, kafka, database_for("trainer"), tmp_path),
    ):
        for index, node in enumerate((first, second)):
            await space.send(
                "lepton.jobs.assigned",
                node,
                assignment(job, node, tenant, datasets["houses"], worker_index=index, **gang),
            )
        await events.until(
            lambda r: (
                of(job, "progress")(r) and r["worker_index"] == 1 and r["stage"] == "searched"
            ),
            120,
        )
        succeeded = await events.until(of(job, "succeeded"), 120)
        ready = await models.until(lambda r: r["job_id"] == job, 30)
    assert succeeded["worker_index"] == 0
    assert succeeded["node_id"] == first
    assert [r["kind"] for r in events.seen if r["job_id"] == job].count("succeeded") == 1
    assert ready["trials"] == 6
    journal = await pool.fetchval(
        "SELECT count(*) FROM lepton_trainer.study_journal WHERE study = $1", f"{job}@4"
    )
    assert journal > 0


async def test_a_killed_agent_takes_its_workers_down_and_its_successor_reports_them_lost(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
) -> None:
    node, job = f"k-{uuid.uuid4().hex[:8]}", f"j-{uuid.uuid4().hex[:8]}"
    slow = {"algorithm": "random_forest", "trial_budget": 1000, "time_budget_s": 600}
    running = await start(
        [str(BIN / "lepton-trainer"), "--node-id", node, "--interval", "0.2"],
        service_env(kafka, database_for("trainer"), space.prefix),
    )
    agent = running.process
    async with space.reader("lepton.jobs.events") as events:
        try:
            await space.send(
                "lepton.jobs.assigned",
                node,
                assignment(job, node, datasets["tenant"], datasets["houses"], epoch=6, **slow),
            )
            await events.until(of(job, "progress"), 60)
            orphans = [
                child
                for child in psutil.Process(agent.pid).children()
                if "lepton.services.trainer.worker" in " ".join(child.cmdline())
            ]
            assert len(orphans) == 1
            agent.kill()  # no chance to clean up: as in a crash or an OOM kill
            await agent.wait()
            await running.log_ended()
            _, alive = await asyncio.to_thread(psutil.wait_procs, orphans, timeout=15)
            assert alive == []  # the worker saw its stdin close and exited
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
        async with running_trainer(space, node, kafka, database_for("trainer"), tmp_path):
            lost = await events.until(of(job, "lost"), 30)
    assert (lost["node_id"], lost["lease_epoch"]) == (node, 6)
    assert [r["kind"] for r in events.seen if r["job_id"] == job].count("lost") == 1


async def _finished_while_paused(agent: asyncio.subprocess.Process) -> None:
    """Wait until the paused agent's worker has written its result and exited (a zombie:
    its stopped parent cannot reap it), so that on resume the result waits in the pipe."""
    worker = next(
        child
        for child in psutil.Process(agent.pid).children()
        if "lepton.services.trainer.worker" in " ".join(child.cmdline())
    )
    async with asyncio.timeout(120):
        while worker.status() != psutil.STATUS_ZOMBIE:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_an_agent_paused_past_its_lease_reports_nothing_of_a_run_the_scheduler_took_back(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    datasets: dict[str, Any],
    tmp_path: Path,
) -> None:
    """The chaos suite's finding: an agent stopped (SIGSTOP) past the scheduler's dead
    threshold, then resumed, published its run's model and ``succeeded`` although the
    scheduler had requeued the job (and told the lease to stop) meanwhile: two models for
    one job. Now an agent silent past its lease reads its instructions to their end before
    reporting: the stop voids the run. A second run, whose lease nobody took back during
    a silence as long (every node silent at once), reports as usual."""
    node = f"p-{uuid.uuid4().hex[:8]}"
    revoked, held = (f"j-{uuid.uuid4().hex[:8]}" for _ in range(2))
    tenant, houses = datasets["tenant"], datasets["houses"]
    running = await start(
        [str(BIN / "lepton-trainer"), "--node-id", node, "--interval", "0.2"],
        service_env(
            kafka,
            database_for("trainer"),
            space.prefix,
            LEPTON_ARTIFACT_ROOT=str(tmp_path / "artifacts"),
            LEPTON_TRAINER_LEASE_S="1",
        ),
    )
    agent = running.process
    try:
        async with (
            space.reader("lepton.jobs.events") as events,
            space.reader("lepton.models.ready") as models,
        ):
            for job, stop in ((revoked, True), (held, False)):
                await space.send(
                    "lepton.jobs.assigned", node, assignment(job, node, tenant, houses, epoch=4)
                )
                await events.until(of(job, "started"), 60)
                agent.send_signal(signal.SIGSTOP)
                try:
                    await _finished_while_paused(agent)
                    if stop:  # as the scheduler does once it declares the node dead
                        order = assignment(job, node, tenant, houses, epoch=4, action="stop")
                        order["reason"] = f"node {node} dead: the job starts over"
                        await space.send("lepton.jobs.assigned", node, order)
                finally:
                    agent.send_signal(signal.SIGCONT)
                if not stop:
                    await events.until(of(held, "succeeded"), 60)
            published = await models.everything()
            reports = await events.everything()
    finally:
        await running.stop()
        said = running.events()
    assert [r["job_id"] for r in published] == [held]
    outcomes = {r["kind"] for r in reports if r["job_id"] == revoked} - {"started", "progress"}
    assert outcomes == set()
    # Whichever read the stop first, the consumer or the check before reporting:
    # (test_revocation_reads_the_nodes_instructions_to_their_end proves the check alone).
    assert {
        "lease revoked during the silence: the run's outcome is void",
        "stopped run ended; its outcome is void",
    } & set(said)
    assert "lease held through the silence: reporting the run" in said


async def test_revocation_reads_the_nodes_instructions_to_their_end(
    space: Namespaced, kafka: KafkaAccess, codec: Codec, datasets: dict[str, Any]
) -> None:
    node, job, other = f"r-{uuid.uuid4().hex[:8]}", "j-revoked", "j-other"
    tenant, houses = datasets["tenant"], datasets["houses"]
    topic = space.names.topic("lepton.jobs.assigned").name
    async with space.reader("lepton.jobs.assigned") as instructions:
        await space.send(
            "lepton.jobs.assigned", node, assignment(job, node, tenant, houses, epoch=7)
        )
        run = await instructions.until(lambda r: r["job_id"] == job)
        [(place, offset)] = [
            (tp.partition, position - 1)
            for tp, position in [
                (tp, await instructions.consumer.position(tp))
                for tp in instructions.consumer.assignment()
            ]
            if position > 0
        ]
    assert run["lease_epoch"] == 7
    where = (topic, place, offset)

    async def check(epoch: int) -> str | None:
        return await revocation(kafka, codec, where, (job, epoch, 0), timeout_s=30)

    assert await check(7) is None  # nothing after it: the lease holds
    await space.send(
        "lepton.jobs.assigned", node, assignment(other, node, tenant, houses, action="stop")
    )
    assert await check(7) is None  # another job's stop changes nothing
    stop = assignment(job, node, tenant, houses, epoch=7, action="stop")
    stop["reason"] = "node dead: the job starts over"
    await space.send("lepton.jobs.assigned", node, stop)
    assert await check(7) == "node dead: the job starts over"
    assert await check(6) == "the job was given lease 7 since"
