"""Bounded waits for the benchmarks, each saying what it waits for, and ending the run
with a clear message instead of sitting idle when what it waits for never comes."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from lepton.runtime.service import Service

T = TypeVar("T")


def say(line: str) -> None:
    """A progress line on standard error (standard output carries the results)."""
    print(line, file=sys.stderr, flush=True)


async def bounded(
    awaitable: Awaitable[T], what: str, timeout_s: float, *, service: asyncio.Task[None] | None
) -> T:
    """``awaitable``'s result, or the end of the run: after ``timeout_s``, or as soon as the
    in-process ``service`` it depends on stopped (with the reason it stopped)."""
    say(f"waiting up to {timeout_s:.0f} s for {what}")
    waited = asyncio.ensure_future(awaitable)
    watched = {waited} if service is None else {waited, service}
    done, _ = await asyncio.wait(watched, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if waited in done:
        return waited.result()
    waited.cancel()
    if service is not None and service in done:
        reason = service.exception() if not service.cancelled() else "cancelled"
        raise SystemExit(f"gave up waiting for {what}: the service stopped ({reason!r})")
    raise SystemExit(f"gave up waiting for {what}: nothing within {timeout_s:.0f} s")


async def started(service: Service, task: asyncio.Task[None], timeout_s: float = 120) -> None:
    """Return once the in-process ``service`` is ready; end the run if it failed to start."""
    await bounded(
        service.ready.wait(), f"the {service.name} service to start", timeout_s, service=task
    )
