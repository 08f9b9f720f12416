"""deploy/prometheus scrapes what runs: prometheus.yml each service of `lepton up` on the
fixed port `lepton up` gives it, kubernetes.yml each pod of the chart by the annotations
and labels the chart gives it, with the same target labels in both."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from lepton.sdk import local
from lepton.services.monitor.settings import MonitorSettings
from tests.deploy.chart import ROOT, component, render, workloads

PROMETHEUS = ROOT / "deploy" / "prometheus"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROMETHEUS / name).read_text(encoding="utf-8"))
    return loaded


def scraped() -> dict[str, dict[str, str]]:
    """prometheus.yml's targets, each with its labels and metrics path."""
    found: dict[str, dict[str, str]] = {}
    for job in load("prometheus.yml")["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                assert target not in found, f"{target} scraped twice"
                found[target] = {**group["labels"], "path": job["metrics_path"]}
    return found


def node_id(command: list[str]) -> str:
    return command[command.index("--node-id") + 1]


def test_prometheus_scrapes_each_service_of_lepton_up_where_it_listens() -> None:
    expected: dict[str, dict[str, str]] = {}
    for name, command in local.LOCAL_SERVICES.items():
        actor = command[0].removeprefix("lepton-")
        if actor == "monitor":
            # Scraped on its metrics bind, with the cluster view, not on its health port.
            port = MonitorSettings.model_fields["monitor_metrics_port"].default
            expected[f"127.0.0.1:{port}"] = {"service": actor, "path": "/metrics/"}
            continue
        labels = {"service": actor, "path": "/metrics/"}
        if actor == "trainer":
            labels["node"] = node_id(command)
        expected[f"127.0.0.1:{local.LOCAL_HEALTH_PORTS[name]}"] = labels
    assert scraped() == expected


def test_lepton_up_gives_each_service_its_fixed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEPTON_HEALTH_PORT", raising=False)
    plan = local._plan()
    assert set(plan) == set(local.LOCAL_HEALTH_PORTS)
    ports = set()
    for name, command in plan.items():
        assert command[:2] == ["env", f"LEPTON_HEALTH_PORT={local.LOCAL_HEALTH_PORTS[name]}"]
        assert command[2].endswith(local.LOCAL_SERVICES[name][0])
        ports.add(local.LOCAL_HEALTH_PORTS[name])
    assert len(ports) == len(plan), "one port each"
    metrics_port = MonitorSettings.model_fields["monitor_metrics_port"].default
    dashboard_port = MonitorSettings.model_fields["monitor_port"].default
    assert not ports & {metrics_port, dashboard_port}


def test_lepton_health_port_given_to_lepton_up_applies_to_every_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEPTON_HEALTH_PORT", "0")
    for name, command in local._plan().items():
        assert command[0].endswith(local.LOCAL_SERVICES[name][0]), "as it is: free ports"


def test_in_cluster_prometheus_finds_the_charts_pods_by_their_annotations() -> None:
    (job,) = load("kubernetes.yml")["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    rules = job["relabel_configs"]
    read = {label for rule in rules for label in rule["source_labels"]}

    def meta(kind: str, key: str) -> str:
        # Prometheus's spelling of a pod's label or annotation: non-word characters as _.
        return f"__meta_kubernetes_pod_{kind}_" + re.sub(r"\W", "_", key)

    kept = {rule["source_labels"][0]: rule["regex"] for rule in rules if rule.get("action")}
    for workload in workloads(render()):
        pod = workload["spec"]["template"]["metadata"]
        for label, wanted in kept.items():
            key = next(
                (k for k in pod["labels"] if meta("label", k) == label),
                next((k for k in pod["annotations"] if meta("annotation", k) == label), None),
            )
            assert key is not None, f"{component(workload)} has nothing for {label}"
            value = {**pod["labels"], **pod["annotations"]}[key]
            assert re.fullmatch(wanted, value), (component(workload), key, value)
        for annotation in ("prometheus.io/path", "prometheus.io/port"):
            assert annotation in pod["annotations"]
            assert meta("annotation", annotation) in read
    assert meta("label", "app.kubernetes.io/component") in read
    # The same target labels as prometheus.yml's, so that rules and dashboards carry over.
    given = {rule["target_label"] for rule in rules if "target_label" in rule}
    assert {"service", "node"} <= given
    assert {label for labels in scraped().values() for label in labels} - {"path"} <= given
