"""The heartbeat watermark both the scheduler and the monitor judge liveness against.

The watermark is the newest send time of any node's heartbeat (its caller caps it at the
reader's clock). A node is as silent as its last heartbeat lies behind it, so consumer
lag, which delays every heartbeat alike, never makes a node silent. When the watermark
jumps ahead by more than ``stall_after_ms`` at once, every node was silent (the heartbeat
pipeline stalled) and the first one is heard again: from then on each node is judged from
that moment, as if all had beaten then, so the others are not dead for a silence that was
the pipeline's, only for one that goes on after it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Watermark"]


@dataclass(slots=True)
class Watermark:
    stall_after_ms: int
    newest_ms: int = 0
    resumed_ms: int = 0  # where heartbeats resumed after the last stall

    def advance(self, sent_ms: int) -> bool:
        """Take a heartbeat sent at ``sent_ms``; True if it ended a stall."""
        if sent_ms <= self.newest_ms:
            return False
        resumed = bool(self.newest_ms) and sent_ms - self.newest_ms > self.stall_after_ms
        if resumed:
            self.resumed_ms = sent_ms
        self.newest_ms = sent_ms
        return resumed

    def heard(self, sent_ms: int) -> int:
        """When a node last sent ``sent_ms`` counts as heard from (not before a resume)."""
        return max(sent_ms, self.resumed_ms)

    def silent_ms(self, sent_ms: int) -> int:
        """How long a node whose last heartbeat was sent at ``sent_ms`` has been silent."""
        return self.newest_ms - self.heard(sent_ms)
