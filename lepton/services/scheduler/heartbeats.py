"""What of the heartbeats matters to placement: the heartbeat digester's decision logic.

A busy cluster's heartbeats are nearly all alike: a node is still there and its measured
usage moved. Placement depends on none of that, only on a node's capacity, region,
labels, GPU type, whether it runs hot (usage past the headroom), whether its agent
restarted, and on the liveness verdicts. :class:`HeartbeatDigest` reads every heartbeat
(liveness needs each one's send time and sequence) and passes on only those facts, as
plain JSON-ready messages, so that the process that decides reads a few messages a
second instead of every heartbeat (see :mod:`lepton.services.scheduler.digester`).

Messages are the TypedDicts of :data:`Message`, told apart by ``kind``; the digester
writes each as one JSON line (tuples arrive as JSON arrays, which unpack alike):

- :class:`NodesChanged`: nodes seen for the first time, or whose agent restarted, or
  whose placement-relevant fields or hot flag changed; each with its newest heartbeat.
- :class:`Verdicts`: a liveness sweep's verdicts, when it has any.

The digester adds its own (:mod:`lepton.services.scheduler.digester`): its state after each
sweep (:class:`PipelineState`), and when it has caught up with the log (:class:`CaughtUp`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from lepton.contract.names import InvalidField
from lepton.contract.topics import by_name
from lepton.scheduling.intake import check_beat, check_heartbeat, check_node
from lepton.services.scheduler.liveness import Liveness, Observation

if TYPE_CHECKING:
    from collections.abc import Callable

    from lepton.bus import Event
    from lepton.contract.codec import Codec

__all__ = [
    "HEARTBEAT",
    "CaughtUp",
    "HeartbeatDigest",
    "Message",
    "NodesChanged",
    "PipelineState",
    "Verdicts",
]

HEARTBEAT = by_name("lepton.node.heartbeats").event
Fields = dict[str, Any]


class NodesChanged(TypedDict):
    kind: Literal["nodes"]
    nodes: list[tuple[Fields, bool, bool]]  # (newest heartbeat record, restarted, hot)


class Verdicts(TypedDict):
    kind: Literal["verdicts"]
    suspect: list[str]
    recovered: list[str]
    dead: list[str]


class CaughtUp(TypedDict):
    kind: Literal["caught_up"]


class PipelineState(TypedDict):
    kind: Literal["pipeline"]
    stalled_ms: int | None  # how long no heartbeat arrived, None while they flow
    overflow: int  # nodes beyond the liveness table's bound
    counts: list[tuple[str, str, int]]  # (topic, outcome, messages) so far


Message = NodesChanged | Verdicts | CaughtUp | PipelineState

# A heartbeat's fields before this one (node_id, region, labels, gpu_type, capacity) are
# what placement needs of a node and rarely change; this one and those after it (usage,
# running jobs, send time, sequence, agent start, interval) hold what changes with every
# beat (usage, send time, sequence at least).
_CHANGING_FROM = "usage"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _runs_hot(usage: Fields, capacity: Fields, headroom: float) -> bool:
    """Measured CPU or memory use past ``headroom`` of the node's capacity."""
    return bool(
        usage["cpu_millicores"] > headroom * capacity["cpu_millicores"]
        or usage["memory_mib"] > headroom * capacity["memory_mib"]
    )


