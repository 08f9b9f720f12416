"""The heartbeat digest passes on what placement needs, and only that.

Every behaviour is tested on both of its paths: heartbeats the subscriber decoded
(``apply``) and heartbeats taken from their bytes (``skim``); they must not differ.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

import pytest

from lepton.contract import default_codec
from lepton.services.scheduler.heartbeats import HEARTBEAT, HeartbeatDigest, Message
from lepton.services.scheduler.liveness import Liveness
from tests.integration.scheduler_support import heartbeat, now_ms

CODEC = default_codec()


@dataclass
class _Event:
    record: dict[str, Any]


def beat(node: str, sequence: int, **shape: Any) -> dict[str, Any]:
    return heartbeat(node, sequence=sequence, **shape)


class Digested:
    def __init__(self, path: str = "decoded", **liveness: Any) -> None:
        self.path = path
        self._coin = random.Random(path)
        self.messages: list[Message] = []
        self.digest = HeartbeatDigest(Liveness(**liveness), 0.9, self.messages.append, CODEC)

    def take(self, record: dict[str, Any]) -> None:
        """One heartbeat, as the digester's subscriber hands it over on this path."""
        if self.path == "skimmed" or (self.path == "mixed" and self._coin.random() < 0.5):
            value = CODEC.encode(HEARTBEAT, record)
            assert self.digest.skim(record["node_id"].encode(), value)
        else:
            self.digest.apply(_Event(record))  # type: ignore[arg-type]

    def fetch(self, *records: dict[str, Any]) -> list[Message]:
        """Take a fetch of heartbeats and flush it; what it emitted."""
        before = len(self.messages)
        for record in records:
            self.take(record)
        asyncio.run(self.digest.flush())
        return self.messages[before:]

    def nodes(self, *records: dict[str, Any]) -> list[tuple[str, bool, bool]]:
        """(node, restarted, hot) of each node the fetch passed on."""
        return [
            (record["node_id"], restarted, hot)
            for message in self.fetch(*records)
            for record, restarted, hot in message["nodes"]
        ]


@pytest.fixture(params=["decoded", "skimmed"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_node_is_passed_on_when_first_seen_then_not_while_only_its_usage_moves(path: str) -> None:
    digested = Digested(path)
    assert digested.nodes(beat("a", 1), beat("b", 1)) == [("a", False, False), ("b", False, False)]
    assert digested.nodes(beat("a", 2, busy_cpu=3000), beat("b", 2, busy_cpu=10)) == []


def test_one_fetch_passes_on_the_newest_heartbeat_of_each_node_once(path: str) -> None:
    digested = Digested(path)
    messages = digested.fetch(beat("a", 1, cpu=1000), beat("a", 2, cpu=2000))
    assert [record["capacity"]["cpu_millicores"] for record, _, _ in messages[0]["nodes"]] == [2000]


def test_running_hot_and_cooling_down_are_passed_on(path: str) -> None:
    digested = Digested(path)
    digested.nodes(beat("a", 1))
    assert digested.nodes(beat("a", 2, busy_cpu=7500)) == [("a", False, True)]
    assert digested.nodes(beat("a", 3, busy_cpu=7600)) == []
    assert digested.nodes(beat("a", 4, busy_cpu=100)) == [("a", False, False)]


def test_a_change_of_capacity_or_labels_is_passed_on(path: str) -> None:
    digested = Digested(path)
    digested.nodes(beat("a", 1))
    assert digested.nodes(beat("a", 2, cpu=16000)) == [("a", False, False)]
    assert digested.nodes(beat("a", 3, cpu=16000, labels={"zone": "x"})) == [("a", False, False)]


def test_a_restarted_agent_is_passed_on_even_if_nothing_else_changed(path: str) -> None:
    digested = Digested(path)
    digested.nodes(beat("a", 5))
    # The restart and a later beat in the same fetch: the restart is not lost.
    assert digested.nodes(beat("a", 1, started=2), beat("a", 2, started=2)) == [("a", True, False)]
    assert digested.nodes(beat("a", 3, started=2)) == []


def test_a_heartbeat_whose_sequence_went_backwards_changes_nothing(path: str) -> None:
    digested = Digested(path)
    digested.nodes(beat("a", 5))
    assert digested.nodes(beat("a", 4, cpu=1)) == []


def test_unknown_nodes_past_the_table_bound_are_counted_not_passed_on(path: str) -> None:
    digested = Digested(path, max_nodes=1)
    assert digested.nodes(beat("a", 1), beat("b", 1)) == [("a", False, False)]
    assert digested.digest.liveness.overflow == 1


def test_sweeps_pass_on_suspect_and_dead_nodes_and_a_dead_node_comes_back_as_new(path: str) -> None:
    digested = Digested(path, suspect_after_ms=5_000, dead_after_ms=15_000)
    start = now_ms() - 60_000
    digested.nodes(beat("quiet", 1, sent=start), beat("busy", 1, sent=start))
    digested.nodes(beat("busy", 2, sent=start + 6_000))
    assert digested.digest.sweep(start + 6_000) is None
    assert digested.messages[-1] == {
        "kind": "verdicts",
        "suspect": ["quiet"],
        "recovered": [],
        "dead": [],
    }
    digested.nodes(beat("busy", 3, sent=start + 16_000))
    digested.digest.sweep(start + 16_000)
    assert digested.messages[-1] == {
        "kind": "verdicts",
        "suspect": [],
        "recovered": [],
        "dead": ["quiet"],
    }
    assert digested.nodes(beat("quiet", 2, sent=start + 17_000)) == [("quiet", False, False)]


def test_a_sweep_with_no_verdict_emits_nothing_and_reports_a_stalled_pipeline(path: str) -> None:
    digested = Digested(path, suspect_after_ms=5_000, dead_after_ms=15_000)
    start = now_ms() - 60_000
    digested.nodes(beat("a", 1, sent=start))
    before = len(digested.messages)
    assert digested.digest.sweep(start + 1_000) is None
    assert digested.digest.sweep(start + 20_000) == 20_000
    assert len(digested.messages) == before


def test_a_skimmed_heartbeat_is_the_record_the_codec_decodes() -> None:
    digested = Digested("skimmed")
    record = beat("a", 1, labels={"zone": "x"}, busy_cpu=7500)
    assert digested.fetch(record) == [
        {
            "kind": "nodes",
            "nodes": [(CODEC.decode(CODEC.encode(HEARTBEAT, record))[1], False, True)],
        }
    ]
    later = beat("a", 2, busy_cpu=100)  # same placement fields: its head is not read again
    later["labels"] = {"zone": "x"}
    assert digested.fetch(later)[0]["nodes"][0][0] == later


# Bytes of a heartbeat that would be accepted after the first one, were they whole.
_FIRST_SENT = now_ms() - 60_000
_SECOND = beat("a", 2, sent=_FIRST_SENT + 1_000)
_BODY = CODEC.encode(HEARTBEAT, _SECOND)[len(CODEC.schema(HEARTBEAT).header) :]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(b"a", None, id="no value"),
        pytest.param(None, CODEC.encode(HEARTBEAT, _SECOND), id="no key"),
        pytest.param(b"b", CODEC.encode(HEARTBEAT, _SECOND), id="keyed by another node"),
        pytest.param(b"a", CODEC.encode(HEARTBEAT, _SECOND)[:-3], id="truncated"),
        pytest.param(b"a", CODEC.encode(HEARTBEAT, _SECOND) + b"\x00", id="bytes left over"),
        pytest.param(b"a", b"\x00" * 40, id="not single-object encoded"),
        pytest.param(
            b"a", CODEC.schema("lepton.DataReady").header + _BODY, id="another schema's header"
        ),
    ],
)
def test_what_skimming_cannot_vouch_for_is_left_to_the_decoder_and_changes_nothing(
    key: bytes | None, value: bytes | None
) -> None:
    digested = Digested("skimmed")
    digested.nodes(beat("a", 1, sent=_FIRST_SENT))
    assert not digested.digest.skim(key, value)
    # Nothing of it was applied: sequence 2 is still to come, and is taken.
    changed = beat("a", 2, cpu=1, sent=_FIRST_SENT + 1_000)
    assert digested.nodes(changed) == [("a", False, False)]


