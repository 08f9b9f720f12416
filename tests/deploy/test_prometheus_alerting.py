"""A real Prometheus, with the shipped rules, scraping a real Lepton service whose
background task keeps failing: the alert an operator gets fires, names the service and
the task, and points at that service's own /healthz."""

from __future__ import annotations

import asyncio
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from lepton.config import KafkaAccess
from lepton.devstack._process import free_port
from tests.deploy.failing_service import NAME, sample
from tests.integration.processes import service_env, start

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def prometheus_config(target: str) -> dict[str, Any]:
    """The shipped rules over one target, scraped and evaluated every second."""
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "lepton-services",
                "metrics_path": "/metrics/",
                "static_configs": [{"targets": [target], "labels": {"service": NAME}}],
            }
        ],
    }


async def alerts_of(client: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    try:
        answer = await client.get(f"{url}/api/v1/alerts")
    except httpx.TransportError:
        return []  # not listening yet
    alerts: list[dict[str, Any]] = answer.json()["data"]["alerts"]
    return [alert for alert in alerts if alert["labels"].get("service") == NAME]


async def test_prometheus_fires_the_alert_for_a_service_whose_task_keeps_failing(
    kafka: KafkaAccess, database_for: Any, tmp_path: Path
) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus is not None, (
        "prometheus is missing: install Debian's prometheus package "
        "(apt-get install --no-install-recommends prometheus; .ci/run does)"
    )
    prefix = f"t{uuid.uuid4().hex[:8]}."
    service = await start(
        [sys.executable, "-m", "tests.deploy.failing_service"],
        service_env(kafka, database_for("evaluator"), prefix),
    )
    target = service.entry["url"].removeprefix("http://").removesuffix("/healthz")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(target)))
    address = f"127.0.0.1:{free_port()}"
    with (tmp_path / "prometheus.log").open("wb") as log:
        server = await asyncio.create_subprocess_exec(
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={address}",
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    seen: list[dict[str, Any]] = []
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            try:
                async with asyncio.timeout(90):
                    while not any(
                        alert["labels"]["alertname"] == "LeptonBackgroundTaskFailing"
                        and alert["state"] == "firing"
                        for alert in seen
                    ):
                        assert server.returncode is None, "Prometheus exited: prometheus.log"
                        await asyncio.sleep(0.5)
                        seen = await alerts_of(client, f"http://{address}")
            except TimeoutError:
                raise AssertionError(
                    f"LeptonBackgroundTaskFailing not firing within 90 s; alerts: {seen}"
                ) from None
    finally:
        server.terminate()
        await asyncio.wait_for(server.wait(), 30)
        await service.stop()
    (failing,) = [a for a in seen if a["labels"]["alertname"] == "LeptonBackgroundTaskFailing"]
    assert failing["labels"]["task"] == sample.__name__
    assert failing["labels"]["severity"] == "warning"
    assert f"http://{target}/healthz" in failing["annotations"]["description"]
    # Degraded as long as the task fails (pending until that has lasted a minute).
    degraded = [a for a in seen if a["labels"]["alertname"] == "LeptonServiceDegraded"]
    assert [a["labels"]["component"] for a in degraded] == [f"task {sample.__name__}"]
