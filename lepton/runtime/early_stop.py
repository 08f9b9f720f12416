"""A stop asked for while a service process is still starting.

Importing a service's libraries (scikit-learn, matplotlib, pandas…) takes seconds, and
until :func:`lepton.runtime.service.run` installs its handlers, SIGTERM's default action
kills the process: ``lepton down`` just after ``lepton up`` would see a service "killed by
SIGTERM" rather than one that exited cleanly. The console scripts call
:func:`remember_stops` first thing, so a stop that comes meanwhile is noted, and ``run``
honours it: the process ends with status 0 without starting the service.

This module imports nothing but the standard library: it must be cheap to import first.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType

__all__ = ["STOP_SIGNALS", "asked", "remember_stops"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_asked: list[int] = []


def remember_stops() -> None:
    """From now until the service's own handlers replace it: SIGTERM and SIGINT are noted
    (see :func:`asked`), not fatal."""
    for number in STOP_SIGNALS:
        signal.signal(number, _note)


def _note(number: int, _frame: FrameType | None) -> None:
    _asked.append(number)


def asked() -> str | None:
    """The name of the first stop signal noted since :func:`remember_stops`, if any."""
    return signal.Signals(_asked[0]).name if _asked else None
