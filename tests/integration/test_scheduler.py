"""The scheduler service against the real broker and database."""

from __future__ import annotations

import pytest

from lepton.contract.topics import dead_letter_topic
from tests.integration.scheduler_support import (
    Namespaced,
    heartbeat,
    job,
    now_ms,
    running_scheduler,
)
from tests.integration.test_bus import read_raw
from tests.samples import sample

pytestmark = pytest.mark.integration


@pytest.fixture
async def space(kafka, codec, publisher) -> Namespaced:
    namespaced = Namespaced(kafka, codec, publisher)
    await namespaced.create()
    return namespaced


def kind(job_id: str, wanted: str):
    return lambda record: record["job_id"] == job_id and record["kind"] == wanted


async def test_a_job_is_queued_then_assigned_to_a_node_that_fits(
    space: Namespaced, kafka, database_for
) -> None:
    await space.send("lepton.node.heartbeats", "small", heartbeat("small", sequence=1, cpu=500))
    await space.send("lepton.node.heartbeats", "big", heartbeat("big", sequence=1, cpu=4000))
    async with (
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.jobs.assigned") as assignments,
    ):
        await space.send("lepton.jobs.requested", "j1", job("j1", cpu=2000))
        await events.until(kind("j1", "queued"))
        assigned = await events.until(kind("j1", "assigned"))
        instruction = await assignments.until(lambda r: r["job_id"] == "j1")
    assert assigned["node_id"] == "big"
    assert instruction["node_id"] == "big"
    assert instruction["action"] == "run"
    assert instruction["lease_epoch"] == assigned["lease_epoch"] > 0
    assert instruction["granted"]["cpu_millicores"] == 2000


async def test_invalid_and_impossible_requests_are_rejected_with_the_reason(
    space: Namespaced, kafka, database_for
) -> None:
    await space.send("lepton.node.heartbeats", "n", heartbeat("n", sequence=1, cpu=4000))
    async with (
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
    ):
        await space.send("lepton.jobs.requested", "bad", job("bad", gang_size=0))
        await space.send("lepton.jobs.requested", "huge", job("huge", cpu=64000))
        bad = await events.until(kind("bad", "rejected"))
        huge = await events.until(kind("huge", "rejected"))
    assert bad["field"] == "gang_size"
    assert "between 1" in bad["reason"]
    assert huge["field"] == "demand"
    assert "cpu" in huge["reason"].lower()


async def test_a_job_waits_for_its_dataset_and_gets_the_ready_version(
    space: Namespaced, kafka, database_for
) -> None:
    await space.send("lepton.node.heartbeats", "n", heartbeat("n", sequence=1))
    async with (
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.jobs.assigned") as assignments,
    ):
        await space.send(
            "lepton.jobs.requested", "j", job("j", dataset={"name": "houses", "version": None})
        )
        queued = await events.until(kind("j", "queued"))
        assert "waiting for dataset houses" in queued["reason"]
        # A job without a dataset, sent after, is placed: the scheduler planned meanwhile.
        await space.send("lepton.jobs.requested", "other", job("other"))
        await events.until(kind("other", "assigned"))
        assert not [r for r in events.seen if r["job_id"] == "j" and r["kind"] == "assigned"]

        ready = sample("lepton.DataReady", 0) | {"tenant": "acme", "dataset": "houses"}
        await space.send("lepton.data.ready", "acme/houses", ready)
        instruction = await assignments.until(lambda r: r["job_id"] == "j")
    assert instruction["dataset"]["version"] == ready["version"]
    assert instruction["dataset"]["owner"] == "acme"


async def test_jobs_of_a_dead_node_are_requeued_and_its_late_reports_are_void(
    space: Namespaced, kafka, database_for
) -> None:
    settings = space.settings(
        kafka, database_for("scheduler"), node_suspect_after_s=0.5, node_dead_after_s=1.5
    )
    await space.send("lepton.node.heartbeats", "a", heartbeat("a", sequence=1, cpu=4000))
    async with (
        running_scheduler(settings),
        space.reader("lepton.jobs.events") as events,
    ):
        await space.send("lepton.jobs.requested", "j", job("j", cpu=3000))
        first = await events.until(kind("j", "assigned"))
        assert first["node_id"] == "a"
        # Node b joins and keeps beating; node a falls silent.
        async with space.heartbeats("b", cpu=4000):
            requeued = await events.until(kind("j", "requeued"))
            assert "node a dead" in requeued["reason"]
            assert requeued["attempt"] == 1
            second = await events.until(lambda r: kind("j", "assigned")(r) and r["node_id"] == "b")
            assert second["lease_epoch"] > first["lease_epoch"]

            # Node a's agent reports success under its old lease, late: it changes nothing.
            await space.send("lepton.jobs.events", "j", first | {"kind": "succeeded"})
            await space.send("lepton.jobs.requested", "k", job("k", cpu=3000))
            await events.until(kind("k", "queued"))
            # A small, more urgent job placed after k was queued proves a plan ran with k
            # in the queue: k did not fit, so j still holds b.
            await space.send("lepton.jobs.requested", "probe", job("probe", cpu=500, priority=200))
            await events.until(kind("probe", "assigned"))
            assert not [r for r in events.seen if r["job_id"] == "k" and r["kind"] == "assigned"]

            await space.send("lepton.jobs.events", "j", second | {"kind": "succeeded"})
            k = await events.until(kind("k", "assigned"))
    assert k["node_id"] == "b"


