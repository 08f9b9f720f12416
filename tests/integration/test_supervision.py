"""`lepton up` on the real stack: services started against another stack are replaced; a
service killed hard is restarted by the supervisor and the restart shows in `lepton
status`; `lepton stack down` refuses while the services run; `lepton down` drains them all."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from lepton import devstack
from lepton.config import Settings
from lepton.sdk.local import LOCAL_SERVICES, start_supervisor
from lepton.sdk.supervisor import PLAN_FILE, Policy, SupervisorState, read_state
from tests.integration.processes import lepton_cli
from tests.unit.test_supervisor import POLITE

pytestmark = pytest.mark.integration

RESTART_BOUND_S = 90.0
# Where a stale supervisor's services were told the stack is (nothing listens there).
ELSEWHERE = {
    "LEPTON_KAFKA_BOOTSTRAP": "127.0.0.1:9",
    "LEPTON_DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:9/lepton",
}


def restarted(directory: Path, name: str, killed_pid: int) -> SupervisorState:
    """The supervisor's state once ``name`` runs again under a new pid (bounded)."""
    deadline = time.monotonic() + RESTART_BOUND_S
    while time.monotonic() < deadline:
        state = read_state(directory)
        if state is not None:
            service = state.services[name]
            if service.state == "running" and service.pid not in (None, killed_pid):
                return state
        time.sleep(0.1)
    raise AssertionError(
        f"{name} was not restarted within {RESTART_BOUND_S:.0f} s: {read_state(directory)}"
    )


def test_a_killed_service_is_restarted_and_stack_down_refuses_under_services(
    stack_settings: Settings, tmp_path: Path
) -> None:
    local_stack = stack_settings.kafka_access() is None
    state_dir = stack_settings.state_dir if local_stack else tmp_path / "state"
    env = {
        "LEPTON_STATE_DIR": str(state_dir),
        "LEPTON_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}.",
        "LEPTON_MONITOR_PORT": "0",
        "LEPTON_MONITOR_METRICS_PORT": "0",
        "LEPTON_HEALTH_PORT": "0",  # not lepton up's fixed ports: a stack may run beside
        "LEPTON_INGEST_ROOTS": json.dumps([str(tmp_path)]),
        "LEPTON_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    directory = state_dir / "services"
    directory.mkdir(parents=True, exist_ok=True)
    # Services a supervisor started against another stack (other addresses, credentials):
    # `lepton up` must not call them "already running".
    (directory / PLAN_FILE).write_text(json.dumps({"ingest": [sys.executable, "-c", POLITE]}))
    stale = start_supervisor(directory, ELSEWHERE, Policy(stop_grace_s=5))
    up = lepton_cli("up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert "ingest: started against another stack" in up.stdout
        assert "restarting the services" in up.stdout
        assert not devstack.is_alive(stale.pid)
        assert not devstack.is_alive(stale.services["ingest"].pid)
        for name in LOCAL_SERVICES:
            assert f"{name}: started (pid " in up.stdout
        first = read_state(directory)
        assert first is not None
        victim = first.services["ingest"].pid
        assert victim is not None

        os.kill(victim, signal.SIGKILL)
        after = restarted(directory, "ingest", victim)
        ingest = after.services["ingest"]
        assert ingest.restarts == 1
        assert ingest.last_exit == "signal SIGKILL"
        assert after.pid == first.pid, "the same supervisor"
        shown = lepton_cli("status", env=env)
        assert shown.returncode == 0, shown.stderr
        row = next(line for line in shown.stdout.splitlines() if line.split()[:1] == ["ingest"])
        assert row.split()[1:3] == ["running", str(ingest.pid)]
        assert "signal SIGKILL" in row
        assert row.split()[-3] == "1", "one restart"
        status = json.loads(lepton_cli("status", "--json", env=env).stdout)
        assert status["supervisor_running"]
        assert status["services"]["ingest"]["restarts"] == 1

        again = lepton_cli("up", env=env)
        assert again.returncode == 0, again.stderr
        assert "ingest: already running" in again.stdout
        assert read_state(directory).pid == first.pid, "nothing started twice"  # type: ignore[union-attr]

        if local_stack:
            refused = lepton_cli("stack", "down", env=env)
            assert refused.returncode == 1
            assert "services run on this stack: scheduler, ingest" in refused.stderr
            assert "--force" in refused.stderr
            assert devstack.status(stack_settings).running, "the stack was left running"
    finally:
        down = lepton_cli("down", env=env)
    assert down.returncode == 0, down.stderr
    final = read_state(directory)
    assert final is not None
    assert final.stopped
    for name, service in final.services.items():
        assert service.last_exit == "status 0", f"{name} drained and exited cleanly"
        assert f"{name}: stopped, last exit status 0" in down.stdout
    assert not devstack.is_alive(final.pid)
    assert not any(devstack.is_alive(pid) for pid in (victim, ingest.pid))
    status = json.loads(lepton_cli("status", "--json", env=env).stdout)
    assert not status["supervisor_running"]
