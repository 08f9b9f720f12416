"""The CLI's scheduling and data commands, as a user runs them, against the real servers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lepton.data import tables
from lepton.runtime import database
from tests.integration.scheduler_support import Namespaced, heartbeat

pytestmark = pytest.mark.integration

LEPTON = str(Path(sys.executable).parent / "lepton")


def lepton(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LEPTON, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | env,
        check=False,
    )


@pytest.fixture
async def space(kafka, codec, publisher) -> Namespaced:
    namespaced = Namespaced(kafka, codec, publisher)
    await namespaced.create()
    return namespaced


async def test_plan_says_where_a_job_would_go_or_why_not(
    space: Namespaced, kafka, database_for, tmp_path: Path
) -> None:
    await space.send("lepton.node.heartbeats", "small", heartbeat("small", sequence=1, cpu=1000))
    await space.send("lepton.node.heartbeats", "big", heartbeat("big", sequence=1, cpu=8000))
    env = {
        **kafka.environment(),
        "LEPTON_DATABASE_URL": database_for("client"),
        "LEPTON_TOPIC_PREFIX": space.prefix,
    }
    fits = tmp_path / "fits.yaml"
    fits.write_text(
        "tenant: acme\n"
        "task: {target_column: price}\n"
        "demand: {cpu_millicores: 4000, memory_mib: 1024}\n"
    )
    never = tmp_path / "never.yaml"
    never.write_text(
        "tenant: acme\n"
        "task: {target_column: price}\n"
        "demand: {cpu_millicores: 64000, memory_mib: 1}\n"
    )
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("tenant: acme\ntask: {target_column: price, algorithm: magic}\n")

    placed = lepton("plan", str(fits), env=env)
    assert placed.returncode == 0, placed.stderr
    assert "now: big" in placed.stdout
    impossible = lepton("plan", str(never), env=env)
    assert impossible.returncode == 1
    assert "never" in impossible.stdout
    assert "cpu" in impossible.stdout.lower()
    wrong = lepton("plan", str(invalid), env=env)
    assert wrong.returncode == 1
    assert "task.algorithm" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_simulate_reports_a_run_without_violations() -> None:
    result = lepton(
        "simulate",
        "--nodes",
        "40",
        "--hours",
        "0.2",
        "--arrival-rate",
        "0.5",
        "--policy",
        "drf",
        "--json",
        env={},
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["jobs_submitted"] > 0
    assert report["overcommit_violations"] == 0
    assert report["partial_gang_violations"] == 0
    assert 0 < report["fairness_jain"] <= 1


async def test_data_commands_answer_in_one_line(kafka, database_for) -> None:
    pool = await database.connect(database_for("ingest"))
    try:
        await tables.migrate(pool)
    finally:
        await pool.close()
    env = {**kafka.environment(), "LEPTON_DATABASE_URL": database_for("client")}
    listed = lepton("data", "list", "--tenant", "nobody-at-all", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "owner" in listed.stdout
    missing = lepton("data", "share", "no-such-dataset", "--with", "b", "--tenant", "a", env=env)
    assert missing.returncode == 1
    assert "error:" in missing.stderr
    assert "Traceback" not in missing.stderr


async def test_data_ingest_asks_the_ingest_service_and_reports_its_answer(
    kafka, database_for, tmp_path: Path
) -> None:
    from lepton.services.ingest.app import create_app
    from lepton.services.ingest.settings import IngestSettings

    prefix = f"t{os.urandom(5).hex()}."
    good = tmp_path / "houses.csv"
    good.write_text("area,district,price\n120,B区,300\n80,A区,200\n80,A区,200\n95,C区,250\n")
    generated = tmp_path / "messy.csv"
    made = await asyncio.to_thread(
        lepton, "data", "generate", "houses", "--out", str(generated), env={}
    )
    assert made.returncode == 0, made.stderr
    assert "普通住宅" in generated.read_text(encoding="utf-8")
    settings = IngestSettings(
        **kafka.settings(),
        database_url=database_for("ingest"),
        topic_prefix=prefix,
        ingest_roots=[str(tmp_path)],
    )
    service = create_app(settings)
    task = asyncio.create_task(service.run())
    env = {
        **kafka.environment(),
        "LEPTON_DATABASE_URL": database_for("client"),
        "LEPTON_TOPIC_PREFIX": prefix,
    }
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        stored = await asyncio.to_thread(
            lepton, "data", "ingest", str(good), "--name", "houses", "--tenant", "acme", env=env
        )
        outside = await asyncio.to_thread(
            lepton,
            "data",
            "ingest",
            "/etc/passwd",
            "--name",
            "x",
            "--tenant",
            "acme",
            "--kind",
            "csv",
            env=env,
        )
    finally:
        service.stop_soon()
        await asyncio.wait_for(task, 60)
    assert stored.returncode == 0, stored.stderr
    assert "houses: version" in stored.stdout
    assert "3 rows" in stored.stdout, "the duplicate row is cleaned away"
    assert outside.returncode == 1
    assert "rejected" in outside.stderr
    assert "Traceback" not in outside.stderr