async def test_an_urgent_job_preempts_lower_priority_work_which_is_stopped_and_requeued(
    space: Namespaced, kafka, database_for
) -> None:
    async with (
        space.heartbeats("n", cpu=4000),
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.jobs.assigned") as assignments,
    ):
        await space.send("lepton.jobs.requested", "batch", job("batch", cpu=3000, priority=10))
        placed = await events.until(kind("batch", "assigned"))
        await space.send(
            "lepton.jobs.requested",
            "urgent",
            job("urgent", cpu=3000, priority=1000, preemptible=False),
        )
        preempted = await events.until(kind("batch", "preempted"))
        stop = await assignments.until(lambda r: r["job_id"] == "batch" and r["action"] == "stop")
        urgent = await events.until(kind("urgent", "assigned"))
    assert "urgent" in preempted["reason"]
    assert stop["lease_epoch"] == placed["lease_epoch"], "the stop names the run it ends"
    assert urgent["node_id"] == "n"


async def test_a_gang_is_placed_whole_on_distinct_nodes_under_one_lease(
    space: Namespaced, kafka, database_for
) -> None:
    async with (
        space.heartbeats("a", cpu=4000),
        space.heartbeats("b", cpu=4000),
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
    ):
        await space.send("lepton.jobs.requested", "too-big", job("too-big", cpu=3000, gang_size=3))
        rejected = await events.until(kind("too-big", "rejected"))
        await space.send("lepton.jobs.requested", "gang", job("gang", cpu=3000, gang_size=2))
        first = await events.until(kind("gang", "assigned"))
        second = await events.until(
            lambda r: kind("gang", "assigned")(r) and r["worker_index"] != first["worker_index"]
        )
    assert "gang of 3" in rejected["reason"]
    assert {first["node_id"], second["node_id"]} == {"a", "b"}
    assert {first["worker_index"], second["worker_index"]} == {0, 1}
    assert first["lease_epoch"] == second["lease_epoch"]


async def test_a_node_running_hot_gets_no_new_work_until_it_cools_down(
    space: Namespaced, kafka, database_for
) -> None:
    async with (
        space.heartbeats("small", cpu=500),
        running_scheduler(space.settings(kafka, database_for("scheduler"), node_headroom=0.9)),
        space.reader("lepton.jobs.events") as events,
    ):
        async with space.heartbeats("hot", cpu=4000, busy_cpu=3900):
            await space.send("lepton.jobs.requested", "big", job("big", cpu=3000))
            await events.until(kind("big", "queued"))
            # A job placed after "big" was queued proves a plan ran without placing it.
            await space.send("lepton.jobs.requested", "probe", job("probe", cpu=400, priority=200))
            probe = await events.until(kind("probe", "assigned"))
            assert probe["node_id"] == "small"
            assert not [r for r in events.seen if r["job_id"] == "big" and r["kind"] == "assigned"]
        # The same node, measured idle again (its agent restarted, so its sequence restarts).
        async with space.heartbeats("hot", cpu=4000, busy_cpu=0, started=2):
            big = await events.until(kind("big", "assigned"))
    assert big["node_id"] == "hot"


async def test_a_node_dead_long_before_a_start_is_not_rebuilt_as_a_place_for_work(
    space: Namespaced, kafka, database_for
) -> None:
    # Its last heartbeat, in the log, was sent a minute before now, while another node kept
    # beating every 10 s: dead (15 s), though nobody said so while the scheduler was away.
    # (Had no node beaten in that minute, the log would read as a stall every node came
    # back from, and each would be judged from the resumption: test_scheduler_liveness.py.)
    now = now_ms()
    for sequence, ago_s in enumerate(range(65, 0, -10), start=1):
        await space.send(
            "lepton.node.heartbeats",
            "alive",
            heartbeat("alive", sequence=sequence, cpu=2000, started=2, sent=now - ago_s * 1000),
        )
    await space.send(
        "lepton.node.heartbeats",
        "gone",
        heartbeat("gone", sequence=1, cpu=16000, sent=now - 60_000),
    )
    async with (
        space.heartbeats("alive", cpu=2000, started=3),
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
    ):
        await space.send("lepton.jobs.requested", "big", job("big", cpu=4000))
        outcome = await events.until(
            lambda r: r["job_id"] == "big" and r["kind"] in ("assigned", "rejected")
        )
    assert outcome["kind"] == "rejected", f"placed on {outcome['node_id']}"
    assert outcome["field"] == "demand"


async def test_a_corrupt_heartbeat_is_dead_lettered_and_the_nodes_after_it_still_count(
    space: Namespaced, kafka, database_for, publisher
) -> None:
    beats = space.names.topic("lepton.node.heartbeats").name
    await publisher.send_raw(beats, b"broken", b"{'json': 'perhaps'}", [])
    await space.send("lepton.node.heartbeats", "n", heartbeat("n", sequence=1, cpu=4000))
    async with (
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
    ):
        await space.send("lepton.jobs.requested", "j", job("j", cpu=2000))
        assigned = await events.until(kind("j", "assigned"))
    assert assigned["node_id"] == "n"
    [letter] = await read_raw(kafka, dead_letter_topic(beats), 1)
    assert letter.key == b"broken"
    assert dict(letter.headers)["dlq_error_type"] == b"CorruptMessageError"
