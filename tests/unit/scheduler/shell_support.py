"""The scheduler service on the in-memory broker, with the test as its heartbeat digester."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from lepton.contract.topics import Namespace
from lepton.runtime.service import Context
from lepton.services.scheduler.app import create_app
from lepton.services.scheduler.heartbeats import Message
from lepton.services.scheduler.settings import SchedulerSettings
from lepton.services.scheduler.shell import SchedulerShell
from lepton.testing import InMemoryBroker, running

NAMES = Namespace()
EVENTS = NAMES.topic("lepton.jobs.events").name
ASSIGNED = NAMES.topic("lepton.jobs.assigned").name
REQUESTED = NAMES.topic("lepton.jobs.requested")


class DigesterStandIn:
    """Stands for the heartbeat digester process (:mod:`lepton.services.scheduler.digester`):
    the test says what it would write to the scheduler
    (:mod:`lepton.services.scheduler.heartbeats`)."""

    def __init__(self) -> None:
        self._said: asyncio.Queue[Message] = asyncio.Queue()

    def say(self, message: Message) -> None:
        self._said.put_nowait(message)

    def nodes(self, *records: dict[str, Any], restarted: bool = False) -> None:
        self.say({"kind": "nodes", "nodes": [(record, restarted, False) for record in records]})

    def dead(self, *node_ids: str) -> None:
        self.say({"kind": "verdicts", "suspect": [], "recovered": [], "dead": list(node_ids)})

    async def messages(self) -> AsyncIterator[Message]:
        while True:
            yield await self._said.get()


@dataclass
class Running:
    shell: SchedulerShell
    digester: DigesterStandIn
    task: asyncio.Task[None]


@asynccontextmanager
async def scheduler(
    broker: InMemoryBroker, *nodes: dict[str, Any], term: int = 1, **settings: Any
) -> AsyncIterator[Running]:
    """The real scheduler service (its shell, subscriber and publisher) on the broker,
    leading in ``term``; the digester says it knows ``nodes`` and has caught up."""
    digester = DigesterStandIn()
    service = create_app(
        SchedulerSettings(**settings),
        start_digester=lambda _context: contextlib.nullcontext(digester),
    )
    shells: list[SchedulerShell] = []
    build = service.handler_factory

    async def keep_shell(context: Context) -> Any:
        shell = await build(context)
        assert isinstance(shell, SchedulerShell)
        shells.append(shell)
        return shell

    service.handler_factory = keep_shell
    digester.nodes(*nodes)
    digester.say({"kind": "caught_up"})
    async with running(service, broker, term=term) as task:
        yield Running(shells[0], digester, task)


async def request(broker: InMemoryBroker, record: dict[str, Any]) -> None:
    await broker.publisher().publish(REQUESTED, record["job_id"], record)


async def report(broker: InMemoryBroker, event: dict[str, Any], **changes: Any) -> None:
    """A node agent's report about a job (a ``lepton.JobEvent``)."""
    record = event | changes
    await broker.publisher().publish(NAMES.topic("lepton.jobs.events"), record["job_id"], record)


def kind(job_id: str, wanted: str) -> Any:
    return lambda record: record["job_id"] == job_id and record["kind"] == wanted
