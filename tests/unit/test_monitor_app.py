"""The monitor's shell pieces that need no servers: lag estimates, live-update fan-out,
request validation helpers, and the shipped Prometheus and Grafana files."""

from __future__ import annotations

import json
from pathlib import Path

import structlog
import yaml

from lepton.services.monitor.app import MonitorService
from lepton.services.monitor.entities import Lag
from lepton.services.monitor.pipeline_watch import LagTracker
from lepton.services.monitor.sampling import METRICS, queue_subject, tenant_prefix
from lepton.services.monitor.settings import MonitorSettings
from lepton.services.monitor.state import MonitorState
from lepton.services.monitor.views import Hub
from lepton.services.monitor.web import Denials, encode_json
from lepton.services.monitor.web.api import _TENANT_SERIES
from lepton.services.monitor.web.denials import Denial

ROOT = Path(__file__).parents[2]
T0 = 1_700_000_000_000


def test_lag_in_seconds_from_the_commit_rate_or_from_the_stall() -> None:
    tracker = LagTracker()
    key = ("lepton-scheduler", "lepton.jobs.requested")
    assert tracker.update(key, 100, 100, T0).seconds == 0.0
    first = tracker.update(key, 100, 300, T0 + 1000)
    # No commit progress yet: the group has been stuck since the previous look.
    assert (first.messages, first.seconds) == (200, 1.0)
    moving = tracker.update(key, 200, 400, T0 + 2000)  # 100 messages/s, 200 behind
    assert (moving.messages, moving.seconds) == (200, 2.0)
    stalled = tracker.update(key, 200, 500, T0 + 5000)
    assert (stalled.messages, stalled.seconds) == (300, 3.0)
    assert tracker.update(key, 200, 500, T0 + 6000).seconds == 4.0


def test_a_slow_dashboard_gets_the_newest_update_only() -> None:
    hub = Hub()
    with hub.subscribe(None) as mailbox:
        assert hub.clients == 1
        hub.publish(b"1", None)
        hub.publish(b"2", None)
        assert mailbox.get_nowait() == b"2"
        assert mailbox.empty()
    assert hub.clients == 0


def test_each_dashboard_gets_only_its_audiences_updates() -> None:
    hub = Hub()
    with hub.subscribe("acme") as acme, hub.subscribe("beta") as beta, hub.subscribe(None) as ops:
        assert hub.audiences() == {"acme", "beta", None}
        hub.publish(b"acme's", "acme")
        hub.publish(b"everyone's", None)
        assert acme.get_nowait() == b"acme's"
        assert ops.get_nowait() == b"everyone's"
        assert beta.empty()
        hub.close()
        assert [m.get_nowait() for m in (acme, beta, ops)] == [Hub.CLOSE] * 3


def test_json_never_carries_nan_or_infinity() -> None:
    encoded = encode_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": "<script>"})
    assert json.loads(encoded) == {"a": None, "b": [None, 1.5], "c": "<script>"}


def test_settings_defaults_and_environment() -> None:
    settings = MonitorSettings()
    assert (settings.monitor_host, settings.monitor_port) == ("127.0.0.1", 8765)
    assert (settings.monitor_metrics_host, settings.monitor_metrics_port) == ("127.0.0.1", 8766)
    for name, field in MonitorSettings.model_fields.items():
        if name.startswith("monitor_"):
            assert field.description is not None
            assert field.description.startswith(f"LEPTON_{name.upper()}:")


def test_the_scrape_config_scrapes_the_monitors_open_metrics_bind() -> None:
    # The dashboard's metrics: tests/deploy/test_grafana_dashboard.py.
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    # The monitor's open metrics bind, not its API, which needs a token.
    settings = MonitorSettings()
    metrics = f"{settings.monitor_metrics_host}:{settings.monitor_metrics_port}"
    assert jobs["lepton-monitor"]["static_configs"][0]["targets"] == [metrics]
    assert all(job["metrics_path"] == "/metrics/" for job in jobs.values())


def test_liveness_verdicts_wait_while_the_monitor_itself_is_behind() -> None:
    service = MonitorService(MonitorSettings(monitor_node_dead_after_s=15))
    state = MonitorState()
    assert service._behind(state)  # its own lag not measured yet
    state.set_pipeline({("lepton-monitor", "t"): Lag(10, 1.0, 0, 10)}, {}, T0)
    assert not service._behind(state)
    # Another group's lag is that group's problem.
    state.set_pipeline({("lepton-scheduler", "t"): Lag(9000, 60.0, 0, 9000)}, {}, T0)
    assert not service._behind(state)
    state.set_pipeline({("lepton-monitor", "t"): Lag(9000, 6.0, 0, 9000)}, {}, T0)
    assert service._behind(state)


async def test_refusals_wait_for_the_broker_in_a_bounded_queue_and_stay_short() -> None:
    denials = Denials(structlog.get_logger("test"), limit=2)
    long_path = "/api/jobs/" + "x" * 1000
    for claimed in ("tenant:a", "tenant:b", "tenant:c"):
        denials.record(
            Denial(401, "token expired", "GET", long_path, "127.0.0.1", "anonymous", "", claimed)
        )
    assert denials.dropped == 1  # logged, but beyond the bound: not queued
    first = await denials.next_batch()
    assert [event["detail"] for event in first] == [
        "401 token expired; from 127.0.0.1; the token named tenant:a",
        "401 token expired; from 127.0.0.1; the token named tenant:b",
    ]
    assert first[0]["resource"] == "monitor:GET " + long_path[:200]
    assert (first[0]["action"], first[0]["outcome"]) == ("read", "denied")
    # Not sent yet (the broker was away): the same events again.
    assert await denials.next_batch() == first
    denials.sent(len(first))
    denials.record(Denial(403, "forbidden", "GET", "/api/pipeline", "::1", "tenant:a", "a"))
    (after,) = await denials.next_batch()
    assert (after["actor"], after["tenant"], after["detail"]) == (
        "tenant:a",
        "a",
        "403 forbidden; from ::1",
    )


def test_the_series_a_tenant_may_read_are_series_the_monitor_records() -> None:
    # A renamed metric must not silently become readable, or unreadable, by tenants.
    assert set(_TENANT_SERIES) <= set(METRICS)
    assert {"queue_pending", "queue_wait_p95_s"} == {m for m, own in _TENANT_SERIES.items() if own}


def test_a_tenants_queue_subjects_are_its_own_whatever_the_names() -> None:
    # Free-text names: a "/" in a tenant's name cannot make its subjects another's.
    assert queue_subject("acme", "high") == "acme/high"
    assert queue_subject("a/b", "c") != queue_subject("a", "b/c")
    assert not queue_subject("a", "b/c").startswith(tenant_prefix("a/b"))
    assert not queue_subject("a/b", "c").startswith(tenant_prefix("a"))
