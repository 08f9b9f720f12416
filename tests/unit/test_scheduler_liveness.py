"""Liveness from the heartbeats' own clocks: lag never kills, silence does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lepton.services.scheduler.liveness import Liveness, Observation, Verdicts

START = 1_000_000


def beat(live: Liveness, node: str, sent: int, *, seq: int, now: int, started: int = 0) -> str:
    return live.observe(
        node, agent_started_at_ms=started, sequence=seq, sent_at_ms=sent, now_ms=now
    )


def test_a_silent_node_is_first_suspect_then_dead_while_others_beat() -> None:
    live = Liveness(suspect_after_ms=5_000, dead_after_ms=15_000)
    beat(live, "quiet", START, seq=1, now=START)
    for second in range(1, 17):
        t = START + second * 1000
        beat(live, "busy", t, seq=second, now=t)
        verdicts = live.sweep(t)
        if second == 6:
            assert verdicts.newly_suspect == ("quiet",)
        if second == 16:
            assert verdicts.dead == ("quiet",)
    assert live.is_suspect("busy") is False
    assert len(live) == 1


def test_consumer_lag_delays_everyone_alike_and_kills_nobody() -> None:
    live = Liveness()
    # Heartbeats sent a second apart are read 60 s late: the reader's clock is far ahead.
    for second in range(20):
        sent = START + second * 1000
        beat(live, "a", sent, seq=second, now=sent + 60_000)
        beat(live, "b", sent, seq=second, now=sent + 60_000)
        verdicts = live.sweep(sent + 60_000)
        assert verdicts.dead == ()
        assert verdicts.newly_suspect == ()
        assert verdicts.pipeline_stalled_ms == 60_000, "the lag itself is what is reported"


def test_when_every_node_falls_silent_the_pipeline_is_blamed_not_the_nodes() -> None:
    live = Liveness(dead_after_ms=15_000)
    for node in ("a", "b", "c"):
        beat(live, node, START, seq=1, now=START)
    verdicts = live.sweep(START + 20_000)
    assert verdicts.dead == ()
    assert verdicts.pipeline_stalled_ms == 20_000
    assert len(live) == 3


def test_the_first_node_heard_after_a_stall_does_not_make_the_others_dead() -> None:
    """The chaos suite's finding: every trainer paused at once, then resumed one after
    the other; the first heartbeat moved the watermark 25 s on and the node resumed a
    moment later was declared dead, its job requeued. Now every node is judged from
    where the pipeline resumed."""
    live = Liveness(suspect_after_ms=5_000, dead_after_ms=15_000)
    for node in ("a", "b"):
        beat(live, node, START, seq=1, now=START)
    assert live.sweep(START + 25_000).pipeline_stalled_ms == 25_000
    beat(live, "a", START + 25_000, seq=2, now=START + 25_000)
    assert live.sweep(START + 25_000) == Verdicts()
    beat(live, "b", START + 25_100, seq=2, now=START + 25_100)
    assert live.sweep(START + 25_100) == Verdicts()
    # A node that really stopped during the stall is dead once it stays silent after it.
    for second in range(26, 42):
        beat(live, "a", START + second * 1000, seq=second, now=START + second * 1000)
    assert live.sweep(START + 41_000).dead == ("b",)


def test_a_heartbeat_from_the_future_cannot_push_the_others_into_death() -> None:
    live = Liveness(dead_after_ms=15_000, max_clock_skew_ms=2_000)
    beat(live, "honest", START, seq=1, now=START)
    beat(live, "ahead", START + 3_600_000, seq=1, now=START)  # clock an hour fast
    assert live.sweep(START).dead == ()


def test_stale_and_backwards_heartbeats_are_ignored() -> None:
    live = Liveness()
    assert beat(live, "n", START + 1000, seq=5, now=START + 1000) == Observation.ACCEPTED
    assert beat(live, "n", START + 500, seq=4, now=START + 1000) == Observation.STALE
    assert beat(live, "n", START + 2000, seq=5, now=START + 2000) == Observation.STALE
    assert beat(live, "n", START + 2000, seq=1, now=START + 2000, started=1) == (
        Observation.RESTARTED
    )
    assert beat(live, "n", START + 3000, seq=9, now=START + 3000, started=0) == Observation.STALE


def test_the_node_table_is_bounded_and_counts_the_overflow() -> None:
    live = Liveness(max_nodes=3)
    for index in range(10):
        beat(live, f"n{index}", START, seq=1, now=START)
    assert len(live) == 3
    assert live.overflow == 7
    assert beat(live, "n0", START + 1, seq=2, now=START + 1) == Observation.ACCEPTED


def judged_by_scanning(
    nodes: dict[str, tuple[int, bool]], watermark: int, resumed: int, live: Liveness
) -> Any:
    """What a sweep must find, from every node's last send time and suspicion (none
    judged from before the pipeline last resumed)."""
    heard = {n: max(sent, resumed) for n, (sent, _) in nodes.items()}
    dead = {n for n in nodes if watermark - heard[n] > live.dead_after_ms}
    silent = {n for n in nodes if watermark - heard[n] > live.suspect_after_ms}
    newly = {n for n in silent - dead if not nodes[n][1]}
    recovered = {n for n, (_, suspect) in nodes.items() if suspect and n not in silent}
    return newly, recovered, dead


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("beat"), st.integers(0, 5), st.integers(0, 6_000)),
            st.tuples(st.just("restart"), st.integers(0, 5), st.integers(-5_000, 20_000)),
            st.tuples(st.just("sweep"), st.just(0), st.integers(0, 6_000)),
        ),
        max_size=60,
    )
)
def test_a_sweep_finds_what_scanning_every_node_would(ops: list[tuple[str, int, int]]) -> None:
    """Sweeps skip the scan while no verdict can change: they must still find every
    change a full scan finds, at the same sweep."""
    live = Liveness(suspect_after_ms=5_000, dead_after_ms=15_000, max_clock_skew_ms=0)
    now = START
    sequence = watermark = resumed = 0
    started: dict[str, int] = {}
    expected: dict[str, tuple[int, bool]] = {}  # node -> (last send time, suspect)
    for op, node_index, step in ops:
        now += step
        node = f"n{node_index}"
        sequence += 1
        if op in ("beat", "restart"):
            if op == "restart":
                started[node] = started.get(node, 0) + 1
            sent = now + min(0, step) if op == "restart" else now
            seen = beat(live, node, sent, seq=sequence, now=now, started=started.get(node, 0))
            if seen is not Observation.STALE:
                expected[node] = (sent, expected.get(node, (0, False))[1])
                if watermark and sent - watermark > live.dead_after_ms:
                    resumed = sent
                watermark = max(watermark, sent)
            continue
        verdicts = live.sweep(now)
        if not expected or now - watermark > live.dead_after_ms:
            continue  # nothing to judge, or the pipeline is blamed: nobody is judged
        newly, recovered, dead = judged_by_scanning(expected, watermark, resumed, live)
        assert set(verdicts.newly_suspect) == newly
        assert set(verdicts.recovered) == recovered
        assert set(verdicts.dead) == dead
        for node_id in dead:
            del expected[node_id]
        for node_id, (sent, suspect) in expected.items():
            expected[node_id] = (sent, (suspect or node_id in newly) and node_id not in recovered)
        assert {n for n, (_, suspect) in expected.items() if suspect} == {
            n for n in expected if live.is_suspect(n)
        }
