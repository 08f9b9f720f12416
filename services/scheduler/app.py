"""The scheduler service: the management node.

Consumes heartbeats, job requests, job events and ready datasets; publishes job events
and assignments. One instance is active at a time (a PostgreSQL leader lock); others
stand by. Its state is the log: every start replays the topics it consumes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lepton.service import Context, Service, run
from services.scheduler.settings import SchedulerSettings
from services.scheduler.shell import SchedulerShell

if TYPE_CHECKING:
    from lepton.bus import BatchHandler

CONSUMES = (
    "lepton.node.heartbeats",
    "lepton.jobs.requested",
    "lepton.jobs.events",
    "lepton.data.ready",
)


def create_app(settings: SchedulerSettings | None = None) -> Service:
    settings = settings or SchedulerSettings()
    shells: list[SchedulerShell] = []

    async def build_handler(context: Context) -> BatchHandler:
        # Each fetch at once: its heartbeats coalesced, one placement pass for all of it.
        shell = SchedulerShell(context, settings)
        shells[:] = [shell]
        return shell

    async def decide(context: Context) -> None:
        """After the replay: rebuild, then plan and judge liveness for as long as we lead;
        instructions go out as soon as the events before them are acknowledged."""
        shell = shells[0]

        async def after_replay() -> None:
            await context.caught_up.wait()
            await shell.rebuild()
            await asyncio.gather(shell.plan_forever(), shell.sweep_forever())

        await asyncio.gather(shell.instruct_forever(), after_replay())

    return Service(
        name="scheduler",
        consumes=CONSUMES,
        settings=settings,
        handler_factory=build_handler,
        background=[decide],
        singleton=True,
        replay=True,
    )


def main() -> None:
    run(create_app)
