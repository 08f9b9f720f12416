"""The README is the front door: keep what it says about settings and commands true."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import lepton.services
from lepton.cli import app
from lepton.config import Settings

README = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")


def settings_classes() -> list[type[Settings]]:
    """Settings and every service's settings class."""
    found: list[type[Settings]] = [Settings]
    for service in pkgutil.iter_modules(lepton.services.__path__):
        try:
            module = importlib.import_module(f"lepton.services.{service.name}.settings")
        except ModuleNotFoundError:
            continue
        found += [
            value
            for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Settings)
        ]
    return found


def every_setting() -> set[str]:
    """The fields of Settings and of every service's settings class."""
    return {name for cls in settings_classes() for name in cls.model_fields}


def test_every_setting_is_documented() -> None:
    for name in every_setting():
        assert f"LEPTON_{name.upper()}" in README, f"README does not mention LEPTON_{name.upper()}"


def test_every_documented_setting_exists() -> None:
    documented = set(re.findall(r"LEPTON_([A-Z_]+)", README))
    assert documented <= {name.upper() for name in every_setting()}


def test_the_quick_start_is_make_demo_and_make_test() -> None:
    assert "make demo" in README
    assert "make test" in README


def test_every_cli_command_is_documented() -> None:
    commands = [command.name for command in app.registered_commands]
    groups = {group.name: group.typer_instance for group in app.registered_groups}
    for group, sub in groups.items():
        commands += [f"{group} {command.name}" for command in sub.registered_commands]
    for command in commands:
        assert f"lepton {command}" in README, f"README does not document `lepton {command}`"
