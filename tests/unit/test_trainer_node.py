"""What a node agent measures: its own processes for a slice, the machine otherwise."""

from __future__ import annotations

import subprocess
import sys

import psutil

from lepton.services.trainer.node import NodeSpec, UsageMeter

ALLOCATE = (
    "import sys; block = bytearray(300 * 2**20); print('ready', flush=True); sys.stdin.read()"
)


def test_a_slice_counts_its_own_processes_and_not_the_rest_of_the_machine() -> None:
    meter = UsageMeter(NodeSpec("n1", cpus=1, memory_mib=1_000_000))
    alone = meter.measure()["memory_mib"]
    assert alone < psutil.virtual_memory().used // 2**20
    worker = subprocess.Popen(
        [sys.executable, "-c", ALLOCATE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"ready\n"  # the child holds its 300 MiB now
        assert meter.measure()["memory_mib"] >= alone + 300
    finally:
        worker.kill()
        worker.wait()


def test_the_whole_machine_reports_the_machine() -> None:
    used = UsageMeter(NodeSpec("n1")).measure()["memory_mib"]
    machine = psutil.virtual_memory().used // 2**20
    assert abs(used - machine) < max(256, machine // 10)
