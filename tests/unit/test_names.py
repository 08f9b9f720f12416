"""The one rule for names, the bound on free text, and the shared heartbeat check."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lepton.contract.job_events import job_event
from lepton.contract.names import (
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    InvalidField,
    check_finite,
    check_name,
    clip,
    name_problem,
)
from lepton.scheduling.intake import MAX_AHEAD_MS, check_heartbeat
from lepton.sdk.builders import InvalidRequest, PredictRequest, Resources, millicores
from tests.integration.scheduler_support import heartbeat, now_ms


@pytest.mark.parametrize(
    "name", ["acme", "house_prices", "n1", "gpu-节点-07", "房价-B区", "v1.2", "नमस्ते", "a" * 64]
)
def test_names_of_any_script_are_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "1 to 64 characters, got 0"),
        ("a" * 10_000, "1 to 64 characters, got 10000"),
        ("house\tprices", "U+0009"),
        ("acme\u202e", "U+202E"),  # right-to-left override: shows as another name
        ("ac\u200bme", "U+200B"),  # zero-width space
        ("a b", "U+0020"),
        ("a/b", "U+002F"),  # the key separator of <tenant>/<dataset>
        ("m@champion", "U+0040"),  # the model reference separator
        ("tenant:acme", "U+003A"),  # the principal separator
        ("-x", "character 1"),
        (".hidden", "character 1"),
        ("e\u0301", "NFC"),  # é spelt with a combining accent: one name, one spelling
        (42, "got int"),
    ],
)
def test_what_is_not_a_name_is_refused_with_the_reason(value: Any, says: str) -> None:
    problem = name_problem(value)
    assert problem is not None
    assert says in problem
    with pytest.raises(InvalidField, match=f"^tenant: .*{re.escape(says)}") as refused:
        check_name(value, "tenant")
    assert refused.value.field == "tenant"


def test_a_refusal_never_echoes_megabytes() -> None:
    problem = name_problem("\t" + "x" * 1_000_000)
    assert problem is not None
    assert len(problem) < 300


def test_free_text_is_clipped_by_producers() -> None:
    assert clip("short") == "short"
    clipped = clip("x" * 1_000_000)
    assert clipped is not None
    assert len(clipped) == MAX_TEXT_CHARS
    assert clipped.endswith("…")
    event = job_event("j", "failed", "acme", reason="boom " * 500_000, stage="s" * 5000)
    assert len(event["reason"] or "") == len(event["stage"] or "") == MAX_TEXT_CHARS


@pytest.mark.parametrize("cpus", [float("inf"), float("-inf"), float("nan"), 0.0, -1.0, 0.0001])
def test_cores_must_be_finite_and_at_least_a_millicore(cpus: float) -> None:
    with pytest.raises(InvalidRequest, match=r"demand.cpus"):
        millicores(cpus)
    with pytest.raises(InvalidRequest, match=r"demand.cpus"):
        Resources.of(cpus=cpus)
    assert millicores(0.5) == 500
    assert check_finite(2, "x") == 2


def test_a_prediction_request_names_its_tenant_and_model() -> None:
    from pydantic import ValidationError

    PredictRequest(tenant="acme", model="房价-B区@model-房价-001-2", rows=[{"x": 1}])
    for tenant, model in (("a" * (MAX_NAME_CHARS + 1), "m"), ("acme", "m\u202e@champion")):
        with pytest.raises(ValidationError):
            PredictRequest(tenant=tenant, model=model, rows=[{"x": 1}])


# -- heartbeats: one check for every reader -------------------------------------------------


def test_a_plausible_heartbeat_passes() -> None:
    check_heartbeat(heartbeat("gpu-节点-07", sequence=1), now_ms())


@pytest.mark.parametrize(
    ("shape", "field"),
    [
        ({"capacity": {"cpu_millicores": -64_000}}, "capacity.cpu_millicores"),
        ({"capacity": {"memory_mib": 2**31 - 1}}, "capacity.memory_mib"),
        ({"capacity": {"gpus": 1_000_000}}, "capacity.gpus"),
        ({"usage": {"network_mbps": -1}}, "usage.network_mbps"),
        ({"sent_at": 253_402_300_799_000}, "sent_at"),  # 9999-12-31
        ({"agent_started_at": 253_402_300_799_000}, "agent_started_at"),
        ({"node_id": "n\u202e1"}, "node_id"),
        ({"region": "eu west"}, "region"),
        ({"labels": {f"k{i}": "v" for i in range(100)}}, "labels"),
        ({"labels": {"zone": "x" * 10_000}}, "labels.zone"),
        ({"interval_ms": 0}, "interval_ms"),
        ({"running_job_ids": ["j"] * 20_000}, "running_job_ids"),
    ],
)
def test_a_heartbeat_no_node_could_send_is_refused_naming_the_field(
    shape: dict[str, Any], field: str
) -> None:
    record = heartbeat("n", sequence=1)
    for name, value in shape.items():
        record[name] = (
            record[name] | value if isinstance(value, dict) and name != "labels" else value
        )
    with pytest.raises(InvalidField) as refused:
        check_heartbeat(record, now_ms())
    assert refused.value.field == field


def test_a_clock_a_little_ahead_passes_one_far_ahead_does_not() -> None:
    now = now_ms()
    check_heartbeat(heartbeat("n", sequence=1, sent=now + MAX_AHEAD_MS), now)
    with pytest.raises(InvalidField, match=r"sent_at"):
        check_heartbeat(heartbeat("n", sequence=1, sent=now + MAX_AHEAD_MS + 1), now)


# -- the services' own checks of requests ---------------------------------------------------


def test_ingest_refuses_a_tenant_or_dataset_that_is_no_name_as_its_answer() -> None:
    from lepton.services.ingest.spec import IngestRejected, check_names

    check_names({"tenant": "医院", "dataset": "house_prices"})
    for tenant, dataset, field in (("t" * 10_000, "d", "tenant"), ("acme", "d\t\u202e", "dataset")):
        with pytest.raises(IngestRejected) as refused:
            check_names({"tenant": tenant, "dataset": dataset})
        assert refused.value.code == "spec_invalid"
        assert refused.value.reason.startswith(f"{field}: ")


def test_the_evaluator_refuses_a_model_reference_that_is_no_name() -> None:
    from lepton.services.evaluator.prediction import PredictionFailure, parse_model_ref

    assert parse_model_ref("房价-B区@model-房价-001-2").name == "房价-B区"
    for text, says in (("m\u202e", "model: "), ("m@x\ty", "model version: ")):
        with pytest.raises(PredictionFailure) as refused:
            parse_model_ref(text)
        assert refused.value.code == "invalid_model_ref"
        assert refused.value.message.startswith(says)
