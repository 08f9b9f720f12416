"""The dashboard in a real browser: the machine's Chromium, headless, driven by Playwright.

Needs Playwright's Python package (a dev dependency) and Debian's ``chromium``, which
``.ci/run`` installs; ``playwright install`` cannot download a browser here.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from playwright import async_api as playwright

from lepton.bus import Publisher
from lepton.config import KafkaAccess
from tests.integration.test_monitor import (
    fresh_prefix,
    heartbeat,
    job_event,
    job_request,
    now_ms,
    running,
    settings_for,
    topic,
)
from tests.samples import sample

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Debian's Chromium keeps trying to reach the internet.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = "<script>alert(1)</script>"
HOSTILE_IMG = '<img src=x onerror="alert(2)">'
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def roc_evaluation(model_id: str, roc_auc: float) -> dict[str, Any]:
    record = sample("lepton.ModelEvaluated")
    record.update(
        model_id=model_id,
        tenant="acme",
        model_name="churn",
        metrics={"roc_auc": roc_auc, "accuracy": 0.87},
        curves=[{"kind": "roc", "label": None, "x": [0, 0.1, 0.3, 1], "y": [0, 0.7, 0.9, 1]}],
        evaluated_at=now_ms(),
    )
    return record


async def test_dashboard_loads_shows_live_data_and_escapes_names(
    kafka: KafkaAccess, database_url: str, publisher: Publisher, tmp_path: Path
) -> None:
    prefix = fresh_prefix()
    node = f"node-{uuid.uuid4().hex[:6]}"
    job = f"job-{uuid.uuid4().hex[:6]}"
    async with (
        running(settings_for(kafka, database_url, prefix)) as monitor,
        playwright.async_playwright() as driver,
    ):
        assert monitor.url is not None
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1800})
            problems: list[str] = []
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            # alert() would open a dialog: record it, and dismiss it so the page goes on.
            dialogs: list[str] = []
            dismissals: list[Any] = []

            def on_dialog(dialog: Any) -> None:
                dialogs.append(dialog.message)
                dismissals.append(asyncio.ensure_future(dialog.dismiss()))

            page.on("dialog", on_dialog)

            await publisher.publish(
                topic(prefix, "lepton.node.heartbeats"), node, heartbeat(node, sent_at=now_ms())
            )
            await page.goto(monitor.url)
            await playwright.expect(page.locator("#nodes")).to_contain_text(node, timeout=20_000)
            await playwright.expect(page.locator("#connection")).to_have_text("live")
            await page.evaluate("window.notReloaded = true")

            # A new job arrives while the page is open: it shows without a reload.
            await publisher.publish(
                topic(prefix, "lepton.jobs.requested"),
                job,
                job_request(job, submitted_at=now_ms(), name=HOSTILE),
            )
            await publisher.publish(
                topic(prefix, "lepton.jobs.events"),
                job,
                job_event(job, "failed", time=now_ms(), reason=HOSTILE_IMG),
            )
            rejected = sample("lepton.DataRejected")
            rejected.update(tenant="acme", dataset=HOSTILE, rejected_at=now_ms())
            await publisher.publish(topic(prefix, "lepton.data.rejected"), "acme/x", rejected)
            for model, score in (("model-1", 0.91), ("model-2", 0.84)):
                await publisher.publish(
                    topic(prefix, "lepton.models.evaluated"), model, roc_evaluation(model, score)
                )
            jobs = page.locator("#jobs")
            await playwright.expect(jobs).to_contain_text(job, timeout=20_000)
            await playwright.expect(jobs).to_contain_text("failed")
            # The hostile names are visible as text, and nothing they carried ran.
            await playwright.expect(jobs).to_contain_text(HOSTILE)
            await playwright.expect(jobs).to_contain_text(HOSTILE_IMG)
            await playwright.expect(page.locator("#datasets")).to_contain_text(HOSTILE)
            # The leaderboard: best first, its ROC curve, the metric over evaluations.
            await playwright.expect(page.locator("#models svg.trend polyline")).to_have_count(1)
            await playwright.expect(page.locator("#models svg.roc polyline")).to_have_count(1)
            await playwright.expect(page.locator("#models tr").first).to_contain_text("model-1")
            assert await page.locator("main script, main img").count() == 0
            assert await page.evaluate("window.notReloaded") is True
            assert dialogs == []

            shot = tmp_path / "dashboard.png"
            await page.screenshot(path=str(shot), full_page=True)
            RESULTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, RESULTS / "monitor-dashboard.png")
            print(f"screenshot: {shot} (copied to {RESULTS / 'monitor-dashboard.png'})")
            assert problems == []
        finally:
            await browser.close()
