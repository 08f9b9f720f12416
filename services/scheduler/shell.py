"""The scheduler's I/O shell: events in, the placement core's decisions out as events.

State comes from the log. Before it has caught up, the shell only records what it
reads (job requests and events into the :class:`~lepton.scheduling.journal.Journal`,
ready datasets) and what the heartbeat digester says of the nodes
(:meth:`SchedulerShell.take`). Once both have caught up, it rebuilds the core, finishes
what a crash may have left half-done (a request never answered, an assignment whose
instruction never went out, a job its node lost), and from there on plans whenever
something changed.

The shell is a :class:`~lepton.bus.BatchHandler`: :meth:`SchedulerShell.apply` folds each
event of a fetch into memory (no I/O), and :meth:`SchedulerShell.flush` acts on the whole
fetch: the requests answered in one batch of events, one placement pass, its decisions
published together. Everything that changes the core or publishes holds one lock, so a
flush, the digester's news (nodes, liveness verdicts) and the rebuild never interleave
their decisions.

Order of effects: a job's ``assigned`` event is published (and acknowledged) before the
instruction to its node, so the log always knows about a lease before any node can act
on it; a lost instruction is sent again after a restart, and the trainer ignores a
lease it already has. Instructions go out from their own task (:meth:`instruct_forever`),
which waits for those acknowledgements, so that reading and planning never wait for the
broker.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import TYPE_CHECKING, Any, NamedTuple, Unpack

import prometheus_client

from lepton.bus import MessageCounts, continue_trace, current_trace
from lepton.contract.events import DataReady, JobEvent
from lepton.contract.job_events import job_event
from lepton.scheduling.entities import (
    Assign,
    Failed,
    NodeLossOutcome,
    NodeState,
    Preempt,
    Requeued,
    Unschedulable,
)
from lepton.scheduling.intake import Rejection, node_state
from lepton.scheduling.journal import Fold, JobRecord, Journal, Status, next_epoch, restore
from lepton.scheduling.placement import Scheduler

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lepton.bus import Event
    from lepton.contract.events import JobEventKind
    from lepton.contract.job_events import JobEventDetails
    from lepton.runtime.service import Context
    from services.scheduler.digester import Digester
    from services.scheduler.heartbeats import Message
    from services.scheduler.settings import SchedulerSettings

__all__ = ["SchedulerShell"]

_DECISIONS = prometheus_client.Counter(
    "lepton_scheduler_events_total", "Job events the scheduler published, by kind.", ["kind"]
)
_VOID_LEASES = prometheus_client.Counter(
    "lepton_scheduler_void_lease_reports_total",
    "Reports from nodes for leases that are no longer current (ignored).",
)
_NODE_OVERFLOW = prometheus_client.Gauge(
    "lepton_scheduler_node_table_overflow",
    "Heartbeats from unknown nodes dropped because the node table is full.",
)
_NODES = prometheus_client.Gauge(
    "lepton_scheduler_nodes", "Nodes the scheduler knows (alive or suspect)."
)
_PIPELINE_STALLED = prometheus_client.Gauge(
    "lepton_scheduler_heartbeat_pipeline_stalled_seconds",
    "How long no heartbeat from any node has arrived (0 when heartbeats flow).",
)


# Batches of instructions queued for their acknowledgements before planning waits.
_INSTRUCTION_BACKLOG = 64
# Job events sent and not yet acknowledged before deciding waits for the broker.
_UNACKED_BOUND = 20_000

# (node id, instruction record): one message to ``lepton.jobs.assigned``.
Instruction = tuple[str, dict[str, Any]]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _acknowledged(acks: list[asyncio.Future[Any]]) -> None:
    """Wait for the broker's acknowledgements; raises the first refusal. Unlike gather,
    being cancelled leaves them pending, so a stopping shell can still wait for them."""
    if acks:
        await asyncio.wait(acks)
        for ack in acks:
            ack.result()


class _Step(Enum):
    """What an applied event leaves for the flush to do, once the shell is live."""

    ANNOUNCE = auto()  # answer a new request: queued or rejected
    SETTLE = auto()  # a job event moved a job: free its place, requeue or cancel it
    DATASET = auto()  # a dataset became ready: jobs waiting for it may go


class _FollowUp(NamedTuple):
    step: _Step
    entry: JobRecord | None
    trace: bytes | None  # what is published for it continues the trace of its event
    node_id: str | None = None  # the node that reported (SETTLE)


@dataclass(slots=True)
class SchedulerShell:
    context: Context
    settings: SchedulerSettings
    journal: Journal = field(default_factory=Journal)
    # Each node's heartbeat record as the digester last passed it on (its usage may be
    # older: placement does not look at usage), and the nodes that get no new work.
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    hot: set[str] = field(default_factory=set)
    suspect: set[str] = field(default_factory=set)
    # Set once the digester has read the heartbeats the log held at start.
    nodes_known: asyncio.Event = field(default_factory=asyncio.Event)
    datasets: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    stalled: bool = False
    core: Scheduler = field(init=False)
    _job_events: str = field(init=False)  # the topic's name under this installation
    _source: bytes = field(init=False)  # the ce_source header of what this shell publishes
    _digested: MessageCounts = field(init=False)  # the digester's, in our metrics
    pending_data: dict[str, JobRecord] = field(default_factory=dict)
    rebuilt: bool = False
    _unacked: list[asyncio.Future[Any]] = field(default_factory=list)
    # Job events decided but not sent yet, with the trace each continues.
    _outbox: list[tuple[JobEvent, bytes | None]] = field(default_factory=list)
    # Applied, not yet flushed: what the events left to do.
    _follow_ups: deque[_FollowUp] = field(default_factory=deque)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Instructions, each with the acknowledgements of the events decided before them.
    _instructing: asyncio.Queue[tuple[list[asyncio.Future[Any]], list[Instruction]]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_INSTRUCTION_BACKLOG)
    )

    def __post_init__(self) -> None:
        self._job_events = self.context.topic("lepton.jobs.events").name
        self._source = self.context.publisher.source.encode()
        self._digested = MessageCounts(self.context.topics.group("lepton-scheduler"))
        self.core = Scheduler(self.settings.core_config())

    @property
    def live(self) -> bool:
        return self.rebuilt

    # ------------------------------------------------------------------ reading

    def apply(self, event: Event) -> None:
        """Fold one event into memory; what it causes waits for :meth:`flush`."""
        declared = event.topic.removeprefix(self.context.topics.prefix)
        if declared == "lepton.jobs.requested":
            entry = self.journal.request(event.record)
            if entry is not None:
                self._follow_ups.append(_FollowUp(_Step.ANNOUNCE, entry, current_trace()))
        elif declared == "lepton.jobs.events":
            self._fold(event)
        elif declared == "lepton.data.ready":
            record = event.record_as(DataReady)
            versions = self.datasets.setdefault((record["tenant"], record["dataset"]), [])
            if record["version"] not in versions:
                versions.append(record["version"])
            self._follow_ups.append(_FollowUp(_Step.DATASET, None, current_trace()))

    def wants(self, topic: str, headers: Sequence[tuple[str, bytes]]) -> bool:
        """Once live, the shell's own job events come back already applied (when they
        were decided): the bus drops them unread, which saves decoding half the job
        events of a busy scheduler. While replaying they rebuild the journal."""
        return not (
            self.live and topic == self._job_events and ("ce_source", self._source) in headers
        )

    def _fold(self, event: Event) -> None:
        record = event.record_as(JobEvent)
        entry = self.journal.jobs.get(record["job_id"])
        outcome = self.journal.fold(record)
        if outcome is Fold.VOID_LEASE:
            _VOID_LEASES.inc()
            self.context.log.info(
                "void lease report ignored",
                job=record["job_id"],
                kind=record["kind"],
                epoch=record.get("lease_epoch"),
            )
        elif outcome is Fold.APPLIED and entry is not None:
            self._follow_ups.append(
                _FollowUp(_Step.SETTLE, entry, current_trace(), record.get("node_id"))
            )

    async def flush(self) -> None:
        """Act on everything applied since the last flush: one plan, one batch of events.

        Safe to retry after a failure: each follow-up is dropped from the queue only once
        acted on, and acting checks the job's current status first.
        """
        async with self._lock:
            if not self.live:
                # The rebuild reads the journal, which already holds these events.
                self._follow_ups.clear()
                return
            while self._follow_ups:
                follow_up = self._follow_ups[0]
                with continue_trace(follow_up.trace):
                    await self._follow_up(follow_up)
                self._follow_ups.popleft()
            if self.dirty.is_set():
                await self._plan()
            else:
                await self._send()

    async def _follow_up(self, follow_up: _FollowUp) -> None:
        entry = follow_up.entry
        if follow_up.step is _Step.DATASET:
            self._datasets_ready()
        elif entry is None:
            return
        elif follow_up.step is _Step.ANNOUNCE:
            if entry.status is Status.UNANNOUNCED:
                self._announce(entry)
        elif entry.status is Status.DONE:
            # Folding never moves a finished job, so this event finished it (removing
            # twice, after two reports in one fetch, changes nothing).
            self.core.remove_job(entry.request["job_id"])
            self.dirty.set()
        elif entry.status is Status.LOST:
            self.core.remove_job(entry.request["job_id"])
            self._requeue(entry, f"node {follow_up.node_id} lost it")
        elif entry.cancel_requested:
            await self._cancel(entry)

    def _node(self, record: dict[str, Any], restarted: bool, hot: bool) -> None:
        """A node the digester says placement must hear of: new, restarted, or changed in
        capacity, region, GPU type, labels or whether it runs hot."""
        node_id = record["node_id"]
        if hot:
            self.hot.add(node_id)
        else:
            self.hot.discard(node_id)
        known = self.nodes.get(node_id)
        self.nodes[node_id] = record
        if not self.live:
            return
        if restarted:
            # A restarted agent has lost whatever it ran before.
            self._publish_losses(node_id, self.core.remove_node(node_id), "restarted")
        self.core.upsert_node(self._accepting(node_state(record)))
        if known is None or restarted or known["capacity"] != record["capacity"]:
            self.dirty.set()

    def _accepting(self, state: NodeState) -> NodeState:
        accepts = not (state.node_id in self.suspect or state.node_id in self.hot)
        if accepts == state.accepts_new_work:
            return state
        return NodeState(
            node_id=state.node_id,
            region=state.region,
            capacity=state.capacity,
            labels=state.labels,
            gpu_type=state.gpu_type,
            usage=state.usage,
            running_job_ids=state.running_job_ids,
            sent_at_ms=state.sent_at_ms,
            sequence=state.sequence,
            accepts_new_work=accepts,
        )

    # ---------------------------------------------------------------- catching up

    async def rebuild(self) -> None:
        """Build the core from what the log said, then settle what a crash left open."""
        async with self._lock:
            await self._rebuild()

    async def _rebuild(self) -> None:
        now = _now_ms()
        restore(
            self.core,
            [self._accepting(node_state(record)) for record in self.nodes.values()],
            self.journal,
            now,
        )
        unfinished: list[JobRecord] = []
        # A copy: the consumer goes on applying requests while this awaits the broker.
        for entry in list(self.journal.jobs.values()):
            if entry.status is Status.UNANNOUNCED or entry.status is Status.LOST:
                unfinished.append(entry)
            elif entry.status is Status.DONE or isinstance(entry.spec, Rejection):
                continue
            elif entry.cancel_requested or entry.status is Status.QUEUED:
                unfinished.append(entry)
            elif entry.status is Status.ASSIGNED:
                await self._send_instructions(entry, "run")
        self.rebuilt = True
        for entry in unfinished:
            if entry.status is Status.UNANNOUNCED:
                self._announce(entry)
            elif entry.status is Status.LOST:
                self._requeue(entry, "its node was lost while the scheduler was away")
            elif entry.cancel_requested:
                await self._cancel(entry)
            elif entry.status is Status.QUEUED:
                self._submit(entry)
        await self._send()
        self.context.log.info(
            "rebuilt from the log", jobs=len(self.journal.jobs), nodes=len(self.nodes)
        )
        self.dirty.set()

    # --------------------------------------------------------------- deciding

    def _announce(self, entry: JobRecord) -> None:
        """Answer a new request: rejected with the reason, or queued."""
        spec = entry.spec
        if isinstance(spec, Rejection):
            entry.status = Status.DONE
            self._events([self._event(entry, "rejected", field=spec.field, reason=spec.reason)])
            return
        impossible = self.core.impossible(spec)
        if impossible is not None:
            entry.status = Status.DONE
            self._events([self._event(entry, "rejected", field="demand", reason=impossible)])
            return
        self._submit(entry)
        waiting = entry.request["job_id"] in self.pending_data
        self._events(
            [
                self._event(
                    entry,
                    "queued",
                    reason=f"waiting for dataset {entry.request['dataset']['name']}"
                    if waiting
                    else None,
                )
            ]
        )

    def _submit(self, entry: JobRecord) -> None:
        spec = entry.spec
        assert not isinstance(spec, Rejection)
        entry.status = Status.QUEUED
        if entry.request.get("dataset") and self._dataset_version(entry) is None:
            self.pending_data[spec.job_id] = entry
            return
        self.core.submit(spec, entry.attempt)
        self.dirty.set()

    def _datasets_ready(self) -> None:
        for job_id, entry in list(self.pending_data.items()):
            if self._dataset_version(entry) is not None:
                del self.pending_data[job_id]
                self._submit(entry)

    def _dataset_version(self, entry: JobRecord) -> str | None:
        wanted = entry.request["dataset"]
        owner = wanted.get("owner") or entry.tenant
        versions = self.datasets.get((owner, wanted["name"]), [])
        if not versions:
            return None
        if wanted.get("version") is None:
            return versions[-1]
        return wanted["version"] if wanted["version"] in versions else None

    async def plan_forever(self) -> None:
        """Plan when something changed outside a flush (the digester's news, the rebuild)."""
        while True:
            await self.dirty.wait()
            async with self._lock:
                if self.dirty.is_set():  # a flush may have planned while we waited
                    await self._plan()
            # Let more input gather before the next plan: one plan per burst, not per event.
            await asyncio.sleep(0.005)

    async def _plan(self) -> None:
        """One placement pass; its decisions (and every event before them) published."""
        self.dirty.clear()
        decisions = self.core.plan(_now_ms())
        self.context.log.debug("planned", decisions=Counter(type(d).__name__ for d in decisions))
        await self._apply(decisions)
        await self._send()

    async def _apply(self, decisions: list[Any]) -> None:
        events: list[JobEvent] = []
        # (job, action, reason, worker index -> node, lease epoch)
        instructions: list[tuple[JobRecord, str, str | None, dict[int, str], int]] = []
        for decision in decisions:
            if isinstance(decision, Assign):
                entry = self.journal.jobs[decision.job_id]
                entry.epoch = next_epoch(entry.epoch, self.context.term or 0)
                entry.nodes = dict(enumerate(decision.node_ids))
                entry.started.clear()
                entry.status = Status.ASSIGNED
                for index, node_id in enumerate(decision.node_ids):
                    events.append(
                        self._event(
                            entry,
                            "assigned",
                            node_id=node_id,
                            worker_index=index,
                            lease_epoch=entry.epoch,
                        )
                    )
                instructions.append((entry, "run", None, dict(entry.nodes), entry.epoch))
            elif isinstance(decision, Preempt):
                for victim_id in decision.victim_job_ids:
                    victim = self.journal.jobs[victim_id]
                    reason = f"preempted for {decision.for_job_id}"
                    instructions.append((victim, "stop", reason, dict(victim.nodes), victim.epoch))
                    events.append(
                        self._event(victim, "preempted", reason=reason, lease_epoch=victim.epoch)
                    )
                    victim.status = Status.QUEUED
                    victim.nodes.clear()
                    victim.started.clear()
            elif isinstance(decision, Unschedulable):
                entry = self.journal.jobs[decision.job_id]
                entry.status = Status.DONE
                events.append(
                    self._event(entry, "rejected", field="demand", reason=decision.reason)
                )
        self._events(events)
        await self._instruct(
            [
                instruction
                for job, action, why, nodes, epoch in instructions
                for instruction in self._instructions(job, action, why, nodes, epoch)
            ]
        )

    async def _send_instructions(
        self,
        entry: JobRecord,
        action: str,
        reason: str | None = None,
        nodes: dict[int, str] | None = None,
        epoch: int | None = None,
    ) -> None:
        await self._instruct(self._instructions(entry, action, reason, nodes, epoch))

    async def _instruct(self, instructions: list[Instruction]) -> None:
        """Hand instructions to :meth:`instruct_forever`, with the acknowledgements of
        every event decided before them (waits only if it is far behind)."""
        if not instructions:
            return
        await self._send()
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
                await self.context.publisher.publish_many(topic, instructions)
                acks.clear()
                instructions.clear()
        finally:
            # Stopping (cancelled): what was decided still goes out, as it did when
            # instructions were sent from the flush itself.
            take_queued()
            if instructions:
                await _acknowledged(acks)
                await self.context.publisher.publish_many(topic, instructions)

    def _instructions(
        self,
        entry: JobRecord,
        action: str,
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
                "version": self._dataset_version(entry) or "",
                "owner": entry.request["dataset"].get("owner") or entry.tenant,
            }
        now = _now_ms()
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
            )
            for index, node_id in sorted(nodes.items())
        ]

    async def digest_forever(self, digester: Digester) -> None:
        """Act on what the heartbeat digester says, in order, for as long as it runs."""
        async for message in digester.messages():
            async with self._lock:
                await self.take(message)

    async def take(self, message: Message) -> None:
        """One message of the digester (:mod:`services.scheduler.heartbeats`)."""
        # Compared in place, so that mypy narrows ``message`` to the kind's TypedDict.
        if message["kind"] == "nodes":
            for record, restarted, hot in message["nodes"]:
                self._node(record, restarted, hot)
        elif message["kind"] == "verdicts":
            self._verdicts(message["suspect"], message["recovered"], message["dead"])
        elif message["kind"] == "pipeline":
            self._pipeline(message["stalled_ms"], message["overflow"], message["counts"])
        elif message["kind"] == "caught_up":
            self.nodes_known.set()
        _NODES.set(len(self.nodes))
        await self._send()

    def _verdicts(self, suspect: list[str], recovered: list[str], dead: list[str]) -> None:
        """Silent nodes stop getting work, dead ones lose it."""
        self.suspect.update(suspect)
        self.suspect.difference_update(recovered)
        if self.live:
            for node_id in (*suspect, *recovered):
                if node_id in self.nodes:
                    self.core.upsert_node(self._accepting(node_state(self.nodes[node_id])))
        for node_id in dead:
            self.nodes.pop(node_id, None)
            self.hot.discard(node_id)
            self.suspect.discard(node_id)
            if self.live:
                self._publish_losses(node_id, self.core.remove_node(node_id), "dead")
        if self.live and (recovered or dead):
            self.dirty.set()

    def _pipeline(
        self, stalled_ms: int | None, overflow: int, counts: list[tuple[str, str, int]]
    ) -> None:
        _PIPELINE_STALLED.set((stalled_ms or 0) / 1000)
        _NODE_OVERFLOW.set(overflow)
        if stalled_ms is not None and not self.stalled:
            self.context.log.error(
                "no heartbeat from any node: treating it as a pipeline fault, requeuing nothing",
                silent_for_ms=stalled_ms,
            )
        self.stalled = stalled_ms is not None
        for topic, outcome, count in counts:
            self._digested.counts[topic, outcome] = count

    def _publish_losses(self, node_id: str, outcomes: list[NodeLossOutcome], how: str) -> None:
        events = []
        for outcome in outcomes:
            entry = self.journal.jobs[outcome.job_id]
            if isinstance(outcome, Requeued):
                entry.attempt = outcome.attempt
                entry.status = Status.QUEUED
                entry.nodes.clear()
                entry.started.clear()
                events.append(self._event(entry, "requeued", reason=f"node {node_id} {how}"))
            elif isinstance(outcome, Failed):
                events.append(
                    self._event(entry, "failed", reason=outcome.reason, lease_epoch=entry.epoch)
                )
                entry.status = Status.DONE
        self._events(events)
        if outcomes:
            self.dirty.set()

    def _requeue(self, entry: JobRecord, reason: str) -> None:
        spec = entry.spec
        assert not isinstance(spec, Rejection)
        entry.attempt += 1
        entry.nodes.clear()
        entry.started.clear()
        if entry.attempt > spec.max_retries:
            entry.status = Status.DONE
            self._events(
                [
                    self._event(
                        entry,
                        "failed",
                        reason=f"{reason}; {entry.attempt} failures exceed "
                        f"max_retries={spec.max_retries}",
                        lease_epoch=entry.epoch,
                    )
                ]
            )
            return
        self._submit(entry)
        self._events([self._event(entry, "requeued", reason=reason)])

    async def _cancel(self, entry: JobRecord) -> None:
        if entry.status in (Status.ASSIGNED, Status.RUNNING):
            await self._send_instructions(entry, "stop", "cancelled")
        self.core.remove_job(entry.request["job_id"])
        self.pending_data.pop(entry.request["job_id"], None)
        entry.status = Status.DONE
        self._events([self._event(entry, "cancelled", lease_epoch=entry.epoch or None)])
        self.dirty.set()

    # ---------------------------------------------------------------- writing

    def _event(
        self, entry: JobRecord, kind: JobEventKind, **details: Unpack[JobEventDetails]
    ) -> JobEvent:
        return job_event(
            entry.request["job_id"],
            kind,
            entry.tenant,
            attempt=entry.attempt,
            time_ms=_now_ms(),
            **details,
        )

    def _events(self, events: list[JobEvent]) -> None:
        """Decide job events: kept, in order, until :meth:`_send` sends them all in one
        batch. Each continues the trace current when it was decided (its cause's)."""
        trace = current_trace()
        for event in events:
            self._outbox.append((event, trace))

    async def _send(self) -> None:
        """Queue the decided job events for the broker without waiting for it: one job's
        events share a partition, so they stay in order; :meth:`_flush` waits where
        durability matters."""
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._unacked.extend(
                await self.context.publisher.send_many(
                    self.context.topic("lepton.jobs.events"),
                    [(event["job_id"], event) for event, _ in outbox],
                    traces=[trace for _, trace in outbox],
                )
            )
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
