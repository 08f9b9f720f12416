"""Job requests become job specs, or rejections that name the field and the reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lepton.scheduling.entities import Policy, Resources
from lepton.scheduling.intake import Rejection, job_spec, node_state
from tests.samples import sample


def request(**changes: Any) -> dict[str, Any]:
    record = sample("lepton.JobRequested", 1)
    for path, value in changes.items():
        target = record
        *parents, leaf = path.split("__")
        for parent in parents:
            target[parent] = dict(target[parent])
            target = target[parent]
        target[leaf] = value
    return record


def test_a_valid_request_becomes_a_job_spec() -> None:
    record = request(placement_policy="spread", runtime_estimate_s=60)
    spec = job_spec(record)
    assert not isinstance(spec, Rejection)
    assert spec.job_id == record["job_id"]
    assert spec.tenant == record["tenant"]
    assert spec.demand == Resources(**record["demand"])
    assert spec.gang_size == record["gang_size"]
    assert spec.policy is Policy.SPREAD
    assert spec.estimated_duration_ms == 60_000
    assert spec.submitted_at_ms == record["submitted_at"]


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"tenant": ""}, "tenant", "1 to 64 characters, got 0"),
        ({"tenant": "a" * 10_000}, "tenant", "1 to 64 characters, got 10000"),
        ({"tenant": "ac\u202eme"}, "tenant", "U+202E"),
        ({"job_id": "j 1"}, "job_id", "U+0020"),
        ({"dataset": {"name": "house\tprices"}}, "dataset.name", "U+0009"),
        ({"dataset": {"name": "d", "owner": "a/b"}}, "dataset.owner", "U+002F"),
        ({"task__model_name": "m@x"}, "task.model_name", "U+0040"),
        ({"constraints__region": "e\u0301u"}, "constraints.region", "NFC"),
        ({"name": "x" * 2000}, "name", "at most 1024 characters"),
        ({"priority": 10**9}, "priority", "between"),
        ({"task__kind": "unknown"}, "task.kind", "unknown task kind"),
        ({"task__algorithm": "deep_magic"}, "task.algorithm", "unknown algorithm 'deep_magic'"),
        ({"task__search_space": "{not json"}, "task.search_space", "not valid JSON"),
        ({"task__search_space": "[1, 2]"}, "task.search_space", "JSON object"),
        # Bounded so that every instruction carrying the task fits the broker's limit.
        (
            {"task__search_space": json.dumps({"ridge": {"alpha": ["x" * 70_000]}})},
            "task.search_space",
            "at most 65536 characters",
        ),
        ({"task__target_column": "p" * 2000}, "task.target_column", "at most 1024"),
        ({"task__scoring": "r" * 2000}, "task.scoring", "at most 1024"),
        ({"task__target_column": None}, "task.target_column", "target column"),
        ({"task__cv_folds": 1}, "task.cv_folds", "between 2 and 100"),
        ({"demand__cpu_millicores": -1}, "demand.cpu_millicores", "from 1 to"),
        ({"demand__cpu_millicores": 0}, "demand.cpu_millicores", "from 1 to"),
        ({"demand__memory_mib": 0}, "demand.memory_mib", "from 1 to"),
        ({"demand__gpus": True}, "demand.gpus", "whole number"),
        (
            {"demand__gpus": 0, "constraints__gpu_type": "a100"},
            "constraints.gpu_type",
            "demand.gpus is 0",
        ),
        ({"gang_size": 0}, "gang_size", "between 1"),
        ({"max_retries": -1}, "max_retries", "between 0"),
        ({"placement_policy": "random"}, "placement_policy", "unknown policy 'random'"),
        ({"runtime_estimate_s": 0}, "runtime_estimate_s", "between 1"),
        ({"submitted_at": 0}, "submitted_at", "epoch milliseconds"),
    ],
)
def test_invalid_requests_are_rejected_with_the_field_and_reason(
    changes: dict[str, Any], field: str, reason: str
) -> None:
    rejection = job_spec(request(**changes))
    assert isinstance(rejection, Rejection)
    assert rejection.field == field
    assert reason in rejection.reason


def test_a_rejection_keeps_the_job_and_tenant_for_its_event() -> None:
    record = request(gang_size=0)
    rejection = job_spec(record)
    assert isinstance(rejection, Rejection)
    assert (rejection.job_id, rejection.tenant) == (record["job_id"], record["tenant"])


def test_a_heartbeat_becomes_a_node_state() -> None:
    record = sample("lepton.NodeHeartbeat")
    node = node_state(record, accepts_new_work=False)
    assert node.node_id == record["node_id"]
    assert node.capacity == Resources(**record["capacity"])
    assert node.running_job_ids == tuple(record["running_job_ids"])
    assert node.accepts_new_work is False
    assert json.dumps(node.labels) == json.dumps(record["labels"])
