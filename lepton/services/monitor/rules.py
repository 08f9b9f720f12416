"""Declarative alert rules over the monitor's state, and the engine that runs them. No I/O.

A :class:`Rule` names a *signal* (a measurement per subject, computed from the state by a
function in :data:`SIGNALS`), a comparison with a threshold, how long the condition must
hold before the rule fires, and a severity. :class:`RuleEngine` is given the signals and
the time, and answers with the transitions: a subject starts firing once its condition
has held for the rule's duration, and resolves as soon as it no longer holds (or the
subject is gone). The service turns transitions into ``lepton.alerts`` events.
"""

from __future__ import annotations

import fnmatch
import heapq
import operator
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lepton.contract.topics import CONSUMER_GROUPS
from lepton.services.monitor.state import MonitorState

__all__ = [
    "FRESHNESS_SIGNALS",
    "GROUP",
    "LEPTON_GROUPS",
    "SIGNALS",
    "Alert",
    "Reading",
    "Rule",
    "RuleEngine",
    "Transition",
    "default_rules",
    "read_signals",
]


@dataclass(frozen=True, slots=True)
class Reading:
    """One subject's measured value, with what an alert about it should carry."""

    value: float
    labels: Mapping[str, str] = field(default_factory=dict)
    tenant: str | None = None


# The subject of a rule's one alert for many subjects at once (see Rule.group_above).
GROUP = "*"
_EXAMPLES = 5  # subjects a group alert names

# Lepton's own consumer groups, as patterns (without the installation's topic prefix): the
# services' (lepton/contract/topics.py), not the SDK's. Another reader of Lepton's topics
# (a console consumer, a Kafka Connect worker, an operator's tool) keeps its own pace: its
# lag is shown, never alerted on, unless LEPTON_MONITOR_LAG_ALERT_GROUPS names it.
LEPTON_GROUPS: tuple[str, ...] = tuple(
    group.name + ("*" if group.prefixed else "")
    for group in CONSUMER_GROUPS
    if group.operation == "read" and group.actor != "client"
)


@dataclass(frozen=True, slots=True)
class Rule:
    """``group_above``: when more subjects than this start breaching while no alert of the
    rule is firing for them, they are raised as one alert on the subject :data:`GROUP`
    (its value: how many), described by ``group_summary``, not one alert each. The group
    takes in every further subject that starts breaching until none of them breaches any
    more; alerts already open for single subjects carry on as they were."""

    name: str
    signal: str  # a key of SIGNALS
    threshold: float
    for_s: float  # how long the condition must hold before the rule fires
    severity: Literal["info", "warning", "error", "critical"]
    summary: str  # for people; the subject, value and threshold are appended
    op: Literal[">", "<"] = ">"
    group_above: int | None = None
    group_summary: str = ""
    # Consumer-group patterns (shell-style): only readings whose "group" label matches one
    # are judged; None judges every reading.
    consumer_groups: tuple[str, ...] | None = None

    def breached(self, value: float) -> bool:
        return _OPS[self.op](value, self.threshold)

    def judges(self, reading: Reading) -> bool:
        group, patterns = reading.labels.get("group", ""), self.consumer_groups
        return patterns is None or any(fnmatch.fnmatchcase(group, p) for p in patterns)


_OPS: dict[str, Callable[[float, float], bool]] = {">": operator.gt, "<": operator.lt}


