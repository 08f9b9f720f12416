"""What the scheduler shell decided, on its way out.

Job events are kept in order until :meth:`Outbox.send` hands them to the broker in one
batch, without waiting for it. Instructions to nodes go out from their own task
(:meth:`Outbox.instruct_forever`) once every event decided before them is acknowledged,
so the log always knows about a lease before any node can act on it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

import prometheus_client

from lepton.bus import current_trace
from lepton.contract.job_events import job_event
from lepton.scheduling.intake import Rejection

if TYPE_CHECKING:
    from collections.abc import Callable

    from lepton.contract.events import JobEvent, JobEventKind
    from lepton.contract.job_events import JobEventDetails
    from lepton.contract.topics import Topic
    from lepton.runtime.service import Context
    from lepton.scheduling.journal import JobRecord

__all__ = ["Instruction", "Outbox", "decided", "instructions_for", "now_ms"]

_DECISIONS = prometheus_client.Counter(
    "lepton_scheduler_events_total", "Job events the scheduler published, by kind.", ["kind"]
)

# Batches of instructions queued for their acknowledgements before planning waits.
_INSTRUCTION_BACKLOG = 64
# Job events sent and not yet acknowledged before deciding waits for the broker.
_UNACKED_BOUND = 20_000

# (node id, instruction record, the job's trace): one message to ``lepton.jobs.assigned``.
Instruction = tuple[str, dict[str, Any], bytes | None]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def decided(entry: JobRecord, kind: JobEventKind, **details: Unpack[JobEventDetails]) -> JobEvent:
    """The job event the scheduler decides for ``entry`` now, at its current attempt."""
    return job_event(
        entry.request["job_id"],
        kind,
        entry.tenant,
        attempt=entry.attempt,
        time_ms=now_ms(),
        **details,
    )


def instructions_for(
    entry: JobRecord,
    action: str,
    dataset_version: Callable[[JobRecord], str | None],
    reason: str | None = None,
    nodes: dict[int, str] | None = None,
    epoch: int | None = None,
) -> list[Instruction]:
    """What each worker's node must do (run or stop the job) under the given lease."""
    nodes = entry.nodes if nodes is None else nodes
    epoch = entry.epoch if epoch is None else epoch
    spec = entry.spec
    assert not isinstance(spec, Rejection)
    dataset = None
    if entry.request.get("dataset"):
        dataset = {
            "name": entry.request["dataset"]["name"],
            "version": dataset_version(entry) or "",
            "owner": entry.request["dataset"].get("owner") or entry.tenant,
        }
    now = now_ms()
    granted = {
        "cpu_millicores": spec.demand.cpu_millicores,
        "memory_mib": spec.demand.memory_mib,
        "gpus": spec.demand.gpus,
        "network_mbps": spec.demand.network_mbps,
    }
    return [
        (
            node_id,
            {
                "job_id": spec.job_id,
                "node_id": node_id,
                "action": action,
                "worker_index": index,
                "gang_size": spec.gang_size,
                "lease_epoch": epoch,
                "attempt": entry.attempt,
                "granted": granted,
                "tenant": spec.tenant,
                "task": entry.request["task"],
                "dataset": dataset,
                "reason": reason,
                "assigned_at": now,
            },
            entry.trace,
        )
        for index, node_id in sorted(nodes.items())
    ]


def stops_for_every_worker(entry: JobRecord, reason: str) -> list[Instruction]:
    """Stop instructions, under the job's current lease, for each of its workers: a job
    that lost a node or a worker is requeued (or failed) whole, and no worker may go on
    for a lease that is void: not the rest of a gang, nor a restarted agent that finds
    the old run instruction still waiting in its partition (the stop follows it there).
    Call before the job's nodes are cleared."""
    if not entry.nodes:
        return []
    # A stop names no dataset version: the trainer only looks up the run it ends.
    return instructions_for(entry, "stop", lambda _entry: None, reason)


async def _acknowledged(acks: list[asyncio.Future[Any]]) -> None:
    """Wait for the broker's acknowledgements; raises the first refusal. Unlike gather,
    being cancelled leaves them pending, so a stopping shell can still wait for them."""
    if acks:
        await asyncio.wait(acks)
        for ack in acks:
            ack.result()


