"""What the heartbeat digester's messages do to the cluster the scheduler shell sees.

New, restarted or changed nodes reach placement; silent nodes stop getting work, dead
or restarted ones lose theirs (each lost job requeued or failed, as the core decides);
the digester's pipeline health lands in metrics. Before the shell is live this only
records the nodes: the rebuild reads them.

A mixin of :class:`~lepton.services.scheduler.shell.SchedulerShell` rather than an object it
owns: every message changes the shell's core, journal and plan trigger under its lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import prometheus_client

from lepton.bus import span
from lepton.scheduling.entities import Failed, NodeLossOutcome, NodeState, Requeued
from lepton.scheduling.intake import node_state
from lepton.scheduling.journal import Status
from lepton.services.scheduler.outbox import decided, stops_for_every_worker

if TYPE_CHECKING:
    import asyncio

    from lepton.bus import MessageCounts
    from lepton.runtime.service import Context
    from lepton.scheduling.journal import Journal
    from lepton.scheduling.placement import Scheduler
    from lepton.services.scheduler.digester import Digester
    from lepton.services.scheduler.heartbeats import Message
    from lepton.services.scheduler.outbox import Outbox

__all__ = ["NodeNews"]

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


class NodeNews:
    # The shell's state this side reads and changes (fields of the shell's dataclass).
    context: Context
    core: Scheduler
    journal: Journal
    outbox: Outbox
    nodes: dict[str, dict[str, Any]]
    hot: set[str]
    suspect: set[str]
    nodes_known: asyncio.Event
    dirty: asyncio.Event
    stalled: bool
    live: bool
    _digested: MessageCounts
    _lock: asyncio.Lock

    async def digest_forever(self, digester: Digester) -> None:
        """Act on what the heartbeat digester says, in order, for as long as it runs."""
        async for message in digester.messages():
            async with self._lock:
                await self.take(message)

    async def take(self, message: Message) -> None:
        """One message of the digester (:mod:`lepton.services.scheduler.heartbeats`)."""
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
        await self.outbox.send()

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
        if not outcomes:
            return
        # The digester's verdict on the node (from the heartbeats of every node) is no
        # job's child: its span is the first of a trace, linked to each job it moves,
        # whose events continue the job's own trace.
        traces = [self.journal.jobs[outcome.job_id].trace for outcome in outcomes]
        attributes = {"lepton.node_id": node_id, "lepton.verdict": how}
        with span("node lost", links=traces, attributes=attributes, root=True):
            self._move_jobs_off(node_id, outcomes, how)
        self.dirty.set()

    def _move_jobs_off(self, node_id: str, outcomes: list[NodeLossOutcome], how: str) -> None:
        for outcome in outcomes:
            entry = self.journal.jobs[outcome.job_id]
            self.outbox.stop(
                stops_for_every_worker(entry, f"node {node_id} {how}: the job starts over")
            )
            if isinstance(outcome, Requeued):
                entry.attempt = outcome.attempt
                entry.status = Status.QUEUED
                entry.nodes.clear()
                entry.started.clear()
                self.outbox.decide(
                    [decided(entry, "requeued", reason=f"node {node_id} {how}")], entry.trace
                )
            elif isinstance(outcome, Failed):
                self.outbox.decide(
                    [decided(entry, "failed", reason=outcome.reason, lease_epoch=entry.epoch)],
                    entry.trace,
                )
                entry.status = Status.DONE
