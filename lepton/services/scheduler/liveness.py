"""Which nodes are alive, judged from the heartbeats' own clocks, never from read times.

Each node's last heartbeat carries the time its agent sent it. The *watermark* is the
newest send time seen from any node (capped at the reader's clock, so a node whose
clock runs ahead cannot push it forward). A node is judged by how far its last
heartbeat lies behind the watermark:

- past ``suspect_after_ms`` it gets no new work;
- past ``dead_after_ms`` it is dead, and its jobs are requeued.

Consumer lag delays every node's heartbeats and the watermark alike, so lag never
kills a healthy node. If the watermark itself stops moving while the reader's clock
goes on — every node silent at once — the fault is taken to be ours (the heartbeat
pipeline), reported as :attr:`Verdicts.pipeline_stalled_ms`, and nobody is declared dead.
When the watermark then jumps ahead past ``dead_after_ms``, nodes are judged from where
the heartbeats resumed (:class:`~lepton.scheduling.watermark.Watermark`).

A heartbeat whose sequence went backwards within the same agent run, or that is older
than the one already held, is ignored. The table holds at most ``max_nodes`` nodes;
heartbeats from further unknown nodes are counted in :attr:`Liveness.overflow`, not stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lepton.scheduling.intake import CLOCK_SKEW_MS
from lepton.scheduling.watermark import Watermark

__all__ = ["Liveness", "Observation", "Verdicts"]


@dataclass(slots=True)
class _Last:
    agent_started_at_ms: int
    sequence: int
    sent_at_ms: int  # capped at the reader's clock when read
    suspect: bool = False


class Observation(StrEnum):
    ACCEPTED = "accepted"
    STALE = "stale"  # older than what is held, or a sequence that went backwards
    OVERFLOW = "overflow"  # an unknown node while the table is full
    RESTARTED = "restarted"  # accepted, and the agent restarted since the last one


@dataclass(frozen=True, slots=True)
class Verdicts:
    """The outcome of one sweep."""

    newly_suspect: tuple[str, ...] = ()
    recovered: tuple[str, ...] = ()
    dead: tuple[str, ...] = ()
    pipeline_stalled_ms: int | None = None


@dataclass(slots=True)
class Liveness:
    suspect_after_ms: int = 5_000
    dead_after_ms: int = 15_000
    max_nodes: int = 200_000
    # A node clock this far ahead of ours is capped rather than trusted (one further
    # ahead than intake.MAX_AHEAD_MS is refused before it gets here).
    max_clock_skew_ms: int = CLOCK_SKEW_MS
    overflow: int = 0
    _nodes: dict[str, _Last] = field(default_factory=dict)
    _watermark: Watermark = field(init=False)
    # No verdict can change before the watermark passes this (the soonest a node turns
    # suspect or dead), unless a suspect node beat again (``_recheck``): until then a
    # sweep need not look at every node, which with 100,000 of them took ~6 % of a core.
    _next_due_ms: int = 0
    _recheck: bool = False

    def __post_init__(self) -> None:
        self._watermark = Watermark(self.dead_after_ms)

    def __len__(self) -> int:
        return len(self._nodes)

    def observe(
        self, node_id: str, agent_started_at_ms: int, sequence: int, sent_at_ms: int, now_ms: int
    ) -> Observation:
        """Record a heartbeat read at ``now_ms`` (positional: called for every heartbeat)."""
        sent = min(sent_at_ms, now_ms + self.max_clock_skew_ms)
        last = self._nodes.get(node_id)
        if last is None:
            if len(self._nodes) >= self.max_nodes:
                self.overflow += 1
                return Observation.OVERFLOW
            self._nodes[node_id] = _Last(agent_started_at_ms, sequence, sent)
            self._advance(min(sent, now_ms))
            self._next_due_ms = min(self._next_due_ms, sent + self.suspect_after_ms)
            return Observation.ACCEPTED
        if agent_started_at_ms < last.agent_started_at_ms or (
            agent_started_at_ms == last.agent_started_at_ms
            and (sequence <= last.sequence or sent < last.sent_at_ms)
        ):
            return Observation.STALE
        restarted = agent_started_at_ms > last.agent_started_at_ms
        # A restarted agent's clock may be behind its last run's: its node falls due sooner.
        self._next_due_ms = min(self._next_due_ms, sent + self.suspect_after_ms)
        if last.suspect:
            self._recheck = True  # it may have recovered
        last.agent_started_at_ms, last.sequence, last.sent_at_ms = (
            agent_started_at_ms,
            sequence,
            sent,
        )
        self._advance(min(sent, now_ms))
        return Observation.RESTARTED if restarted else Observation.ACCEPTED

    def _advance(self, sent: int) -> None:
        if self._watermark.advance(sent):
            self._recheck = True  # the pipeline resumed: every node's verdict is due again

    def sweep(self, now_ms: int) -> Verdicts:
        """Judge every node against the watermark; dead nodes are forgotten."""
        if not self._nodes:
            return Verdicts()
        watermark = self._watermark.newest_ms
        stalled = now_ms - watermark
        if stalled > self.dead_after_ms:
            return Verdicts(pipeline_stalled_ms=stalled)
        if watermark <= self._next_due_ms and not self._recheck:
            return Verdicts()
        newly_suspect, recovered, dead = [], [], []
        next_due = watermark + self.suspect_after_ms
        for node_id, last in self._nodes.items():
            heard = self._watermark.heard(last.sent_at_ms)
            silent = watermark - heard
            if silent > self.dead_after_ms:
                dead.append(node_id)
                continue
            if silent > self.suspect_after_ms:
                if not last.suspect:
                    last.suspect = True
                    newly_suspect.append(node_id)
            elif last.suspect:
                last.suspect = False
                recovered.append(node_id)
            limit = self.dead_after_ms if last.suspect else self.suspect_after_ms
            next_due = min(next_due, heard + limit)
        for node_id in dead:
            del self._nodes[node_id]
        self._next_due_ms, self._recheck = next_due, False
        return Verdicts(tuple(newly_suspect), tuple(recovered), tuple(dead))

    def is_suspect(self, node_id: str) -> bool:
        last = self._nodes.get(node_id)
        return last is not None and last.suspect
