"""The time series the monitor records: their names, and one point of each per sample."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from lepton.services.monitor.entities import quantile

if TYPE_CHECKING:
    from lepton.services.monitor.state import MonitorState

__all__ = ["METRICS", "Sampler", "queue_subject", "tenant_prefix"]

# The time series the monitor records, by name: what the API serves and validates against.
METRICS: dict[str, str] = {
    "utilisation": "usage over capacity of live nodes; subject <region or all>/<resource>",
    "node_utilisation": "usage over capacity of one node; subject <node>/<resource>",
    "nodes": "nodes by liveness; subject alive or dead",
    "queue_pending": "jobs waiting; subject <tenant>/<priority class>, or all",
    "queue_wait_p95_s": "95th percentile of queue waits (5 min); subject <tenant>/<class>",
    "scheduling_latency_ms": "request to assignment (5 min window); subject p50 or p95",
    "events_per_s": "events read per second; subject a topic, or all",
    "jobs_finished_per_s": "jobs succeeded or failed per second; subject all",
    "job_failure_rate": "failed / finished over 5 minutes; subject all",
    "jobs": "jobs in the live view by state; subject a state",
    "consumer_lag_messages": "consumer lag; subject <group>/<topic>",
    "dead_letters": "messages in the dead-letter topic of; subject a source topic",
}


def tenant_prefix(tenant: str) -> str:
    """What every subject of ``tenant``'s queues begins with. Tenant names are free text
    and may hold a "/": encoded, the tenant is exactly what comes before the first "/",
    and no tenant's subjects can be read as another's."""
    return quote(tenant, safe="") + "/"


def queue_subject(tenant: str, priority_class: str) -> str:
    return tenant_prefix(tenant) + priority_class


class Sampler:
    """Turns the state into one point per (metric, subject); remembers counters for rates."""

    def __init__(self) -> None:
        self._previous: tuple[int, dict[str, int], int] | None = None

    def points(
        self, state: MonitorState, now_ms: int, dead_after_ms: int, *, per_node: bool = True
    ) -> dict[tuple[str, str], float]:
        """One point per series; ``per_node`` adds each node's utilisation (thousands of
        series on a big cluster, so the service records those less often)."""
        points: dict[tuple[str, str], float] = {}
        for region, shares in state.utilisation(now_ms, dead_after_ms).items():
            for resource, share in shares.items():
                points["utilisation", f"{region}/{resource}"] = share
        alive = 0
        for node in state.nodes.values():
            if state.alive(node, now_ms, dead_after_ms):
                alive += 1
                if not per_node:
                    continue
                for resource in ("cpu_millicores", "memory_mib"):
                    if node.capacity[resource] > 0:
                        share = node.usage[resource] / node.capacity[resource]
                        points["node_utilisation", f"{node.node_id}/{resource}"] = share
        points["nodes", "alive"] = alive
        points["nodes", "dead"] = len(state.nodes) - alive
        total = 0
        for (tenant, priority_class), jobs in state.pending.items():
            points["queue_pending", queue_subject(tenant, priority_class)] = len(jobs)
            total += len(jobs)
        points["queue_pending", "all"] = total
        for (tenant, priority_class), window in state.queue_wait.items():
            p95 = quantile(window.values(now_ms), 0.95)
            if p95 is not None:
                points["queue_wait_p95_s", queue_subject(tenant, priority_class)] = p95 / 1000
        latency = state.scheduling_latency.summary(now_ms)
        for name in ("p50", "p95"):
            value = latency[name]
            if value is not None:
                points["scheduling_latency_ms", name] = value
        outcomes = state.job_outcomes.values(now_ms)
        if outcomes:
            points["job_failure_rate", "all"] = sum(outcomes) / len(outcomes)
        for job_state, count in state.jobs_by_state.items():
            if count:
                points["jobs", job_state] = count
        for (group, topic), lag in state.lag.items():
            points["consumer_lag_messages", f"{group}/{topic}"] = lag.messages
        for topic, count in state.dead_letters.items():
            points["dead_letters", topic] = count
        counts = dict(state.events_by_topic)
        finished = state.counters["jobs_finished"]
        if self._previous is not None and now_ms > self._previous[0]:
            then, before, finished_before = self._previous
            seconds = (now_ms - then) / 1000
            for topic, count in counts.items():
                points["events_per_s", topic] = (count - before.get(topic, 0)) / seconds
            points["events_per_s", "all"] = (sum(counts.values()) - sum(before.values())) / seconds
            points["jobs_finished_per_s", "all"] = (finished - finished_before) / seconds
        self._previous = now_ms, counts, finished
        return points
