"""The trainer's lease clock: a silence over the lease voids the runs it overlapped."""

from __future__ import annotations

from lepton.services.trainer.lease import LeaseClock


def test_regular_heartbeats_keep_every_run_valid() -> None:
    clock = LeaseClock(lapse_after_s=10, last_renewed=0)
    for now in range(1, 60):
        clock.renewed(now)
    assert clock.lapsed(started=5, now=60) is None


def test_a_silence_going_on_now_voids_a_run() -> None:
    clock = LeaseClock(lapse_after_s=10, last_renewed=0)
    clock.renewed(3)
    assert clock.lapsed(started=2, now=12) is None
    assert clock.lapsed(started=2, now=14) == 11


def test_a_past_silence_voids_the_runs_it_overlapped_only() -> None:
    clock = LeaseClock(lapse_after_s=10, last_renewed=0)
    clock.renewed(1)
    clock.renewed(31)  # paused from 1 to 31: silent for 30 s
    clock.renewed(32)
    assert clock.lapsed(started=0.5, now=33) == 30  # running through the pause
    assert clock.lapsed(started=20, now=33) == 30  # started during it (never acknowledged)
    assert clock.lapsed(started=31.5, now=33) is None  # started after it


def test_a_silence_just_at_the_limit_is_not_a_lapse() -> None:
    clock = LeaseClock(lapse_after_s=10, last_renewed=0)
    clock.renewed(10)
    assert clock.lapsed(started=1, now=11) is None
