"""A service's probes and metrics are reachable from another host when told so
(LEPTON_HEALTH_HOST), and liveness (/livez) is apart from readiness (/healthz): a
service waiting out an outage is not ready, and still alive."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import psutil
import pytest

from lepton.config import KafkaAccess, Settings
from lepton.devstack._process import free_port
from lepton.runtime import probes
from tests.integration.processes import BIN, service_env, start


def listening(pid: int, port: int) -> set[str]:
    """The addresses process ``pid`` listens on at ``port``."""
    return {
        connection.laddr.ip
        for connection in psutil.Process(pid).net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as client:
        return await client.get(url)  # loopback only


def test_the_default_is_loopback() -> None:
    assert Settings(_env_file=None).health_host == "127.0.0.1"  # type: ignore[call-arg]


async def test_liveness_stays_up_while_readiness_names_the_problems() -> None:
    problems: dict[str, str] = {}

    def readiness() -> dict[str, Any]:
        return {"status": "degraded" if problems else "ok", "problems": dict(problems)}

    async with probes.serve(probes.health_app(readiness), "0.0.0.0", 0) as port:
        assert listening(psutil.Process().pid, port) == {"0.0.0.0"}, "every address"
        base = probes.base_url("0.0.0.0", port)
        assert base == f"http://127.0.0.1:{port}"
        assert (await get(f"{base}/livez")).status_code == 200
        assert (await get(f"{base}/healthz")).status_code == 200
        problems["kafka"] = "unreachable: KafkaException: _TRANSPORT"
        alive, ready = await get(f"{base}/livez"), await get(f"{base}/healthz")
        assert alive.status_code == 200
        assert ready.status_code == 503
        assert ready.json()["problems"] == problems
        metrics = await get(f"{base}/metrics")
        assert metrics.status_code == 200
        assert "python_info" in metrics.text


@pytest.mark.integration
async def test_a_service_listens_where_lepton_health_host_says(
    kafka: KafkaAccess, database_for: Any
) -> None:
    port = free_port("0.0.0.0")
    env = service_env(
        kafka,
        database_for("ingest"),
        f"t{uuid.uuid4().hex[:8]}.",
        LEPTON_HEALTH_HOST="0.0.0.0",
        LEPTON_HEALTH_PORT=str(port),
    )
    running = await start([str(BIN / "lepton-ingest")], env)
    try:
        assert listening(running.process.pid, port) == {"0.0.0.0"}
        assert running.entry["url"] == f"http://127.0.0.1:{port}/healthz"
        assert running.entry["livez"] == f"http://127.0.0.1:{port}/livez"
        alive = await get(running.entry["livez"])
        assert (alive.status_code, alive.text) == (200, "alive\n")
        ready = await get(running.entry["url"])
        assert ready.status_code == 200, ready.text
        assert ready.json()["service"] == "ingest"
    finally:
        await asyncio.wait_for(running.stop(), 60)
    assert running.process.returncode == 0
