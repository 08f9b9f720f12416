"""A job's lifecycle from the CLI and the SDK, against the real broker and database and
the real ingest, scheduler and trainer: cancelling a queued and a running job, another
tenant's refused and audited, `lepton jobs show`, and the checks `lepton submit` makes in
the dataset catalog."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import psutil
import pytest

from lepton import (
    AccessDenied,
    DatasetNotFound,
    DatasetRef,
    JobRequest,
    LeptonClient,
    Resources,
    TrainingTask,
)
from lepton.config import KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.errors import RequestError
from tests.integration.ingest_support import request, running_ingest, unique_tenant
from tests.integration.scheduler_support import Namespaced, running_scheduler, signed_space
from tests.integration.test_trainer import houses, running_trainer, workers
from tests.unit.test_cli_bad_input import closed_port

pytestmark = pytest.mark.integration

LEPTON = [sys.executable, "-m", "lepton"]


@dataclass
class Cluster:
    space: Namespaced
    settings: Settings  # the client's
    tenant: str  # owns house_prices
    stranger: str  # owns private, shared with nobody
    node: str
    env: dict[str, str]  # a `lepton` command's, on this cluster

    def client(self, tenant: str) -> LeptonClient:
        return LeptonClient(self.settings, tenant=tenant, user="alice")

    def lepton(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LEPTON, *args],
            capture_output=True,
            text=True,
            env=self.env | env,
            timeout=180,
            check=False,
        )


@pytest.fixture(scope="module")
async def cluster(
    kafka: KafkaAccess,
    codec: Codec,
    database_for: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    """Ingest (which made the tenant's house_prices and a stranger's private dataset), the
    scheduler and one trainer of 2 cores, on topics of their own."""
    root = tmp_path_factory.mktemp("cancel")
    houses(120).to_csv(root / "houses.csv", index=False)
    tenant, stranger, node = unique_tenant(), unique_tenant(), f"n-{uuid.uuid4().hex[:8]}"
    async with (
        signed_space(kafka, codec) as space,
        running_ingest(kafka, database_for("ingest"), codec, root, prefix=space.prefix) as ingest,
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        running_trainer(space, node, kafka, database_for("trainer"), root),
    ):
        for owner, name in [(tenant, "house_prices"), (stranger, "private")]:
            outcome, ready = await ingest.submit(
                request(owner, name, [{"name": "s", "kind": "csv", "uri": "houses.csv"}])
            )
            assert outcome == "ready", ready
        settings = Settings(
            **kafka.settings(), database_url=database_for("client"), topic_prefix=space.prefix
        )
        env = os.environ | {
            **kafka.environment(),
            "LEPTON_DATABASE_URL": database_for("client"),
            "LEPTON_TOPIC_PREFIX": space.prefix,
        }
        yield Cluster(space, settings, tenant, stranger, node, env)


def training(tenant: str, *, long: bool, dataset: str | DatasetRef = "house_prices") -> JobRequest:
    """A job that takes the whole node: a long search, or a quick ridge fit."""
    task = (
        TrainingTask(
            target_column="price", algorithm="random_forest", trial_budget=1000, time_budget_s=600
        )
        if long
        else TrainingTask(target_column="price", algorithm="ridge", trial_budget=2, cv_folds=3)
    )
    return JobRequest(
        tenant=tenant, dataset=dataset, task=task, demand=Resources.of(cpus=2, memory_mib=1024)
    )


def of(job_id: str, *kinds: str) -> Callable[[dict[str, Any]], bool]:
    return lambda record: record["job_id"] == job_id and record["kind"] in kinds


async def test_cancelling_a_queued_and_a_running_job_and_another_tenants(
    cluster: Cluster, pool: asyncpg.Pool
) -> None:
    space, tenant = cluster.space, cluster.tenant
    async with (
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.node.heartbeats") as beats,
        space.reader("lepton.audit") as audits,
        space.reader("lepton.models.ready") as models,
        cluster.client(tenant) as client,
        cluster.client(unique_tenant()) as mallory,
    ):
        running = await client.submit(training(tenant, long=True))
        await events.until(lambda r: of(running, "progress")(r) and r["stage"] == "searching", 90)
        queued = await client.submit(training(tenant, long=True))
        await events.until(of(queued, "queued"))
        [worker] = workers()

        # Another tenant's cancel is refused, and audited by the scheduler that refused it.
        with pytest.raises(RequestError, match=r"refused: tenant .* may not cancel job"):
            await mallory.cancel(running)
        refused = f"may not cancel job {running} of another tenant"
        audit = await audits.until(lambda a: a["detail"].endswith(refused), 60)
        assert audit["outcome"] == "denied"

        # The queued job, from the CLI: it leaves the queue, never placed.
        cancelled = await asyncio.to_thread(cluster.lepton, "jobs", "cancel", queued)
        assert cancelled.returncode == 0, cancelled.stderr
        assert cancelled.stdout.startswith(f"{queued}: cancelled: cancelled by ")
        await events.until(of(queued, "cancelled"))
        assert (await client.job_history(queued)).state == "cancelled"

        # The running job, from the SDK: stopped on its node, its resources freed.
        done = await client.cancel(running, reason="wrong algorithm")
        assert (done.state, done.sent) == ("cancelled", True)
        assert done.event.reason == "cancelled by alice: wrong algorithm"
        _, alive = await asyncio.to_thread(psutil.wait_procs, [worker], timeout=15)
        assert alive == [], "the worker process was stopped"
        await beats.until(lambda r: r["node_id"] == cluster.node and not r["running_job_ids"])
        # The node is free: a job that needs all of it is placed there and runs.
        after = await client.submit(training(tenant, long=False))
        outcome = await client.wait(after, timeout_s=180)
        assert outcome.state == "succeeded", outcome.event

        # Cancelling again, or cancelling a finished job, changes nothing and says so.
        again = await client.cancel(running)
        assert (again.state, again.sent) == ("cancelled", False)
        finished = await client.cancel(after)
        assert (finished.state, finished.sent) == ("succeeded", False)
        late = await asyncio.to_thread(cluster.lepton, "jobs", "cancel", after)
        assert late.returncode == 1
        assert late.stderr.startswith(f"error: job {after} already succeeded")

        models_seen = await models.everything()
        everything = await events.everything()
    assert [m["job_id"] for m in models_seen] == [after], "no model of the cancelled job"
    queued_kinds = [r["kind"] for r in everything if r["job_id"] == queued]
    assert queued_kinds == ["queued", "cancel_requested", "cancelled"]
    running_kinds = [r["kind"] for r in everything if r["job_id"] == running]
    assert running_kinds.count("cancelled") == 1
    assert running_kinds[-1] == "cancelled", "nothing after: the stopped run reported nothing"
    assert "succeeded" not in running_kinds
    assert "failed" not in running_kinds
    stopped = await pool.fetchrow(
        "SELECT status, reason FROM lepton_trainer.runs WHERE job_id = $1", running
    )
    assert dict(stopped) == {"status": "stopped", "reason": "cancelled by alice: wrong algorithm"}
    after_node = [r["node_id"] for r in everything if of(after, "assigned")(r)]
    assert after_node == [cluster.node]

    shown = await asyncio.to_thread(cluster.lepton, "jobs", "show", running)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{running}: cancelled, tenant {tenant}"
    assert lines[1].startswith("requested ")
    assert "dataset house_prices, target price" in lines[1]
    for kind in ("queued", "assigned", "started", "progress", "cancel_requested", "cancelled"):
        assert f" {kind} " in shown.stdout, kind
    as_json = await asyncio.to_thread(cluster.lepton, "jobs", "show", running, "--json")
    document = json.loads(as_json.stdout)
    assert [e["kind"] for e in document["events"]] == running_kinds
    assert document["state"] == "cancelled"


async def test_submit_checks_the_dataset_and_target_column(cluster: Cluster) -> None:
    tenant = cluster.tenant
    submit = ["submit", "--tenant", tenant, "--target", "price"]

    typo = await asyncio.to_thread(cluster.lepton, *submit, "--dataset", "house_prize")
    assert typo.returncode == 1
    first, hint = typo.stderr.splitlines()
    assert first == (
        f"error: tenant {tenant} has no dataset 'house_prize' it may read; "
        "did you mean house_prices?"
    )
    assert hint.startswith(f"hint: `lepton data list --tenant {tenant}`")

    column = await asyncio.to_thread(
        cluster.lepton,
        "submit",
        "--tenant",
        tenant,
        "--dataset",
        "house_prices",
        "--target",
        "prise",
    )
    assert column.returncode == 1
    assert column.stderr.splitlines() == [
        f"error: task.target_column: dataset {tenant}/house_prices has no column 'prise'; "
        "did you mean price?",
        "hint: its columns: area, district, price",
    ]

    async with cluster.client(tenant) as client:
        private = DatasetRef(name="private", owner=cluster.stranger)
        with pytest.raises(AccessDenied, match="not shared with") as denied:
            await client.submit(training(tenant, long=False, dataset=private))
        with pytest.raises(DatasetNotFound, match="did you mean house_prices"):
            await client.submit(training(tenant, long=False, dataset="houseprices"))
    assert denied.value.hint is not None
    assert "`lepton data share private --with" in denied.value.hint

    # A dataset still to be ingested: sent as asked, without the check.
    later = await asyncio.to_thread(
        cluster.lepton, *submit, "--dataset", "house_prize", "--no-check"
    )
    assert later.returncode == 0, later.stderr
    assert later.stdout.startswith("submitted ")

    # A client that cannot reach the catalog submits anyway, and says so.
    blind = await asyncio.to_thread(
        cluster.lepton,
        *submit,
        "--dataset",
        "house_prices",
        LEPTON_DATABASE_URL=f"postgresql://client:secret@127.0.0.1:{closed_port()}/lepton",
        LEPTON_CONNECT_TIMEOUT_S="2",
    )
    assert blind.returncode == 0, blind.stderr
    assert blind.stderr.startswith("warning: the dataset catalog could not be reached")
    assert "secret" not in blind.stderr
    assert blind.stdout.startswith("submitted ")


async def test_show_and_cancel_of_a_job_nobody_submitted(cluster: Cluster) -> None:
    for command in ("show", "cancel"):
        result = await asyncio.to_thread(cluster.lepton, "jobs", command, "no-such-job")
        assert result.returncode == 1
        assert result.stderr.startswith("error: no job 'no-such-job' is known")