def test_all_paths_pass_on_the_same_over_a_random_trace() -> None:
    """Decoded, skimmed, and both mixed on one digest (as another schema version or a
    foreign key would mix them), over beats that go back, restart, change, and nodes
    that fall silent long enough to die and then come back."""
    shuffled = random.Random(7)
    liveness = {"suspect_after_ms": 2_000, "dead_after_ms": 4_000}
    digests = [Digested(path, **liveness) for path in ("decoded", "skimmed", "mixed")]
    sequence = dict.fromkeys("abcdef", 0)
    start = now_ms() - 600_000
    for round_ in range(60):
        fetch = []
        for _ in range(shuffled.randint(1, 8)):
            node = shuffled.choices("abcdef", weights=[8, 8, 4, 2, 1, 1])[0]
            sequence[node] += shuffled.choice([1, 1, 1, -1])  # now and then one goes back
            fetch.append(
                beat(
                    node,
                    sequence[node],
                    started=shuffled.choice([1, 1, 1, 1, 2]),
                    cpu=shuffled.choice([8000, 8000, 8000, 16000]),
                    labels=shuffled.choice([{}, {}, {"zone": "x"}]),
                    busy_cpu=shuffled.choice([0, 100, 7500]),
                    sent=start + round_ * 1000,
                )
            )
        emitted = [digested.fetch(*fetch) for digested in digests]
        assert emitted[0] == emitted[1] == emitted[2]
        stalled = [digested.digest.sweep(start + round_ * 1000) for digested in digests]
        assert stalled[0] == stalled[1] == stalled[2]
    messages = digests[0].messages
    assert digests[1].messages == messages
    assert digests[2].messages == messages
    first_death = next(i for i, message in enumerate(messages) if message.get("dead"))
    dead = set(messages[first_death]["dead"])
    assert any(
        record["node_id"] in dead
        for message in messages[first_death + 1 :]
        for record, _, _ in message.get("nodes", ())
    ), "the trace should bring a dead node back"


def test_skimming_remembers_only_nodes_it_accepted_while_they_live() -> None:
    # White-box: the table of known leading bytes is not visible from outside, and must
    # stay within the liveness table's bound.
    digested = Digested("skimmed", max_nodes=2, suspect_after_ms=5_000, dead_after_ms=15_000)
    start = now_ms() - 60_000
    digested.nodes(beat("a", 1, sent=start), beat("b", 1, sent=start), beat("c", 1, sent=start))
    heads = digested.digest._heads
    assert set(heads) == {b"a", b"b"}  # c overflowed the table
    known_b = heads[b"b"]
    # b beats on (no stall-sized gap); a's heartbeat is stale (its sequence went back).
    digested.nodes(beat("b", 2, sent=start + 8_000))
    digested.nodes(beat("b", 3, sent=start + 16_000), beat("a", 0, sent=start + 16_000))
    assert heads[b"b"] is known_b  # the same leading bytes: not read, nor stored, again
    digested.digest.sweep(start + 16_000)
    assert set(heads) == {b"b"}  # a died
