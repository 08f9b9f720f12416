"""Helper processes a service starts: ``python -m <module>`` with its configuration on
standard input (a trainer's training runs, the scheduler's heartbeat digester)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

__all__ = ["start_helper"]


# A helper's output lines may be long (a trainer worker's every trial, a digester's verdict
# on a whole cluster): far above asyncio's 64 KiB.
_HELPER_LINE_LIMIT = 64 * 2**20


async def start_helper(
    module: str, config: Any, *, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """``python -m <module>`` with pipes on its standard input and output, ``config``
    written to its standard input as the first line (JSON). What a helper needs, secrets
    included, never goes into its command line, which anyone on the machine may read."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        limit=_HELPER_LINE_LIMIT,
    )
    assert process.stdin is not None
    try:
        process.stdin.write(json.dumps(config, default=str).encode() + b"\n")
        await process.stdin.drain()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    return process
