"""Every command's help shows what each option defaults to, as written: no help text loses
its words to Rich markup ("Algorithm family ." for "Algorithm family [default: auto].") and
no flag is shown as a typed value (``<bool>``)."""

from __future__ import annotations

from typing import Any

import typer.main
from typer.testing import CliRunner

from lepton.cli import app


def commands() -> list[tuple[list[str], Any]]:
    """Every command and group, by its path (Typer's own copy of click: no click types)."""
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        found.append((path, command))
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk([*path, name], sub)

    walk([], typer.main.get_command(app))
    return found


def test_every_help_shows_each_default_as_written() -> None:
    runner = CliRunner()
    checked = 0
    for path, command in commands():
        shown = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert shown.exit_code == 0, (path, shown.output)
        flat = " ".join(shown.output.split())
        assert "<bool>" not in flat, f"lepton {' '.join(path)}: a flag shown as <bool>"
        for option in command.params:
            written = getattr(option, "help", None) or ""
            if "[default:" in written:
                checked += 1
                assert " ".join(written.split()) in flat, (
                    f"lepton {' '.join(path)} {option.name}: help lost its words: {written!r}"
                )
    assert checked >= 8, "the options that spell out their default were found"


def test_every_column_of_the_jobs_table_has_a_header() -> None:
    from lepton.cli.jobs import _jobs_table

    table = _jobs_table([])
    assert all(str(column.header).strip() for column in table.columns)
