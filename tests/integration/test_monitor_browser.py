"""The dashboard in a real browser: the machine's Chromium, headless, driven by Playwright.

Needs Playwright's Python package (a dev dependency) and Debian's ``chromium``, which
``.ci/run`` installs; ``playwright install`` cannot download a browser here. The phone test
also needs a font with Chinese glyphs (Debian's ``fonts-noto-cjk``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
    json_when,
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


@contextlib.asynccontextmanager
async def dashboard_page(driver: Any, **options: Any) -> AsyncIterator[tuple[Any, list[str]]]:
    """A page of a fresh headless Chromium (``options``: Playwright's page options), and the
    errors its console and scripts report."""
    browser = await driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
    try:
        page = await browser.new_page(**options)
        problems: list[str] = []
        page.on(
            "console",
            lambda message: problems.append(message.text) if message.type == "error" else None,
        )
        page.on("pageerror", lambda error: problems.append(str(error)))
        yield page, problems
    finally:
        await browser.close()


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
        dashboard_page(driver, viewport={"width": 1400, "height": 1800}) as (page, problems),
    ):
        assert monitor.url is not None
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
        async with dashboard_page(driver, viewport={"width": 1400, "height": 1800}) as (
            page,
            problems,
        ):
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


PHONE = {
    "viewport": {"width": 390, "height": 844},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}
UTILISATION = ("all/cpu_millicores", "all/memory_mib", "all/gpus")


def chinese_fonts() -> set[str]:
    """The font families fontconfig says cover Chinese on this machine."""
    listed = subprocess.run(
        ["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=True
    ).stdout
    return {family.strip() for line in listed.splitlines() for family in line.split(",")}


async def fonts_drawing(page: Any, selector: str) -> set[str]:
    """The font families the browser drew the text of ``selector`` with (DevTools)."""
    devtools = await page.context.new_cdp_session(page)
    await devtools.send("DOM.enable")
    await devtools.send("CSS.enable")
    # Every live update rebuilds the tables: a node found may be gone when its fonts are
    # asked for (an error, or no fonts), and is then looked up again.
    for _ in range(50):
        root = await devtools.send("DOM.getDocument", {"depth": 0})
        node = await devtools.send(
            "DOM.querySelector", {"nodeId": root["root"]["nodeId"], "selector": selector}
        )
        with contextlib.suppress(playwright.Error):
            used = await devtools.send("CSS.getPlatformFontsForNode", {"nodeId": node["nodeId"]})
            if used["fonts"]:
                return {font["familyName"] for font in used["fonts"]}
    raise AssertionError(f"no fonts reported for {selector}")


async def legend(page: Any, chart: str) -> list[list[str]]:
    """A chart's legend: each series' name and colour, in the order shown."""
    spans = page.locator(f"#legend-{chart} span")
    await playwright.expect(spans).to_have_count(3, timeout=20_000)
    shown: list[list[str]] = await spans.evaluate_all(
        "spans => spans.map(s => [s.textContent.split(' ')[0],"
        " s.style.getPropertyValue('--swatch')])"
    )
    return shown


class HistoryOrder:
    """Answers the page's history requests for the utilisation series with ``last``'s
    answered only after the other two's: the order a slow network could give."""

    def __init__(self, last: str) -> None:
        self.last = last
        self._answered: set[str] = set()
        self._others = asyncio.Event()

    async def route(self, route: Any) -> None:
        subject = parse_qs(urlsplit(route.request.url).query).get("subject", [""])[0]
        if subject == self.last:
            async with asyncio.timeout(20):
                await self._others.wait()
            await route.continue_()
            return
        await route.fulfill(response=await route.fetch())
        self._answered.add(subject)
        if self._answered >= set(UTILISATION) - {self.last}:
            self._others.set()


async def test_on_a_phone_the_dashboard_fits_and_shows_each_state_as_it_is(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher, tmp_path: Path
) -> None:
    prefix = fresh_prefix()
    node = f"node-{uuid.uuid4().hex[:6]}"
    job = f"job-{uuid.uuid4().hex[:6]}"
    start = now_ms()
    async with (
        running(settings_for(kafka, database_for("monitor"), prefix)) as monitor,
        playwright.async_playwright() as driver,
        dashboard_page(driver, **PHONE) as (page, problems),
    ):
        assert monitor.url is not None
        await publisher.publish(
            topic(prefix, "lepton.node.heartbeats"), node, heartbeat(node, sent_at=start)
        )
        # A training job that named only its model (as the CLI submits), whose last progress
        # report said 96 % before it stored its model and succeeded.
        request = job_request(job, submitted_at=start)
        assert (request["name"], request["task"]["model_name"]) == (None, "房价-B区")
        await publisher.publish(topic(prefix, "lepton.jobs.requested"), job, request)
        for kind, extra in (("progress", {"progress_percent": 96.0}), ("succeeded", {})):
            await publisher.publish(
                topic(prefix, "lepton.jobs.events"),
                job,
                job_event(job, kind, time=now_ms(), **extra),
            )
        # A dataset refused, then a good version of it ready.
        refused = sample("lepton.DataRejected")
        refused.update(tenant="acme", dataset="houses", rejected_at=start, reason="OLD REFUSAL")
        await publisher.publish(topic(prefix, "lepton.data.rejected"), "acme/houses", refused)
        ready = sample("lepton.DataReady")
        ready.update(tenant="acme", dataset="houses", ready_at=start + 10)
        await publisher.publish(topic(prefix, "lepton.data.ready"), "acme/houses", ready)
        # Two models: roc_auc prefers model-1, the evaluator's policy compared f1_macro.
        for model, roc_auc, f1_macro in (("model-1", 0.95, 0.70), ("model-2", 0.90, 0.80)):
            evaluation = roc_evaluation(model, roc_auc)
            evaluation["metrics"]["f1_macro"] = f1_macro
            await publisher.publish(topic(prefix, "lepton.models.evaluated"), model, evaluation)
        decision = sample("lepton.ModelPromoted")
        decision.update(
            tenant="acme", model_name="churn", model_id="model-2", primary_metric="f1_macro"
        )
        await publisher.publish(topic(prefix, "lepton.models.promoted"), "acme/churn", decision)
        # The utilisation history exists before the page asks for it.
        await json_when(
            monitor.url,
            f"/api/series?metric=utilisation&since={start - 60_000}",
            lambda answer: set(UTILISATION) <= set(answer["series"]),
        )

        first = HistoryOrder(last="all/cpu_millicores")
        await page.route("**/api/series?*", first.route)
        await sign_in(page, monitor.url, operator().token(int(time.time()) + 600))
        row = page.locator("#jobs tr", has_text=job)
        await playwright.expect(row.locator("td").nth(6)).to_have_text("100 %", timeout=20_000)
        await playwright.expect(row.locator("td").nth(1)).to_have_text("房价-B区")
        houses = page.locator("#datasets tr", has_text="houses")
        await playwright.expect(houses.locator("td").nth(2)).to_have_text("ready", timeout=20_000)
        await playwright.expect(houses.locator("td").nth(7)).to_have_text("")
        await playwright.expect(page.locator("#models h3")).to_have_text(
            "acme / churn — by f1_macro", timeout=20_000
        )
        await playwright.expect(page.locator("#models tr").first).to_contain_text("model-2")
        await playwright.expect(page.locator("#nodes")).to_contain_text(node)
        shown = await legend(page, "utilisation")
        assert [name for name, _ in shown] == ["cpu", "memory", "gpus"]

        shot = tmp_path / "dashboard-phone.png"
        await page.screenshot(path=str(shot), full_page=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, RESULTS / "monitor-dashboard-phone.png")

        # Nothing scrolls sideways but a table inside its own box; an id is one line.
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        # (Each measure is one script: a live update cannot replace the row in between.)
        lines = await page.evaluate(
            "() => { const r = document.createRange();"
            " r.selectNodeContents(document.querySelector('#jobs td'));"
            " return r.getClientRects().length; }"
        )
        assert lines == 1, f"the job id took {lines} lines"
        # The model's Chinese name is drawn with a font that has its glyphs, the first such
        # font the page names.
        name_cell = "#jobs tr:first-child td:nth-child(2)"
        named = await page.evaluate(
            "cell => getComputedStyle(document.querySelector(cell)).fontFamily", name_cell
        )
        stack = [family.strip().strip('"') for family in named.split(",")]
        installed = chinese_fonts()
        preferred = next((family for family in stack if family in installed), None)
        assert preferred is not None, (
            f"no font the page names ({named}) has Chinese glyphs here ({sorted(installed)}; "
            "Debian: apt-get install fonts-noto-cjk)"
        )
        assert preferred in await fonts_drawing(page, name_cell)

        # Another load, the history answered in another order: the same legend.
        second = HistoryOrder(last="all/gpus")
        await page.unroute("**/api/series?*", first.route)
        await page.route("**/api/series?*", second.route)
        await page.reload()
        assert await legend(page, "utilisation") == shown
        assert problems == []