class HeartbeatDigest:
    """A :class:`~lepton.bus.BatchHandler` of heartbeats that emits what placement needs.

    :meth:`apply` (or :meth:`skim`) judges each heartbeat (liveness: sequence and send
    time) and keeps each node's newest accepted one of the fetch; :meth:`flush` emits the
    nodes that changed in a way placement sees. :meth:`sweep` emits the liveness verdicts.

    Most heartbeats are taken by :meth:`skim` without decoding what a node's last one
    already said: the bytes of a heartbeat's leading fields (its placement fields) are
    compared with the node's last ones, and only the changing fields after them are
    decoded: about half the digest's work per heartbeat, decoding having been most of it.
    The subscriber must hand it only ``lepton.node.heartbeats``: :meth:`skim` vouches
    for the event type by the schema's fingerprint, not by the topic.

    A heartbeat no node could have sent (:func:`~lepton.scheduling.intake.check_heartbeat`)
    is refused: once :attr:`live` (the log read up to where it stood at the start),
    :meth:`apply` raises, and the subscriber dead-letters it with the reason; before,
    while replaying what was dead-lettered already, it is only counted in :attr:`refused`.
    """

    def __init__(
        self, liveness: Liveness, headroom: float, emit: Callable[[Message], None], codec: Codec
    ) -> None:
        self.liveness = liveness
        self._headroom = headroom
        self._emit = emit
        self._split = codec.split_decoder(HEARTBEAT, _CHANGING_FROM)
        # What was last passed on of each node: its placement fields and hot flag.
        self._passed: dict[str, tuple[Any, ...]] = {}
        # Applied, not yet flushed: each node's newest accepted heartbeat (its leading
        # fields and the rest: one whole record when it was decoded at once), and whether
        # its agent restarted since the last flush.
        self._beats: dict[str, tuple[Fields, Fields, bool]] = {}
        # By message key (the node id): the bytes up to the changing fields of the node's
        # last accepted heartbeat whose leading fields were read (not of those applied
        # decoded, another schema version's), and those fields.
        self._heads: dict[bytes, tuple[bytes, Fields]] = {}
        self.live = False
        self.refused = 0

    def apply(self, event: Event) -> None:
        record = event.record
        try:
            check_heartbeat(record, _now_ms())
        except InvalidField:
            if self.live:
                raise
            self.refused += 1
            return
        self._observe(record["node_id"], record, record)

    def skim(self, key: bytes | None, value: bytes | None) -> bool:
        """Apply a heartbeat from its bytes (see :class:`~lepton.bus.Skimming`): False,
        having changed nothing, for anything but a whole current ``NodeHeartbeat`` keyed
        by its node id."""
        if key is None or value is None:
            return False
        split = self._split
        try:
            known = self._heads.get(key)
            if known is not None and value.startswith(known[0]):
                prefix, head = known
            else:
                if not value.startswith(split.header):
                    return False  # another version of the schema, or not one at all
                head, end = split.head(value, len(split.header))
                if head["node_id"].encode() != key:
                    return False
                check_node(head)
                prefix = value[:end]
            tail, end = split.tail(value, len(prefix))
            check_beat(tail, _now_ms())
        except Exception:  # malformed or refused: decoding it in full says what is wrong
            return False
        if end != len(value):
            return False
        if self._observe(head["node_id"], head, tail) and (known is None or known[1] is not head):
            self._heads[key] = (prefix, head)
        return True

    def _observe(self, node_id: str, head: Fields, tail: Fields) -> bool:
        """Judge a heartbeat and keep it if accepted (returns whether it was)."""
        seen = self.liveness.observe(
            node_id, tail["agent_started_at"], tail["sequence"], tail["sent_at"], _now_ms()
        )
        if seen is Observation.STALE or seen is Observation.OVERFLOW:
            return False
        earlier = self._beats.get(node_id)
        restarted = seen is Observation.RESTARTED or (earlier is not None and earlier[2])
        self._beats[node_id] = (head, tail, restarted)
        return True

    async def flush(self) -> None:
        changed: list[tuple[Fields, bool, bool]] = []
        beats, self._beats = self._beats, {}
        for node_id, (head, tail, restarted) in beats.items():
            capacity = head["capacity"]
            hot = _runs_hot(tail["usage"], capacity, self._headroom)
            # Skimmed heartbeats of a node share one ``head``: the comparison is then one
            # of identical objects, which costs next to nothing.
            view = (hot, capacity, head["region"], head["gpu_type"], head["labels"])
            if restarted or self._passed.get(node_id) != view:
                self._passed[node_id] = view
                record = head if head is tail else head | tail
                changed.append((record, restarted, hot))
        if changed:
            self._emit({"kind": "nodes", "nodes": changed})

    def sweep(self, now_ms: int) -> int | None:
        """Judge liveness and emit its verdicts, if any. Returns how long no heartbeat from
        any node has arrived, or None while they flow (see :class:`Liveness`)."""
        verdicts = self.liveness.sweep(now_ms)
        for node_id in verdicts.dead:
            # Back from the dead, it is news again; and the table stays bounded.
            self._passed.pop(node_id, None)
            self._heads.pop(node_id.encode(), None)
        if verdicts.newly_suspect or verdicts.recovered or verdicts.dead:
            self._emit(
                {
                    "kind": "verdicts",
                    "suspect": list(verdicts.newly_suspect),
                    "recovered": list(verdicts.recovered),
                    "dead": list(verdicts.dead),
                }
            )
        return verdicts.pipeline_stalled_ms
