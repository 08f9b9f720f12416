"""What the monitor refuses and forgets: impossible heartbeats, names outside the rule,
megabytes of free text, more nodes than its bound; many nodes dead at once, one alert."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lepton.contract.names import InvalidField
from lepton.services.monitor.rules import GROUP, RuleEngine, default_rules, read_signals
from lepton.services.monitor.state import MonitorState
from tests.samples import sample

NOW = 1_700_000_000_000
HB = "lepton.NodeHeartbeat"


def clock() -> int:
    return NOW


def beat(node: str, sent_at: int = NOW, sequence: int = 1, **changes: Any) -> dict[str, Any]:
    record = sample(HB)
    record.update(
        node_id=node,
        region="eu",
        sent_at=sent_at,
        sequence=sequence,
        agent_started_at=NOW - 3_600_000,
        capacity={"cpu_millicores": 4000, "memory_mib": 8000, "gpus": 0, "network_mbps": 100},
        usage={"cpu_millicores": 1000, "memory_mib": 2000, "gpus": 0, "network_mbps": 0},
    )
    return record | changes


NEGATIVE = {"cpu_millicores": -64_000, "memory_mib": 1, "gpus": 0, "network_mbps": 0}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"capacity": NEGATIVE}, "capacity.cpu_millicores"),
        ({"sent_at": 253_402_300_799_000}, "sent_at"),  # dated 9999: alive for ever
        ({"node_id": "n\t1"}, "node_id"),
    ],
)
def test_an_impossible_heartbeat_is_refused_and_changes_nothing(
    changes: dict[str, Any], field: str
) -> None:
    state = MonitorState(clock=clock)
    with pytest.raises(InvalidField) as refused:
        state.apply(HB, "hb", beat("n1", **changes))
    assert refused.value.field == field
    assert state.nodes == {}
    assert state.version == 0
    assert state.events_by_topic == {}


def test_a_known_node_cannot_turn_impossible_later() -> None:
    state = MonitorState(clock=clock)
    state.apply(HB, "hb", beat("n1"))
    with pytest.raises(InvalidField, match=r"capacity\.cpu_millicores"):
        state.apply(HB, "hb", beat("n1", NOW + 1000, sequence=2, capacity=NEGATIVE))
    assert state.nodes["n1"].capacity["cpu_millicores"] == 4000


def test_a_clock_a_little_ahead_is_capped_so_the_node_dies_in_time() -> None:
    state = MonitorState(clock=clock)
    state.apply(HB, "hb", beat("n1", NOW + 50_000))
    assert state.nodes["n1"].sent_at == NOW + 2_000
    assert not state.alive(state.nodes["n1"], NOW + 20_000, 15_000)


def test_unknown_nodes_past_the_bound_are_counted_not_stored() -> None:
    state = MonitorState(clock=clock, max_nodes=100)
    for index in range(300):
        state.apply(HB, "hb", beat(f"flood-{index}"))
    assert len(state.nodes) == 100
    assert state.counters["heartbeats_overflow"] == 200
    state.apply(HB, "hb", beat("flood-0", NOW + 1, sequence=2))  # known nodes still update
    assert state.nodes["flood-0"].sequence == 2


def test_nodes_silent_long_enough_are_forgotten_as_the_others_beat_on() -> None:
    state = MonitorState(clock=clock, forget_after_ms=600_000)
    start = NOW - 3_600_000
    for index in range(1000):
        state.apply(HB, "hb", beat(f"flood-{index}", start))
    for minute in range(12):
        state.apply(HB, "hb", beat("real", start + minute * 60_000, sequence=minute + 1))
    assert set(state.nodes) == {"real"}
    assert state.counters["nodes_forgotten"] == 1000


def test_a_node_silent_past_the_horizon_that_beats_again_is_kept() -> None:
    state = MonitorState(clock=clock, forget_after_ms=600_000)
    state.apply(HB, "hb", beat("back", NOW - 3_600_000))
    state.apply(HB, "hb", beat("back", NOW, sequence=2))  # the newest beat: it sweeps
    assert state.nodes["back"].sequence == 2


def test_a_restart_does_not_bring_back_what_it_should_forget_nor_more_than_the_bound() -> None:
    state = MonitorState(clock=clock, forget_after_ms=10**12)
    state.apply(HB, "hb", beat("old", NOW - 3_600_000))
    for index in range(50):
        state.apply(HB, "hb", beat(f"n{index}"))
    snapshot = json.loads(json.dumps(state.to_snapshot()))
    restored = MonitorState.from_snapshot(snapshot, forget_after_ms=600_000, max_nodes=20)
    assert len(restored.nodes) == 20
    assert "old" not in restored.nodes


@pytest.mark.parametrize(
    ("event_type", "changes", "field"),
    [
        ("lepton.JobEvent", {"reason": "x" * 900_000}, "reason"),
        ("lepton.JobEvent", {"job_id": "j\u202e"}, "job_id"),
        ("lepton.JobRequested", {"tenant": "t" * 10_000}, "tenant"),
        ("lepton.DatasetRequested", {"dataset": "house\tprices"}, "dataset"),
    ],
)
def test_job_and_dataset_records_outside_the_rules_are_refused(
    event_type: str, changes: dict[str, Any], field: str
) -> None:
    state = MonitorState(clock=clock)
    record = sample(event_type, 0) | changes
    with pytest.raises(InvalidField) as refused:
        state.apply(event_type, "t", record)
    assert refused.value.field == field
    assert not state.jobs
    assert not state.datasets
    assert state.version == 0


# -- many nodes dead at once: one alert ---------------------------------------------------------


def transitions(state: MonitorState, engine: RuleEngine, now: int) -> list[tuple[str, str, str]]:
    found = engine.evaluate(read_signals(state, engine.rules, now), now)
    return [(t.rule.name, t.subject, t.state) for t in found if t.rule.name == "node_dead"]


def test_many_nodes_dead_at_once_raise_one_alert_not_one_each() -> None:
    state = MonitorState(clock=lambda: NOW + 60_000)
    engine = RuleEngine(default_rules(node_dead_after_s=15, node_dead_group_above=20))
    for index in range(300):
        state.apply(HB, "hb", beat(f"n{index:03d}"))
    state.apply(HB, "hb", beat("alive"))
    assert transitions(state, engine, NOW) == []
    for sequence, sent in ((2, NOW + 8_000), (3, NOW + 16_000)):  # one node beats on
        state.apply(HB, "hb", beat("alive", sent, sequence=sequence))
    assert transitions(state, engine, NOW + 16_000) == [("node_dead", GROUP, "firing")]
    group = engine.alerts["node_dead", GROUP]
    assert group.value == 300
    assert group.labels == {"examples": "n000, n001, n002, n003, n004"}
    assert transitions(state, engine, NOW + 17_000) == []
    # Beating again, every node: the one alert resolves.
    for index in range(300):
        state.apply(HB, "hb", beat(f"n{index:03d}", NOW + 18_000, sequence=2))
    state.apply(HB, "hb", beat("alive", NOW + 18_000, sequence=4))
    assert transitions(state, engine, NOW + 18_000) == [("node_dead", GROUP, "resolved")]


def test_a_few_nodes_dead_are_each_their_own_alert_and_carry_on_through_a_storm() -> None:
    state = MonitorState(clock=lambda: NOW + 60_000)
    engine = RuleEngine(default_rules(node_dead_after_s=15, node_dead_group_above=20))
    state.apply(HB, "hb", beat("lone", NOW - 20_000))
    state.apply(HB, "hb", beat("alive", NOW - 10_000))  # heard all along
    for index in range(100):
        state.apply(HB, "hb", beat(f"n{index:03d}"))
    state.apply(HB, "hb", beat("alive", sequence=2))
    assert transitions(state, engine, NOW) == [("node_dead", "lone", "firing")]
    for sequence, sent in ((3, NOW + 8_000), (4, NOW + 16_000)):
        state.apply(HB, "hb", beat("alive", sent, sequence=sequence))
    assert transitions(state, engine, NOW + 16_000) == [("node_dead", GROUP, "firing")]
    assert engine.alerts["node_dead", GROUP].value == 100
    assert ("node_dead", "lone") in engine.alerts  # neither resolved nor folded in
    record = engine.evaluate(read_signals(state, engine.rules, NOW + 16_500), NOW + 16_500)
    assert record == []
