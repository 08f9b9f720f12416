"""What the scheduler keeps of job events for jobs nobody requested, and which job events
and heartbeats it refuses (the journal and the heartbeat digest: pure logic)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from lepton.contract import default_codec
from lepton.contract.job_events import job_event
from lepton.contract.names import InvalidField
from lepton.scheduling.journal import Journal, Status
from lepton.services.scheduler.heartbeats import HEARTBEAT, HeartbeatDigest, Message
from lepton.services.scheduler.liveness import Liveness
from tests.integration.scheduler_support import heartbeat, job, now_ms


def report(job_id: str, kind: str, **details: Any) -> dict[str, Any]:
    return dict(job_event(job_id, kind, "acme", **details))


def test_megabytes_of_free_text_in_a_job_event_are_refused_not_kept() -> None:
    journal = Journal()
    for index in range(150):
        event = report(f"ghost-{index}", "failed") | {"reason": "x" * 900_000}
        with pytest.raises(InvalidField, match=r"^reason: must be text of at most 1024"):
            journal.fold(event)
    assert journal.early == {}
    assert journal.early_events == 0


def test_a_job_event_naming_no_name_is_refused() -> None:
    journal = Journal()
    with pytest.raises(InvalidField, match=r"^tenant: "):
        journal.fold(report("j", "cancel_requested") | {"tenant": "t" * 10_000})
    with pytest.raises(InvalidField, match=r"^node_id: "):
        journal.fold(report("j", "started", node_id="n\u202e"))


def test_events_of_unknown_jobs_are_kept_slim_and_bounded_and_applied_when_requested() -> None:
    journal = Journal(max_early_events=3)
    journal.fold(report("later", "queued", reason="r" * 1000))
    journal.fold(report("later", "progress", progress_percent=5.0, stage="s" * 1000))
    journal.fold(report("later", "cancel_requested"))
    journal.fold(report("ghost-1", "queued"))
    journal.fold(report("ghost-2", "queued"))  # past the bound: dropped, counted
    assert journal.early_events == 3
    assert journal.early_dropped == 1
    kept = journal.early["later"]
    assert [event["kind"] for event in kept] == ["queued", "cancel_requested"]  # no progress
    assert all("reason" not in event and "stage" not in event for event in kept)
    entry = journal.request(job("later"))
    assert entry is not None
    assert entry.status is Status.QUEUED
    assert entry.cancel_requested
    assert journal.early_events == 1  # ghost-1 still waits


# -- heartbeats: the digest refuses what no node could send ------------------------------------

CODEC = default_codec()


@dataclass
class _Event:
    record: dict[str, Any]


def digest() -> tuple[HeartbeatDigest, list[Message]]:
    messages: list[Message] = []
    return HeartbeatDigest(Liveness(), 0.9, messages.append, CODEC), messages


@pytest.mark.parametrize(
    ("shape", "field"),
    [({"cpu": -64_000}, "capacity.cpu_millicores"), ({"sent": 253_402_300_799_000}, "sent_at")],
)
def test_an_impossible_heartbeat_is_dead_lettered_once_live_and_only_counted_in_replay(
    shape: dict[str, Any], field: str
) -> None:
    hb, messages = digest()
    bad = heartbeat("n", sequence=1, **shape)
    value = CODEC.encode(HEARTBEAT, bad)
    assert not hb.skim(b"n", value)  # left to the careful path, which says why
    hb.apply(_Event(bad))  # type: ignore[arg-type]  # replaying: dead-lettered already
    assert hb.refused == 1
    hb.live = True
    with pytest.raises(InvalidField) as refused:
        hb.apply(_Event(bad))  # type: ignore[arg-type]
    assert refused.value.field == field
    asyncio.run(hb.flush())
    assert messages == []
    assert len(hb.liveness) == 0


def test_a_known_node_whose_later_heartbeat_is_impossible_is_not_skimmed() -> None:
    hb, _ = digest()
    good = heartbeat("n", sequence=1)
    assert hb.skim(b"n", CODEC.encode(HEARTBEAT, good))
    future = heartbeat("n", sequence=2, sent=now_ms() + 3_600_000)
    assert not hb.skim(b"n", CODEC.encode(HEARTBEAT, future))
