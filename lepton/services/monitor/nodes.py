"""The monitor's node table: each node as its newest heartbeat describes it, bounded.

Anyone with a node's key can invent node ids, so the table holds at most ``max_nodes``
(heartbeats from further unknown nodes are counted, not stored) and forgets a node whose
last heartbeat lies ``forget_after_ms`` behind the newest heartbeat of any node: judged
from the heartbeats' own clocks, so that consumer lag never makes the monitor forget one.
A heartbeat no node could have sent (:func:`lepton.scheduling.intake.check_heartbeat`) is
refused with :class:`~lepton.contract.names.InvalidField`, changing nothing.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from lepton.scheduling.intake import CLOCK_SKEW_MS, check_beat, check_node
from lepton.scheduling.watermark import Watermark
from lepton.services.monitor.entities import Node, Record

if TYPE_CHECKING:
    import collections
    from collections.abc import Callable, Iterable

__all__ = ["NodeTable"]

# How much newer heartbeats must be before the table is swept again: a sweep reads every node.
_FORGET_EVERY_MS = 10_000


class NodeTable(dict[str, Node]):
    """Nodes by id (a dict, as the views read it), changed only by :meth:`beat`.

    ``clock`` is the reader's clock, which a heartbeat's times are checked against; what
    is refused or left out is counted in ``counters`` (the state's).
    """

    def __init__(
        self,
        *,
        max_nodes: int,
        forget_after_ms: int,
        clock: Callable[[], int],
        counters: collections.Counter[str],
        stall_after_ms: int = 15_000,
    ) -> None:
        super().__init__()
        self.max_nodes = max_nodes
        self.forget_after_ms = forget_after_ms
        self._clock = clock
        self._counters = counters
        # The newest heartbeat time of any node (capped at the clock), as the scheduler's.
        self.watermark = Watermark(stall_after_ms)
        self._forget_due = 0  # the newest heartbeat time from which the next sweep runs

    def beat(self, record: Record) -> None:
        """Take a heartbeat into account: the hottest path of the monitor (every node,
        every few seconds), so a known node is updated in place."""
        node_id = record["node_id"]
        started, sequence = record["agent_started_at"], record["sequence"]
        node = self.get(node_id)
        now = self._clock()
        check_beat(record, now)
        if (
            node is None
            or record["capacity"] != node.capacity
            or record["labels"] != node.labels
            or record["region"] != node.region
            or record.get("gpu_type") != node.gpu_type
        ):
            check_node(record)  # what a known node last said was checked already
        # A clock a little ahead is capped, so that the node cannot outlive its last beat.
        sent_at = min(record["sent_at"], now + CLOCK_SKEW_MS)
        if node is None:
            if len(self) >= self.max_nodes:
                self._counters["heartbeats_overflow"] += 1
                return
            self[node_id] = Node(
                node_id=node_id,
                region=record["region"],
                gpu_type=record.get("gpu_type"),
                labels=dict(record["labels"]),
                capacity=dict(record["capacity"]),
                usage=dict(record["usage"]),
                running_job_ids=list(record["running_job_ids"]),
                sent_at=sent_at,
                sequence=sequence,
                agent_started_at=started,
                interval_ms=record["interval_ms"],
            )
        # Liveness follows the agent's own clock and sequence: a redelivered or reordered
        # older heartbeat must not roll the node back.
        elif started < node.agent_started_at or (
            started == node.agent_started_at and sequence <= node.sequence
        ):
            self._counters["stale_heartbeats"] += 1
            return
        else:
            if started > node.agent_started_at:
                node.restarts += 1
            node.region = record["region"]
            node.gpu_type = record.get("gpu_type")
            node.labels = dict(record["labels"])
            node.capacity = dict(record["capacity"])
            node.usage = dict(record["usage"])
            node.running_job_ids = list(record["running_job_ids"])
            node.sent_at = sent_at
            node.sequence = sequence
            node.agent_started_at = started
            node.interval_ms = record["interval_ms"]
        if sent_at > self.watermark.newest_ms:
            self.watermark.advance(sent_at)
            if sent_at >= self._forget_due:
                self.forget_silent()

    def forget_silent(self) -> int:
        """Forget the nodes whose last heartbeat lies ``forget_after_ms`` behind the
        newest (and sweep again once heartbeats are ``_FORGET_EVERY_MS`` newer); returns
        how many were forgotten."""
        self._forget_due = self.watermark.newest_ms + _FORGET_EVERY_MS
        horizon = self.watermark.newest_ms - self.forget_after_ms
        kept = [(node_id, node) for node_id, node in self.items() if node.sent_at >= horizon]
        forgotten = len(self) - len(kept)
        if forgotten:
            # Emptied and filled again: a dict never shrinks by deleting from it.
            self.clear()
            self.update(kept)
            self._counters["nodes_forgotten"] += forgotten
        return forgotten

    def restore(self, nodes: Iterable[Node]) -> None:
        """Nodes of a snapshot: those silent too long forgotten at once, at most
        ``max_nodes`` kept (the bound may have been lowered since)."""
        self.update((node.node_id, node) for node in nodes)
        self.watermark.newest_ms = max((node.sent_at for node in self.values()), default=0)
        self.forget_silent()
        if len(self) > self.max_nodes:
            kept = list(itertools.islice(self.items(), self.max_nodes))
            self.clear()
            self.update(kept)
