"""What the monitor's API and dashboard show, as JSON-ready data, and the live-update hub.

:class:`Monitor` bundles what the web app and the service loops share (the state, the
rule engine, the series store) and answers every view from them; :class:`Hub` fans the
dashboard's live updates out to its subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.monitor.entities import primary_metric

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from services.monitor.rules import RuleEngine
    from services.monitor.state import MonitorState
    from services.monitor.store import SeriesStore

__all__ = ["Hub", "Monitor", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Hub:
    """Hands the newest live update to every connected dashboard.

    Each client has a one-slot mailbox: a slow client skips intermediate updates instead
    of queueing them, so it always sees the newest state and never holds memory.
    """

    CLOSE = b""  # tells every stream to end, so the server can stop without waiting

    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[bytes]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, message: bytes) -> None:
        for mailbox in self._clients:
            if mailbox.full():
                mailbox.get_nowait()
            mailbox.put_nowait(message)

    def close(self) -> None:
        self.publish(self.CLOSE)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[bytes]]:
        mailbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._clients.add(mailbox)
        try:
            yield mailbox
        finally:
            self._clients.discard(mailbox)


@dataclass(slots=True, weakref_slot=True, eq=False)
class Monitor:
    """What the web app and the service loops share."""

    state: MonitorState
    engine: RuleEngine
    store: SeriesStore
    dead_after_ms: int
    hub: Hub = field(default_factory=Hub)
    clock: Callable[[], int] = now_ms
    keepalive_s: float = 15.0

    # -- views, as JSON-ready data --------------------------------------------------------

    def overview(self, now: int) -> dict[str, Any]:
        state = self.state
        alive = sum(state.alive(node, now, self.dead_after_ms) for node in state.nodes.values())
        outcomes = state.job_outcomes.values(now)
        durations = state.job_durations.summary(now)
        return {
            "time": now,
            "version": state.version,
            "nodes": {"total": len(state.nodes), "alive": alive, "dead": len(state.nodes) - alive},
            "utilisation": state.utilisation(now, self.dead_after_ms),
            "queue": {
                "pending": sum(len(jobs) for jobs in state.pending.values()),
                "queues": self.queues(now),
            },
            "scheduling_latency_ms": state.scheduling_latency.summary(now),
            "jobs": {
                "by_state": {name: n for name, n in state.jobs_by_state.items() if n},
                "failure_rate": sum(outcomes) / len(outcomes) if outcomes else None,
                "duration_ms": durations,
                "finished": state.counters["jobs_finished"],
                "preemptions": state.counters["job_preempted"],
                "requeues": state.counters["job_requeued"],
            },
            "data": {
                "requested": state.counters["datasets_requested"],
                "ready": state.counters["datasets_ready"],
                "rejected": state.counters["datasets_rejected"],
                "rows_ingested": state.counters["rows_ingested"],
                "rows_rejected": state.counters["rows_rejected"],
            },
            "models": {
                "count": len(state.models),
                "evaluated": sum(m.evaluated_at is not None for m in state.models.values()),
                "champions": len(state.champions),
            },
            "pipeline": {
                "dead_letters": sum(state.dead_letters.values()),
                "max_lag_messages": max((lag.messages for lag in state.lag.values()), default=0),
                "events": sum(state.events_by_topic.values()),
            },
            "alerts": {"firing": len(self.engine.firing())},
        }

    def queues(self, now: int) -> list[dict[str, Any]]:
        state = self.state
        oldest = state.oldest_waits(now)
        keys = sorted(set(state.pending) | set(state.queue_wait))
        rows = []
        for key in keys:
            window = state.queue_wait.get(key)
            waits = window.summary(now) if window is not None else {}
            rows.append(
                {
                    "tenant": key[0],
                    "priority_class": key[1],
                    "pending": len(state.pending.get(key, ())),
                    "oldest_wait_ms": oldest.get(key),
                    "wait_ms": waits,
                }
            )
        return rows

    def node(self, node_id: str, now: int) -> dict[str, Any]:
        node = self.state.nodes[node_id]
        return {
            "node_id": node.node_id,
            "region": node.region,
            "gpu_type": node.gpu_type,
            "labels": node.labels,
            "capacity": node.capacity,
            "usage": node.usage,
            "utilisation": node.utilisation(),
            "running_job_ids": node.running_job_ids,
            "alive": self.state.alive(node, now, self.dead_after_ms),
            "last_heartbeat_age_ms": now - node.sent_at,
            "sent_at": node.sent_at,
            "sequence": node.sequence,
            "restarts": node.restarts,
        }

    def nodes(
        self, now: int, *, liveness: str = "all", region: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        found = []
        for node_id in sorted(self.state.nodes):
            view = self.node(node_id, now)
            if region is not None and view["region"] != region:
                continue
            if liveness != "all" and view["alive"] != (liveness == "alive"):
                continue
            found.append(view)
            if len(found) >= limit:
                break
        return found

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.state.jobs[job_id]
        return {
            "job_id": job.job_id,
            "name": job.name,
            "tenant": job.tenant,
            "state": job.state,
            "priority_class": job.priority_class,
            "priority": job.priority,
            "submitted_at": job.submitted_at,
            "assigned_at": job.assigned_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "updated_at": job.updated_at,
            "node_ids": job.node_ids,
            "attempt": job.attempt,
            "reason": job.reason,
            "progress_percent": job.progress_percent,
            "stage": job.stage,
            "preemptions": job.preemptions,
            "requeues": job.requeues,
            "dataset": job.dataset,
            "model_id": job.model_id,
        }

    def jobs(
        self, *, state: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first (most recently changed)."""
        matching = (
            job_id
            for job_id in reversed(self.state.jobs)
            if (state is None or self.state.jobs[job_id].state == state)
            and (tenant is None or self.state.jobs[job_id].tenant == tenant)
        )
        return [self.job(job_id) for job_id in itertools.islice(matching, limit)]

    def datasets(
        self, *, tenant: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        chosen = (
            d
            for d in self.state.datasets.values()
            if (tenant is None or d.tenant == tenant) and (state is None or d.state == state)
        )
        newest = heapq.nlargest(limit, chosen, key=lambda d: d.updated_at)
        return [
            {
                "tenant": d.tenant,
                "dataset": d.dataset,
                "state": d.state,
                "updated_at": d.updated_at,
                "version": d.version,
                "rows": d.rows,
                "reused": d.reused,
                "region": d.region,
                "quality": d.quality,
                "reject_code": d.reject_code,
                "reject_reason": d.reject_reason,
                "versions": d.versions,
                "rejects": d.rejects,
            }
            for d in newest
        ]

    def leaderboard(self, *, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Per (tenant, model name): its models ranked by primary metric, champion history."""
        groups: dict[tuple[str, str], list[Any]] = {}
        for model in self.state.models.values():
            if tenant is None or model.tenant == tenant:
                groups.setdefault((model.tenant, model.model_name), []).append(model)
        board = []
        for (owner, name), models in sorted(groups.items())[:limit]:
            evaluated = [m for m in models if m.metrics]
            chosen = primary_metric(evaluated[-1].metrics) if evaluated else None
            if chosen is not None:
                metric, higher = chosen
                ranked = sorted(
                    (m for m in evaluated if metric in m.metrics),
                    key=lambda m: m.metrics[metric],
                    reverse=higher,
                )
            else:
                metric, ranked = None, []
            champion = self.state.champions.get((owner, name))
            board.append(
                {
                    "tenant": owner,
                    "model_name": name,
                    "primary_metric": metric,
                    "champion": champion,
                    "models": [
                        {
                            "model_id": m.model_id,
                            "algorithm": m.algorithm,
                            "problem_type": m.problem_type,
                            "metrics": m.metrics,
                            "cv_score": m.cv_score,
                            "evaluated_at": m.evaluated_at,
                            "findings": m.findings,
                            "champion": m.model_id == champion,
                            "roc": m.roc,
                        }
                        for m in ranked[:20]
                    ],
                    "history": self.state.model_history.get((owner, name), []),
                    "promotions": self.state.promotions.get((owner, name), []),
                }
            )
        return board

    def pipeline(self) -> dict[str, Any]:
        state = self.state
        return {
            "checked_at": state.pipeline_checked_at,
            "lag": [
                {
                    "group": group,
                    "topic": topic,
                    "messages": lag.messages,
                    "seconds": lag.seconds,
                    "committed": lag.committed,
                    "end": lag.end,
                }
                for (group, topic), lag in sorted(state.lag.items())
            ],
            "dead_letters": dict(sorted(state.dead_letters.items())),
            "events_by_topic": dict(sorted(state.events_by_topic.items())),
            "audit": [
                {"action": action, "outcome": outcome, "count": count}
                for (action, outcome), count in sorted(state.audit.items())
            ],
        }

    def active_alerts(self) -> list[dict[str, Any]]:
        severity = {rule.name: rule.severity for rule in self.engine.rules}
        return [
            {
                "rule": alert.rule,
                "subject": alert.subject,
                "severity": severity.get(alert.rule, "unknown"),
                "value": alert.value,
                "since": alert.since,
                "fired_at": alert.fired_at,
                "labels": alert.labels,
                "tenant": alert.tenant,
            }
            for alert in sorted(self.engine.firing(), key=lambda a: a.fired_at or 0, reverse=True)
        ]

    def live_update(self, now: int) -> dict[str, Any]:
        """What the dashboard receives on every change."""
        return {
            "overview": self.overview(now),
            "nodes": self.nodes(now, limit=200),
            "jobs": self.jobs(limit=50),
            "datasets": self.datasets(limit=50),
            "alerts": self.active_alerts(),
        }
