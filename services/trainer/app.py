"""The trainer agent: one per compute node.

It sends a heartbeat every interval and consumes assignments. Running jobs (algorithm
choice, parameter search, training) is built in issue #5; for now assignments are only
received.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import typer

from lepton.config import Settings
from lepton.service import Context, Service, run
from services.trainer.node import NodeSpec, UsageMeter, heartbeat


def _now_ms() -> int:
    return int(time.time() * 1000)


def create_app(
    spec: NodeSpec, settings: Settings | None = None, interval_s: float = 1.0
) -> Service:
    async def send_heartbeats(context: Context) -> None:
        heartbeats = context.topic("lepton.node.heartbeats")
        meter = UsageMeter(spec)
        started = _now_ms()
        sequence = 0
        while True:
            sequence += 1
            record = heartbeat(
                spec,
                meter.measure(),
                [],
                sequence=sequence,
                sent_at_ms=_now_ms(),
                agent_started_at_ms=started,
                interval_ms=int(interval_s * 1000),
            )
            await context.publisher.publish(heartbeats, spec.node_id, record)
            await asyncio.sleep(interval_s)

    return Service(
        name=f"trainer-{spec.node_id}",
        consumes=["lepton.jobs.assigned"],
        settings=settings or Settings(),
        background=[send_heartbeats],
    )


def _cli(
    node_id: Annotated[str, typer.Option(help="This node's unique id.")],
    region: Annotated[str, typer.Option(help="Region the node runs in.")] = "local",
    labels: Annotated[
        list[str] | None, typer.Option("--label", help="key=value, repeatable.")
    ] = None,
    cpus: Annotated[float | None, typer.Option(help="Cores offered (default: all).")] = None,
    memory: Annotated[int | None, typer.Option(help="MiB offered (default: all).")] = None,
    interval: Annotated[float, typer.Option(help="Heartbeat interval, seconds.")] = 1.0,
) -> None:
    parsed = dict(label.split("=", 1) for label in labels or [] if "=" in label)
    spec = NodeSpec(node_id, region, parsed, cpus, memory)
    run(lambda: create_app(spec, interval_s=interval))


def main() -> None:
    typer.run(_cli)