@dataclass(slots=True)
class Alert:
    """A (rule, subject) whose condition holds, firing once it held long enough."""

    rule: str
    subject: str
    since: int
    value: float
    firing: bool = False
    fired_at: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert starting to fire or resolving: what goes on ``lepton.alerts``."""

    rule: Rule
    subject: str
    state: Literal["firing", "resolved"]
    value: float
    active_since: int
    time: int
    labels: Mapping[str, str]
    tenant: str | None

    @property
    def key(self) -> str:
        return f"{self.rule.name}/{self.subject}"

    def record(self) -> dict[str, Any]:
        """The ``lepton.Alert`` record."""
        verb = "firing" if self.state == "firing" else "resolved"
        if self.subject == GROUP:
            summary = (
                f"{self.rule.group_summary} ({verb}): {self.value:.0f} at once, e.g. "
                f"{self.labels.get('examples', '')}"
            )
        else:
            summary = (
                f"{self.rule.summary} ({verb}): {self.subject} at {self.value:.4g}, "
                f"threshold {self.rule.op} {self.rule.threshold:.4g}"
            )
        return {
            "rule": self.rule.name,
            "subject": self.subject,
            "severity": self.rule.severity,
            "state": self.state,
            "value": float(self.value),
            "threshold": float(self.rule.threshold),
            "summary": summary,
            "tenant": self.tenant,
            "labels": dict(self.labels),
            "active_since": self.active_since,
            "time": self.time,
        }


class RuleEngine:
    """Tracks each (rule, subject) over successive evaluations."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = tuple(rules)
        self.alerts: dict[tuple[str, str], Alert] = {}

    def evaluate(
        self,
        signals: Mapping[str, Mapping[str, Reading]],
        now_ms: int,
        held: Collection[str] = (),
    ) -> list[Transition]:
        """Transitions since the last evaluation. Rules on a ``held`` signal are skipped,
        their alerts left as they are (the signal cannot be trusted right now)."""
        transitions: list[Transition] = []
        for rule in self.rules:
            if rule.signal in held:
                continue
            readings = signals.get(rule.signal, {})
            if rule.consumer_groups is not None:  # an alert of a group left out resolves
                readings = {s: r for s, r in readings.items() if rule.judges(r)}
            if rule.group_above is not None:
                readings = self._group(rule, readings, now_ms, transitions)
            for subject, reading in readings.items():
                key = rule.name, subject
                alert = self.alerts.get(key)
                if not rule.breached(reading.value):
                    if alert is not None:
                        del self.alerts[key]
                        if alert.firing:
                            transitions.append(
                                self._transition(rule, alert, "resolved", reading.value, now_ms)
                            )
                    continue
                if alert is None:
                    alert = self.alerts[key] = Alert(rule.name, subject, since=now_ms, value=0.0)
                alert.value = reading.value
                alert.labels = dict(reading.labels)
                alert.tenant = reading.tenant
                if not alert.firing and now_ms - alert.since >= rule.for_s * 1000:
                    alert.firing, alert.fired_at = True, now_ms
                    transitions.append(self._transition(rule, alert, "firing", alert.value, now_ms))
            # A subject that is no longer measured (a queue emptied, a node forgotten)
            # no longer meets the condition.
            gone = [
                k
                for k in self.alerts
                if k[0] == rule.name and k[1] not in readings and k[1] != GROUP
            ]
            for key in gone:
                alert = self.alerts.pop(key)
                if alert.firing:
                    transitions.append(
                        self._transition(rule, alert, "resolved", alert.value, now_ms)
                    )
        return transitions

    def _group(
        self,
        rule: Rule,
        readings: Mapping[str, Reading],
        now_ms: int,
        transitions: list[Transition],
    ) -> Mapping[str, Reading]:
        """Judge the group alert of ``rule``; returns the readings left to judge one by one
        (all of them, or while the group stands only those of subjects with an alert)."""
        assert rule.group_above is not None
        alerted = {subject for name, subject in self.alerts if name == rule.name}
        fresh = [s for s, r in readings.items() if s not in alerted and rule.breached(r.value)]
        key = rule.name, GROUP
        group = self.alerts.get(key)
        if not (len(fresh) > rule.group_above or (group is not None and fresh)):
            if group is not None:
                del self.alerts[key]
                if group.firing:
                    transitions.append(self._transition(rule, group, "resolved", 0, now_ms))
            return readings
        if group is None:
            group = self.alerts[key] = Alert(rule.name, GROUP, since=now_ms, value=0.0)
        group.value = len(fresh)
        group.labels = {"examples": ", ".join(heapq.nsmallest(_EXAMPLES, fresh))}
        if not group.firing and now_ms - group.since >= rule.for_s * 1000:
            group.firing, group.fired_at = True, now_ms
            transitions.append(self._transition(rule, group, "firing", group.value, now_ms))
        return {subject: readings[subject] for subject in alerted if subject in readings}

    @staticmethod
    def _transition(
        rule: Rule, alert: Alert, state: Literal["firing", "resolved"], value: float, now_ms: int
    ) -> Transition:
        return Transition(
            rule, alert.subject, state, value, alert.since, now_ms, alert.labels, alert.tenant
        )

    def firing(self) -> list[Alert]:
        return [alert for alert in self.alerts.values() if alert.firing]

    def to_snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "rule": a.rule,
                "subject": a.subject,
                "since": a.since,
                "value": a.value,
                "firing": a.firing,
                "fired_at": a.fired_at,
                "labels": a.labels,
                "tenant": a.tenant,
            }
            for a in self.alerts.values()
        ]

    def restore(self, snapshot: Iterable[Mapping[str, Any]]) -> None:
        known = {rule.name for rule in self.rules}
        self.alerts = {
            (a["rule"], a["subject"]): Alert(**a) for a in snapshot if a["rule"] in known
        }


# -- signals: per-subject measurements computed from the state -------------------------------

Signal = Callable[[MonitorState, int], dict[str, Reading]]


def _newest_heartbeat(state: MonitorState, now_ms: int) -> int:
    """The watermark: the newest send time of any node's heartbeat, capped at our clock."""
    return min(state.nodes.watermark.newest_ms, now_ms)


