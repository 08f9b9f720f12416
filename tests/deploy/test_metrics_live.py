"""Every service as `lepton up` runs it, each scraped by a real Prometheus, while the
demo's first example goes through them (ingest, schedule, train, evaluate, predict) and
a dataset is refused: `promtool check metrics` passes on each service's /metrics, and
every query of the Grafana dashboard returns series from what Prometheus scraped.

Prometheus and promtool are Debian's (the prometheus package, which .ci/run installs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lepton.bus import Publisher, ensure_topics
from lepton.cli import demo
from lepton.config import KafkaAccess, Settings
from lepton.contract.topics import Namespace
from lepton.devstack._process import free_port
from lepton.errors import DatasetRejected, LeptonTimeout
from lepton.sdk.builders import DatasetRequest, Source
from lepton.sdk.client import LeptonClient
from tests.deploy.grafana import queries
from tests.deploy.test_prometheus_rules import RULES, promtool
from tests.integration.processes import BIN, Service, data_service_env, running
from tests.samples import sample

pytestmark = pytest.mark.integration

TRAINER = [str(BIN / "lepton-trainer"), "--node-id", "n1", "--cpus", "2", "--memory", "4096"]
# (command, the log event that says it is up, its scrape job and labels as in
# deploy/prometheus/prometheus.yml)
SERVICES: list[tuple[list[str], str, str, dict[str, str]]] = [
    ([str(BIN / "lepton-ingest")], "health", "lepton-services", {"service": "ingest"}),
    ([str(BIN / "lepton-scheduler")], "health", "lepton-services", {"service": "scheduler"}),
    ([str(BIN / "lepton-evaluator")], "health", "lepton-services", {"service": "evaluator"}),
    (TRAINER, "health", "lepton-trainers", {"service": "trainer", "node": "n1"}),
    ([str(BIN / "lepton-monitor")], "dashboard", "lepton-monitor", {"service": "monitor"}),
]

# What the flow below does, each counted by the service that did it.
OBSERVED = (
    "lepton_scheduling_latency_seconds_count",
    'lepton_handler_duration_seconds_count{topic=~".*lepton.data.requested"}',
    'lepton_batch_duration_seconds_count{group=~".*lepton-scheduler"}',
    'lepton_ingest_duration_seconds_count{outcome="ready"}',
    'lepton_ingest_duration_seconds_count{outcome="rejected"}',
    'lepton_ingest_rows_total{stage="stored"}',
    "lepton_ingest_rejected_rows_total",  # the house prices' wrong type and outlier
    "lepton_ingest_rejections_total",
    'lepton_training_duration_seconds_count{outcome="succeeded"}',
    'lepton_training_trials_total{state="complete"}',
    "lepton_evaluation_duration_seconds_count",
    "lepton_model_load_duration_seconds_count",
    "lepton_model_cache_requests_total",
    "lepton_prediction_latency_seconds_count",
    "lepton_prediction_rows_total",
    "lepton_database_pool_wait_seconds_count",
)


async def scheduler_view(scheduler: Service) -> str:
    """What the scheduler knows of nodes and events: why a job waits, when one does."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(metrics_url(scheduler))).text
    wanted = ("lepton_scheduler_", "lepton_messages_total")
    return "\n".join(line for line in text.splitlines() if line.startswith(wanted))


def metrics_url(service: Service) -> str:
    entry = service.entry
    # The monitor is scraped on its metrics bind, the others on their health port.
    return (
        str(entry["metrics"]) if "metrics" in entry else entry["url"].replace("healthz", "metrics/")
    )


def prometheus_config(targets: list[tuple[str, str, dict[str, str]]]) -> dict[str, Any]:
    jobs: dict[str, list[dict[str, Any]]] = {}
    for job, target, labels in targets:
        jobs.setdefault(job, []).append({"targets": [target], "labels": labels})
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics/", "static_configs": groups}
            for job, groups in jobs.items()
        ],
    }


@pytest.fixture
async def cluster(
    kafka: KafkaAccess, database_for: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[tuple[Settings, list[Service]]]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka, Namespace(prefix).all())
    env = data_service_env(kafka, database_for("client"), prefix, tmp_path)
    commands = [(command, until) for command, until, _, _ in SERVICES]
    async with running(commands, env, database_for) as started:
        settings = Settings(
            **kafka.settings(), database_url=database_for("client"), topic_prefix=prefix
        )
        yield settings, started


