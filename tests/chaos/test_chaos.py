"""The short form of the chaos matrix (``python -m bench.chaos --short``), its targets
asserted: no work lost, no effect duplicated, every service healthy and a probe answered
within 30 s of each fault's end, no service exiting on its own, and each fault's own
(one alert and no mass requeue when every heartbeat stops, one dead letter per garbage
message and reader, every hostile file rejected).

Slow (about a quarter of an hour on two cores) and skipped unless asked:
``pytest -m chaos tests/chaos``; ``LEPTON_CHAOS_FAULTS`` narrows the matrix (fnmatch
patterns, comma-separated, as ``--faults``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(3600)]


def test_the_short_matrix_meets_every_target(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    command = [sys.executable, "-m", "bench.chaos", "--short", "--out", str(out)]
    if faults := os.environ.get("LEPTON_CHAOS_FAULTS"):
        command += ["--faults", faults]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=3500, check=False)
    assert finished.returncode == 0, finished.stderr[-4000:]
    print(finished.stdout)  # the table, for the test's report
    outcomes = json.loads(out.read_text())["outcomes"]
    assert outcomes, "the matrix ran no fault"
    missed = [
        f"{o['run']}: {', '.join(check for check, met in o['checks'].items() if not met)}"
        + (f" ({o['status']})" if o["status"] != "ran" else "")
        for o in outcomes
        if o["status"] != "ran" or not all(o["checks"].values())
    ]
    assert not missed, "targets missed:\n" + "\n".join(missed)
