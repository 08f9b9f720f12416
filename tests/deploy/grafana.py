"""Lepton's Grafana dashboard (deploy/grafana) as the tests read it: its panels' queries,
with Grafana's interval macros given the values Grafana would give them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "lepton-dashboard.json"
# What Grafana puts in for its macros: 4 scrape intervals is its floor for $__rate_interval.
MACROS = {"$__rate_interval": "1m", "$__range": "1h"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries() -> list[tuple[str, str]]:
    """Each target of each panel: (panel title and target, PromQL as Prometheus gets it)."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for macro, value in MACROS.items():
                expr = expr.replace(macro, value)
            found.append((f"{panel['title']} [{target['refId']}]", expr))
    return found
