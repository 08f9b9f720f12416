"""The supervisor of `lepton up` on stand-in services (small Python programs): backoff,
the crash-loop limit, clean exits, SIGHUP and a bounded stop. No servers; the real
services under it are tested in tests/integration/test_supervision.py."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lepton.devstack import StackError, exclusive, is_alive, wait_gone
from lepton.sdk.local import start_supervisor
from lepton.sdk.supervisor import PLAN_FILE, Policy, ServiceState, SupervisorState, read_state

POLICY = Policy(
    backoff_first_s=0.2, backoff_max_s=0.4, crash_limit=3, stable_after_s=30, stop_grace_s=2
)
# A service that runs until SIGTERM, then exits 0 (drained and committed).
POLITE = (
    "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])\n"
    "print('waiting for SIGTERM', flush=True)\nsignal.sigwait([signal.SIGTERM])"
)
PROGRAMS = {
    "crasher": "raise SystemExit(3)",
    "clean": "pass",
    "polite": POLITE,
    # Ignores SIGTERM: the supervisor's stop must end it with SIGKILL after the grace.
    "stubborn": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ignoring SIGTERM', flush=True)\nwhile True: signal.pause()",
}


def awaited(
    directory: Path, condition: Callable[[SupervisorState], bool], what: str, timeout_s: float = 30
) -> SupervisorState:
    """The supervisor's state once ``condition`` holds (it rewrites its file at each change)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = read_state(directory)
        if state is not None and condition(state):
            return state
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}; last state: {read_state(directory)}")


def logged(path: Path, line: str, timeout_s: float = 30) -> None:
    """Wait for a stand-in service to say it is ready (its handlers set)."""
    deadline = time.monotonic() + timeout_s
    while line not in path.read_text():
        assert time.monotonic() < deadline, f"{path.name} did not say {line!r}"
        time.sleep(0.05)


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[tuple[Path, SupervisorState]]:
    plan = {name: [sys.executable, "-c", program] for name, program in PROGRAMS.items()}
    (tmp_path / PLAN_FILE).write_text(json.dumps(plan))
    started = start_supervisor(tmp_path, {}, POLICY)
    try:
        yield tmp_path, started
    finally:
        if is_alive(started.pid):
            os.kill(started.pid, signal.SIGKILL)


def test_policy_backs_off_exponentially_up_to_its_cap() -> None:
    policy = Policy(backoff_first_s=1, backoff_max_s=20)
    assert [policy.backoff(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 20, 20]


def test_failures_are_restarted_until_the_crash_loop_limit(
    supervised: tuple[Path, SupervisorState],
) -> None:
    directory, started = supervised
    log = (directory / "supervisor.log").read_text()
    assert all(f'"service": "{name}"' in log for name in PROGRAMS), "every service started"

    state = awaited(
        directory,
        lambda s: s.services["crasher"].state == "crash loop",
        "the crasher given up on",
    )
    crasher = state.services["crasher"]
    assert crasher.restarts == POLICY.crash_limit - 1
    assert crasher.last_exit == "status 3"
    assert crasher.pid is None
    assert "gave up after 3 failures in a row" in crasher.note
    clean = state.services["clean"]
    assert (clean.state, clean.restarts, clean.last_exit) == ("stopped", 0, "status 0")
    assert state.services["polite"].state == "running"
    log = (directory / "supervisor.log").read_text()
    assert log.count('"event": "failed"') == POLICY.crash_limit - 1

    # `lepton up` asks again: what stopped or crash-looped is started once more.
    os.kill(started.pid, signal.SIGHUP)
    state = awaited(
        directory,
        lambda s: s.services["clean"].restarts == 1 and s.services["crasher"].restarts >= 3,
        "the stopped services started again",
    )
    assert state.services["polite"].pid == started.services["polite"].pid, "left running"


def test_a_killed_service_is_restarted_and_its_restart_recorded(
    supervised: tuple[Path, SupervisorState],
) -> None:
    directory, started = supervised
    victim = started.services["polite"]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    state = awaited(
        directory,
        lambda s: s.services["polite"].state == "running" and s.services["polite"].restarts == 1,
        "the killed service running again",
    )
    again: ServiceState = state.services["polite"]
    assert again.pid not in (None, victim.pid)
    assert again.last_exit == "signal SIGKILL"


def test_stop_drains_the_polite_and_kills_the_stubborn_within_the_grace(
    supervised: tuple[Path, SupervisorState],
) -> None:
    directory, started = supervised
    pids = {name: s.pid for name, s in started.services.items() if name in ("polite", "stubborn")}
    logged(directory / "polite.log", "waiting for SIGTERM")
    logged(directory / "stubborn.log", "ignoring SIGTERM")
    began = time.monotonic()
    os.kill(started.pid, signal.SIGTERM)
    assert wait_gone(started.pid, POLICY.stop_grace_s + 10), "the supervisor stopped in time"
    assert time.monotonic() - began >= POLICY.stop_grace_s * 0.9, "the stubborn one had its grace"
    final = read_state(directory)
    assert final is not None
    assert final.stopped
    assert final.services["polite"].last_exit == "status 0"
    assert final.services["stubborn"].last_exit == "signal SIGKILL"
    assert "killed: not stopped 2 s after SIGTERM" in final.services["stubborn"].note
    assert not any(is_alive(pid) for pid in pids.values())


def test_services_stop_when_their_supervisor_dies(
    supervised: tuple[Path, SupervisorState],
) -> None:
    _directory, started = supervised
    polite = started.services["polite"].pid
    assert polite is not None
    os.kill(started.pid, signal.SIGKILL)
    assert wait_gone(polite, 10), "no service outlives its supervisor unsupervised"


def test_a_program_that_cannot_start_is_a_failure_not_a_dead_supervisor(tmp_path: Path) -> None:
    plan = {"gone": [str(tmp_path / "no-such-program")], "polite": [sys.executable, "-c", POLITE]}
    (tmp_path / PLAN_FILE).write_text(json.dumps(plan))
    started = start_supervisor(tmp_path, {}, POLICY)
    try:
        state = awaited(
            tmp_path, lambda s: s.services["gone"].state == "crash loop", "the program given up"
        )
        assert (state.services["gone"].last_exit or "").startswith("not started: ")
        assert state.services["polite"].state == "running"
        assert is_alive(started.pid)
    finally:
        os.kill(started.pid, signal.SIGTERM)
        wait_gone(started.pid, 10)


def test_a_second_lepton_up_waits_for_the_first_within_a_bound(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    said: list[str] = []
    with (
        exclusive(lock, 5, "the first"),
        pytest.raises(StackError, match=r"the first has held .*\.lock for more than 0 s"),
        exclusive(lock, 0.2, "the first", said.append),
    ):
        pass
    assert said == ["waiting up to 0 s for the first to finish"]
    with exclusive(lock, 0.2, "the first", said.append):  # released: taken at once
        pass
    assert len(said) == 1