@dataclass(slots=True)
class Outbox:
    context: Context
    _unacked: list[asyncio.Future[Any]] = field(default_factory=list)
    # Job events decided but not sent yet, with the trace each continues.
    _decided: list[tuple[JobEvent, bytes | None]] = field(default_factory=list)
    # Stop instructions decided where nothing may wait (:meth:`stop`): sent with the
    # next batch of events.
    _stopping: list[Instruction] = field(default_factory=list)
    # Instructions, each with the acknowledgements of the events decided before them.
    _instructing: asyncio.Queue[tuple[list[asyncio.Future[Any]], list[Instruction]]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_INSTRUCTION_BACKLOG)
    )

    def decide(self, events: list[JobEvent], trace: bytes | None = None) -> None:
        """Decide job events: kept, in order, until :meth:`send` sends them all in one
        batch. Each continues ``trace``, else the trace current when it was decided (its
        cause's)."""
        trace = trace or current_trace()
        for event in events:
            self._decided.append((event, trace))

    def stop(self, instructions: list[Instruction]) -> None:
        """Stop instructions to send after the events decided so far, with the next
        :meth:`send` (for callers that may not wait, as :meth:`instruct` may)."""
        self._stopping.extend(instructions)

    async def send(self) -> None:
        """Queue the decided job events for the broker without waiting for it: one job's
        events share a partition, so they stay in order; :meth:`instruct` waits where
        durability matters. Stops from :meth:`stop` are handed on after them."""
        if self._decided:
            outbox, self._decided = self._decided, []
            # An event that can never be sent (a job id or reason of a megabyte) goes to
            # lepton.jobs.events.dlq with its reason rather than stop the scheduler, which
            # would decide it again after every restart.
            acks, _ = await self.context.publisher.send_sendable(
                self.context.topic("lepton.jobs.events"),
                [(event["job_id"], event) for event, _ in outbox],
                traces=[trace for _, trace in outbox],
            )
            self._unacked.extend(acks)
            for kind, count in Counter(event["kind"] for event, _ in outbox).items():
                _DECISIONS.labels(kind).inc(count)
        if len(self._unacked) > 1000:
            unacked = []
            for ack in self._unacked:
                if not ack.done():
                    unacked.append(ack)
                elif (refused := ack.exception()) is not None:
                    raise refused  # the broker refused an event: stop the service
            self._unacked = unacked
            if len(unacked) > _UNACKED_BOUND:  # the broker is far behind: wait for it
                await asyncio.gather(*self._unacked)
                self._unacked.clear()
        if self._stopping:
            stops, self._stopping = self._stopping, []
            acks, self._unacked = self._unacked, []
            await self._instructing.put((acks, stops))

    async def instruct(self, instructions: list[Instruction]) -> None:
        """Hand instructions to :meth:`instruct_forever`, with the acknowledgements of
        every event decided before them (waits only if it is far behind)."""
        if not instructions:
            return
        await self.send()
        acks, self._unacked = self._unacked, []
        await self._instructing.put((acks, instructions))

    async def instruct_forever(self) -> None:
        """Send instructions to nodes once every event decided before them is durable: the
        log knows about a lease before any node can act on it. Whatever queued meanwhile
        goes out together. A failed acknowledgement ends this task, which stops the
        service; an instruction lost that way is sent again by the rebuild after the
        restart, and the trainer ignores a lease it already has."""
        topic = self.context.topic("lepton.jobs.assigned")
        acks: list[asyncio.Future[Any]] = []
        instructions: list[Instruction] = []

        def take_queued() -> None:
            while not self._instructing.empty():
                more_acks, more = self._instructing.get_nowait()
                acks.extend(more_acks)
                instructions.extend(more)

        try:
            while True:
                first_acks, first = await self._instructing.get()
                acks.extend(first_acks)
                instructions.extend(first)
                take_queued()
                await _acknowledged(acks)
                sent = await self._send_instructions(topic, instructions)
                # Handed to the publisher: a stop while the broker acknowledges them must
                # not send them a second time.
                acks.clear()
                instructions.clear()
                await _acknowledged(sent)
        finally:
            # Stopping (cancelled): what was decided still goes out, as it did when
            # instructions were sent from the flush itself.
            take_queued()
            if instructions:
                await _acknowledged(acks)
                await _acknowledged(await self._send_instructions(topic, instructions))

    async def _send_instructions(
        self, topic: Topic, instructions: list[Instruction]
    ) -> list[asyncio.Future[Any]]:
        """Hand instructions to the publisher; the broker's acknowledgements to wait for.
        One that can never be sent (too large) is counted and logged, not sent: the
        scheduler may not write ``lepton.jobs.assigned``'s dead letters, and stopping would
        only send it again."""
        acks, _ = await self.context.publisher.send_sendable(
            topic,
            [(node_id, record) for node_id, record, _ in instructions],
            traces=[trace for _, _, trace in instructions],
            dead_letters=False,
        )
        return acks
