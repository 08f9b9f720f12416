"""The red-team suite: each attack is attempted against the real secured stack, must fail
with its specific reason, and is listed in a table at the end of the run (attack, what
was expected, what happened)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from _pytest.terminal import TerminalReporter


@dataclass
class RedTeam:
    """Where each attack's outcome is written down, then checked."""

    attempts: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def check(self, attack: str, expected: str, result: str) -> None:
        """Record ``attack``'s ``result``; it passes when ``expected`` is part of it."""
        held = expected in result
        self.attempts.append((attack, expected, result, held))
        assert held, f"{attack}: expected {expected!r}, got {result!r}"


_TEAM = RedTeam()


@pytest.fixture
def red_team() -> RedTeam:
    return _TEAM


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not _TEAM.attempts:
        return
    terminalreporter.section("red team: attack, expected, result")
    for attack, expected, result, held in _TEAM.attempts:
        mark = "refused" if held else "NOT AS EXPECTED"
        terminalreporter.write_line(f"[{mark}] {attack}")
        terminalreporter.write_line(f"    expected: {expected}")
        terminalreporter.write_line(f"    result:   {result}")
