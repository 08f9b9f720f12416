"""``lepton up``, ``down`` and ``demo``: Lepton's services on this machine."""

from __future__ import annotations

import asyncio
import time

from rich.table import Table

from lepton.cli._app import app, console, guarded
from lepton.config import Settings
from lepton.sdk import local


@app.command("up")
def services_up() -> None:
    """Start every service on this machine, in the background (logs in the state directory)."""
    guarded(lambda: local.start_services(Settings(), console.print))


@app.command("down")
def services_down() -> None:
    """Stop the services `lepton up` started (SIGTERM: they finish, commit and close)."""
    for name in local.stop_services(Settings()):
        console.print(f"{name}: stopped")


@app.command("demo")
def demo() -> None:
    """The seed's examples end to end: ingest, train, evaluate, promote, predict (needs
    `lepton up`)."""
    from lepton.cli import demo as examples

    settings = Settings()
    began = time.monotonic()
    reports = guarded(
        lambda: asyncio.run(
            examples.run(
                settings,
                local.inbox(settings),
                lambda line: console.print(line, markup=False, highlight=False),
            )
        )
    )
    table = Table("example", "model", "held-out score", "verdict", "prediction", title="Summary")
    for report in reports:
        metrics = report.evaluated["metrics"]
        metric = "r2" if report.model["problem_type"] == "regression" else "f1_macro"
        prediction = report.prediction
        table.add_row(
            report.example.dataset,
            f"{report.model['algorithm']} {report.model['model_id'][:8]}",
            f"{metric} {metrics.get(metric, float('nan')):.3f}",
            report.verdict["verdict"] if report.verdict else "not judged",
            f"{prediction:,.0f}"
            if isinstance(prediction, float)
            else report.example.labels.get(str(prediction), str(prediction)),
        )
    console.print(table)
    console.print(f"finished in {time.monotonic() - began:.0f} s")
    console.print(f"dashboard: {settings.monitor_url}/", highlight=False)
    console.print("explore: lepton models --tenant demo; lepton jobs; lepton nodes")
    console.print("stop everything: make demo-down (lepton down && lepton stack down)")
