"""The SDK's runnable example and the CLI's read commands against real services: ingest,
scheduler, one trainer agent and the monitor, started as a user starts them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from lepton.bus import ensure_topics
from lepton.config import KafkaAccess
from lepton.contract.identity import IdentityKey, Principal
from lepton.contract.topics import Namespace
from tests.integration.processes import BIN, data_service_env, running
from tests.integration.test_trainer import houses

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
async def services(
    kafka: KafkaAccess, database_for: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("sdk-data")
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka, Namespace(prefix).all())
    env = data_service_env(kafka, database_for("client"), prefix, root)
    commands = [
        ([str(BIN / "lepton-ingest")], "health"),
        ([str(BIN / "lepton-scheduler")], "health"),
        (
            [str(BIN / "lepton-trainer"), "--node-id", "n1", "--cpus", "1", "--memory", "2048"],
            "health",
        ),
        ([str(BIN / "lepton-monitor")], "dashboard"),
    ]
    async with running(commands, env, database_for) as started:
        monitor_url = started[-1].entry["url"].rstrip("/")
        yield {"root": root, "env": env | {"LEPTON_MONITOR_URL": monitor_url}}


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=600, check=False
    )


async def test_the_submit_and_wait_example_trains_a_model_and_the_cli_shows_it(
    services: dict[str, Any],
) -> None:
    env, root = services["env"], services["root"]
    tenant = f"sdk-{uuid.uuid4().hex[:6]}"
    houses(120).to_csv(root / "houses.csv", index=False)
    example = await asyncio.to_thread(
        run,
        [
            sys.executable,
            str(EXAMPLES / "submit_and_wait.py"),
            str(root / "houses.csv"),
            "--tenant",
            tenant,
            "--target",
            "price",
            "--trials",
            "2",
        ],
        env,
    )
    assert example.returncode == 0, example.stderr
    lines = example.stdout.splitlines()
    assert lines[0].startswith("dataset houses: version sha256:")
    job_id = lines[1].removeprefix("submitted ")
    assert "  succeeded" in lines
    assert any(line.startswith("  progress") for line in lines)
    assert lines[-1].startswith("model ")

    # The monitor's read model catches up with the log on its own time: wait for the job.
    operator = IdentityKey.from_text(env["LEPTON_IDENTITY_KEY"]).derive(Principal("operator", "t"))
    token = {"Authorization": f"Bearer {operator.token(int(time.time()) + 120)}"}
    async with (
        httpx.AsyncClient(base_url=env["LEPTON_MONITOR_URL"], headers=token) as http,
        asyncio.timeout(60),
    ):
        # A read model over HTTP has no event to await: polling is the way to ask it.
        while (await http.get(f"/api/jobs/{job_id}")).json().get("state") != "succeeded":  # noqa: ASYNC110
            await asyncio.sleep(0.2)

    lepton = str(BIN / "lepton")
    jobs = await asyncio.to_thread(run, [lepton, "jobs", "--tenant", tenant], env)
    assert jobs.returncode == 0, jobs.stderr
    assert "succeeded" in jobs.stdout
    watched = await asyncio.to_thread(
        run, [lepton, "jobs", "--tenant", tenant, "--watch", "--until-done"], env
    )
    assert watched.returncode == 0, watched.stderr
    assert "succeeded" in watched.stdout, "every job ended: the watch stops at once"
    nodes = await asyncio.to_thread(run, [lepton, "nodes"], env)
    assert nodes.returncode == 0, nodes.stderr
    assert "n1" in nodes.stdout
    models = await asyncio.to_thread(run, [lepton, "models", "--tenant", tenant], env)
    assert models.returncode == 0, models.stderr
    assert "houses" in models.stdout
    shown = await asyncio.to_thread(
        run, [lepton, "data", "show", "houses", "--tenant", tenant], env
    )
    assert shown.returncode == 0, shown.stderr
    assert "rows read" in shown.stdout
    assert "district" in shown.stdout
    hidden = await asyncio.to_thread(run, [lepton, "data", "show", "houses", "--tenant", "x"], env)
    assert hidden.returncode == 1
    assert "no such dataset" in hidden.stderr
