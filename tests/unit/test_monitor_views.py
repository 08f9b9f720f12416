"""What the dashboard's views say about a job, a dataset and a leaderboard (issue 20):
progress once done, a refusal a newer version replaced, a job's name, the ranking metric."""

from __future__ import annotations

from typing import Any, cast

from lepton.services.monitor.rules import RuleEngine, default_rules
from lepton.services.monitor.state import MonitorState
from lepton.services.monitor.views import Monitor
from tests.samples import sample

T0 = 1_700_000_000_000


def record(event_type: str, **fields: Any) -> dict[str, Any]:
    found = sample(event_type, 0) if event_type == "lepton.JobEvent" else sample(event_type)
    found.update(fields)
    return found


def feed(state: MonitorState, *events: tuple[str, dict[str, Any]]) -> None:
    for event_type, fields in events:
        state.apply(event_type, "topic", fields)


def monitor_of(*events: tuple[str, dict[str, Any]]) -> Monitor:
    state = MonitorState()
    feed(state, *events)
    # No store: none of the views used here reads the time series.
    return Monitor(state, RuleEngine(default_rules()), cast(Any, None), 15_000)


def training_request(job_id: str, **task: Any) -> tuple[str, dict[str, Any]]:
    request = record(
        "lepton.JobRequested",
        job_id=job_id,
        tenant="acme",
        name=None,
        priority_class="high",
        priority=5,
        submitted_at=T0,
        dataset={"name": "房价", "version": None, "owner": None},
    )
    request["task"] = {**request["task"], "kind": "train", **task}
    return "lepton.JobRequested", request


def test_a_succeeded_job_reads_100_percent_whatever_it_last_reported() -> None:
    monitor = monitor_of(
        training_request("j1"),
        (
            "lepton.JobEvent",
            record(
                "lepton.JobEvent",
                job_id="j1",
                tenant="acme",
                kind="progress",
                time=T0 + 10,
                progress_percent=96.0,
            ),
        ),
    )
    assert monitor.job("j1")["progress_percent"] == 96.0
    done = record("lepton.JobEvent", job_id="j1", tenant="acme", kind="succeeded", time=T0 + 20)
    feed(monitor.state, ("lepton.JobEvent", done))
    assert monitor.job("j1")["progress_percent"] == 100.0


def test_a_job_without_a_name_of_its_own_is_named_by_the_model_it_trains() -> None:
    monitor = monitor_of(
        training_request("by-dataset", model_name=None),
        training_request("by-model", model_name="diagnosis"),
    )
    assert (monitor.job("by-dataset")["name"], monitor.job("by-dataset")["model_name"]) == (
        None,
        "房价",
    )
    assert monitor.job("by-model")["model_name"] == "diagnosis"


def test_a_ready_version_clears_the_refusal_of_an_older_one() -> None:
    rejected = record(
        "lepton.DataRejected",
        tenant="acme",
        dataset="houses",
        rejected_at=T0,
        code="empty",
        reason="no rows",
    )
    ready = record("lepton.DataReady", tenant="acme", dataset="houses", ready_at=T0 + 10)
    monitor = monitor_of(("lepton.DataRejected", rejected))
    (refused,) = monitor.datasets()
    assert (refused["reject_code"], refused["reject_reason"]) == ("empty", "no rows")
    feed(monitor.state, ("lepton.DataReady", ready))
    (fixed,) = monitor.datasets()
    assert (fixed["state"], fixed["reject_code"], fixed["reject_reason"]) == ("ready", None, None)
    assert fixed["rejects"] == 1  # the count of refusals stays


def evaluated(model_id: str, at: int, **metrics: float) -> tuple[str, dict[str, Any]]:
    return "lepton.ModelEvaluated", record(
        "lepton.ModelEvaluated",
        model_id=model_id,
        tenant="acme",
        model_name="diagnosis",
        evaluated_at=at,
        metrics=metrics,
    )


def promoted(model_id: str, metric: str, at: int) -> tuple[str, dict[str, Any]]:
    return "lepton.ModelPromoted", record(
        "lepton.ModelPromoted",
        tenant="acme",
        model_name="diagnosis",
        model_id=model_id,
        verdict="promoted",
        primary_metric=metric,
        decided_at=at,
    )


def test_the_leaderboard_ranks_by_the_metric_promotion_compared() -> None:
    # By roc_auc m1 leads; by f1_macro, which the evaluator's policy compared, m2 does.
    models = [
        evaluated("m1", T0, roc_auc=0.95, f1_macro=0.70),
        evaluated("m2", T0 + 1, roc_auc=0.90, f1_macro=0.80),
    ]
    before = monitor_of(*models).leaderboard()[0]
    assert before["primary_metric"] == "roc_auc"  # no decision yet: the first known metric
    (board,) = monitor_of(*models, promoted("m2", "f1_macro", T0 + 2)).leaderboard()
    assert board["primary_metric"] == "f1_macro"
    assert [m["model_id"] for m in board["models"]] == ["m2", "m1"]


def test_the_newest_decision_names_the_metric_and_lower_is_better_ranks_upwards() -> None:
    models = [evaluated("m1", T0, r2=0.5, rmse=2.0), evaluated("m2", T0 + 1, r2=0.6, rmse=3.0)]
    # Read out of order: the decision taken last is the one that counts.
    monitor = monitor_of(*models, promoted("m1", "rmse", T0 + 5), promoted("m2", "r2", T0 + 3))
    (board,) = monitor.leaderboard()
    assert board["primary_metric"] == "rmse"
    assert [m["model_id"] for m in board["models"]] == ["m1", "m2"]
    # A decision by a metric no evaluation has (a manual rollback by cv_score) is no ranking.
    feed(monitor.state, promoted("m2", "cv_score", T0 + 9))
    assert monitor.leaderboard()[0]["primary_metric"] == "r2"
