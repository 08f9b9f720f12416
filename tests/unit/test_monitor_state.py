"""The monitor's state model: every event type, out-of-order arrival, snapshots."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lepton.services.monitor.entities import Lag, Window, quantile
from lepton.services.monitor.sampling import Sampler
from lepton.services.monitor.state import MonitorState
from tests.samples import sample

T0 = 1_700_000_000_000
DEAD_AFTER = 15_000


def beat(
    node: str, sent_at: int, sequence: int = 1, started: int = T0, **usage: int
) -> dict[str, Any]:
    record = sample("lepton.NodeHeartbeat")
    record.update(
        node_id=node,
        region="eu",
        sent_at=sent_at,
        sequence=sequence,
        agent_started_at=started,
        capacity={"cpu_millicores": 4000, "memory_mib": 8000, "gpus": 0, "network_mbps": 100},
        usage={"cpu_millicores": 1000, "memory_mib": 2000, "gpus": 0, "network_mbps": 0, **usage},
    )
    return record


def request(
    job: str, submitted_at: int = T0, tenant: str = "acme", pclass: str = "high"
) -> dict[str, Any]:
    record = sample("lepton.JobRequested")
    record.update(
        job_id=job, tenant=tenant, priority_class=pclass, priority=5, submitted_at=submitted_at
    )
    return record


def assigned(job: str, at: int, node: str = "n1", action: str = "run") -> dict[str, Any]:
    record = sample("lepton.JobAssigned")
    record.update(job_id=job, node_id=node, tenant="acme", action=action, attempt=0, assigned_at=at)
    return record


def event(job: str, kind: str, at: int, **extra: Any) -> dict[str, Any]:
    record = sample("lepton.JobEvent", 0)
    record.update(job_id=job, kind=kind, tenant="acme", time=at, **extra)
    return record


def feed(state: MonitorState, *events: tuple[str, dict[str, Any]]) -> None:
    for event_type, record in events:
        state.apply(event_type, "topic", record)


HB, REQ, ASG, EV = (
    "lepton.NodeHeartbeat",
    "lepton.JobRequested",
    "lepton.JobAssigned",
    "lepton.JobEvent",
)


def test_heartbeat_sets_node_and_liveness_follows_sent_at_not_read_time() -> None:
    state = MonitorState()
    feed(state, (HB, beat("n1", T0)))
    node = state.nodes["n1"]
    assert node.utilisation() == {"cpu_millicores": 0.25, "memory_mib": 0.25, "network_mbps": 0.0}
    assert state.alive(node, T0 + DEAD_AFTER, DEAD_AFTER)
    assert not state.alive(node, T0 + DEAD_AFTER + 1, DEAD_AFTER)
    assert state.utilisation(T0, DEAD_AFTER)["eu"]["cpu_millicores"] == 0.25
    assert state.utilisation(T0 + 60_000, DEAD_AFTER) == {}


def test_stale_heartbeats_are_ignored_and_agent_restarts_counted() -> None:
    state = MonitorState()
    feed(state, (HB, beat("n1", T0 + 2000, sequence=2)), (HB, beat("n1", T0 + 1000, sequence=1)))
    assert state.nodes["n1"].sequence == 2
    assert state.counters["stale_heartbeats"] == 1
    feed(state, (HB, beat("n1", T0 + 5000, sequence=1, started=T0 + 4000)))
    assert state.nodes["n1"].restarts == 1
    assert state.nodes["n1"].sent_at == T0 + 5000


def test_request_then_assignment_measures_scheduling_latency_and_queue_wait() -> None:
    state = MonitorState()
    feed(state, (REQ, request("j1", T0)), (REQ, request("j2", T0 + 100)))
    assert {k: len(v) for k, v in state.pending.items()} == {("acme", "high"): 2}
    assert state.oldest_waits(T0 + 1000) == {("acme", "high"): 1000}
    feed(state, (ASG, assigned("j1", T0 + 250)))
    assert state.jobs["j1"].state == "assigned"
    assert state.scheduling_latency.values(T0 + 250) == [250]
    assert state.queue_wait["acme", "high"].values(T0 + 250) == [250]
    assert state.oldest_waits(T0 + 1000) == {("acme", "high"): 900}
    # A second worker of the same gang is not a second measurement.
    feed(state, (ASG, assigned("j1", T0 + 300, node="n2")))
    assert state.scheduling_latency.values(T0 + 300) == [250]
    assert state.jobs["j1"].node_ids == ["n1", "n2"]


def test_assignment_read_before_its_request_still_gives_the_latency() -> None:
    state = MonitorState()
    feed(state, (ASG, assigned("j1", T0 + 400)), (REQ, request("j1", T0)))
    assert state.jobs["j1"].state == "assigned"
    assert state.pending == {}
    assert state.scheduling_latency.values(T0 + 400) == [400]


def test_job_lifecycle_durations_failures_preemptions_requeues() -> None:
    state = MonitorState()
    feed(
        state,
        (REQ, request("ok", T0)),
        (EV, event("ok", "queued", T0 + 1)),
        (EV, event("ok", "assigned", T0 + 10)),
        (EV, event("ok", "started", T0 + 20)),
        (EV, event("ok", "progress", T0 + 30, progress_percent=50.0, stage="searching")),
        (EV, event("ok", "succeeded", T0 + 2020)),
        (EV, event("ok", "succeeded", T0 + 2020)),  # redelivered
        (REQ, request("bad", T0)),
        (EV, event("bad", "started", T0 + 5)),
        (EV, event("bad", "preempted", T0 + 50)),
        (EV, event("bad", "requeued", T0 + 60)),
        (EV, event("bad", "assigned", T0 + 160)),
        (EV, event("bad", "failed", T0 + 200, reason="boom")),
    )
    ok, bad = state.jobs["ok"], state.jobs["bad"]
    assert (ok.state, ok.progress_percent, ok.stage) == ("succeeded", 50.0, "searching")
    assert state.job_durations.values(T0 + 3000) == [2000]
    assert (bad.state, bad.preemptions, bad.requeues, bad.reason) == ("failed", 1, 1, "boom")
    assert state.job_outcomes.values(T0 + 3000) == [0.0, 1.0]
    assert state.counters["jobs_finished"] == 2
    # The requeued wait is a queue wait, not a scheduling latency (that is the first one).
    assert state.queue_wait["acme", "high"].values(T0 + 200) == [10, 100]
    assert state.scheduling_latency.values(T0 + 200) == [10]
    assert state.pending == {}
    assert +state.jobs_by_state == {"succeeded": 1, "failed": 1}


def test_queued_event_before_the_request_moves_to_the_right_queue() -> None:
    state = MonitorState()
    feed(state, (EV, event("j", "queued", T0 + 50)))
    assert ("acme", "unknown") in state.pending
    feed(state, (REQ, request("j", T0, pclass="batch")))
    assert state.pending == {("acme", "batch"): {"j": T0}}


def test_rejected_and_cancelled_leave_the_queue() -> None:
    state = MonitorState()
    feed(state, (REQ, request("a")), (REQ, request("b")))
    feed(state, (EV, event("a", "rejected", T0 + 1, reason="demand.gpus")))
    feed(state, (EV, event("b", "cancelled", T0 + 2)))
    assert state.pending == {}
    assert state.jobs["a"].reason == "demand.gpus"


def test_the_job_view_is_bounded_and_forgets_the_quietest() -> None:
    state = MonitorState(max_jobs=3)
    for index in range(3):
        feed(state, (REQ, request(f"j{index}", T0 + index)))
    feed(state, (EV, event("j0", "started", T0 + 10)))  # j0 is now the most recent
    feed(state, (REQ, request("j3", T0 + 20)))
    assert list(state.jobs) == ["j2", "j0", "j3"]
    assert "j1" not in state.pending["acme", "high"]
    assert sum(state.jobs_by_state.values()) == 3


def test_datasets_ready_and_rejected() -> None:
    state = MonitorState()
    requested = sample("lepton.DatasetRequested")
    requested.update(tenant="acme", dataset="houses", requested_at=T0)
    ready = sample("lepton.DataReady")
    ready.update(tenant="acme", dataset="houses", ready_at=T0 + 10, rows=90)
    rejected = sample("lepton.DataRejected")
    rejected.update(
        tenant="acme", dataset="bad", rejected_at=T0 + 5, code="empty", reason="no rows"
    )
    feed(
        state,
        ("lepton.DatasetRequested", requested),
        ("lepton.DataReady", ready),
        ("lepton.DataRejected", rejected),
    )
    houses = state.datasets["acme", "houses"]
    assert (houses.state, houses.rows, houses.versions) == ("ready", 90, 1)
    assert houses.quality["rows_read"] == ready["quality"]["rows_read"]
    bad = state.datasets["acme", "bad"]
    assert (bad.state, bad.reject_code, bad.reject_reason) == ("rejected", "empty", "no rows")
    assert state.counters["datasets_rejected"] == 1
    assert state.counters["rows_ingested"] == 90


def evaluation(model: str, at: int, **metrics: float) -> dict[str, Any]:
    record = sample("lepton.ModelEvaluated")
    record.update(
        model_id=model, tenant="acme", model_name="churn", evaluated_at=at, metrics=metrics
    )
    return record


def test_models_metrics_history_roc_champions_and_regression() -> None:
    state = MonitorState()
    ready = sample("lepton.ModelReady")
    ready.update(model_id="m1", tenant="acme", model_name="churn")
    first = evaluation("m1", T0, roc_auc=0.90)
    first["curves"] = [{"kind": "roc", "label": None, "x": [0.0, 1.0], "y": [0.0, 1.0]}]
    promoted = sample("lepton.ModelPromoted")
    promoted.update(tenant="acme", model_name="churn", model_id="m1", verdict="promoted")
    feed(
        state,
        ("lepton.ModelReady", ready),
        ("lepton.ModelEvaluated", first),
        ("lepton.ModelPromoted", promoted),
        ("lepton.ModelEvaluated", evaluation("m2", T0 + 10, roc_auc=0.80)),
    )
    assert state.models["m1"].algorithm == ready["algorithm"]
    assert state.models["m1"].roc == [{"label": None, "x": [0.0, 1.0], "y": [0.0, 1.0]}]
    assert state.champions["acme", "churn"] == "m1"
    assert [p["model_id"] for p in state.model_history["acme", "churn"]] == ["m1", "m2"]
    metric, drop = state.model_regressions()["acme", "churn"]
    assert metric == "roc_auc"
    assert drop == pytest.approx(0.10)


def test_lower_is_better_metrics_regress_upwards() -> None:
    state = MonitorState()
    feed(
        state,
        ("lepton.ModelEvaluated", evaluation("a", T0, rmse=1.0)),
        ("lepton.ModelEvaluated", evaluation("b", T0 + 1, rmse=1.5)),
    )
    assert state.model_regressions()["acme", "churn"] == ("rmse", 0.5)


def test_audit_and_unknown_types_are_counted() -> None:
    state = MonitorState()
    audit = sample("lepton.AuditEvent")
    state.apply("lepton.AuditEvent", "lepton.audit", audit)
    state.apply("lepton.Alert", "lepton.alerts", sample("lepton.Alert"))
    assert state.audit[audit["action"], audit["outcome"]] == 1
    assert state.events_by_topic == {"lepton.audit": 1, "lepton.alerts": 1}
    assert state.version == 2


def test_pipeline_lag_and_dead_letter_growth_window() -> None:
    state = MonitorState()
    state.set_pipeline({("g", "t"): Lag(5, 1.0, 10, 15)}, {"t": 2}, T0)
    state.set_pipeline({}, {"t": 3}, T0 + 60_000)
    state.set_pipeline({}, {"t": 7}, T0 + 400_000)
    assert state.dead_letter_increase("t", 300_000, T0 + 400_000) == 4
    assert state.dead_letter_increase("t", 300_000, T0 + 800_000) == 0
    assert state.dead_letter_increase("other", 300_000, T0) == 0


def test_snapshot_round_trips_through_json() -> None:
    state = MonitorState()
    feed(state, (HB, beat("n1", T0)), (REQ, request("j1", T0)), (EV, event("j2", "started", T0)))
    state.apply("lepton.ModelEvaluated", "x", evaluation("m", T0, accuracy=0.5))
    restored = MonitorState.from_snapshot(json.loads(json.dumps(state.to_snapshot())))
    assert restored.nodes == state.nodes
    assert restored.jobs == state.jobs
    assert restored.pending == state.pending
    assert restored.models == state.models
    assert restored.model_history == state.model_history
    assert restored.jobs_by_state == state.jobs_by_state
    assert restored.events_by_topic == state.events_by_topic


def test_sampler_points_and_rates() -> None:
    state = MonitorState()
    sampler = Sampler()
    feed(state, (HB, beat("n1", T0)), (REQ, request("j1", T0)))
    first = sampler.points(state, T0, DEAD_AFTER)
    assert first["nodes", "alive"] == 1
    assert first["queue_pending", "acme/high"] == 1
    assert first["utilisation", "all/cpu_millicores"] == 0.25
    assert ("events_per_s", "all") not in first  # no rate from one sample
    feed(state, (EV, event("j1", "started", T0 + 1)), (EV, event("j1", "succeeded", T0 + 2)))
    second = sampler.points(state, T0 + 2000, DEAD_AFTER)
    assert second["events_per_s", "all"] == 1.0
    assert second["jobs_finished_per_s", "all"] == 0.5


def test_window_and_quantiles() -> None:
    assert quantile([], 0.5) is None
    assert quantile([3, 1, 2], 0.5) == 2
    assert quantile(range(1, 101), 0.95) == 95
    window = Window(horizon_ms=1000)
    window.add(T0, 1)
    window.add(T0 + 900, 2)
    assert window.values(T0 + 1500) == [2]
    assert window.summary(T0 + 5000) == {"count": 0, "p50": None, "p95": None, "max": None}


def test_a_node_reporting_on_a_job_it_was_not_given_is_not_shown() -> None:
    state = MonitorState()
    feed(
        state,
        (REQ, request("j", T0)),
        (EV, event("j", "assigned", T0 + 10, node_id="holder")),
        (EV, event("j", "succeeded", T0 + 20, node_id="intruder")),
        (EV, event("j", "started", T0 + 30, node_id="holder")),
    )
    job = state.jobs["j"]
    assert (job.state, job.node_ids) == ("running", ["holder"])
    assert state.counters["job_reports_refused"] == 1
