"""The scheduler service: the management node.

Consumes job requests, job events and ready datasets, and what its heartbeat digester
(a second process it starts, :mod:`lepton.services.scheduler.digester`) makes of the nodes'
heartbeats; publishes job events and assignments. One instance is active at a time (a
PostgreSQL leader lock); others stand by. Its state is the log: every start replays the
topics it consumes, and the digester replays the heartbeats.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from lepton.runtime.service import Context, Service, run
from lepton.services.scheduler.digester import Digester, running_digester
from lepton.services.scheduler.settings import SchedulerSettings
from lepton.services.scheduler.shell import SchedulerShell

if TYPE_CHECKING:
    from lepton.bus import BatchHandler

# Heartbeats are read by the digester.
CONSUMES = (
    "lepton.jobs.requested",
    "lepton.jobs.events",
    "lepton.data.ready",
)


# Starts the heartbeat digester beside the deciding process; a unit test passes a stand-in.
StartDigester = Callable[[Context], AbstractAsyncContextManager[Digester]]


def create_app(
    settings: SchedulerSettings | None = None, *, start_digester: StartDigester = running_digester
) -> Service:
    settings = settings or SchedulerSettings()
    shells: list[SchedulerShell] = []

    async def build_handler(context: Context) -> BatchHandler:
        # Each fetch at once: its heartbeats coalesced, one placement pass for all of it.
        shell = SchedulerShell(context, settings)
        shells[:] = [shell]
        return shell

    async def decide(context: Context) -> None:
        """After the replay (ours and the digester's): rebuild, then plan for as long as we
        lead; instructions go out as soon as the events before them are acknowledged."""
        shell = shells[0]

        async def after_replay() -> None:
            await context.caught_up.wait()
            await shell.nodes_known.wait()
            await shell.rebuild()
            await shell.plan_forever()

        async with start_digester(context) as digester:
            await asyncio.gather(
                shell.instruct_forever(), shell.digest_forever(digester), after_replay()
            )

    return Service(
        name="scheduler",
        actor="scheduler",
        consumes=CONSUMES,
        settings=settings,
        handler_factory=build_handler,
        background=[decide],
        singleton=True,
        replay=True,
        # A flush's events are sent together anyway (send_many); waiting 5 ms more only
        # delayed every decision (p50 at 1,000 requests/s: 26-28 ms at 5, 21-22 at 1).
        publish_linger_ms=1,
    )


def main() -> None:
    run(create_app)
