"""The benchmarks' waits end the run with a reason instead of sitting idle: the finding was
`python -m bench.ingest` waiting for ever on an in-process service that had failed to start."""

from __future__ import annotations

import asyncio

import pytest

from bench.waiting import bounded


async def test_a_wait_on_a_service_that_stopped_ends_at_once_with_its_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def failing_service() -> None:
        raise RuntimeError("migrations failed")

    service = asyncio.create_task(failing_service())
    never = asyncio.Event()
    async with asyncio.timeout(10):  # far below the wait's own bound
        with pytest.raises(SystemExit, match=r"the service stopped.*migrations failed"):
            await bounded(never.wait(), "the ingest service to start", 600, service=service)
    assert "waiting up to 600 s for the ingest service to start" in capsys.readouterr().err


async def test_a_wait_gives_up_after_its_bound_saying_what_it_waited_for() -> None:
    with pytest.raises(SystemExit, match="gave up waiting for an answer: nothing within 0 s"):
        await bounded(asyncio.Event().wait(), "an answer", 0.05, service=None)


async def test_a_wait_returns_what_came() -> None:
    async def answer() -> str:
        return "ready"

    assert await bounded(answer(), "an answer", 5, service=None) == "ready"
