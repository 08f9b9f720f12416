"""examples/job.yaml, which the README points to, is a job the scheduler would accept."""

from __future__ import annotations

from pathlib import Path

from lepton.cli.jobs import build_job, read_yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "job.yaml"


def test_the_example_job_file_is_a_valid_training_job() -> None:
    job = build_job(read_yaml(EXAMPLE))  # exits with the CLI's error if it were not
    assert job.task.kind == "train"
    assert job.task.target_column
    assert job.dataset is not None
