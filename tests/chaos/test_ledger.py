"""What the chaos suite counts as completed, lost and duplicated (pure logic: runs with the
unit tests, unlike the matrix itself)."""

from __future__ import annotations

import time

from bench.chaos.workload import Item, Ledger


def _ledger(*ids: str) -> Ledger:
    ledger = Ledger()
    for item_id in ids:
        ledger.add(Item("job" if item_id.startswith("job") else "ingest", item_id, "r", 0.0))
    return ledger


def test_a_redelivered_answer_is_one_effect_and_a_second_version_is_a_duplicate() -> None:
    ledger = _ledger("once", "twice")
    ready = {"request_id": "once", "version": "v1"}
    ledger.record("lepton.data.ready", ready)
    ledger.record("lepton.data.ready", ready)  # the same answer sent again
    ledger.record("lepton.data.ready", {"request_id": "twice", "version": "v1"})
    ledger.record("lepton.data.ready", {"request_id": "twice", "version": "v2"})
    assert ledger.completed("once")
    assert ledger.duplicated("once") == 0
    assert ledger.duplicated("twice") == 1


def test_a_job_is_completed_by_its_terminal_event_not_by_its_model() -> None:
    ledger = _ledger("job-1", "job-2")
    ledger.record("lepton.models.ready", {"job_id": "job-1", "model_id": "m1"})
    assert not ledger.completed("job-1")
    assert [item.id for item in ledger.pending("r")] == ["job-1", "job-2"]
    succeeded = {"job_id": "job-1", "kind": "succeeded", "lease_epoch": 1, "node_id": "n"}
    ledger.record("lepton.jobs.events", succeeded)
    ledger.record("lepton.jobs.events", {"job_id": "job-2", "kind": "progress", "lease_epoch": 1})
    assert ledger.completed("job-1")
    assert not ledger.completed("job-2")
    # A fenced trainer's late result: a second model and a second success, another lease.
    ledger.record("lepton.models.ready", {"job_id": "job-1", "model_id": "m2"})
    ledger.record("lepton.jobs.events", succeeded | {"lease_epoch": 2})
    assert ledger.duplicated("job-1") == 2


async def test_until_settled_is_bounded_and_sees_an_answer_arrive() -> None:
    ledger = _ledger("late")
    began = time.monotonic()
    assert not await ledger.until_settled("r", 0.2, ("ingest",))
    assert time.monotonic() - began < 2
    ledger.record("lepton.data.rejected", {"request_id": "late", "code": "too_large"})
    assert await ledger.until_settled("r", 0.2, ("ingest",))


def test_each_model_of_a_job_is_work_for_the_evaluator() -> None:
    ledger = _ledger("job-1")
    ledger.record("lepton.models.ready", {"job_id": "job-1", "model_id": "m1"})
    ledger.record("lepton.models.ready", {"job_id": "job-1", "model_id": "m1"})
    assert [item.id for item in ledger.pending("r", ("evaluation",))] == ["m1"]
    evaluated = {"model_id": "m1", "evaluated_at": 5}
    ledger.record("lepton.models.evaluated", evaluated)
    ledger.record("lepton.models.evaluated", evaluated)  # redelivered: one evaluation
    assert ledger.completed("m1")
    assert ledger.duplicated("m1") == 0
    ledger.record("lepton.models.evaluated", evaluated | {"evaluated_at": 9})  # evaluated again
    assert ledger.duplicated("m1") == 1
