"""The Helm chart (deploy/helm/lepton) rendered as CI renders it, for the deploy tests.

Helm is built into the virtual environment by ``make install`` (from the Go module proxy);
these tests fail, saying so, where it is missing rather than skip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "lepton"
RELEASE = "rel"


def tool(name: str) -> str:
    """A tool ``make install`` puts beside the interpreter (else on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make install`")
    return found


def helm(*arguments: str) -> str:
    """Helm's output; a failure shows what Helm said."""
    done = subprocess.run(
        [tool("helm"), *arguments], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"helm {' '.join(arguments)}:\n{done.stdout}{done.stderr}"
    return done.stdout


def render(*values: str) -> list[dict[str, Any]]:
    """Every object of the chart, rendered with ``--set`` ``values``."""
    arguments = ["template", RELEASE, str(CHART)]
    for value in values:
        arguments += ["--set", value]
    return [doc for doc in yaml.safe_load_all(helm(*arguments)) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deployments and DaemonSets: what runs a service."""
    return [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]


def component(workload: dict[str, Any]) -> str:
    return str(workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def container(workload: dict[str, Any]) -> dict[str, Any]:
    """The workload's one container."""
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def config_map(objects: list[dict[str, Any]]) -> dict[str, str]:
    (found,) = of_kind(objects, "ConfigMap")
    return dict(found["data"])


def console_scripts() -> set[str]:
    """The commands pyproject.toml installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(project["project"]["scripts"])
