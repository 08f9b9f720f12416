"""What Lepton's code exports passes `promtool check metrics` (Prometheus's own naming and
typing rules: units, `_total`, no `quantile` label off a summary), with the monitor's
cluster view filled in, and gauges read a value from the start rather than "no data".

The same check on the /metrics of each real running service: test_metrics_live.py.
"""

from __future__ import annotations

from typing import Any, cast

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

from lepton.runtime.resilience import Health
from lepton.services.monitor.entities import Lag
from lepton.services.monitor.metrics_export import MonitorCollector
from lepton.services.monitor.rules import RuleEngine, default_rules, read_signals
from lepton.services.monitor.state import MonitorState
from lepton.services.monitor.views import Monitor
from tests.deploy.test_prometheus_rules import exported_metrics, promtool
from tests.samples import sample
from tests.unit.test_monitor_rules import T0, heartbeat


def busy_monitor() -> Monitor:
    """A monitor whose view has a node, a queued job, a lagging group and a firing alert."""
    state = MonitorState()
    for sent in (T0, T0 + 60_000):
        state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n1", sent, cpu=990))
    job = sample("lepton.JobRequested")
    job.update(job_id="j", tenant="acme", priority_class="batch", submitted_at=T0)
    state.apply("lepton.JobRequested", "jr", job)
    state.set_pipeline({("lepton-ingest", "t"): Lag(20_000, 90.0, 0, 20_000)}, {"t": 2}, T0)
    engine = RuleEngine(default_rules())
    for now in (T0, T0 + 61_000):
        engine.evaluate(read_signals(state, engine.rules, now), now)
    assert engine.firing()
    return Monitor(state, engine, cast(Any, None), 15_000, clock=lambda: T0 + 61_000)


def exposition(monitor: Monitor) -> str:
    exported_metrics()  # imports every module that defines metrics
    registry = prometheus_client.CollectorRegistry()
    collector = MonitorCollector()
    collector.monitors.add(monitor)
    registry.register(collector)
    own = prometheus_client.generate_latest(registry).decode()
    return prometheus_client.generate_latest().decode() + own


def test_everything_lepton_exports_passes_promtool() -> None:
    text = exposition(busy_monitor())
    checked = promtool("check", "metrics", given=text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert 'lepton_alerts_firing{rule="consumer_lag_high",severity="warning"} 1.0' in text
    assert "lepton_cluster_utilisation_ratio{" in text
    assert "quantile=" not in text


def test_gauges_read_a_value_before_anything_happened() -> None:
    Health("probe-service")
    idle = Monitor(MonitorState(), RuleEngine(default_rules()), cast(Any, None), 15_000)
    families = {f.name: f for f in text_string_to_metric_families(exposition(idle))}
    degraded = {
        sample.labels["component"]: sample.value
        for sample in families["lepton_service_degraded"].samples
        if sample.labels["service"] == "probe-service"
    }
    assert degraded == {"kafka": 0, "postgresql": 0}
    firing = {s.labels["rule"]: s.value for s in families["lepton_alerts_firing"].samples}
    assert firing == {rule.name: 0 for rule in default_rules()}
    # A histogram is exported before its first observation (this process's tests may
    # have observed it since: the count is whatever they did, never a missing series).
    latency = families["lepton_scheduling_latency_seconds"]
    assert latency.type == "histogram"
    assert len([s for s in latency.samples if s.name.endswith("_count")]) == 1
