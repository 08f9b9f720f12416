"""deploy/grafana provisions from files: the dashboard names no datasource of its own (a
`datasource` variable, no `__inputs`/`${DS_PROMETHEUS}`, which file provisioning cannot
resolve), its layout and queries are sound, and every metric it reads is Lepton's.

No Grafana can run here (not in Debian; its Go module is AGPL, which this project does
not take in), so this is a schema check; test_metrics_live.py runs every query against a
real Prometheus scraping the real services.
"""

from __future__ import annotations

import re

import yaml

from tests.deploy.grafana import DASHBOARD, GRAFANA, dashboard, queries
from tests.deploy.test_prometheus_rules import exported_metrics, metrics_read

VARIABLE = "${datasource}"
# Panel types this dashboard may use, with the options Grafana's schema (v39) gives them.
PANEL_TYPES = {"stat", "timeseries"}


def test_the_dashboard_picks_its_datasource_from_a_variable() -> None:
    board = dashboard()
    text = DASHBOARD.read_text()
    assert "__inputs" not in board
    assert "__requires" not in board
    assert "DS_PROMETHEUS" not in text
    (variable,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": VARIABLE}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
    # No other variable is referenced than those defined.
    defined = {v["name"] for v in board["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", text)) - {"__rate_interval", "__range"}
    assert used <= defined, used - defined


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "lepton-overview"
    assert isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids), "panel ids are unique"
    taken: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        assert panel["description"], panel["title"]
        grid = panel["gridPos"]
        assert 0 <= grid["x"] < grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        refs = [target["refId"] for target in panel["targets"]]
        assert len(set(refs)) == len(refs) > 0, panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_every_metric_the_dashboard_reads_is_exported_by_lepton() -> None:
    exported = exported_metrics()
    for title, expr in queries():
        read = metrics_read(expr)
        assert read, f"{title}: no metric in {expr!r}"
        assert read - exported - {"vector"} == set(), f"{title} reads what nobody exports"


def test_the_throughput_panel_counts_each_topic_once() -> None:
    (throughput,) = [
        expr for title, expr in queries() if title.startswith("Throughput") and "handled" in expr
    ]
    # Summed per group, then the busiest group per topic: the monitor reads every topic and
    # the scheduler some of the same, and a plain sum by topic counted those twice.
    assert throughput.startswith("max by (topic) (sum by (group, topic) ("), throughput


def test_the_provisioning_files_point_at_the_dashboard() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/lepton.yml").read_text())
    (lepton,) = provider["providers"]
    assert lepton["type"] == "file"
    assert lepton["options"]["path"]
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    assert [source["type"] for source in sources["datasources"]] == ["prometheus"]
