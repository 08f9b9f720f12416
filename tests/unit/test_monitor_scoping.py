"""The monitor's views for one tenant: its own work only, the cluster's nodes, nothing that
adds up every tenant's (the web layer picks the audience; these are the views it calls)."""

from __future__ import annotations

import json
from typing import Any, cast

from lepton.services.monitor.rules import RuleEngine, default_rules, read_signals
from lepton.services.monitor.state import MonitorState
from lepton.services.monitor.views import Monitor
from tests.samples import sample

T0 = 1_700_000_000_000
NOW = T0 + 700_000  # both tenants' waiting jobs have waited long enough to alert


def record(event_type: str, **fields: Any) -> dict[str, Any]:
    found = sample(event_type, 0) if event_type == "lepton.JobEvent" else sample(event_type)
    found.update(fields)
    return found


def tenant_work(tenant: str) -> list[tuple[str, dict[str, Any]]]:
    """A running job, a waiting one, a dataset, an evaluated and promoted model."""
    job = f"{tenant}-job"
    return [
        (
            "lepton.JobRequested",
            record(
                "lepton.JobRequested",
                job_id=job,
                tenant=tenant,
                name=f"{tenant}-secret-name",
                priority_class="high",
                priority=5,
                submitted_at=T0,
            ),
        ),
        (
            "lepton.JobAssigned",
            record(
                "lepton.JobAssigned",
                job_id=job,
                tenant=tenant,
                node_id="n1",
                action="run",
                attempt=0,
                assigned_at=T0 + 100,
            ),
        ),
        (
            "lepton.JobEvent",
            record("lepton.JobEvent", job_id=job, tenant=tenant, kind="started", time=T0 + 200),
        ),
        (
            "lepton.JobRequested",
            record(
                "lepton.JobRequested",
                job_id=f"{tenant}-waiting",
                tenant=tenant,
                priority_class="high",
                priority=5,
                submitted_at=T0,
            ),
        ),
        (
            "lepton.DataRejected",
            record(
                "lepton.DataRejected",
                tenant=tenant,
                dataset=f"{tenant}-data",
                rejected_at=T0,
                reason=f"{tenant}-reason",
            ),
        ),
        (
            "lepton.ModelEvaluated",
            record(
                "lepton.ModelEvaluated",
                model_id=f"{tenant}-model",
                tenant=tenant,
                model_name=f"{tenant}-churn",
                evaluated_at=T0,
                metrics={"roc_auc": 0.9},
            ),
        ),
        (
            "lepton.ModelPromoted",
            record(
                "lepton.ModelPromoted",
                tenant=tenant,
                model_name=f"{tenant}-churn",
                model_id=f"{tenant}-model",
                verdict="promoted",
            ),
        ),
    ]


def two_tenants() -> Monitor:
    state = MonitorState()
    beat = record(
        "lepton.NodeHeartbeat",
        node_id="n1",
        sent_at=NOW,
        sequence=1,
        agent_started_at=T0,
        running_job_ids=["acme-job", "beta-job"],
    )
    for event_type, fields in [
        ("lepton.NodeHeartbeat", beat),
        *tenant_work("acme"),
        *tenant_work("beta"),
    ]:
        state.apply(event_type, "topic", fields)
    engine = RuleEngine(default_rules())
    # Both queues have waited ten minutes: the rule starts, then fires a minute later.
    for now in (NOW - 60_000, NOW):
        engine.evaluate(read_signals(state, engine.rules, now), now)
    # No store: none of the views used here reads the time series.
    return Monitor(state, engine, cast(Any, None), 15_000)


