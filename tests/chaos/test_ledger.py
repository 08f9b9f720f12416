"""What the chaos suite counts as completed, lost and duplicated (pure logic: runs with the
unit tests, unlike the matrix itself), and how a lost item is traced in the logs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bench.chaos.matrix import lost_notes
from bench.chaos.stack import Process, ServiceSpec
from bench.chaos.workload import Item, Ledger

if TYPE_CHECKING:
    from pathlib import Path


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


def test_a_lost_item_is_traced_to_the_newest_log_line_of_each_service_naming_it(
    tmp_path: Path,
) -> None:
    logs = {
        "evaluator": [
            '{"event": "evaluated", "model": "m1", "level": "info"}',
            '{"event": "database unavailable; retrying", "model": "m2", "level": "warning"}',
            '{"event": "evaluated", "model": "m3", "level": "info"}',
        ],
        "trainer-node-1": ['{"event": "model ready", "model": "m2", "job": "job-1"}', ""],
    }
    services = []
    for name, lines in logs.items():
        path = tmp_path / f"{name}.log"
        path.write_text("\n".join(lines) + "\n")
        services.append(Process(ServiceSpec(name, ("lepton-" + name,)), 0, path, {}))
    services.append(Process(ServiceSpec("ingest", ("lepton-ingest",)), 0, tmp_path / "none", {}))
    ledger = _ledger("job-1")
    ledger.record("lepton.jobs.events", {"job_id": "job-1", "kind": "started", "lease_epoch": 1})
    lost = [Item("evaluation", "m2", "r", 0.0), Item("evaluation", "m9", "r", 0.0)]
    lost += [Item("job", "job-1", "r", 0.0)] * 4 + [Item("ingest", "req-1", "r", 0.0)]
    assert lost_notes(ledger, services, lost) == [
        "no outcome for evaluation m2",
        f"  evaluator last logged of it: {logs['evaluator'][1]}",
        f"  trainer-node-1 last logged of it: {logs['trainer-node-1'][0]}",
        "no outcome for evaluation m9",
        "  no service logged it",
        *[
            "no outcome for job job-1 (its events: started)",
            f"  trainer-node-1 last logged of it: {logs['trainer-node-1'][0]}",
        ]
        * 3,
        "and 2 more, by last event: {'started': 1, 'ingest unanswered': 1}",
        f"evaluator last logged: {logs['evaluator'][2]}",
        f"trainer-node-1 last logged: {logs['trainer-node-1'][0]}",
        "ingest last logged: None",
    ]
    assert lost_notes(ledger, services, []) == []
