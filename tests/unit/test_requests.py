"""The SDK's request builders: exactly the contract's bytes, and errors at build time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from lepton.contract import default_codec, schemas_dir
from lepton.sdk.builders import (
    DatasetRequest,
    InvalidRequest,
    JobRequest,
    PredictRequest,
    Resources,
    Source,
    TrainingTask,
    describe,
)

BUILDERS: list[tuple[str, type[BaseModel], str]] = [
    ("job_requested", JobRequest, "lepton.JobRequested"),
    ("dataset_requested", DatasetRequest, "lepton.DatasetRequested"),
    ("predict_requested", PredictRequest, "lepton.PredictRequested"),
]


def vectors(name: str) -> list[dict[str, object]]:
    loaded: list[dict[str, object]] = json.loads(
        (schemas_dir() / "vectors" / f"{name}.json").read_text(encoding="utf-8")
    )
    return loaded


@pytest.mark.parametrize(("vector", "builder", "event"), BUILDERS)
def test_builders_encode_the_golden_vectors_byte_for_byte(
    vector: str, builder: type[BaseModel], event: str
) -> None:
    for case in vectors(vector):
        built = builder.model_validate(case["record"])
        record = built.to_record()  # type: ignore[attr-defined]
        assert record == case["record"], case["description"]
        assert default_codec().encode(event, record).hex() == case["bytes_hex"]


def test_a_job_from_keywords_fills_the_contract_defaults() -> None:
    job = JobRequest(
        tenant="acme",
        task=TrainingTask(target_column="price", search_space={"ridge": {"alpha": {}}}),
        demand=Resources.of(cpus=1.5, memory_mib=512),
    )
    record = job.to_record()
    assert record["demand"] == {
        "cpu_millicores": 1500,
        "memory_mib": 512,
        "gpus": 0,
        "network_mbps": 0,
    }
    assert record["task"]["search_space"] == '{"ridge": {"alpha": {}}}'
    assert record["job_id"].startswith("job-")
    assert record["submitted_at"] > 0
    default_codec().encode("lepton.JobRequested", record)  # encodable as it is
    job.check()


def test_a_dataset_name_stands_for_its_latest_version() -> None:
    job = JobRequest.model_validate(
        {"tenant": "acme", "dataset": "houses", "task": {"target_column": "price"}}
    )
    assert job.to_record()["dataset"] == {"name": "houses", "version": None, "owner": None}


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"tenant": "a", "task": {"algorithm": "magic"}}, "task.algorithm: unknown algorithm"),
        ({"tenant": "a", "task": {}, "tenat": "b"}, "tenat: Extra inputs are not permitted"),
        ({"task": {}}, "tenant: Field required"),
        ({"tenant": "a", "task": {}, "demand": {"cpu_millicores": -1}}, "demand.cpu_millicores"),
        ({"tenant": "a", "task": {"problem_type": "guess"}}, "task.problem_type"),
    ],
)
def test_a_malformed_job_is_refused_when_built(given: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        JobRequest.model_validate(given)
    assert says in describe(caught.value)


@pytest.mark.parametrize(
    ("task", "demand", "says"),
    [
        ({}, None, "task.target_column: a training job needs its target column"),
        ({"target_column": "p", "cv_folds": 1}, None, "task.cv_folds"),
        ({"target_column": "p"}, {"cpu_millicores": 0, "memory_mib": 0}, "demand.cpu_millicores:"),
        ({"target_column": "p"}, {"cpu_millicores": 500, "memory_mib": 0}, "demand.memory_mib:"),
    ],
)
def test_check_applies_the_schedulers_own_rules(
    task: dict[str, object], demand: dict[str, int] | None, says: str
) -> None:
    given: dict[str, object] = {"tenant": "a", "task": task}
    if demand is not None:
        given["demand"] = demand
    job = JobRequest.model_validate(given)  # the contract admits it ...
    with pytest.raises(InvalidRequest, match=says):
        job.check()  # ... the scheduler would not


def test_a_file_source_knows_its_format_from_the_name(tmp_path: Path) -> None:
    source = Source.file(tmp_path / "houses.csv.gz")
    assert (source.kind, source.uri) == ("csv", str(tmp_path / "houses.csv.gz"))
    assert Source.file("s3://bucket/x.parquet").uri == "s3://bucket/x.parquet"
    assert Source.file(tmp_path / "data.txt", kind="jsonl").kind == "jsonl"
    with pytest.raises(InvalidRequest, match="cannot tell the format"):
        Source.file(tmp_path / "data.txt")


def test_dataset_and_prediction_requests_are_checked_when_built() -> None:
    with pytest.raises(ValidationError, match="postgres source needs its query"):
        Source(name="s", kind="postgres", uri="warehouse")
    with pytest.raises(ValidationError, match="join needs its key columns"):
        DatasetRequest(
            tenant="t",
            dataset="d",
            sources=[Source.file("a.csv"), Source.file("b.csv")],
            integration={"mode": "join"},  # type: ignore[arg-type]
        )
    with pytest.raises(ValidationError, match="at most 1000"):
        PredictRequest(tenant="t", model="m", rows=[{"x": 1}] * 1001)
    with pytest.raises(ValidationError):
        PredictRequest(tenant="t", model="m", rows=[{"x": [1, 2]}])  # type: ignore[list-item]
