"""What the monitor's API and dashboard show, as JSON-ready data, and the live-update hub.

:class:`Monitor` bundles what the web app and the service loops share (the state, the
rule engine, the series store) and answers every view from them; :class:`Hub` fans the
dashboard's live updates out to its subscribers.

Every view is one audience's: ``tenant=None`` shows everyone's work (operators and
services), ``tenant="acme"`` only acme's jobs, datasets, models, queues and alerts, and on
the nodes only acme's running jobs. The nodes themselves (region, capacity, usage,
liveness) are the cluster's and shown to every audience. The web layer decides the
audience from the credential (:class:`lepton.services.monitor.web.auth.Session`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lepton.services.monitor.entities import (
    LOWER_IS_BETTER,
    WINDOW_MS,
    Model,
    primary_metric,
    summarise,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from lepton.services.monitor.rules import RuleEngine
    from lepton.services.monitor.state import MonitorState
    from lepton.services.monitor.store import SeriesStore

__all__ = ["Hub", "Monitor", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Hub:
    """Hands the newest live update of each audience to that audience's dashboards.

    Each client has a one-slot mailbox: a slow client skips intermediate updates instead
    of queueing them, so it always sees the newest state and never holds memory.
    """

    CLOSE = b""  # tells every stream to end, so the server can stop without waiting

    def __init__(self) -> None:
        self._clients: dict[asyncio.Queue[bytes], str | None] = {}

    @property
    def clients(self) -> int:
        return len(self._clients)

    def audiences(self) -> set[str | None]:
        """The tenants whose dashboards are connected (None: everyone's view)."""
        return set(self._clients.values())

    def publish(self, message: bytes, tenant: str | None) -> None:
        """Send ``message`` to the dashboards of ``tenant``'s view (None: everyone's)."""
        for mailbox, audience in self._clients.items():
            if audience == tenant:
                _replace(mailbox, message)

    def close(self) -> None:
        for mailbox in self._clients:
            _replace(mailbox, self.CLOSE)

    @contextlib.contextmanager
    def subscribe(self, tenant: str | None) -> Iterator[asyncio.Queue[bytes]]:
        mailbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._clients[mailbox] = tenant
        try:
            yield mailbox
        finally:
            del self._clients[mailbox]


def _replace(mailbox: asyncio.Queue[bytes], message: bytes) -> None:
    if mailbox.full():
        mailbox.get_nowait()
    mailbox.put_nowait(message)


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

    def overview(self, now: int, tenant: str | None = None) -> dict[str, Any]:
        """The cluster at a glance; for a tenant, its own work on the (shared) nodes."""
        state = self.state
        alive = sum(state.alive(node, now, self.dead_after_ms) for node in state.nodes.values())
        shared = {
            "time": now,
            "version": state.version,
            "nodes": {"total": len(state.nodes), "alive": alive, "dead": len(state.nodes) - alive},
            "utilisation": state.utilisation(now, self.dead_after_ms),
        }
        queues = self.queues(now, tenant)
        queue = {"pending": sum(q["pending"] for q in queues), "queues": queues}
        if tenant is not None:
            jobs, latency = self._own_jobs(tenant, now)
            return {
                **shared,
                "queue": queue,
                "scheduling_latency_ms": latency,
                "jobs": jobs,
                "data": self._own_data(tenant),
                "models": self._models_summary(tenant),
                "pipeline": None,  # consumer groups and dead letters are everyone's
                "alerts": {"firing": len(self.active_alerts(tenant))},
            }
        outcomes = state.job_outcomes.values(now)
        return {
            **shared,
            "queue": queue,
            "scheduling_latency_ms": state.scheduling_latency.summary(now),
            "jobs": {
                "by_state": {name: n for name, n in state.jobs_by_state.items() if n},
                "failure_rate": sum(outcomes) / len(outcomes) if outcomes else None,
                "duration_ms": state.job_durations.summary(now),
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
            "models": self._models_summary(None),
            "pipeline": {
                "dead_letters": sum(state.dead_letters.values()),
                "max_lag_messages": max((lag.messages for lag in state.lag.values()), default=0),
                "events": sum(state.events_by_topic.values()),
            },
            "alerts": {"firing": len(self.engine.firing())},
        }

    def _own_jobs(self, tenant: str, now: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """A tenant's job figures and scheduling latency, from its jobs in the view (the
        cluster's windows and counters mix every tenant's): what finished or was first
        assigned within the last five minutes, as the cluster's windows count."""
        since = now - WINDOW_MS
        by_state: collections.Counter[str] = collections.Counter()
        outcomes: list[float] = []
        durations: list[float] = []
        latencies: list[float] = []
        finished = preemptions = requeues = 0
        for job in self.state.jobs_of(tenant):
            by_state[job.state] += 1
            preemptions += job.preemptions
            requeues += job.requeues
            if job.state in ("succeeded", "failed"):
                finished += 1
                if job.finished_at is not None and job.finished_at >= since:
                    outcomes.append(1.0 if job.state == "failed" else 0.0)
                    if job.started_at is not None:
                        durations.append(max(0, job.finished_at - job.started_at))
            if (
                job.requeues == 0
                and job.submitted_at is not None
                and job.assigned_at is not None
                and job.assigned_at >= since
            ):
                latencies.append(max(0, job.assigned_at - job.submitted_at))
        jobs = {
            "by_state": dict(by_state),
            "failure_rate": sum(outcomes) / len(outcomes) if outcomes else None,
            "duration_ms": summarise(durations),
            "finished": finished,
            "preemptions": preemptions,
            "requeues": requeues,
        }
        return jobs, summarise(latencies)

    def _own_data(self, tenant: str) -> dict[str, int]:
        """A tenant's dataset figures, from its datasets in the view."""
        own = [d for d in self.state.datasets.values() if d.tenant == tenant]
        return {
            "requested": sum(d.state == "requested" for d in own),
            "ready": sum(d.versions for d in own),
            "rejected": sum(d.rejects for d in own),
            "rows_ingested": sum(d.rows or 0 for d in own if d.state == "ready"),
            "rows_rejected": sum(d.quality.get("rows_rejected", 0) for d in own),
        }

    def _models_summary(self, tenant: str | None) -> dict[str, int]:
        models = [m for m in self.state.models.values() if tenant is None or m.tenant == tenant]
        return {
            "count": len(models),
            "evaluated": sum(m.evaluated_at is not None for m in models),
            "champions": sum(
                tenant is None or owner == tenant for owner, _ in self.state.champions
            ),
        }

    def scheduling_latency(self, now: int, tenant: str | None = None) -> dict[str, Any]:
        """Request to first assignment over five minutes: the cluster's, or a tenant's."""
        if tenant is None:
            return self.state.scheduling_latency.summary(now)
        return self._own_jobs(tenant, now)[1]

    def queues(self, now: int, tenant: str | None = None) -> list[dict[str, Any]]:
        state = self.state
        oldest = state.oldest_waits(now)
        keys = sorted(
            key
            for key in set(state.pending) | set(state.queue_wait)
            if tenant is None or key[0] == tenant
        )
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

    def node(self, node_id: str, now: int, tenant: str | None = None) -> dict[str, Any]:
        """A node as everyone sees it; its running jobs only as far as they are the
        audience's (another tenant's work is not shown, nor a job the view forgot)."""
        node = self.state.nodes[node_id]
        jobs = self.state.jobs
        running = (
            node.running_job_ids
            if tenant is None
            else [
                job_id
                for job_id in node.running_job_ids
                if job_id in jobs and jobs[job_id].tenant == tenant
            ]
        )
        return {
            "node_id": node.node_id,
            "region": node.region,
            "gpu_type": node.gpu_type,
            "labels": node.labels,
            "capacity": node.capacity,
            "usage": node.usage,
            "utilisation": node.utilisation(),
            "running_job_ids": running,
            "alive": self.state.alive(node, now, self.dead_after_ms),
            "last_heartbeat_age_ms": now - node.sent_at,
            "sent_at": node.sent_at,
            "sequence": node.sequence,
            "restarts": node.restarts,
        }

    def nodes(
        self,
        now: int,
        *,
        liveness: str = "all",
        region: str | None = None,
        limit: int = 500,
        tenant: str | None = None,
    ) -> list[dict[str, Any]]:
        found = []
        for node_id in sorted(self.state.nodes):
            view = self.node(node_id, now, tenant)
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
            "model_name": job.model_name,
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
            # The trainer's last progress report comes before its last step (storing the
            # model): a job that succeeded is done, whatever it last reported.
            "progress_percent": 100.0 if job.state == "succeeded" else job.progress_percent,
            "stage": job.stage,
            "preemptions": job.preemptions,
            "requeues": job.requeues,
            "dataset": job.dataset,
            "model_id": job.model_id,
        }

    def jobs(
        self, *, state: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first (most recently changed); only ``tenant``'s when given."""
        candidates = (
            reversed(self.state.jobs.values()) if tenant is None else self.state.jobs_of(tenant)
        )
        matching = (job for job in candidates if state is None or job.state == state)
        return [self.job(job.job_id) for job in itertools.islice(matching, limit)]

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
                # Why the newest version was refused: once a newer version is ready (or
                # requested again) the old refusal is no longer the dataset's state.
                "reject_code": d.reject_code if d.state == "rejected" else None,
                "reject_reason": d.reject_reason if d.state == "rejected" else None,
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
            chosen = self._ranking_metric(owner, name, evaluated)
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

    def _ranking_metric(
        self, tenant: str, model_name: str, evaluated: list[Model]
    ) -> tuple[str, bool] | None:
        """The metric the newest promotion decision of this model name compared by (the
        evaluator's policy may be set per model), so the leaderboard ranks as promotion
        does; before any decision, or if no evaluation has that metric, the first known
        metric of the newest evaluation. With whether higher is better."""
        decisions = self.state.promotions.get((tenant, model_name))
        if decisions:
            metric = max(decisions, key=lambda decision: decision["time"])["primary_metric"]
            if any(metric in m.metrics for m in evaluated):
                return metric, metric not in LOWER_IS_BETTER
        return primary_metric(evaluated[-1].metrics) if evaluated else None

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

    def active_alerts(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Alerts firing, newest first; a tenant's are those about its own queues and
        models (the cluster's and the pipeline's alerts are the operators')."""
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
            if tenant is None or alert.tenant == tenant
        ]

    def live_update(self, now: int, tenant: str | None = None) -> dict[str, Any]:
        """What the dashboard of ``tenant``'s view (None: everyone's) receives on every
        change."""
        return {
            "overview": self.overview(now, tenant),
            "nodes": self.nodes(now, limit=200, tenant=tenant),
            "jobs": self.jobs(tenant=tenant, limit=50),
            "datasets": self.datasets(tenant=tenant, limit=50),
            "alerts": self.active_alerts(tenant),
        }
