"""Issue 21's own scenario through the real services: the messy house table (the seed's
headers, duplicates, a missing and a worded area, a missing district, a negative area, a
formula as a category, a price of 99,999,999) ingested without a spec and trained with
``auto``, as a user who writes no cleaning rules does it.

What must hold: the inferred spec quarantines the dirt with reasons and is shown by
``lepton data show`` (and can be given back), no identifier is among the model's
features, the evaluator's findings say what training left out, and a 150 m² 普通住宅 in
B区 is priced within 5 % of the rule that generated the table.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lepton.bus import ensure_topics
from lepton.cli import demo
from lepton.config import KafkaAccess, Settings
from lepton.contract.topics import Namespace
from lepton.data.samples import house_price, messy_houses
from lepton.sdk.client import LeptonClient
from tests.integration.processes import BIN, data_service_env, running
from tests.integration.test_client_examples import run

pytestmark = pytest.mark.integration

MESSY = demo.Example(
    title="the messy house table, no spec",
    tenant="messy",
    dataset="houses",
    model_name="messy-houses",
    target="价格",
    data=messy_houses,
    question="a 150 m² 普通住宅 in B区",
    query=lambda _: [{"面积": 150.0, "房屋类型": "普通住宅", "地理位置": "B区"}],
)


@pytest.fixture
async def cluster(
    kafka: KafkaAccess, database_for: Callable[[str], str], tmp_path: Path
) -> AsyncIterator[tuple[Settings, dict[str, str]]]:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    await ensure_topics(kafka, Namespace(prefix).all())
    env = data_service_env(kafka, database_for("client"), prefix, tmp_path)
    commands = [
        ([str(BIN / "lepton-ingest")], "health"),
        ([str(BIN / "lepton-scheduler")], "health"),
        ([str(BIN / "lepton-evaluator")], "health"),
        (
            [str(BIN / "lepton-trainer"), "--node-id", "n1", "--cpus", "1", "--memory", "2048"],
            "health",
        ),
        ([str(BIN / "lepton-monitor")], "dashboard"),
    ]
    async with running(commands, env, database_for) as started:
        monitor_url = started[-1].entry["url"].rstrip("/")
        settings = Settings(
            **kafka.settings(),
            database_url=database_for("client"),
            topic_prefix=prefix,
            monitor_url=monitor_url,
        )
        yield settings, env | {"LEPTON_MONITOR_URL": monitor_url}


async def test_the_messy_house_table_without_a_spec_gives_a_sane_price(
    cluster: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = cluster
    tenant = f"messy{uuid.uuid4().hex[:6]}"
    lines: list[str] = []
    async with LeptonClient(settings) as client:
        await demo.wait_for_nodes(client, 1, 90, lines.append)
    async with LeptonClient(settings, tenant=tenant) as client:
        report = await demo.run_example(
            client, dataclasses.replace(MESSY, tenant=tenant), tmp_path, lines.append
        )
        (version,) = await client.dataset("houses")

    # Ingest: the dirt is quarantined with its reasons, each rule counted.
    rules = {(r["rule"], r["column"]): r["count"] for r in version.quality["rules"]}
    assert rules[("dedupe", None)] == 2
    assert rules[("outlier:mad", "价格")] == 1
    assert rules[("range", "面积")] == 1
    assert rules[("rare", "房屋类型")] == 1
    assert rules[("type", "面积")] == 1
    assert version.spec_inferred
    assert version.spec["columns"]["价格"]["outliers"]["method"] == "mad"

    # Training: no identifier among the features, and the evaluator says why.
    model = report.model
    assert "房屋ID" not in model["feature_columns"]
    assert any(step["code"] == "identifier_excluded" for step in model["preparation"])
    findings = {(f["code"], f["feature"]) for f in report.evaluated["findings"]}
    assert ("identifier_excluded", "房屋ID") in findings

    # The answer: within 5 % of the generating rule.
    truth = house_price(150.0, "普通住宅", "B区")
    assert report.prediction == pytest.approx(truth, rel=0.05), "\n".join(lines)

    # `lepton data show --spec` prints the inferred spec; given back, it is the same rules.
    shown = await asyncio.to_thread(
        run, [str(BIN / "lepton"), "data", "show", "houses", "--tenant", tenant, "--spec"], env
    )
    assert shown.returncode == 0, shown.stderr
    printed: dict[str, Any] = yaml.safe_load(shown.stdout)
    assert printed == version.spec
    (tmp_path / "spec.yaml").write_text(shown.stdout, encoding="utf-8")
    again = await asyncio.to_thread(
        run,
        [
            str(BIN / "lepton"),
            "data",
            "ingest",
            str(tmp_path / "houses.csv"),
            "--name",
            "houses",
            "--tenant",
            tenant,
            "--spec",
            str(tmp_path / "spec.yaml"),
        ],
        env,
    )
    assert again.returncode == 0, again.stderr
    assert "same content as before: reused" in again.stdout
