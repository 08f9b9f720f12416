"""Alert rules: fire after their duration, resolve, carry what lepton.alerts needs."""

from __future__ import annotations

from typing import Any

from lepton.contract import default_codec
from lepton.services.monitor.entities import Lag
from lepton.services.monitor.rules import (
    Reading,
    Rule,
    RuleEngine,
    default_rules,
    read_signals,
)
from lepton.services.monitor.state import MonitorState
from tests.samples import sample

T0 = 1_700_000_000_000
HOT = Rule("hot", "temperature", 80, 60, "warning", "Too hot")


def signals(**values: float) -> dict[str, dict[str, Reading]]:
    return {
        "temperature": {
            subject: Reading(value, {"room": subject}) for subject, value in values.items()
        }
    }


def test_a_rule_fires_only_after_its_condition_held_for_its_duration() -> None:
    engine = RuleEngine([HOT])
    assert engine.evaluate(signals(a=90), T0) == []
    assert engine.evaluate(signals(a=95), T0 + 59_999) == []
    [fired] = engine.evaluate(signals(a=97), T0 + 60_000)
    assert (fired.state, fired.subject, fired.value, fired.active_since) == ("firing", "a", 97, T0)
    assert engine.evaluate(signals(a=99), T0 + 70_000) == []  # fires once
    assert [alert.subject for alert in engine.firing()] == ["a"]


def test_a_dip_below_the_threshold_restarts_the_duration() -> None:
    engine = RuleEngine([HOT])
    engine.evaluate(signals(a=90), T0)
    assert engine.evaluate(signals(a=70), T0 + 30_000) == []  # never fired: nothing to resolve
    engine.evaluate(signals(a=90), T0 + 40_000)
    assert engine.evaluate(signals(a=90), T0 + 90_000) == []
    assert len(engine.evaluate(signals(a=90), T0 + 100_000)) == 1


def test_a_firing_alert_resolves_when_the_condition_ends_or_the_subject_goes() -> None:
    engine = RuleEngine([HOT])
    engine.evaluate(signals(a=90, b=90), T0)
    assert len(engine.evaluate(signals(a=90, b=90), T0 + 60_000)) == 2
    [resolved] = engine.evaluate(signals(a=50, b=90), T0 + 61_000)
    assert (resolved.subject, resolved.state, resolved.value) == ("a", "resolved", 50)
    [gone] = engine.evaluate(signals(), T0 + 62_000)
    assert (gone.subject, gone.state, gone.value) == ("b", "resolved", 90)
    assert engine.firing() == []


def test_below_rules() -> None:
    rule = Rule("cold", "temperature", 10, 0, "info", "Too cold", op="<")
    engine = RuleEngine([rule])
    assert [t.state for t in engine.evaluate(signals(a=5), T0)] == ["firing"]
    assert [t.state for t in engine.evaluate(signals(a=15), T0 + 1)] == ["resolved"]


def test_transitions_are_valid_alert_records() -> None:
    engine = RuleEngine([HOT])
    engine.evaluate(signals(a=90), T0)
    [fired] = engine.evaluate(signals(a=90), T0 + 60_000)
    record: dict[str, Any] = fired.record()
    assert fired.key == "hot/a"
    assert record["labels"] == {"room": "a"}
    assert record["severity"] == "warning"
    assert "Too hot (firing): a at 90" in record["summary"]
    codec = default_codec()
    encoded = codec.encode("lepton.Alert", record)
    assert codec.decode(encoded, expected="lepton.Alert")[1]["state"] == "firing"


def test_engine_snapshot_keeps_pending_and_firing_alerts() -> None:
    engine = RuleEngine([HOT])
    engine.evaluate(signals(a=90, b=90), T0)
    engine.evaluate(signals(a=90), T0 + 60_000)
    restored = RuleEngine([HOT])
    restored.restore(engine.to_snapshot())
    assert restored.alerts == engine.alerts
    # No second "firing" after a restart; the resolution still comes.
    assert restored.evaluate(signals(a=90), T0 + 61_000) == []
    assert [t.state for t in restored.evaluate(signals(a=1), T0 + 62_000)] == ["resolved"]


