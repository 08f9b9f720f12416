"""The scheduler and the sizes of what it produces, against the real broker and database:
a job event too large for its topic is set aside to the dead letters with its reason,
and the scheduler goes on deciding (it used to stop, and decide it again at every start)."""

from __future__ import annotations

import dataclasses

import pytest

from lepton.bus import ensure_topics
from lepton.contract.topics import dead_letter_topic
from tests.integration.scheduler_support import Namespaced, heartbeat, job, running_scheduler
from tests.integration.test_bus import read_raw

pytestmark = pytest.mark.integration


async def test_a_job_event_too_large_for_its_topic_is_set_aside_and_the_scheduler_goes_on(
    kafka, codec, publisher, database_for
) -> None:
    space = Namespaced(kafka, codec, publisher)
    events_topic = space.names.topic("lepton.jobs.events")
    # Job events of at most 20,000 bytes: a job id of 30,000 characters cannot be answered.
    small = dataclasses.replace(events_topic, config={"max.message.bytes": "20000"})
    await ensure_topics(kafka, [small])
    await space.create()
    await space.send("lepton.node.heartbeats", "n", heartbeat("n", sequence=1, cpu=4000))
    long_id = "j" * 30_000
    async with (
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
        space.reader("lepton.jobs.assigned") as assignments,
    ):
        await space.send("lepton.jobs.requested", "long", job(long_id))
        await space.send("lepton.jobs.requested", "after", job("after"))
        await events.until(lambda r: r["job_id"] == "after" and r["kind"] == "assigned")
        await assignments.until(lambda r: r["job_id"] == "after")
    letters = await read_raw(kafka, dead_letter_topic(events_topic.name), 1)
    for letter in letters:  # its queued event, and any later one
        headers = dict(letter.headers)
        assert headers["dlq_error_type"] == b"MessageTooLargeError"
        assert headers["dlq_source_topic"] == events_topic.name.encode()
        assert b"20,000-byte limit" in headers["dlq_error_message"]
        assert letter.key.startswith(b"jjj")
