"""Whether a run overlapped a silence long enough for its lease to have been taken back.

The scheduler gives a run's job to another node once the agent's heartbeats fall
``LEPTON_NODE_DEAD_AFTER_S`` behind the others'. An agent that could not get a heartbeat
to the broker for ``LEPTON_TRAINER_LEASE_S`` (set below that threshold) was paused (SIGSTOP,
a frozen VM) or cut off, and may have been declared dead meanwhile: before it reports a
run that overlapped such a silence, it checks whether the scheduler took the lease back
(:mod:`lepton.services.trainer.revocation`). Measured on the monotonic clock, which keeps
counting while the process is stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LeaseClock"]


@dataclass(slots=True)
class LeaseClock:
    """Heartbeats the broker acknowledged, and the silences between them."""

    lapse_after_s: float
    last_renewed: float  # monotonic seconds of the newest acknowledged heartbeat
    # The end of the newest silence longer than ``lapse_after_s``, and its length.
    lapse_ended: float = float("-inf")
    lapse_s: float = 0.0

    def renewed(self, now: float) -> None:
        """A heartbeat was acknowledged at ``now``."""
        silent = now - self.last_renewed
        if silent > self.lapse_after_s:
            self.lapse_ended, self.lapse_s = now, silent
        self.last_renewed = now

    def lapsed(self, started: float, now: float) -> float | None:
        """How long the agent was silent, if a silence over the limit overlapped a run
        that started at ``started`` (the silence going on now included); else None."""
        silent = now - self.last_renewed
        if silent > self.lapse_after_s:
            return silent
        if self.lapse_ended > started:
            return self.lapse_s
        return None