def _heartbeat_behind(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    """How far each node's newest heartbeat lies behind the newest of any node, as the
    scheduler judges liveness: a node that stops while the others beat falls behind;
    every node stopping at once leaves none behind (that is :func:`_heartbeat_silence`),
    and consumer lag delays them all alike."""
    if not state.nodes:
        return {}
    newest = _newest_heartbeat(state, now_ms)
    # After every node fell silent, each is judged from where heartbeats resumed.
    heard = state.nodes.watermark.heard
    return {
        node.node_id: Reading(max(newest - heard(node.sent_at), 0) / 1000, {"region": node.region})
        for node in state.nodes.values()
    }


def _heartbeat_silence(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    """How long no node at all has sent a heartbeat: one subject, ``nodes``."""
    if not state.nodes:
        return {}
    return {"nodes": Reading((now_ms - _newest_heartbeat(state, now_ms)) / 1000, {})}


def _node_utilisation(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    # Only nodes that reported in the last minute: a dead node is node_dead's business.
    return {
        f"{node.node_id}/{resource}": Reading(
            share, {"region": node.region, "node": node.node_id, "resource": resource}
        )
        for node in state.nodes.values()
        if now_ms - node.sent_at <= 60_000
        for resource, share in node.utilisation().items()
    }


def _queue_wait(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    return {
        f"{tenant}/{priority_class}": Reading(
            wait / 1000, {"priority_class": priority_class}, tenant
        )
        for (tenant, priority_class), wait in state.oldest_waits(now_ms).items()
    }


def _lag_messages(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    return {
        f"{group}/{topic}": Reading(lag.messages, {"group": group, "topic": topic})
        for (group, topic), lag in state.lag.items()
    }


def _lag_seconds(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    return {
        f"{group}/{topic}": Reading(lag.seconds, {"group": group, "topic": topic})
        for (group, topic), lag in state.lag.items()
        if lag.seconds is not None
    }


def _dead_letters(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    return {
        topic: Reading(state.dead_letter_increase(topic, 5 * 60_000, now_ms), {"topic": topic})
        for topic in state.dead_letters
    }


def _model_regression(state: MonitorState, now_ms: int) -> dict[str, Reading]:
    return {
        f"{tenant}/{name}": Reading(drop, {"metric": metric, "model_name": name}, tenant)
        for (tenant, name), (metric, drop) in state.model_regressions().items()
    }


SIGNALS: dict[str, Signal] = {
    "node_heartbeat_behind_s": _heartbeat_behind,
    "heartbeat_silence_s": _heartbeat_silence,
    "node_utilisation": _node_utilisation,
    "queue_oldest_wait_s": _queue_wait,
    "consumer_lag_messages": _lag_messages,
    "consumer_lag_seconds": _lag_seconds,
    "dead_letters_5m": _dead_letters,
    "model_metric_drop": _model_regression,
}


# Signals judged against the current time from what the monitor has read: while the
# monitor itself is behind, an old heartbeat is not evidence that a node is dead.
FRESHNESS_SIGNALS = frozenset(
    {"node_heartbeat_behind_s", "heartbeat_silence_s", "node_utilisation", "queue_oldest_wait_s"}
)


def read_signals(
    state: MonitorState, rules: Iterable[Rule], now_ms: int
) -> dict[str, dict[str, Reading]]:
    """The signals the rules need, measured now."""
    return {name: SIGNALS[name](state, now_ms) for name in {rule.signal for rule in rules}}


def default_rules(
    *,
    node_dead_after_s: float = 15.0,
    node_dead_group_above: int = 20,
    lag_groups: Sequence[str] = LEPTON_GROUPS,
) -> tuple[Rule, ...]:
    """The monitor's rules; the consumer-lag ones judge the groups ``lag_groups`` matches."""
    return (
        Rule(
            "node_dead",
            "node_heartbeat_behind_s",
            node_dead_after_s,
            0,
            "critical",
            "No heartbeat from the node while other nodes beat",
            # Heartbeats of many nodes stopping at once is more likely our fault (the
            # heartbeat pipeline, the network) than the nodes': one alert, not thousands.
            group_above=node_dead_group_above,
            group_summary="No heartbeat from many nodes at once: the heartbeat pipeline "
            "or the network is more likely at fault than the nodes",
        ),
        Rule(
            "heartbeats_stopped",
            "heartbeat_silence_s",
            node_dead_after_s,
            0,
            "critical",
            # As the scheduler judges it: no node is declared dead, no job requeued.
            "No heartbeat from any node: the heartbeat pipeline (the trainers' access to "
            "Kafka, the topic, the network) is more likely at fault than every node at once",
        ),
        Rule(
            "node_utilisation_high",
            "node_utilisation",
            0.95,
            300,
            "warning",
            "A resource of the node has been above 95 % for 5 minutes",
        ),
        Rule(
            "queue_wait_high",
            "queue_oldest_wait_s",
            600,
            60,
            "warning",
            "A job has waited in the queue more than 10 minutes",
        ),
        Rule(
            "consumer_lag_high",
            "consumer_lag_messages",
            10_000,
            60,
            "warning",
            "The consumer group is more than 10,000 messages behind",
            consumer_groups=tuple(lag_groups),
        ),
        Rule(
            "consumer_lag_seconds_high",
            "consumer_lag_seconds",
            60,
            60,
            "error",
            "The consumer group is more than a minute behind",
            consumer_groups=tuple(lag_groups),
        ),
        Rule(
            "dead_letters_growing",
            "dead_letters_5m",
            0,
            0,
            "error",
            "Messages were dead-lettered in the last 5 minutes",
        ),
        Rule(
            "model_metric_regressed",
            "model_metric_drop",
            0.05,
            0,
            "warning",
            "The newest evaluation is worse than the best earlier one by more than 0.05",
        ),
    )
