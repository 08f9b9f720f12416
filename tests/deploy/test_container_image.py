"""The container image definition (deploy/container/Dockerfile), short of building it: no
container engine can run here (see the README), so the definition is linted (hadolint)
and held to the project: what it copies is what the wheel is built from, what it runs is
a console script, and it listens where the chart probes it."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import yaml

from tests.deploy.chart import CHART, ROOT, console_scripts, tool

DOCKERFILE = ROOT / "deploy" / "container" / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments out."""
    found: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        word, _, rest = whole.partition(" ")
        found.append((word.upper(), rest.strip()))
    return found


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_image_definition_passes_hadolint() -> None:
    done = hadolint(DOCKERFILE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_flag_a_careless_definition(tmp_path: Path) -> None:
    # The linter is not a rubber stamp: an unpinned base and apt without versions fail.
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    done = hadolint(careless)
    assert done.returncode != 0
    assert "DL3007" in done.stdout, done.stdout


def test_it_copies_everything_the_wheel_is_built_from() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    needed = {
        "pyproject.toml",
        project["project"]["readme"],
        *wheel["packages"],
        *wheel["force-include"],
    }
    copied: set[str] = set()
    for word, arguments in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if word == "COPY" and not arguments.startswith("--from"):
            *sources, _destination = arguments.split()
            copied |= {source.rstrip("/") for source in sources}
    assert needed <= copied, f"not copied into the build: {sorted(needed - copied)}"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"


def test_it_installs_the_services_extra_at_the_tested_versions() -> None:
    steps = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    installs = [
        arguments for word, arguments in steps if word == "RUN" and "pip install" in arguments
    ]
    assert installs, "the image installs Lepton"
    (install,) = installs
    assert "-c constraints.txt" in install, "pinned as CI tested it"
    assert "'.[server]'" in install, "the services need the [server] extra, never [local]"


def test_it_runs_console_scripts_and_listens_where_the_chart_probes() -> None:
    steps = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    (command,) = [json.loads(arguments) for word, arguments in steps if word == "CMD"]
    assert command[0] in console_scripts()
    environment = " ".join(arguments for word, arguments in steps if word == "ENV")
    assert "PATH=/opt/lepton/bin:" in environment, "the console scripts are on PATH"
    assert "LEPTON_HEALTH_HOST=0.0.0.0" in environment
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    port = values["health"]["port"]
    assert f"LEPTON_HEALTH_PORT={port}" in environment
    assert ("EXPOSE", str(port)) in steps
    assert ("USER", "10001:10001") in steps
    assert values["podSecurityContext"]["runAsUser"] == 10001
