"""The scheduler killed with SIGKILL, again and again, and a standby taking over."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil
import pytest

from lepton.config import KafkaAccess
from tests.integration.scheduler_support import Namespaced, job

pytestmark = pytest.mark.integration

SCHEDULER = str(Path(sys.executable).parent / "lepton-scheduler")


@pytest.fixture
async def space(kafka, codec, publisher) -> Namespaced:
    namespaced = Namespaced(kafka, codec, publisher)
    await namespaced.create()
    return namespaced


class SchedulerProcess:
    """``lepton-scheduler`` in a subprocess, with its log lines as they come."""

    def __init__(self, space: Namespaced, kafka: KafkaAccess, database_url: str) -> None:
        self.env = os.environ | {
            **kafka.environment(),
            "LEPTON_DATABASE_URL": database_url,
            "LEPTON_TOPIC_PREFIX": space.prefix,
            "LEPTON_LOG_LEVEL": "info",
        }
        self.leading = asyncio.Event()
        self.digesting = asyncio.Event()
        self.digester_pid = 0
        self.lines: list[bytes] = []
        self.process: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.leading = asyncio.Event()
        self.digesting = asyncio.Event()
        self.process = await asyncio.create_subprocess_exec(
            SCHEDULER, stderr=asyncio.subprocess.PIPE, env=self.env, limit=2**24
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        # Ends when every process writing to this stderr has ended: the scheduler and the
        # heartbeat digester it started, which inherits it.
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line)
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "leading":
                    self.leading.set()
                elif entry.get("event") == "digesting heartbeats":
                    self.digester_pid = entry["pid"]
                    self.digesting.set()

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        if self._reader is not None:
            await self._reader

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), 60)
        if self._reader is not None:
            await self._reader


def placements(records: list[dict[str, Any]]) -> dict[str, set[int]]:
    epochs: dict[str, set[int]] = defaultdict(set)
    for record in records:
        if record["kind"] == "assigned":
            epochs[record["job_id"]].add(record["lease_epoch"])
    return epochs


async def test_killing_the_scheduler_mid_stream_loses_no_job_and_never_double_assigns(
    space: Namespaced, kafka, database_for
) -> None:
    nodes = {f"n{i}": 8000 for i in range(4)}
    jobs = [f"job-{i:03d}" for i in range(60)]
    rng = random.Random(7)
    async with contextlib.AsyncExitStack() as stack:
        for node, cpu in nodes.items():
            await stack.enter_async_context(space.heartbeats(node, cpu=cpu))
        events = await stack.enter_async_context(space.reader("lepton.jobs.events"))
        scheduler = SchedulerProcess(space, kafka, database_for("scheduler"))
        await scheduler.start()
        kills = killed_while_leading = 0
        for batch_start in range(0, len(jobs), 10):
            for job_id in jobs[batch_start : batch_start + 10]:
                await space.send("lepton.jobs.requested", job_id, job(job_id, cpu=500))
            # Kill it at a random moment: every other round once it leads (mid-replay or
            # mid-planning), otherwise wherever it happens to be (perhaps still starting).
            if batch_start % 20 == 0:
                await asyncio.wait_for(scheduler.leading.wait(), 60)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            killed_while_leading += scheduler.leading.is_set()
            await scheduler.kill()
            kills += 1
            await scheduler.start()
        try:
            for job_id in jobs:
                await events.until(
                    lambda r, j=job_id: r["job_id"] == j and r["kind"] == "assigned",
                    timeout_s=90,
                )
        finally:
            await scheduler.stop()
    assert kills == 6
    assert killed_while_leading >= 3, "some kills must hit a scheduler at work"
    epochs = placements(events.seen)
    assert set(epochs) == set(jobs), "every job was placed"
    doubled = {job_id: found for job_id, found in epochs.items() if len(found) > 1}
    assert not doubled, f"jobs placed under two leases at once: {doubled}"
    rejected = [r for r in events.seen if r["kind"] in ("rejected", "failed")]
    assert not rejected
    # No node holds more than its capacity.
    held: dict[str, int] = defaultdict(int)
    for record in events.seen:
        if record["kind"] == "assigned":
            held[record["node_id"]] += 500
    assert all(held[node] <= cpu for node, cpu in nodes.items())


async def test_a_standby_takes_over_when_the_leader_dies(
    space: Namespaced, kafka, database_for
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(space.heartbeats("n", cpu=8000))
        events = await stack.enter_async_context(space.reader("lepton.jobs.events"))
        first = SchedulerProcess(space, kafka, database_for("scheduler"))
        second = SchedulerProcess(space, kafka, database_for("scheduler"))
        await first.start()
        await asyncio.wait_for(first.leading.wait(), 60)
        await second.start()
        try:
            await space.send("lepton.jobs.requested", "before", job("before"))
            before = await events.until(
                lambda r: r["job_id"] == "before" and r["kind"] == "assigned"
            )
            assert not second.leading.is_set(), "the second instance stands by"

            await first.kill()
            await asyncio.wait_for(second.leading.wait(), 60)
            await space.send("lepton.jobs.requested", "after", job("after"))
            after = await events.until(lambda r: r["job_id"] == "after" and r["kind"] == "assigned")
        finally:
            await second.stop()
    # The new leader's leases are above anything the old one handed out.
    assert after["lease_epoch"] >> 32 > before["lease_epoch"] >> 32


async def test_the_digester_ends_with_its_scheduler_even_when_the_scheduler_is_killed(
    space: Namespaced, kafka, database_for
) -> None:
    scheduler = SchedulerProcess(space, kafka, database_for("scheduler"))
    await scheduler.start()
    await asyncio.wait_for(scheduler.digesting.wait(), 60)
    digester = psutil.Process(scheduler.digester_pid)
    assert digester.ppid() == scheduler.process.pid
    # kill() returns once the log pipe is closed, which the digester holds too.
    await asyncio.wait_for(scheduler.kill(), 30)
    await asyncio.to_thread(digester.wait, 5)  # raises TimeoutExpired if it lives on
    assert not digester.is_running()


async def test_a_scheduler_whose_digester_dies_steps_down_and_leads_again_with_a_new_one(
    space: Namespaced, kafka, database_for
) -> None:
    scheduler = SchedulerProcess(space, kafka, database_for("scheduler"))
    await scheduler.start()
    try:
        await asyncio.wait_for(scheduler.digesting.wait(), 60)
        first = scheduler.digester_pid
        scheduler.digesting.clear()
        os.kill(first, signal.SIGKILL)
        # A scheduler without its digester must not go on deciding: it steps down, and
        # leads again (reading the log again) with a digester of its own.
        await asyncio.wait_for(scheduler.digesting.wait(), 60)
        assert scheduler.digester_pid != first
        assert scheduler.process.returncode is None
    finally:
        await scheduler.stop()
    assert any(b"heartbeat digester exited" in line for line in scheduler.lines)
    assert any(b"stepped down; campaigning again" in line for line in scheduler.lines)
