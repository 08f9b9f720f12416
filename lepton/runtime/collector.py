"""How a Lepton process keeps the cyclic garbage collector out of its latency."""

from __future__ import annotations

import asyncio
import gc
import time

__all__ = ["collect_less", "keep_collections_short"]


# How a service keeps the cyclic garbage collector out of its latency. A collection walks
# every object of the generations it collects, and a service's state (a scheduler's jobs
# and nodes, each several objects) is large and long-lived: with CPython's defaults the
# collector took about a fifth of the scheduler's profile, and with fewer, larger
# collections single pauses reached 0.4-0.5 s (bench.scheduler_e2e: a gen-1 and a full
# collection in 30 s, each holding up every request in flight). So, once a second, what
# has survived is moved out of the collector's sight (gc.freeze() is O(1)): collections
# only ever walk what is younger than that, and stay in the milliseconds. Reference
# counting frees nearly all that the services drop; the collector is there for the odd
# cycle, and every ten minutes everything is brought back for one full collection, so
# cyclic garbage is freed within that time (a pause of that collection's length, once).
_GC_THRESHOLDS = (10_000, 10, 100)
_FREEZE_EVERY_S = 1.0
_FULL_COLLECTION_EVERY_S = 600.0


def collect_less() -> None:
    """The collector's thresholds for a Lepton process (see :func:`keep_collections_short`)."""
    gc.set_threshold(*_GC_THRESHOLDS)


async def keep_collections_short(caught_up: asyncio.Event) -> None:
    """From the moment the state read at start is built (imports, a replayed log), freeze
    what survived once a second, and collect everything once every ten minutes."""
    await caught_up.wait()
    gc.freeze()
    last_full = time.monotonic()
    while True:
        await asyncio.sleep(_FREEZE_EVERY_S)
        if time.monotonic() - last_full > _FULL_COLLECTION_EVERY_S:
            gc.unfreeze()
            gc.collect()
            last_full = time.monotonic()
        gc.freeze()
