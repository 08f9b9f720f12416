"""The monitor's view of the cluster: plain data updated by events, no I/O.

:class:`MonitorState` is fed decoded records with :meth:`MonitorState.apply` and read by
the rules, the API and the time-series sampler. Times are epoch milliseconds taken from
the records themselves (a heartbeat's ``sent_at``, a job's ``submitted_at``), never from
when the monitor happened to read them, so consumer lag cannot make a node look dead or a
queue look slow.

Events of one job arrive on several topics (requested, assigned, events) whose relative
order Kafka does not guarantee, so every update only moves a job forward and fills in
what it did not know yet.
"""

from __future__ import annotations

import bisect
import collections
import time
from typing import TYPE_CHECKING, Any

from lepton.contract.authorship import NODE_JOB_EVENTS
from lepton.contract.names import check_name, check_text
from lepton.scheduling.intake import check_job_event
from lepton.services.monitor.entities import (
    RESOURCES,
    TERMINAL,
    Dataset,
    Job,
    Lag,
    Model,
    Node,
    Record,
    Window,
    from_table,
    primary_metric,
    to_table,
)
from lepton.services.monitor.nodes import NodeTable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

__all__ = ["MonitorState"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class MonitorState:
    """Everything the monitor knows, updated one decoded event at a time.

    A record no producer of the contract could have written (a name that is no name, a
    heartbeat with an impossible capacity or from the future, megabytes of free text) makes
    :meth:`apply` raise :class:`~lepton.contract.names.InvalidField` having changed nothing:
    the service dead-letters it with that reason.

    The nodes are a bounded :class:`~lepton.services.monitor.nodes.NodeTable` (``max_nodes``,
    ``forget_after_ms``); ``clock`` is the reader's clock, which heartbeat times are
    checked against (never used to judge liveness or forgetting).
    """

    def __init__(
        self,
        *,
        max_jobs: int = 50_000,
        history: int = 200,
        max_nodes: int = 200_000,
        forget_after_ms: int = 600_000,
        stall_after_ms: int = 15_000,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.max_jobs = max_jobs
        self.history = history
        self.version = 0  # bumped by every change, so watchers know when to refresh
        self.counters: collections.Counter[str] = collections.Counter()
        self.nodes = NodeTable(
            max_nodes=max_nodes,
            forget_after_ms=forget_after_ms,
            clock=clock,
            counters=self.counters,
            stall_after_ms=stall_after_ms,
        )
        self.jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        # The same jobs per tenant, in the same order: a tenant's views read only its own.
        self._tenant_jobs: dict[str, collections.OrderedDict[str, Job]] = {}
        # (tenant, priority class) -> job id -> start of its wait; insertion order is FIFO.
        self.pending: dict[tuple[str, str], dict[str, int]] = {}
        self.queue_wait: dict[tuple[str, str], Window] = {}
        self.scheduling_latency = Window()
        self.job_durations = Window()
        self.job_outcomes = Window()  # 1.0 failed, 0.0 succeeded
        self.events_by_topic: collections.Counter[str] = collections.Counter()
        self.jobs_by_state: collections.Counter[str] = collections.Counter()
        self.datasets: dict[tuple[str, str], Dataset] = {}
        self.models: dict[str, Model] = {}
        self.model_history: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.champions: dict[tuple[str, str], str] = {}
        self.promotions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.audit: collections.Counter[tuple[str, str]] = collections.Counter()
        self.lag: dict[tuple[str, str], Lag] = {}
        self.dead_letters: dict[str, int] = {}
        self.dead_letter_history: dict[str, collections.deque[tuple[int, int]]] = {}
        self.pipeline_checked_at: int | None = None
        # Next offset to read per (topic, partition), so a restart re-reads exactly what
        # the last snapshot missed (None: an older snapshot that did not record them).
        self.positions: dict[tuple[str, int], int] | None = {}
        self._apply: dict[str, Callable[[Record], None]] = {
            "lepton.NodeHeartbeat": self.nodes.beat,
            "lepton.JobRequested": self._job_requested,
            "lepton.JobAssigned": self._job_assigned,
            "lepton.JobEvent": self._job_event,
            "lepton.DatasetRequested": self._dataset_requested,
            "lepton.DataReady": self._data_ready,
            "lepton.DataRejected": self._data_rejected,
            "lepton.ModelReady": self._model_ready,
            "lepton.ModelEvaluated": self._model_evaluated,
            "lepton.ModelPromoted": self._model_promoted,
            "lepton.AuditEvent": self._audit,
        }

    # -- events ---------------------------------------------------------------------------

    def apply(self, event_type: str, topic: str, record: Record) -> None:
        """Take one decoded event into account. Types without a view are only counted."""
        update = self._apply.get(event_type)
        if update is not None:
            update(record)  # raising, it changed nothing: neither is the event counted
        self.events_by_topic[topic] += 1
        self.version += 1

    def _job(self, job_id: str, tenant: str, time_ms: int) -> Job:
        job = self.jobs.get(job_id)
        if job is not None:
            # Most recently changed last: the API lists jobs newest first without sorting,
            # and the view forgets the jobs that have been quiet longest.
            self.jobs.move_to_end(job_id)
            self._tenant_jobs[job.tenant].move_to_end(job_id)
        else:
            job = Job(job_id=job_id, tenant=tenant, updated_at=time_ms)
            self._remember(job)
            if len(self.jobs) > self.max_jobs:
                self._forget(next(iter(self.jobs)))
        return job

    def _remember(self, job: Job) -> None:
        self.jobs[job.job_id] = job
        self._tenant_jobs.setdefault(job.tenant, collections.OrderedDict())[job.job_id] = job
        self.jobs_by_state[job.state] += 1

    def _forget(self, job_id: str) -> None:
        job = self.jobs.pop(job_id)
        own = self._tenant_jobs[job.tenant]
        del own[job_id]
        if not own:
            del self._tenant_jobs[job.tenant]
        self.jobs_by_state[job.state] -= 1
        self._unqueue(job)

    def jobs_of(self, tenant: str) -> Iterator[Job]:
        """A tenant's jobs in the view, most recently changed first."""
        return reversed(self._tenant_jobs.get(tenant, {}).values())

    def _set_state(self, job: Job, state: str, time_ms: int) -> None:
        if job.state != state:
            self.jobs_by_state[job.state] -= 1
            self.jobs_by_state[state] += 1
            job.state = state
        job.updated_at = max(job.updated_at, time_ms)

    def _queue_key(self, job: Job) -> tuple[str, str]:
        return job.tenant, job.priority_class or "unknown"

    def _enqueue(self, job: Job, since: int) -> None:
        job.queued_since = since
        self.pending.setdefault(self._queue_key(job), {})[job.job_id] = since

    def _unqueue(self, job: Job) -> bool:
        """Take the job out of its queue; whether it was in one."""
        queue = self.pending.get(self._queue_key(job))
        if queue is None or queue.pop(job.job_id, None) is None:
            return False
        if not queue:
            del self.pending[self._queue_key(job)]
        return True

    def _assigned(self, job: Job, assigned_at: int) -> None:
        """The job left its queue: its wait (and, on the first attempt, latency) is known."""
        if job.queued_since is not None and job.job_id in self.pending.get(
            self._queue_key(job), {}
        ):
            self._unqueue(job)
            wait = max(0, assigned_at - job.queued_since)
            self.queue_wait.setdefault(self._queue_key(job), Window()).add(assigned_at, wait)
            if job.requeues == 0 and job.submitted_at is not None:
                self.scheduling_latency.add(assigned_at, max(0, assigned_at - job.submitted_at))
        if job.assigned_at is None or assigned_at > job.assigned_at:
            job.assigned_at = assigned_at
        if job.state in ("unknown", "requested", "queued"):
            self._set_state(job, "assigned", assigned_at)

    def _job_requested(self, record: Record) -> None:
        check_name(record["job_id"], "job_id")
        check_name(record["tenant"], "tenant")
        check_name(record["priority_class"], "priority_class")
        check_text(record.get("name"), "name")
        if record.get("dataset"):
            check_name(record["dataset"]["name"], "dataset.name")
        task = record["task"]
        if task.get("model_name") is not None:
            check_name(task["model_name"], "task.model_name")
        job = self._job(record["job_id"], record["tenant"], record["submitted_at"])
        # A job seen queued before its request waits in an unknown priority class until now.
        was_pending = self._unqueue(job)
        job.name = record.get("name")
        job.priority_class = record["priority_class"]
        job.priority = record["priority"]
        job.submitted_at = record["submitted_at"]
        dataset = record.get("dataset")
        job.dataset = dataset["name"] if dataset else None
        # The trainer registers a model under the task's model name, else the dataset's:
        # the name a job is known by when its request gave it none (the CLI gives none).
        if task["kind"] == "train":
            job.model_name = task.get("model_name") or job.dataset
        if job.state == "unknown":
            self._set_state(job, "requested", record["submitted_at"])
            self._enqueue(job, record["submitted_at"])
        elif was_pending:
            since = job.queued_since if job.requeues else record["submitted_at"]
            self._enqueue(job, since if since is not None else record["submitted_at"])
        elif job.assigned_at is not None and job.requeues == 0:
            # The assignment was read first: the latency is known only now.
            latency = max(0, job.assigned_at - record["submitted_at"])
            self.scheduling_latency.add(job.assigned_at, latency)

    def _job_assigned(self, record: Record) -> None:
        job = self._job(record["job_id"], record["tenant"], record["assigned_at"])
        if record["action"] == "run":
            if record["node_id"] not in job.node_ids:
                job.node_ids.append(record["node_id"])
            job.attempt = max(job.attempt, record["attempt"])
            self._assigned(job, record["assigned_at"])

    def _job_event(self, record: Record) -> None:
        check_job_event(record)
        kind, time_ms = record["kind"], record["time"]
        job = self._job(record["job_id"], record["tenant"], time_ms)
        node_id = record.get("node_id")
        if kind in NODE_JOB_EVENTS and node_id and job.node_ids and node_id not in job.node_ids:
            # A node's report on a job it was not given (its signature proves only who it
            # is): the scheduler refuses and audits it; the view does not show it.
            self.counters["job_reports_refused"] += 1
            return
        job.attempt = max(job.attempt, record.get("attempt", 0))
        if node_id and node_id not in job.node_ids:
            job.node_ids.append(node_id)
        if record.get("reason"):
            job.reason = record["reason"]
        self.counters[f"job_{kind}"] += 1
        if kind == "queued":
            if job.state in ("unknown", "requested"):
                self._set_state(job, "queued", time_ms)
                if job.job_id not in self.pending.get(self._queue_key(job), {}):
                    self._enqueue(job, job.submitted_at or time_ms)
        elif kind == "assigned":
            self._assigned(job, time_ms)
        elif kind in ("started", "progress"):
            if job.started_at is None:
                job.started_at = time_ms
            job.progress_percent = record.get("progress_percent", job.progress_percent)
            job.stage = record.get("stage") or job.stage
            if job.state not in TERMINAL:
                self._unqueue(job)
                self._set_state(job, "running", time_ms)
        elif kind == "requeued":
            job.requeues += 1
            job.node_ids.clear()
            job.started_at = None
            self._set_state(job, "queued", time_ms)
            self._enqueue(job, time_ms)
        elif kind == "preempted":
            job.preemptions += 1
            self._set_state(job, "preempted", time_ms)
        elif kind == "lost":
            self._set_state(job, "lost", time_ms)
        elif kind == "cancel_requested":
            job.updated_at = max(job.updated_at, time_ms)
        elif kind in TERMINAL:
            self._finish(job, kind, time_ms, record.get("model_id"))

    def _finish(self, job: Job, kind: str, time_ms: int, model_id: str | None) -> None:
        if job.state in TERMINAL:
            return  # a redelivered outcome is counted once
        self._unqueue(job)
        self._set_state(job, kind, time_ms)
        job.finished_at = time_ms
        job.model_id = model_id or job.model_id
        if kind in ("succeeded", "failed"):
            self.job_outcomes.add(time_ms, 1.0 if kind == "failed" else 0.0)
            self.counters["jobs_finished"] += 1
            if job.started_at is not None:
                self.job_durations.add(time_ms, max(0, time_ms - job.started_at))

    def _dataset(self, record: Record, state: str, time_ms: int) -> Dataset:
        key = record["tenant"], record["dataset"]
        dataset = self.datasets.get(key)
        if dataset is None:
            dataset = self.datasets[key] = Dataset(key[0], key[1], state, time_ms)
        elif time_ms < dataset.updated_at:
            return dataset  # an older outcome read late changes only the counts
        dataset.state, dataset.updated_at = state, time_ms
        return dataset

    def _dataset_requested(self, record: Record) -> None:
        check_name(record["tenant"], "tenant")
        check_name(record["dataset"], "dataset")
        self.counters["datasets_requested"] += 1
        self._dataset(record, "requested", record["requested_at"])

    def _data_ready(self, record: Record) -> None:
        self.counters["datasets_ready"] += 1
        dataset = self._dataset(record, "ready", record["ready_at"])
        dataset.versions += 1
        if dataset.updated_at == record["ready_at"]:
            quality = record["quality"]
            dataset.version = record["version"]
            dataset.rows = record["rows"]
            dataset.reused = record["reused"]
            dataset.region = record.get("region")
            dataset.quality = {
                name: int(quality[name])
                for name in (
                    "rows_read",
                    "rows_rejected",
                    "duplicates_removed",
                    "values_imputed",
                    "outliers_flagged",
                )
            }
            self.counters["rows_ingested"] += record["rows"]
            self.counters["rows_rejected"] += quality["rows_rejected"]

    def _data_rejected(self, record: Record) -> None:
        self.counters["datasets_rejected"] += 1
        dataset = self._dataset(record, "rejected", record["rejected_at"])
        dataset.rejects += 1
        if dataset.updated_at == record["rejected_at"]:
            dataset.reject_code = record["code"]
            dataset.reject_reason = record["reason"]

    def _model(self, record: Record) -> Model:
        model = self.models.get(record["model_id"])
        if model is None:
            model = self.models[record["model_id"]] = Model(
                record["model_id"], record["tenant"], record["model_name"]
            )
        return model

    def _model_ready(self, record: Record) -> None:
        model = self._model(record)
        model.algorithm = record["algorithm"]
        model.problem_type = record["problem_type"]
        model.cv_score = record["cv_score"]
        model.scoring = record["scoring"]
        model.ready_at = record["ready_at"]

    def _model_evaluated(self, record: Record) -> None:
        model = self._model(record)
        if model.evaluated_at is not None and record["evaluated_at"] <= model.evaluated_at:
            return  # a redelivery or an older evaluation
        model.problem_type = record["problem_type"]
        model.evaluated_at = record["evaluated_at"]
        model.metrics = {name: float(value) for name, value in record["metrics"].items()}
        model.findings = len(record.get("findings") or ())
        model.roc = [
            {"label": curve.get("label"), "x": list(curve["x"]), "y": list(curve["y"])}
            for curve in record.get("curves") or ()
            if curve["kind"] == "roc"
        ]
        history = self.model_history.setdefault((model.tenant, model.model_name), [])
        bisect.insort(
            history,
            {"time": model.evaluated_at, "model_id": model.model_id, "metrics": model.metrics},
            key=lambda point: point["time"],
        )
        del history[: -self.history]

    def _model_promoted(self, record: Record) -> None:
        key = record["tenant"], record["model_name"]
        if record["verdict"] in ("promoted", "rolled_back"):
            self.champions[key] = record["model_id"]
        history = self.promotions.setdefault(key, [])
        history.append(
            {
                "time": record["decided_at"],
                "model_id": record["model_id"],
                "verdict": record["verdict"],
                "previous_champion_id": record.get("previous_champion_id"),
                "primary_metric": record["primary_metric"],
                "challenger_score": record["challenger_score"],
                "champion_score": record.get("champion_score"),
                "reason": record["reason"],
            }
        )
        del history[: -self.history]

    def _audit(self, record: Record) -> None:
        self.audit[record["action"], record["outcome"]] += 1

    # -- the pipeline, measured from the broker rather than from events --------------------

    def set_pipeline(
        self, lag: Mapping[tuple[str, str], Lag], dead_letters: Mapping[str, int], now_ms: int
    ) -> None:
        """Consumer lag per (group, topic) and dead letters per source topic, as read now."""
        self.lag = dict(lag)
        self.dead_letters = dict(dead_letters)
        for topic, count in dead_letters.items():
            history = self.dead_letter_history.setdefault(topic, collections.deque(maxlen=4096))
            history.append((now_ms, count))
        self.pipeline_checked_at = now_ms
        self.version += 1

    def dead_letter_increase(self, topic: str, window_ms: int, now_ms: int) -> int:
        """Dead letters added to ``topic`` within the last ``window_ms``."""
        history = self.dead_letter_history.get(topic)
        if not history:
            return 0
        while len(history) > 1 and history[1][0] <= now_ms - window_ms:
            history.popleft()
        return history[-1][1] - history[0][1]

    # -- derived views ----------------------------------------------------------------------

    def alive(self, node: Node, now_ms: int, dead_after_ms: int) -> bool:
        return now_ms - node.sent_at <= dead_after_ms

    def utilisation(self, now_ms: int, dead_after_ms: int) -> dict[str, dict[str, float]]:
        """Usage over capacity of the live nodes, per region and for the whole cluster."""
        used: dict[str, collections.Counter[str]] = {}
        offered: dict[str, collections.Counter[str]] = {}
        for node in self.nodes.values():
            if not self.alive(node, now_ms, dead_after_ms):
                continue
            for region in ("all", node.region):
                used.setdefault(region, collections.Counter()).update(node.usage)
                offered.setdefault(region, collections.Counter()).update(node.capacity)
        return {
            region: {
                resource: used[region][resource] / offered[region][resource]
                for resource in RESOURCES
                if offered[region][resource] > 0
            }
            for region in offered
        }

    def oldest_waits(self, now_ms: int) -> dict[tuple[str, str], int]:
        """How long the longest-waiting pending job of each queue has waited."""
        return {queue: max(0, now_ms - min(jobs.values())) for queue, jobs in self.pending.items()}

    def model_regressions(self) -> dict[tuple[str, str], tuple[str, float]]:
        """Per model name: its primary metric and how much the newest evaluation is worse
        than the best earlier one (positive: worse), in the metric's own units."""
        found: dict[tuple[str, str], tuple[str, float]] = {}
        for key, history in self.model_history.items():
            if len(history) < 2:
                continue
            newest = history[-1]["metrics"]
            chosen = primary_metric(newest)
            if chosen is None:
                continue
            name, higher = chosen
            earlier = [point["metrics"][name] for point in history[:-1] if name in point["metrics"]]
            if not earlier:
                continue
            best = max(earlier) if higher else min(earlier)
            found[key] = name, (best - newest[name]) if higher else (newest[name] - best)
        return found

    # -- snapshots: what a restart restores --------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy of the state (the rolling windows are rebuilt by new events).

        Rows are field tuples under their field names: ten times cheaper to take than
        ``dataclasses.asdict`` (this runs on the event loop), and a field added later
        with a default still restores from an older snapshot.
        """
        return {
            "nodes": to_table(Node, self.nodes.values()),
            "jobs": to_table(Job, self.jobs.values()),
            "datasets": to_table(Dataset, self.datasets.values()),
            "models": to_table(Model, self.models.values()),
            "model_history": [[*key, value] for key, value in self.model_history.items()],
            "champions": [[*key, value] for key, value in self.champions.items()],
            "promotions": [[*key, value] for key, value in self.promotions.items()],
            "counters": dict(self.counters),
            "events_by_topic": dict(self.events_by_topic),
            "audit": [[*key, value] for key, value in self.audit.items()],
            "positions": [[*key, value] for key, value in (self.positions or {}).items()],
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any], **options: Any) -> MonitorState:
        """The state a snapshot saved, with the options of :class:`MonitorState`; nodes
        silent too long are forgotten at once, and at most ``max_nodes`` kept."""
        state = cls(**options)
        state.nodes.restore(from_table(Node, snapshot["nodes"]))
        for job in from_table(Job, snapshot["jobs"]):
            state._remember(job)
            if job.state in ("requested", "queued") and job.queued_since is not None:
                state._enqueue(job, job.queued_since)
        state.datasets = {
            (d.tenant, d.dataset): d for d in from_table(Dataset, snapshot["datasets"])
        }
        state.models = {m.model_id: m for m in from_table(Model, snapshot["models"])}
        state.model_history = {(t, n): v for t, n, v in snapshot["model_history"]}
        state.champions = {(t, n): v for t, n, v in snapshot["champions"]}
        state.promotions = {(t, n): v for t, n, v in snapshot["promotions"]}
        state.counters.update(snapshot["counters"])
        state.events_by_topic.update(snapshot["events_by_topic"])
        state.audit.update({(a, o): n for a, o, n in snapshot["audit"]})
        positions = snapshot.get("positions")
        state.positions = None if positions is None else {(t, p): o for t, p, o in positions}
        return state
