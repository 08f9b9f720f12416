"""The scheduler's I/O shell: events in, the placement core's decisions out as events.

State comes from the log. Before it has caught up, the shell only records what it
reads (job requests and events into the :class:`~lepton.scheduling.journal.Journal`,
ready datasets) and what the heartbeat digester says of the nodes (its
:class:`~lepton.services.scheduler.node_news.NodeNews` side). Once both have caught up, it
rebuilds the core, finishes what a crash may have left half-done (a request never
answered, an assignment whose instruction never went out, a job its node lost), and from
there on plans whenever something changed.

The shell is a :class:`~lepton.bus.BatchHandler`: :meth:`SchedulerShell.apply` folds each
event of a fetch into memory (no I/O), and :meth:`SchedulerShell.flush` acts on the whole
fetch: the requests answered in one batch of events, one placement pass, its decisions
published together. Everything that changes the core or publishes holds one lock, so a
flush, the digester's news (nodes, liveness verdicts) and the rebuild never interleave
their decisions.

Order of effects: a job's ``assigned`` event is published (and acknowledged) before the
instruction to its node, so the log always knows about a lease before any node can act
on it; a lost instruction is sent again after a restart, and the trainer ignores a
lease it already has. Instructions go out from their own task
(:meth:`~lepton.services.scheduler.outbox.Outbox.instruct_forever`), which waits for those
acknowledgements, so that reading and planning never wait for the broker.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import TYPE_CHECKING, Any, NamedTuple

import prometheus_client

from lepton.bus import (
    MessageCounts,
    continue_trace,
    current_trace,
    span,
    start_span,
    traceparent_of,
)
from lepton.contract.events import DataReady, JobEvent
from lepton.contract.names import InvalidField
from lepton.errors import ForgedRecordError
from lepton.runtime.metrics import REQUEST_BUCKETS
from lepton.scheduling.entities import Assign, Preempt, Unschedulable
from lepton.scheduling.intake import Rejection, node_state
from lepton.scheduling.journal import Fold, JobRecord, Journal, Status, next_epoch, restore
from lepton.scheduling.placement import Scheduler
from lepton.services.scheduler.node_news import NodeNews
from lepton.services.scheduler.outbox import (
    Outbox,
    decided,
    instructions_for,
    now_ms,
    stops_for_every_worker,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.trace import Span

    from lepton.bus import Event
    from lepton.runtime.service import Context
    from lepton.services.scheduler.settings import SchedulerSettings

__all__ = ["SchedulerShell"]

_VOID_LEASES = prometheus_client.Counter(
    "lepton_scheduler_void_lease_reports_total",
    "Reports from nodes for leases that are no longer current (ignored).",
)
# Replaces the monitor's gauge of the same name, which had a quantile label: the quantiles
# come from the buckets now (histogram_quantile), over any window and any instances.
_LATENCY = prometheus_client.Histogram(
    "lepton_scheduling_latency_seconds",
    "From a job's submission (its submitted_at) to its first assignment.",
    buckets=(*REQUEST_BUCKETS, 60, 300, 900, 3600),
)


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
    reason: str | None = None  # why, as the node said (SETTLE)


@dataclass(slots=True)
class SchedulerShell(NodeNews):
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
    live: bool = False  # rebuilt from the log: from now on it decides
    outbox: Outbox = field(init=False)
    # Applied, not yet flushed: what the events left to do.
    _follow_ups: deque[_FollowUp] = field(default_factory=deque)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # With a tracer: each queued job's wait, a span from queued to assigned (or gone).
    _waits: dict[str, Span] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._job_events = self.context.topic("lepton.jobs.events").name
        self._source = self.context.publisher.source.encode()
        self._digested = MessageCounts(self.context.topics.group("lepton-scheduler"))
        self.core = Scheduler(self.settings.core_config())
        self.outbox = Outbox(self.context)

    # ------------------------------------------------------------------ reading

    def apply(self, event: Event) -> None:
        """Fold one event into memory; what it causes waits for :meth:`flush`."""
        declared = event.topic.removeprefix(self.context.topics.prefix)
        if declared == "lepton.jobs.requested":
            entry = self.journal.request(event.record)
            if entry is not None:
                entry.trace = current_trace()
                self._follow_ups.append(_FollowUp(_Step.ANNOUNCE, entry, entry.trace))
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
        try:
            outcome = self.journal.fold(record)
        except InvalidField:
            if self.live:  # dead-lettered with its reason when first read, not at every replay
                raise
            return
        if outcome is Fold.FORGED:
            reason = self.journal.forgery(record)
            if self.live:  # refused and audited when first seen, not at every replay
                raise ForgedRecordError(reason or "forged job event")
            self.context.log.info("forged job event ignored", job=record["job_id"], reason=reason)
        elif outcome is Fold.VOID_LEASE:
            _VOID_LEASES.inc()
            self.context.log.info(
                "void lease report ignored",
                job=record["job_id"],
                kind=record["kind"],
                epoch=record.get("lease_epoch"),
            )
        elif outcome is Fold.APPLIED and entry is not None:
            self._follow_ups.append(
                _FollowUp(
                    _Step.SETTLE,
                    entry,
                    current_trace(),
                    record.get("node_id"),
                    record.get("reason"),
                )
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
                await self.outbox.send()

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
        elif entry.cancel_requested:
            # Before a loss: a job its tenant cancelled is not placed again.
            self._cancel(entry)
        elif entry.status is Status.LOST:
            self.core.remove_job(entry.request["job_id"])
            why = f": {follow_up.reason}" if follow_up.reason else ""
            reason = f"node {follow_up.node_id} lost it{why}"
            self.outbox.stop(stops_for_every_worker(entry, reason))
            self._requeue(entry, reason)

    # ---------------------------------------------------------------- catching up

    async def rebuild(self) -> None:
        """Build the core from what the log said, then settle what a crash left open."""
        async with self._lock:
            await self._rebuild()

    async def _rebuild(self) -> None:
        now = now_ms()
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
        self.live = True
        for entry in unfinished:
            if entry.status is Status.UNANNOUNCED:
                self._announce(entry)
            elif entry.cancel_requested:
                self._cancel(entry)
            elif entry.status is Status.LOST:
                self._requeue(entry, "its node was lost while the scheduler was away")
            elif entry.status is Status.QUEUED:
                self._submit(entry)
        await self.outbox.send()
        self.context.log.info(
            "rebuilt from the log", jobs=len(self.journal.jobs), nodes=len(self.nodes)
        )
        self.dirty.set()

    # --------------------------------------------------------------- deciding

    def _announce(self, entry: JobRecord) -> None:
        """Answer a new request: rejected with the reason, cancelled if its tenant already
        asked (a cancel read before its request, or both read while no scheduler ran), or
        queued."""
        spec = entry.spec
        if isinstance(spec, Rejection):
            entry.status = Status.DONE
            self.outbox.decide([decided(entry, "rejected", field=spec.field, reason=spec.reason)])
            return
        if entry.cancel_requested:
            self._cancel(entry)
            return
        impossible = self.core.impossible(spec)
        if impossible is not None:
            entry.status = Status.DONE
            self.outbox.decide([decided(entry, "rejected", field="demand", reason=impossible)])
            return
        self._submit(entry)
        waiting = entry.request["job_id"] in self.pending_data
        self.outbox.decide(
            [
                decided(
                    entry,
                    "queued",
                    reason=f"waiting for dataset {entry.request['dataset']['name']}"
                    if waiting
                    else None,
                )
            ],
            entry.trace,
        )

    def _submit(self, entry: JobRecord) -> None:
        spec = entry.spec
        assert not isinstance(spec, Rejection)
        entry.status = Status.QUEUED
        self._wait(entry)
        if entry.request.get("dataset") and self._dataset_version(entry) is None:
            self.pending_data[spec.job_id] = entry
            return
        self.core.submit(spec, entry.attempt)
        self.dirty.set()

    def _wait(self, entry: JobRecord) -> None:
        """With a tracer, the job's wait in the queue is a span, and what is decided for
        it from now on (queued, assigned, the instruction) continues that span."""
        job_id = entry.request["job_id"]
        if job_id in self._waits:
            return
        waiting = start_span("queued", continues=entry.trace, attributes={"lepton.job_id": job_id})
        traceparent = traceparent_of(waiting)
        if traceparent is not None:
            self._waits[job_id] = waiting
            entry.trace = traceparent

    def _waited(self, entry: JobRecord, outcome: str) -> None:
        """The job left the queue (``outcome``): its wait's span ends."""
        waiting = self._waits.pop(entry.request["job_id"], None)
        if waiting is not None:
            waiting.set_attribute("lepton.outcome", outcome)
            waiting.end()

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
        decisions = self.core.plan(now_ms())
        self.context.log.debug("planned", decisions=Counter(type(d).__name__ for d in decisions))
        if decisions:
            # One placement decides for many jobs: linked to each, the child of none.
            placed = [self.journal.jobs[d.job_id].trace for d in decisions if isinstance(d, Assign)]
            with span("plan", links=placed, attributes={"lepton.decisions": len(decisions)}):
                await self._apply(decisions)
        await self.outbox.send()

    async def _apply(self, decisions: list[Any]) -> None:
        decide = self.outbox.decide  # each job's events continue the job's trace
        # (job, action, reason, worker index -> node, lease epoch)
        orders: list[tuple[JobRecord, str, str | None, dict[int, str], int]] = []
        for decision in decisions:
            if isinstance(decision, Assign):
                entry = self.journal.jobs[decision.job_id]
                if not entry.epoch:  # never leased before: its first assignment
                    _LATENCY.observe(max(0, now_ms() - entry.request["submitted_at"]) / 1000)
                self._waited(entry, "assigned")
                entry.epoch = next_epoch(entry.epoch, self.context.term or 0)
                entry.nodes = dict(enumerate(decision.node_ids))
                entry.started.clear()
                entry.status = Status.ASSIGNED
                decide(
                    [
                        decided(
                            entry,
                            "assigned",
                            node_id=node_id,
                            worker_index=index,
                            lease_epoch=entry.epoch,
                        )
                        for index, node_id in enumerate(decision.node_ids)
                    ],
                    entry.trace,
                )
                orders.append((entry, "run", None, dict(entry.nodes), entry.epoch))
            elif isinstance(decision, Preempt):
                for victim_id in decision.victim_job_ids:
                    victim = self.journal.jobs[victim_id]
                    reason = f"preempted for {decision.for_job_id}"
                    orders.append((victim, "stop", reason, dict(victim.nodes), victim.epoch))
                    decide(
                        [decided(victim, "preempted", reason=reason, lease_epoch=victim.epoch)],
                        victim.trace,
                    )
                    victim.status = Status.QUEUED
                    victim.nodes.clear()
                    victim.started.clear()
                    self._wait(victim)
            elif isinstance(decision, Unschedulable):
                entry = self.journal.jobs[decision.job_id]
                self._waited(entry, "rejected")
                entry.status = Status.DONE
                decide(
                    [decided(entry, "rejected", field="demand", reason=decision.reason)],
                    entry.trace,
                )
        await self.outbox.instruct(
            [
                instruction
                for job, action, why, nodes, epoch in orders
                for instruction in instructions_for(
                    job, action, self._dataset_version, why, nodes, epoch
                )
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
        await self.outbox.instruct(
            instructions_for(entry, action, self._dataset_version, reason, nodes, epoch)
        )

    async def instruct_forever(self) -> None:
        """Send instructions to nodes, each after the events decided before it."""
        await self.outbox.instruct_forever()

    def _requeue(self, entry: JobRecord, reason: str) -> None:
        spec = entry.spec
        assert not isinstance(spec, Rejection)
        entry.attempt += 1
        entry.nodes.clear()
        entry.started.clear()
        if entry.attempt > spec.max_retries:
            entry.status = Status.DONE
            self.outbox.decide(
                [
                    decided(
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
        self.outbox.decide([decided(entry, "requeued", reason=reason)])

    def _cancel(self, entry: JobRecord) -> None:
        """End a job its tenant cancelled: out of the queue (or the wait for its dataset),
        its place freed for the next plan, ``cancelled`` decided, and each of its workers
        told to stop under the lease they hold, after that event (a job never placed has
        none). A worker's later reports name a lease of a finished job: they change
        nothing."""
        job_id = entry.request["job_id"]
        reason = entry.cancel_reason or "cancelled"
        placed = entry.status in (Status.ASSIGNED, Status.RUNNING, Status.LOST)
        self.core.remove_job(job_id)
        self.pending_data.pop(job_id, None)
        self._waited(entry, "cancelled")
        entry.status = Status.DONE
        self.outbox.decide(
            [
                decided(
                    entry, "cancelled", reason=reason, lease_epoch=entry.epoch if placed else None
                )
            ]
        )
        if placed:
            self.outbox.stop(stops_for_every_worker(entry, reason))
        self.dirty.set()
