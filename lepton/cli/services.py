"""``lepton up``, ``down`` and ``demo``: Lepton's services on this machine."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

import typer
from rich.table import Table

from lepton.cli._app import app, console, guarded, say
from lepton.config import Settings
from lepton.extras import require
from lepton.sdk import local


@app.command("up")
def services_up() -> None:
    """Run every service on this machine under a supervisor that restarts a failed one
    (logs in the state directory); starts again those that stopped."""
    guarded(lambda: local.start_services(Settings(), say))


@app.command("down")
def services_down() -> None:
    """Stop the services `lepton up` started (SIGTERM: they finish, commit and close)."""
    if not local.stop_services(Settings(), say):
        console.print("no services were running")


@app.command("status")
def services_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Each service of `lepton up`: running, backing off, stopped or crash-looping; its
    pid, uptime, restarts and last exit."""
    settings = Settings()
    current, alive = local.status(settings)
    if as_json:
        found = current.as_json() if current else {"services": {}}
        print(json.dumps({**found, "supervisor_running": alive}))
        return
    if current is None:
        console.print("no services: `lepton up` starts them")
        return
    now = time.time()
    table = Table("service", "state", "pid", "uptime", "restarts", "last exit", box=None)
    for column in table.columns:
        column.no_wrap = True
    for name, service in current.services.items():
        running = service.state == "running" and service.started_at is not None
        table.add_row(
            name,
            service.state,
            str(service.pid or "-"),
            local.duration(now - service.started_at) if running and service.started_at else "-",
            str(service.restarts),
            service.last_exit or "-",
        )
    console.print(table)
    for name, service in current.services.items():
        if service.note:
            say(f"{name}: {service.note}")
    if alive:
        console.print(
            f"supervisor: pid {current.pid}, up {local.duration(now - current.started_at)}"
        )
    else:
        console.print("supervisor: not running (`lepton up` starts it and the services)")


@app.command("demo")
def demo() -> None:
    """The seed's examples end to end: ingest, train, evaluate, promote, predict (needs
    `lepton up`)."""
    guarded(lambda: require("server", "lepton demo"))
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