def test_a_tenants_views_hold_nothing_of_another_tenant() -> None:
    monitor = two_tenants()
    everyone = json.dumps(monitor.live_update(NOW))
    assert "beta-secret-name" in everyone
    assert "acme-secret-name" in everyone
    views = {
        "live update": monitor.live_update(NOW, "acme"),
        "overview": monitor.overview(NOW, "acme"),
        "queues": monitor.queues(NOW, "acme"),
        "latency": monitor.scheduling_latency(NOW, "acme"),
        "nodes": monitor.nodes(NOW, tenant="acme"),
        "jobs": monitor.jobs(tenant="acme"),
        "datasets": monitor.datasets(tenant="acme"),
        "models": monitor.leaderboard(tenant="acme"),
        "alerts": monitor.active_alerts("acme"),
    }
    for name, view in views.items():
        assert "beta" not in json.dumps(view), name
    update = views["live update"]
    assert [job["job_id"] for job in update["jobs"]] == ["acme-waiting", "acme-job"]
    assert [d["dataset"] for d in update["datasets"]] == ["acme-data"]
    assert [a["subject"] for a in update["alerts"]] == ["acme/high"]
    assert update["nodes"][0]["running_job_ids"] == ["acme-job"]
    assert [m["model_name"] for m in views["models"]] == ["acme-churn"]


def test_a_tenants_overview_counts_its_own_work_and_shows_the_shared_nodes() -> None:
    monitor = two_tenants()
    mine = monitor.overview(NOW, "acme")
    everyone = monitor.overview(NOW)
    assert mine["nodes"] == everyone["nodes"] == {"total": 1, "alive": 1, "dead": 0}
    assert mine["utilisation"] == everyone["utilisation"]
    assert mine["jobs"]["by_state"] == {"running": 1, "requested": 1}
    assert everyone["jobs"]["by_state"] == {"running": 2, "requested": 2}
    assert (mine["queue"]["pending"], everyone["queue"]["pending"]) == (1, 2)
    assert mine["data"]["rejected"] == 1
    assert mine["models"] == {"count": 1, "evaluated": 1, "champions": 1}
    assert everyone["models"] == {"count": 2, "evaluated": 2, "champions": 2}
    assert (mine["alerts"]["firing"], everyone["alerts"]["firing"]) == (1, 2)
    # The consumer groups, dead letters and event counts are everyone's.
    assert mine["pipeline"] is None
    assert everyone["pipeline"]["events"] == 15


def test_a_tenants_scheduling_latency_is_of_its_own_jobs() -> None:
    # Within five minutes of the assignments (at NOW they have left the window).
    monitor = two_tenants()
    assert monitor.scheduling_latency(T0 + 1000, "acme") == {
        "count": 1,
        "p50": 100,
        "p95": 100,
        "max": 100,
    }
    assert monitor.scheduling_latency(T0 + 1000)["count"] == 2
    assert monitor.scheduling_latency(NOW, "acme")["count"] == 0


def test_a_tenants_jobs_index_follows_changes_forgetting_and_snapshots() -> None:
    state = MonitorState(max_jobs=3)
    for index, tenant in enumerate(("acme", "beta", "acme", "acme")):
        state.apply(
            "lepton.JobRequested",
            "topic",
            record(
                "lepton.JobRequested",
                job_id=f"j{index}",
                tenant=tenant,
                priority_class="high",
                priority=5,
                submitted_at=T0 + index,
            ),
        )
    # j0 was forgotten (the view holds three); a change moves j2 to the front.
    assert [job.job_id for job in state.jobs_of("acme")] == ["j3", "j2"]
    state.apply(
        "lepton.JobEvent",
        "topic",
        record("lepton.JobEvent", job_id="j2", tenant="acme", kind="started", time=T0 + 9),
    )
    assert [job.job_id for job in state.jobs_of("acme")] == ["j2", "j3"]
    restored = MonitorState.from_snapshot(json.loads(json.dumps(state.to_snapshot())))
    assert [job.job_id for job in restored.jobs_of("acme")] == ["j2", "j3"]
    assert [job.job_id for job in restored.jobs_of("beta")] == ["j1"]
    assert list(restored.jobs_of("nobody")) == []
