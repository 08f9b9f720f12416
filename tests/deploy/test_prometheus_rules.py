"""The Prometheus alert rules shipped in deploy/prometheus: valid for the real promtool,
each alert proven to fire when it should and not when it should not (alerts_test.yml),
each telling the operator what to do, and every metric they read exported by Lepton.

promtool comes with Debian's prometheus package, which CI installs (.ci/run): without it
these tests fail rather than skip, so rules nobody checked never pass for checked.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, cast

import prometheus_client
import yaml

from lepton.services.monitor.metrics_export import MonitorCollector
from lepton.services.monitor.rules import RuleEngine, default_rules
from lepton.services.monitor.state import MonitorState
from lepton.services.monitor.views import Monitor

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
CASES = Path(__file__).with_name("alerts_test.yml")
# Series Prometheus makes itself for each target, not read from any /metrics.
PROMETHEUS_OWN = {"up"}
# PromQL's words that may stand where a metric name could.
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right"}


def promtool(*args: str, given: str | None = None) -> subprocess.CompletedProcess[str]:
    """promtool run with ``args``, ``given`` on its standard input."""
    tool = shutil.which("promtool")
    assert tool is not None, (
        "promtool is missing: install Debian's prometheus package "
        "(apt-get install --no-install-recommends prometheus; .ci/run does)"
    )
    return subprocess.run(
        [tool, *args],
        input=given,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def metrics_read(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once label matchers,
    ranges, strings, grouping clauses, offsets and function calls are taken out."""
    bare = re.sub(r'\{[^}]*\}|\[[^\]]*\]|"[^"]*"', " ", expr)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    bare = re.sub(r"\boffset\s+\w+", " ", bare)
    names = set()
    for word in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        if not bare[word.end() :].lstrip().startswith("(") and word[0] not in _KEYWORDS:
            names.add(word[0])
    return names


def exported_metrics() -> set[str]:
    """Every metric name Lepton's code exports: each module that uses prometheus_client is
    imported (registering its metrics), then the registry and the monitor's collector
    (which reports only while a monitor runs: one is given) are read as a scrape would."""
    for path in sorted((ROOT / "lepton").rglob("*.py")):
        if "prometheus_client" in path.read_text():
            module = path.relative_to(ROOT).with_suffix("").parts
            importlib.import_module(".".join(module).removesuffix(".__init__"))
    collector = MonitorCollector()
    # Collecting reads the state and the rules only; no store is asked.
    monitor = Monitor(MonitorState(), RuleEngine(default_rules()), cast(Any, None), 15_000)
    collector.monitors.add(monitor)
    names = set()
    # A labelled metric has no samples until its first series: its names by its type.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    for family in [*prometheus_client.REGISTRY.collect(), *collector.collect()]:
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_the_rules_and_the_prometheus_config_loading_them_pass_promtool() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    # The config check also loads each rule file it names: the alerts must be among them.
    assert "1 rule files found" in config.stdout, config.stdout
    # Debian's promtool is built without Kubernetes discovery, so kubernetes.yml cannot be
    # checked whole here; it names the same rules.
    kubernetes = yaml.safe_load((PROMETHEUS / "kubernetes.yml").read_text())
    assert kubernetes["rule_files"] == [RULES.name]


def test_each_alert_fires_when_it_should_and_not_when_it_should_not() -> None:
    tested = promtool("test", "rules", str(CASES))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout, tested.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    cases = [
        check
        for test in yaml.safe_load(CASES.read_text())["tests"]
        for check in test["alert_rule_test"]
    ]
    names = {rule["alert"] for rule in alerts()}
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert names - fires == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"
    assert (fires | quiet) - names == set(), "cases of alerts that do not exist"


def test_every_alert_has_a_severity_and_says_what_to_do() -> None:
    for rule in alerts():
        assert rule["labels"]["severity"] in {"warning", "critical", "{{ $labels.severity }}"}
        assert rule["annotations"]["summary"]
        description = rule["annotations"]["description"]
        assert any(
            hint in description
            for hint in ("`lepton status`", "`lepton tail", "`lepton nodes", "/healthz")
        ), f"{rule['alert']} does not point at what to run or read"


def test_every_metric_an_alert_reads_is_exported_by_lepton() -> None:
    exported = exported_metrics()
    for rule in alerts():
        read = metrics_read(rule["expr"])
        assert read, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert read - exported - PROMETHEUS_OWN == set(), (
            f"{rule['alert']} reads metrics that Lepton does not export"
        )
    # The monitor's rules an alert names (to leave out) exist.
    named = {
        name for rule in alerts() for name in re.findall(r'\brule!?=~?"([^"]+)"', rule["expr"])
    }
    assert named <= {rule.name for rule in default_rules()}


def test_the_metric_check_sees_what_an_expression_reads() -> None:
    # The check above is only as good as this reading of an expression.
    assert metrics_read(
        'increase(a_total{x="y z"}[10m]) > 0 or (a_total unless a_total offset 10m)'
    ) == {"a_total"}
    assert metrics_read('sum by (service) (rate(b[5m])) / on(job) group_left c{d!="e"}') == {
        "b",
        "c",
    }
    assert "lepton_no_such_metric" not in exported_metrics()


def test_target_down_covers_every_job_the_shipped_config_scrapes() -> None:
    (target_down,) = [rule for rule in alerts() if rule["alert"] == "LeptonTargetDown"]
    jobs = re.search(r'job=~"([^"]+)"', target_down["expr"])
    assert jobs is not None
    for shipped in ("prometheus.yml", "kubernetes.yml"):
        config = yaml.safe_load((PROMETHEUS / shipped).read_text())
        for job in config["scrape_configs"]:
            assert re.fullmatch(jobs[1], job["job_name"]), (shipped, job["job_name"])
