"""The chaos suite runs only when asked: ``pytest -m chaos tests/chaos`` (or
``LEPTON_CHAOS=1``). It starts a private stack of its own and takes about a quarter of an
hour, so the normal suite skips it."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "chaos: the fault matrix against a private stack (slow)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = "chaos" in (config.getoption("-m") or "") or os.environ.get("LEPTON_CHAOS") == "1"
    if asked:
        return
    skip = pytest.mark.skip(reason="the chaos suite runs with -m chaos (or LEPTON_CHAOS=1)")
    for item in items:
        if item.get_closest_marker("chaos"):
            item.add_marker(skip)
