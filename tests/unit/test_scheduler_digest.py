"""The heartbeat digest passes on what placement needs, and only that."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from lepton.scheduling.liveness import Liveness
from services.scheduler.digest import HeartbeatDigest, Message
from tests.integration.scheduler_support import heartbeat, now_ms


@dataclass
class _Event:
    record: dict[str, Any]


def beat(node: str, sequence: int, **shape: Any) -> _Event:
    """A heartbeat as the digester's subscriber hands it over."""
    return _Event(heartbeat(node, sequence=sequence, **shape))


class Digested:
    def __init__(self, **liveness: Any) -> None:
        self.messages: list[Message] = []
        self.digest = HeartbeatDigest(Liveness(**liveness), 0.9, self.messages.append)

    def fetch(self, *events: _Event) -> list[Message]:
        """Apply a fetch of heartbeats and flush it; what it emitted."""
        before = len(self.messages)
        for event in events:
            self.digest.apply(event)  # type: ignore[arg-type]
        asyncio.run(self.digest.flush())
        return self.messages[before:]

    def nodes(self, *events: _Event) -> list[tuple[str, bool, bool]]:
        """(node, restarted, hot) of each node the fetch passed on."""
        return [
            (record["node_id"], restarted, hot)
            for message in self.fetch(*events)
            for record, restarted, hot in message["nodes"]
        ]


def test_a_node_is_passed_on_when_first_seen_then_not_while_only_its_usage_moves() -> None:
    digested = Digested()
    assert digested.nodes(beat("a", 1), beat("b", 1)) == [("a", False, False), ("b", False, False)]
    assert digested.nodes(beat("a", 2, busy_cpu=3000), beat("b", 2, busy_cpu=10)) == []


def test_one_fetch_passes_on_the_newest_heartbeat_of_each_node_once() -> None:
    digested = Digested()
    messages = digested.fetch(beat("a", 1, cpu=1000), beat("a", 2, cpu=2000))
    assert [record["capacity"]["cpu_millicores"] for record, _, _ in messages[0]["nodes"]] == [2000]


def test_running_hot_and_cooling_down_are_passed_on() -> None:
    digested = Digested()
    digested.nodes(beat("a", 1))
    assert digested.nodes(beat("a", 2, busy_cpu=7500)) == [("a", False, True)]
    assert digested.nodes(beat("a", 3, busy_cpu=7600)) == []
    assert digested.nodes(beat("a", 4, busy_cpu=100)) == [("a", False, False)]


def test_a_change_of_capacity_or_labels_is_passed_on() -> None:
    digested = Digested()
    digested.nodes(beat("a", 1))
    assert digested.nodes(beat("a", 2, cpu=16000)) == [("a", False, False)]
    assert digested.nodes(beat("a", 3, cpu=16000, labels={"zone": "x"})) == [("a", False, False)]


def test_a_restarted_agent_is_passed_on_even_if_nothing_else_changed() -> None:
    digested = Digested()
    digested.nodes(beat("a", 5))
    # The restart and a later beat in the same fetch: the restart is not lost.
    assert digested.nodes(beat("a", 1, started=2), beat("a", 2, started=2)) == [("a", True, False)]
    assert digested.nodes(beat("a", 3, started=2)) == []


def test_a_heartbeat_whose_sequence_went_backwards_changes_nothing() -> None:
    digested = Digested()
    digested.nodes(beat("a", 5))
    assert digested.nodes(beat("a", 4, cpu=1)) == []


def test_unknown_nodes_past_the_table_bound_are_counted_not_passed_on() -> None:
    digested = Digested(max_nodes=1)
    assert digested.nodes(beat("a", 1), beat("b", 1)) == [("a", False, False)]
    assert digested.digest.liveness.overflow == 1


def test_sweeps_pass_on_suspect_and_dead_nodes_and_a_dead_node_comes_back_as_new() -> None:
    digested = Digested(suspect_after_ms=5_000, dead_after_ms=15_000)
    start = now_ms() - 60_000
    digested.nodes(beat("quiet", 1, sent=start), beat("busy", 1, sent=start))
    digested.nodes(beat("busy", 2, sent=start + 6_000))
    assert digested.digest.sweep(start + 6_000) is None
    assert digested.messages[-1] == {"suspect": ["quiet"], "recovered": [], "dead": []}
    digested.nodes(beat("busy", 3, sent=start + 16_000))
    digested.digest.sweep(start + 16_000)
    assert digested.messages[-1] == {"suspect": [], "recovered": [], "dead": ["quiet"]}
    assert digested.nodes(beat("quiet", 2, sent=start + 17_000)) == [("quiet", False, False)]


def test_a_sweep_with_no_verdict_emits_nothing_and_reports_a_stalled_pipeline() -> None:
    digested = Digested(suspect_after_ms=5_000, dead_after_ms=15_000)
    start = now_ms() - 60_000
    digested.nodes(beat("a", 1, sent=start))
    before = len(digested.messages)
    assert digested.digest.sweep(start + 1_000) is None
    assert digested.digest.sweep(start + 20_000) == 20_000
    assert len(digested.messages) == before