def heartbeat(node: str, sent_at: int, cpu: int = 1000) -> dict[str, Any]:
    record = sample("lepton.NodeHeartbeat")
    record.update(
        node_id=node,
        region="eu",
        sent_at=sent_at,
        sequence=sent_at,
        agent_started_at=T0 - 1,
        capacity={"cpu_millicores": 1000, "memory_mib": 1000, "gpus": 0, "network_mbps": 0},
        usage={"cpu_millicores": cpu, "memory_mib": 10, "gpus": 0, "network_mbps": 0},
    )
    return record


def run(state: MonitorState, engine: RuleEngine, now: int) -> list[tuple[str, str, str]]:
    return [
        (t.rule.name, t.subject, t.state)
        for t in engine.evaluate(read_signals(state, engine.rules, now), now)
    ]


def test_default_rules_over_the_state() -> None:
    state = MonitorState()
    engine = RuleEngine(default_rules(node_dead_after_s=15))
    state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n1", T0, cpu=990))
    state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n2", T0, cpu=100))
    assert run(state, engine, T0) == []
    # Node dead: judged from the heartbeats' own times, once it is past the threshold
    # behind the newest heartbeat of any node (n2 beats on).
    for sent in (T0 + 8_000, T0 + 15_001):  # beating on (no gap the size of a stall)
        state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n2", sent, cpu=100))
    assert run(state, engine, T0 + 15_001) == [("node_dead", "n1", "firing")]
    state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n1", T0 + 16_000, cpu=990))
    assert run(state, engine, T0 + 16_000) == [("node_dead", "n1", "resolved")]
    # Utilisation above 95 % (held since T0) fires once it held for five minutes.
    for second in range(17, 300, 10):
        for node, cpu in (("n1", 990), ("n2", 100)):
            state.apply("lepton.NodeHeartbeat", "hb", heartbeat(node, T0 + second * 1000, cpu=cpu))
        assert run(state, engine, T0 + second * 1000) == []
    state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n1", T0 + 300_000, cpu=990))
    assert run(state, engine, T0 + 300_000) == [
        ("node_utilisation_high", "n1/cpu_millicores", "firing")
    ]
    state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n1", T0 + 301_000, cpu=100))
    assert run(state, engine, T0 + 301_000) == [
        ("node_utilisation_high", "n1/cpu_millicores", "resolved")
    ]


def test_every_node_silent_at_once_is_one_pipeline_alert_and_no_node_dead() -> None:
    """As the scheduler judges it: all heartbeats stopping together is more likely our
    fault (the heartbeat pipeline) than every node's, so no node is declared dead."""
    state = MonitorState()
    engine = RuleEngine(default_rules(node_dead_after_s=15))
    for node in ("n1", "n2", "n3"):
        state.apply("lepton.NodeHeartbeat", "hb", heartbeat(node, T0 + int(node[1]) * 300))
    assert run(state, engine, T0 + 1_000) == []
    assert run(state, engine, T0 + 15_901) == [("heartbeats_stopped", "nodes", "firing")]
    assert run(state, engine, T0 + 60_000) == []
    # Heard again one after another: the first does not make the others dead.
    state.apply("lepton.NodeHeartbeat", "hb", heartbeat("n1", T0 + 61_000))
    assert run(state, engine, T0 + 61_000) == [("heartbeats_stopped", "nodes", "resolved")]
    for node in ("n2", "n3"):
        state.apply("lepton.NodeHeartbeat", "hb", heartbeat(node, T0 + 61_500))
    assert run(state, engine, T0 + 62_000) == []
    # One that stays silent after the stall is dead once it lies behind by the threshold.
    for sent in (T0 + 69_000, T0 + 77_000):
        for node in ("n1", "n2"):
            state.apply("lepton.NodeHeartbeat", "hb", heartbeat(node, sent))
    assert run(state, engine, T0 + 77_000) == [("node_dead", "n3", "firing")]