@pytest.fixture
async def prometheus(cluster: tuple[Settings, list[Service]], tmp_path: Path) -> AsyncIterator[str]:
    tool = shutil.which("prometheus")
    assert tool is not None, (
        "prometheus is missing: install Debian's prometheus package "
        "(apt-get install --no-install-recommends prometheus; .ci/run does)"
    )
    _, started = cluster
    targets = [
        (job, metrics_url(service).removeprefix("http://").split("/")[0], labels)
        for (_, _, job, labels), service in zip(SERVICES, started, strict=True)
    ]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(targets)))
    address = f"127.0.0.1:{free_port()}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = await asyncio.create_subprocess_exec(
            tool,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address={address}",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        yield f"http://{address}"
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)


async def series(client: httpx.AsyncClient, prometheus: str, expr: str) -> list[Any] | None:
    """The series a query returns now (None while Prometheus is not answering yet)."""
    try:
        answer = await client.get(f"{prometheus}/api/v1/query", params={"query": expr})
    except httpx.TransportError:
        return None
    body = answer.json()
    assert body["status"] == "success", f"{expr}: {body}"
    found: list[Any] = body["data"]["result"]
    return found


async def test_every_service_passes_promtool_and_every_dashboard_query_has_series(
    cluster: tuple[Settings, list[Service]],
    prometheus: str,
    publisher: Publisher,
    tmp_path: Path,
) -> None:
    settings, started = cluster
    tenant = f"m{uuid.uuid4().hex[:6]}-demo"
    house = demo.EXAMPLES[0]
    async with LeptonClient(settings, tenant=tenant) as client:
        try:
            # Its progress is printed: pytest shows it when the test fails.
            report = await demo.run_example(
                client, dataclasses.replace(house, tenant=tenant), tmp_path, print
            )
        except LeptonTimeout:
            print(await scheduler_view(started[1]))
            raise
        assert report.prediction is not None
        with pytest.raises(DatasetRejected):  # a file that is not there: refused, by code
            await client.ingest(
                DatasetRequest(
                    tenant=tenant, dataset="missing", sources=[Source.file(tmp_path / "nope.csv")]
                ),
                timeout_s=60,
            )

    # A job for a dataset nobody ingested waits in its queue (the queue panel's series).
    waiting = sample("lepton.JobRequested")
    waiting.update(
        job_id=f"waits-{uuid.uuid4().hex[:8]}",
        tenant=tenant,
        dataset={"name": "never-ingested", "version": None, "owner": None},
        demand={"cpu_millicores": 500, "memory_mib": 256, "gpus": 0, "network_mbps": 0},
        constraints={"region": None, "labels": {}, "gpu_type": None},
        gang_size=1,
        submitted_at=time.time_ns() // 1_000_000,
    )
    names = Namespace(settings.topic_prefix)
    await publisher.publish(names.topic("lepton.jobs.requested"), waiting["job_id"], waiting)

    async with httpx.AsyncClient(timeout=10) as http:
        for (command, _, _, _), service in zip(SERVICES, started, strict=True):
            text = (await http.get(metrics_url(service))).text
            checked = promtool("check", "metrics", given=text)
            assert checked.returncode == 0, (command[0], checked.stdout + checked.stderr)

        # Rates need two scrapes after the work: wait (bounded) until every query answers.
        empty = [title for title, _ in queries()]
        try:
            async with asyncio.timeout(90):
                while empty:
                    empty = [
                        title
                        for title, expr in queries()
                        if not await series(http, prometheus, expr)
                    ]
                    if empty:
                        await asyncio.sleep(1)
        except TimeoutError:
            pass
        assert empty == [], f"dashboard queries with no series: {empty}"
        # The work was observed where it happened, not only exported at zero.
        for observed in OBSERVED:
            found = await series(http, prometheus, f"sum({observed})")
            assert found, observed
            assert float(found[0]["value"][1]) > 0, f"{observed} counted nothing"
        # Each service is scraped (and up), with the labels the dashboard's legends use.
        up = await series(http, prometheus, "up")
        assert up is not None
        assert sorted(s["metric"]["service"] for s in up if s["value"][1] == "1") == sorted(
            labels["service"] for _, _, _, labels in SERVICES
        )
