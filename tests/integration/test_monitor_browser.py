"""The dashboard in a real browser: the machine's Chromium, headless, driven by Playwright.

Needs Playwright's Python package (a dev dependency) and Debian's ``chromium``, which
``.ci/run`` installs; ``playwright install`` cannot download a browser here.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright import async_api as playwright

from lepton.bus import Publisher
from lepton.config import KafkaAccess
from lepton.contract.identity import Principal
from tests.integration.test_monitor import (
    fresh_prefix,
    heartbeat,
    job_event,
    job_request,
    key_of,
    now_ms,
    operator,
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


async def sign_in(page: Any, base: str, token: str) -> None:
    """Sign in the way a person does: the token typed into the form, never in a URL."""
    await page.goto(base.rstrip("/") + "/login")
    await page.fill("#token", token)
    await page.click("button[type=submit]")


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
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher, tmp_path: Path
) -> None:
    prefix = fresh_prefix()
    node = f"node-{uuid.uuid4().hex[:6]}"
    job = f"job-{uuid.uuid4().hex[:6]}"
    async with (
        running(settings_for(kafka, database_for("monitor"), prefix)) as monitor,
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
            await sign_in(page, monitor.url, operator().token(int(time.time()) + 600))
            await playwright.expect(page.locator("#nodes")).to_contain_text(node, timeout=20_000)
            assert page.url == monitor.url  # the dashboard, and no token in its address
            await playwright.expect(page.locator("#principal")).to_have_text("operator:tests")
            (cookie,) = await page.context.cookies()
            assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
                "lepton_session",
                True,
                "Strict",
            )
            assert await page.evaluate("document.cookie") == ""  # no script can read it
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


async def test_a_tenants_dashboard_shows_its_own_work_until_its_token_expires(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    prefix = fresh_prefix()
    node = f"node-{uuid.uuid4().hex[:6]}"
    async with (
        running(settings_for(kafka, database_for("monitor"), prefix)) as monitor,
        playwright.async_playwright() as driver,
    ):
        assert monitor.url is not None
        await publisher.publish(
            topic(prefix, "lepton.node.heartbeats"), node, heartbeat(node, sent_at=now_ms())
        )
        for tenant in ("acme", "globex"):
            request = job_request(f"{tenant}-job", submitted_at=now_ms(), name=f"{tenant}-work")
            request["tenant"] = tenant
            await publisher.publish(
                topic(prefix, "lepton.jobs.requested"), f"{tenant}-job", request
            )
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1800})
            problems: list[str] = []
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            acme = key_of(Principal("tenant", "acme"))
            await sign_in(page, monitor.url, acme.token(int(time.time()) + 10))
            await playwright.expect(page.locator("#jobs")).to_contain_text(
                "acme-work", timeout=8000
            )
            await playwright.expect(page.locator("#principal")).to_have_text("tenant:acme")
            await playwright.expect(page.locator("#nodes")).to_contain_text(node)
            await playwright.expect(page.locator("#pipeline")).to_be_hidden()
            assert "globex" not in await page.locator("main").inner_text()
            assert problems == []  # the dashboard asked for nothing a tenant may not read
            # The stream ends with the token; the page goes back to sign in.
            await playwright.expect(page).to_have_url(monitor.url + "login", timeout=30_000)
        finally:
            await browser.close()
