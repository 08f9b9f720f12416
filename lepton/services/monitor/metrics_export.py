"""The live monitors' views as Prometheus gauges, served on the dashboard's /metrics.

Request-to-assignment latency is the scheduler's histogram,
``lepton_scheduling_latency_seconds``; the gauge of that name with a ``quantile`` label
that was here is gone (Prometheus's rules forbid the label on a gauge, and a histogram's
quantiles hold over any window and any number of schedulers)."""

from __future__ import annotations

import functools
import weakref
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from lepton.services.monitor.views import Monitor

__all__ = ["MonitorCollector", "registered_collector"]


def _gauge(
    name: str, documentation: str, labels: list[str], values: Iterable[tuple[list[str], float]]
) -> GaugeMetricFamily:
    """A gauge family with one sample per (label values, value)."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


class MonitorCollector(Collector):
    """The live monitors' views as Prometheus gauges, computed when scraped.

    Registered once per process; a monitor is reported while it runs (in production one
    per process; tests and benchmarks run several, one after another).
    """

    def __init__(self) -> None:
        self.monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for monitor in list(self.monitors):
            yield from self._collect(monitor)

    def _collect(self, monitor: Monitor) -> Iterator[GaugeMetricFamily]:
        now = monitor.clock()
        state = monitor.state
        nodes = GaugeMetricFamily("lepton_nodes", "Known nodes by liveness.", labels=["state"])
        alive = sum(state.alive(n, now, monitor.dead_after_ms) for n in state.nodes.values())
        nodes.add_metric(["alive"], alive)
        nodes.add_metric(["dead"], len(state.nodes) - alive)
        yield nodes
        utilisation = GaugeMetricFamily(
            "lepton_cluster_utilisation_ratio",
            "Usage over capacity of the live nodes (0 to 1).",
            labels=["region", "resource"],
        )
        for region, shares in state.utilisation(now, monitor.dead_after_ms).items():
            for resource, share in shares.items():
                utilisation.add_metric([region, resource], share)
        yield utilisation
        yield _gauge(
            "lepton_queue_pending",
            "Jobs waiting.",
            ["tenant", "priority_class"],
            ((list(key), len(jobs)) for key, jobs in state.pending.items()),
        )
        yield _gauge(
            "lepton_jobs",
            "Jobs in the live view by state.",
            ["state"],
            (([job_state], count) for job_state, count in state.jobs_by_state.items()),
        )
        lag = GaugeMetricFamily(
            "lepton_consumer_lag_messages", "Consumer lag.", labels=["group", "topic"]
        )
        lag_s = GaugeMetricFamily(
            "lepton_consumer_lag_seconds", "Estimated consumer lag.", labels=["group", "topic"]
        )
        for (group, topic), behind in state.lag.items():
            lag.add_metric([group, topic], behind.messages)
            if behind.seconds is not None:
                lag_s.add_metric([group, topic], behind.seconds)
        yield lag
        yield lag_s
        yield _gauge(
            "lepton_dead_letters",
            "Messages in a topic's dead-letter topic.",
            ["topic"],
            (([topic], count) for topic, count in state.dead_letters.items()),
        )
        firing = GaugeMetricFamily(
            "lepton_alerts_firing", "Alerts firing.", labels=["rule", "severity"]
        )
        # Every rule, firing or not: a rule with nothing firing reads 0, not "no data".
        counts = dict.fromkeys((rule.name for rule in monitor.engine.rules), 0)
        for alert in monitor.engine.firing():
            counts[alert.rule] += 1
        for rule in monitor.engine.rules:
            firing.add_metric([rule.name, rule.severity], counts[rule.name])
        yield firing


@functools.cache
def registered_collector() -> MonitorCollector:
    """The process's one collector, registered with Prometheus at first use."""
    collector = MonitorCollector()
    prometheus_client.REGISTRY.register(collector)
    return collector
