"""What of the heartbeats matters to placement: the heartbeat digester's decision logic.

A busy cluster's heartbeats are nearly all alike: a node is still there and its measured
usage moved. Placement depends on none of that, only on a node's capacity, region,
labels, GPU type, whether it runs hot (usage past the headroom), whether its agent
restarted, and on the liveness verdicts. :class:`HeartbeatDigest` reads every heartbeat
(liveness needs each one's send time and sequence) and passes on only those facts, as
plain JSON-ready messages, so that the process that decides reads a few messages a
second instead of every heartbeat (see :mod:`services.scheduler.digester`).

Messages (each a dict; the digester writes one per line):

- ``{"nodes": [[record, restarted, hot], ...]}``: nodes seen for the first time, or
  whose agent restarted, or whose placement-relevant fields or hot flag changed; each
  with its newest heartbeat record.
- ``{"suspect": [...], "recovered": [...], "dead": [...]}``: a liveness sweep's
  verdicts, when it has any.

The digester adds its own (:mod:`services.scheduler.digester`): its state after each
sweep, and when it has caught up with the log.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lepton.scheduling.liveness import Liveness, Observation

if TYPE_CHECKING:
    from collections.abc import Callable

    from lepton.bus import Event

__all__ = ["HeartbeatDigest", "Message"]

Message = dict[str, Any]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _runs_hot(record: dict[str, Any], headroom: float) -> bool:
    """Measured CPU or memory use past ``headroom`` of the node's capacity."""
    usage, capacity = record["usage"], record["capacity"]
    return bool(
        usage["cpu_millicores"] > headroom * capacity["cpu_millicores"]
        or usage["memory_mib"] > headroom * capacity["memory_mib"]
    )


class HeartbeatDigest:
    """A :class:`~lepton.bus.BatchHandler` of heartbeats that emits what placement needs.

    :meth:`apply` judges each heartbeat (liveness: sequence and send time) and keeps each
    node's newest accepted one of the fetch; :meth:`flush` emits the nodes that changed
    in a way placement sees. :meth:`sweep` emits the liveness verdicts.
    """

    def __init__(
        self, liveness: Liveness, headroom: float, emit: Callable[[Message], None]
    ) -> None:
        self.liveness = liveness
        self._headroom = headroom
        self._emit = emit
        # What was last passed on of each node: its placement fields and hot flag.
        self._passed: dict[str, tuple[Any, ...]] = {}
        # Applied, not yet flushed: each node's newest accepted record, and whether its
        # agent restarted since the last flush.
        self._beats: dict[str, tuple[dict[str, Any], bool]] = {}

    def apply(self, event: Event) -> None:
        record = event.record
        node_id = record["node_id"]
        seen = self.liveness.observe(
            node_id, record["agent_started_at"], record["sequence"], record["sent_at"], _now_ms()
        )
        if seen is Observation.STALE or seen is Observation.OVERFLOW:
            return
        earlier = self._beats.get(node_id)
        restarted = seen is Observation.RESTARTED or (earlier is not None and earlier[1])
        self._beats[node_id] = (record, restarted)

    async def flush(self) -> None:
        changed = []
        beats, self._beats = self._beats, {}
        for node_id, (record, restarted) in beats.items():
            hot = _runs_hot(record, self._headroom)
            view = (
                hot,
                record["capacity"],
                record["region"],
                record["gpu_type"],
                record["labels"],
            )
            if restarted or self._passed.get(node_id) != view:
                self._passed[node_id] = view
                changed.append([record, restarted, hot])
        if changed:
            self._emit({"nodes": changed})

    def sweep(self, now_ms: int) -> int | None:
        """Judge liveness and emit its verdicts, if any. Returns how long no heartbeat from
        any node has arrived, or None while they flow (see :class:`Liveness`)."""
        verdicts = self.liveness.sweep(now_ms)
        for node_id in verdicts.dead:
            self._passed.pop(node_id, None)  # back from the dead, it is news again
        if verdicts.newly_suspect or verdicts.recovered or verdicts.dead:
            self._emit(
                {
                    "suspect": list(verdicts.newly_suspect),
                    "recovered": list(verdicts.recovered),
                    "dead": list(verdicts.dead),
                }
            )
        return verdicts.pipeline_stalled_ms
