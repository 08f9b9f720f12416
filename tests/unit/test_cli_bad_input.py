"""Every CLI command, given wrong arguments or no stack to talk to, exits non-zero with one
line saying what is wrong and a hint, and no traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lepton.cli import app


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there once the socket is closed


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No local stack, no configured servers, no monitor."""
    monkeypatch.setenv("LEPTON_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LEPTON_MONITOR_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("LEPTON_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("LEPTON_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env file of the developer's
    (tmp_path / "records.txt").write_text("x\n1\n")
    (tmp_path / "nested.json").write_text('[{"x": {"y": 1}}]')
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.yaml").write_text("tenant: a\ntask: {target_column: p\n")
    (tmp_path / "typo.yaml").write_text("tenant: a\ntask: {target_column: p}\npriorty: 3\n")
    (tmp_path / "rows.csv").write_text("x\n1\n")
    return tmp_path


BAD = [
    # wrong arguments
    (["bogus"], "No such command"),
    (["submit", "--target", "p"], "the job has no tenant"),
    (["submit", "--tenant", "a"], "task.target_column"),
    (["submit", "--tenant", "a", "--target", "p", "--algorithm", "magic"], "task.algorithm"),
    (["submit", "--tenant", "a", "--target", "p", "--cpus", "-1"], "--cpus"),
    (
        ["submit", "--tenant", "a", "--target", "p", "--cpus", "inf"],
        "demand.cpus: must be a finite",
    ),
    (["submit", "--tenant", "a", "--target", "p", "--cpus", "nan"], "--cpus"),
    (["submit", "--tenant", "a" * 10_000, "--target", "p"], "tenant: must be 1 to 64 characters"),
    (["submit", "--tenant", "a", "--target", "p", "--dataset", "d\u202e"], "dataset.name: char"),
    (["data", "ingest", "x.csv", "--name", "d\tx", "--tenant", "a"], "dataset: character 2"),
    (["submit", "--file", "missing.yaml"], "cannot read missing.yaml"),
    (["submit", "--file", "list.yaml"], "is not a mapping"),
    (["submit", "--file", "broken.yaml"], "broken.yaml is not valid YAML: line 3, column 1"),
    (["submit", "--file", "typo.yaml"], "priorty: Extra inputs are not permitted"),
    (["plan", "typo.yaml"], "priorty"),
    (["jobs", "--until-done"], "--until-done only applies to --watch"),
    (["jobs", "--limit", "0"], "--limit"),
    (["jobs", "cancel"], "Missing argument"),
    (["jobs", "cancel", "j", "--timeout", "0"], "--timeout"),
    (["nodes", "--state", "sleepy"], "unknown node state"),
    (["models", "rollback", "m", "--tenant", "a"], "Missing option '--to'"),
    (["predict", "--model", "m", "--tenant", "a"], "Missing option '--input'"),
    (["predict", "--model", "m", "--input", "records.txt", "--tenant", "a"], "format"),
    (["predict", "--model", "m", "--input", "nested.json", "--tenant", "a"], "not a value"),
    (["predict", "--model", "m", "--input", "empty.jsonl", "--tenant", "a"], "no records"),
    (["predict", "--model", "m", "--input", "absent.csv", "--tenant", "a"], "cannot read"),
    (["data", "show"], "Missing argument"),
    (["data", "ingest", "x.txt", "--name", "d", "--tenant", "a"], "cannot tell the format"),
    (["data", "ingest", "x.csv", "--name", "d", "--tenant", "a", "--kind", "xls"], "xls"),
    (["data", "generate", "weather", "--out", "w.csv"], "unknown example"),
    (["tail", "lepton.nothing"], "unknown topic"),
    (["simulate", "--policy", "random"], "unknown policy"),
    (["simulate", "--hours", "nan"], "--hours"),
    (["simulate", "--arrival-rate", "inf"], "--arrival-rate"),
    # nothing running
    (["submit", "--tenant", "a", "--target", "p"], "no local stack is running"),
    (["jobs"], "does not answer"),
    (["jobs", "--watch"], "no local stack is running"),
    (["jobs", "show", "j"], "no local stack is running"),
    (["jobs", "cancel", "j"], "no local stack is running"),
    (["nodes"], "does not answer"),
    (["models"], "does not answer"),
    (["models", "rollback", "m", "--to", "x", "--tenant", "a"], "does not answer"),
    (["predict", "--model", "m", "--input", "rows.csv", "--tenant", "a"], "no local stack"),
    (["data", "list", "--tenant", "a"], "no local stack is running"),
    (["data", "show", "d", "--tenant", "a"], "no local stack is running"),
    (["data", "share", "d", "--with", "b", "--tenant", "a"], "no local stack is running"),
    (["data", "ingest", "x.csv", "--name", "d", "--tenant", "a"], "no local stack is running"),
    (["tail", "lepton.jobs.events"], "no local stack is running"),
    (["up"], "no local stack is running"),
]


@pytest.mark.parametrize(("args", "says"), BAD, ids=[" ".join(args) for args, _ in BAD])
def test_a_wrong_command_line_gets_one_line_and_a_hint(
    nowhere: Path, args: list[str], says: str
) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert lines, result.output
    assert lines[0].startswith("error: "), result.stderr
    assert says in lines[0], result.stderr
    # The hint is its own line, or the reason names the command that fixes it.
    assert (len(lines) == 2 and lines[1].startswith("hint: ")) or (
        len(lines) == 1 and "`lepton " in lines[0]
    ), result.stderr
    assert "Traceback" not in result.output


def test_debug_shows_the_traceback(nowhere: Path) -> None:
    result = CliRunner().invoke(app, ["--debug", "nodes"])
    assert result.exit_code != 0
    assert result.exception is not None  # raised, for the traceback, not one line