def test_queue_wait_lag_dead_letters_and_model_regression_rules() -> None:
    state = MonitorState()
    engine = RuleEngine(default_rules())
    job = sample("lepton.JobRequested")
    job.update(job_id="j", tenant="acme", priority_class="batch", submitted_at=T0)
    state.apply("lepton.JobRequested", "jr", job)
    assert run(state, engine, T0 + 600_001) == []  # waiting too long, not yet for a minute
    assert run(state, engine, T0 + 660_001) == [("queue_wait_high", "acme/batch", "firing")]

    behind = {("lepton-ingest", "t"): Lag(20_000, 5.0, 0, 20_000)}
    state.set_pipeline(behind, {"t": 0}, T0)
    assert run(state, engine, T0 + 660_002) == []
    state.set_pipeline(behind, {"t": 3}, T0 + 700_000)
    assert ("dead_letters_growing", "t", "firing") in run(state, engine, T0 + 700_000)
    assert run(state, engine, T0 + 760_002) == [("consumer_lag_high", "lepton-ingest/t", "firing")]

    for model, score, at in (("m1", 0.9, T0), ("m2", 0.8, T0 + 1)):
        evaluated = sample("lepton.ModelEvaluated")
        evaluated.update(
            model_id=model,
            tenant="acme",
            model_name="churn",
            metrics={"f1_macro": score},
            evaluated_at=at,
        )
        state.apply("lepton.ModelEvaluated", "me", evaluated)
    [(rule, subject, firing)] = run(state, engine, T0 + 760_003)
    assert (rule, subject, firing) == ("model_metric_regressed", "acme/churn", "firing")
    alert = engine.alerts["model_metric_regressed", "acme/churn"]
    assert alert.tenant == "acme"
    assert alert.labels["metric"] == "f1_macro"


def test_lag_alerts_judge_leptons_own_consumer_groups_only() -> None:
    state = MonitorState()
    engine = RuleEngine(default_rules())
    stalled = Lag(20_000, 600.0, 0, 20_000)  # far behind on both counts
    groups = ("lepton-trainer-node-7", "lepton-evaluator", "console-consumer-4711")
    groups += ("connect-lepton-sink", "lepton-debug")  # the last: Lepton-like, not Lepton's
    state.set_pipeline({(group, "t"): stalled for group in groups}, {}, T0)
    assert run(state, engine, T0) == []
    fired = run(state, engine, T0 + 60_000)
    assert sorted(subject for _, subject, _ in fired) == [
        "lepton-evaluator/t",
        "lepton-evaluator/t",
        "lepton-trainer-node-7/t",
        "lepton-trainer-node-7/t",
    ]
    assert {rule for rule, _, _ in fired} == {"consumer_lag_high", "consumer_lag_seconds_high"}
    # What an operator names is judged (LEPTON_MONITOR_LAG_ALERT_GROUPS), and an alert
    # of a group no longer judged (say, restored from an older snapshot) resolves.
    widened = RuleEngine(default_rules(lag_groups=["connect-*"]))
    widened.restore(engine.to_snapshot())
    assert sorted(
        (subject, transition) for _, subject, transition in run(state, widened, T0 + 60_001)
    ) == [
        ("lepton-evaluator/t", "resolved"),
        ("lepton-evaluator/t", "resolved"),
        ("lepton-trainer-node-7/t", "resolved"),
        ("lepton-trainer-node-7/t", "resolved"),
    ]
    assert {s for _, s, _ in run(state, widened, T0 + 120_001)} == {"connect-lepton-sink/t"}


def test_held_signals_leave_their_alerts_alone() -> None:
    engine = RuleEngine([HOT])
    engine.evaluate(signals(a=90), T0)
    engine.evaluate(signals(a=90), T0 + 60_000)
    # While held (the monitor is behind), neither a resolution nor a new firing.
    assert engine.evaluate(signals(), T0 + 61_000, held={"temperature"}) == []
    assert engine.evaluate(signals(b=99), T0 + 200_000, held={"temperature"}) == []
    assert [a.subject for a in engine.firing()] == ["a"]
    assert [t.state for t in engine.evaluate(signals(a=1), T0 + 201_000)] == ["resolved"]
