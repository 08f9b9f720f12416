"""GPU discovery through nvidia-smi, and GPU grants for runs.

This machine has no GPU: an executable that prints what nvidia-smi prints on a two-GPU
node stands in for it, so the parsing, the slicing and the heartbeat are exercised.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from lepton.services.trainer.node import (
    Gpu,
    GpuDiscoveryError,
    NodeSpec,
    UsageMeter,
    discover_gpus,
    heartbeat,
    offered_gpus,
    parse_nvidia_smi,
)
from lepton.services.trainer.runs import pick_gpus

TWO_GPUS = "0, NVIDIA A100-SXM4-80GB, 81920, 0\n1, NVIDIA A100-SXM4-80GB, 81920, 97\n"


def fake_nvidia_smi(tmp_path: Path, output: str, code: int = 0) -> str:
    script = tmp_path / "nvidia-smi"
    script.write_text(
        f'#!/bin/sh\ncase "$*" in *--query-gpu=index,name,memory.total,utilization.gpu*'
        f"--format=csv,noheader,nounits*) printf '%s' '{output}'; exit {code};; esac\nexit 9\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_parses_nvidia_smi_rows() -> None:
    assert parse_nvidia_smi(TWO_GPUS + "2, Tesla T4, 15360, [N/A]\n") == [
        Gpu(0, "NVIDIA A100-SXM4-80GB", 81920, 0.0),
        Gpu(1, "NVIDIA A100-SXM4-80GB", 81920, 97.0),
        Gpu(2, "Tesla T4", 15360, 0.0),
    ]


@pytest.mark.parametrize("line", ["0, A100", "x, A100, 1, 0"])
def test_unexpected_output_is_a_specific_error(line: str) -> None:
    with pytest.raises(GpuDiscoveryError, match="line 1"):
        parse_nvidia_smi(line)


def test_discovery_asks_nvidia_smi_and_a_node_reports_its_gpus(tmp_path: Path) -> None:
    executable = fake_nvidia_smi(tmp_path, TWO_GPUS)
    found = discover_gpus(executable)
    assert [gpu.index for gpu in found] == [0, 1]
    spec = NodeSpec(
        "n1", cpus=1, memory_mib=512, gpus=offered_gpus(found, None), nvidia_smi=executable
    )
    record = heartbeat(
        spec,
        UsageMeter(spec).measure(),
        [],
        sequence=1,
        sent_at_ms=0,
        agent_started_at_ms=0,
        interval_ms=1000,
    )
    assert record["capacity"]["gpus"] == 2
    assert record["gpu_type"] == "NVIDIA A100-SXM4-80GB"
    assert record["usage"]["gpus"] == 1  # GPU 1 is 97 % busy


def test_a_failing_nvidia_smi_is_reported_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(GpuDiscoveryError, match="failed"):
        discover_gpus(fake_nvidia_smi(tmp_path, "", code=9))


def test_no_nvidia_smi_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert discover_gpus() == []
    spec = NodeSpec("n1", cpus=1, memory_mib=512)
    assert spec.capacity()["gpus"] == 0
    assert UsageMeter(spec).measure()["gpus"] == 0


def test_a_node_may_offer_a_slice_of_its_gpus_but_not_more_than_exist() -> None:
    found = parse_nvidia_smi(TWO_GPUS)
    assert offered_gpus(found, 1) == (found[0],)
    with pytest.raises(ValueError, match="has 2 NVIDIA GPU"):
        offered_gpus(found, 3)


def test_runs_get_gpus_no_other_run_holds() -> None:
    assert pick_gpus([0, 1, 2, 3], [1], 2) == [0, 2]
    assert pick_gpus([0, 1], [], 0) == []
    with pytest.raises(RuntimeError, match="only 1 of this node's 2 are free"):
        pick_gpus([0, 1], [0], 2)
