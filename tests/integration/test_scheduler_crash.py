"""The scheduler killed with SIGKILL, again and again, and a standby taking over."""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.integration.processes import Service, service_env
from tests.integration.scheduler_support import Namespaced, job

pytestmark = pytest.mark.integration

SCHEDULER = str(Path(sys.executable).parent / "lepton-scheduler")


@pytest.fixture
async def space(kafka, codec, publisher) -> Namespaced:
    namespaced = Namespaced(kafka, codec, publisher)
    await namespaced.create()
    return namespaced


def scheduler_env(space: Namespaced, kafka: KafkaAccess, database_url: str) -> dict[str, str]:
    return service_env(kafka, database_url, space.prefix, LEPTON_LOG_LEVEL="info")


def leading(scheduler: Service) -> bool:
    return bool(scheduler.logged("leading"))


async def killed(scheduler: Service) -> None:
    """SIGKILL, and return once its log has ended (the heartbeat digester it started
    holds the log too, until it ends with its scheduler)."""
    await scheduler.kill()
    await scheduler.log_ended()


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
        env = scheduler_env(space, kafka, database_for("scheduler"))
        scheduler = await Service.launch([SCHEDULER], env)
        stack.push_async_callback(lambda: killed(scheduler))  # whichever runs last
        kills = killed_while_leading = 0
        for batch_start in range(0, len(jobs), 10):
            for job_id in jobs[batch_start : batch_start + 10]:
                await space.send("lepton.jobs.requested", job_id, job(job_id, cpu=500))
            # Kill it at a random moment: every other round once it leads (mid-replay or
            # mid-planning), otherwise wherever it happens to be (perhaps still starting).
            if batch_start % 20 == 0:
                await scheduler.event("leading", 60)
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            killed_while_leading += leading(scheduler)
            await killed(scheduler)
            kills += 1
            scheduler = await Service.launch([SCHEDULER], env)
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
        env = scheduler_env(space, kafka, database_for("scheduler"))
        first = await Service.launch([SCHEDULER], env)
        stack.push_async_callback(killed, first)
        await first.event("leading", 60)
        second = await Service.launch([SCHEDULER], env)
        try:
            await space.send("lepton.jobs.requested", "before", job("before"))
            before = await events.until(
                lambda r: r["job_id"] == "before" and r["kind"] == "assigned"
            )
            assert not leading(second), "the second instance stands by"

            await killed(first)
            await second.event("leading", 60)
            await space.send("lepton.jobs.requested", "after", job("after"))
            after = await events.until(lambda r: r["job_id"] == "after" and r["kind"] == "assigned")
        finally:
            await second.stop()
    # The new leader's leases are above anything the old one handed out.
    assert after["lease_epoch"] >> 32 > before["lease_epoch"] >> 32


async def test_the_digester_ends_with_its_scheduler_even_when_the_scheduler_is_killed(
    space: Namespaced, kafka, database_for
) -> None:
    scheduler = await Service.launch(
        [SCHEDULER], scheduler_env(space, kafka, database_for("scheduler"))
    )
    try:
        digesting = await scheduler.event("digesting heartbeats", 60)
    except BaseException:
        await killed(scheduler)
        raise
    digester = psutil.Process(digesting["pid"])
    assert digester.ppid() == scheduler.process.pid
    async with asyncio.timeout(30):
        await killed(scheduler)
    await asyncio.to_thread(digester.wait, 5)  # raises TimeoutExpired if it lives on
    assert not digester.is_running()


async def test_a_scheduler_whose_digester_dies_steps_down_and_leads_again_with_a_new_one(
    space: Namespaced, kafka, database_for
) -> None:
    scheduler = await Service.launch(
        [SCHEDULER], scheduler_env(space, kafka, database_for("scheduler"))
    )
    try:
        first = (await scheduler.event("digesting heartbeats", 60))["pid"]
        os.kill(first, signal.SIGKILL)
        # A scheduler without its digester must not go on deciding: it steps down, and
        # leads again (reading the log again) with a digester of its own.
        await scheduler.until(
            lambda entry: entry.get("event") == "digesting heartbeats" and entry["pid"] != first,
            60,
            "a new digester",
        )
        assert scheduler.alive
    finally:
        await scheduler.stop()
    assert any(b"heartbeat digester exited" in line for line in scheduler.lines)
    assert any(b"stepped down; campaigning again" in line for line in scheduler.lines)
