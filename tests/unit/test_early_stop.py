"""A service process stopped while it is still importing its libraries exits cleanly."""

from __future__ import annotations

import subprocess
import sys

STOPPED_WHILE_STARTING = """
import os, signal
from lepton.runtime import early_stop
early_stop.remember_stops()  # what the console scripts do first
os.kill(os.getpid(), signal.SIGTERM)  # `lepton down` during the imports
from lepton.runtime.service import run

def factory():
    raise AssertionError("a service was built after the stop")

run(factory)
"""


def test_a_stop_during_the_imports_ends_the_process_with_status_0_and_says_so() -> None:
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_WHILE_STARTING],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "stopped before starting" in done.stderr + done.stdout
    assert "SIGTERM" in done.stderr + done.stdout
