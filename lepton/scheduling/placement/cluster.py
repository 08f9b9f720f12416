"""The state half of the scheduler core: nodes, queued and running jobs, grants, quotas.

``Scheduler`` (in ``scheduler``) extends ``_Cluster`` with the planning algorithm; this
part only records what it is fed and what the plan granted, and answers quota questions.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from lepton.scheduling.entities import (
    Failed,
    JobSpec,
    NodeLossOutcome,
    NodeState,
    Requeued,
    SchedulerConfig,
    Unschedulable,
)
from lepton.scheduling.placement.feasibility import _feasibility
from lepton.scheduling.placement.indexes import (
    _Bucket,
    _covers,
    _index,
    _Job,
    _Node,
    _Shape,
    _unindex,
    _Vector,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

# Nodes that are the same for the submit-time feasibility check.
_NodeClass = tuple[str, str | None, tuple[tuple[str, str], ...], _Vector]


class _Cluster:
    """Cluster state as the placement algorithm reads it.

    Feed it with ``upsert_node``/``remove_node`` (heartbeats, dead nodes), ``submit``
    and ``remove_job`` (requests, completions, cancellations), ``restore_assignment``
    (replaying the log after a restart).
    """

    def __init__(self, config: SchedulerConfig | None = None) -> None:
        self._config = config or SchedulerConfig()
        self._nodes: dict[str, _Node] = {}
        self._nodes_by_seq: dict[int, _Node] = {}
        self._buckets: dict[tuple[str | None, str | None], _Bucket] = {}
        self._tiers_cache: dict[tuple[str | None, str | None, bool], list[list[_Bucket]]] = {}
        self._cluster_capacity = [0, 0, 0, 0]
        self._pending: dict[str, _Job] = {}
        self._running: dict[str, _Job] = {}
        self._tenant_allocated: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self._preemptible_priorities: Counter[int] = Counter()
        self._reservations: dict[str, list[_Node]] = {}
        self._node_classes: dict[_NodeClass, tuple[NodeState, int]] = {}
        self._feasibility_cache: dict[_Shape, str | None] = {}
        self._next_seq = 0
        self._next_node_seq = 0

    # ----------------------------------------------------------------- cluster state

    def upsert_node(self, state: NodeState) -> None:
        """Add a node or apply its latest heartbeat (capacity, labels, the no-work flag)."""
        node = self._nodes.get(state.node_id)
        if node is None:
            self._next_node_seq += 1
            node = _Node(state, self._next_node_seq, self._buckets_for(state))
            self._nodes[state.node_id] = node
            self._nodes_by_seq[node.seq] = node
            self._count_class(state, +1)
        else:
            previous = node.state
            if node.accepting:
                _unindex(node)
            if (previous.capacity, previous.region, previous.gpu_type, previous.labels) != (
                state.capacity,
                state.region,
                state.gpu_type,
                state.labels,
            ):
                self._count_class(previous, -1)
                self._count_class(state, +1)
            for dim in range(4):
                self._cluster_capacity[dim] -= node.capacity[dim]
            # Keep what is granted; a shrunken capacity may leave negative free amounts,
            # which simply means the node takes no new work until enough is released.
            granted = tuple(cap - free for cap, free in zip(node.capacity, node.free, strict=True))
            node.state = state
            node.capacity = state.capacity.as_tuple()
            node.free_cpu, node.free_mem, node.free_gpu, node.free_net = (
                cap - used for cap, used in zip(node.capacity, granted, strict=True)
            )
            node.buckets = self._buckets_for(state)
            node.accepting = state.accepts_new_work
        for dim in range(4):
            self._cluster_capacity[dim] += node.capacity[dim]
        if node.accepting:
            _index(node)

    def remove_node(self, node_id: str) -> list[NodeLossOutcome]:
        """Forget a dead node; every job with a worker there is requeued or failed."""
        node = self._nodes.pop(node_id, None)
        if node is None:
            return []
        del self._nodes_by_seq[node.seq]
        if node.accepting:
            _unindex(node)
            node.accepting = False
        for dim in range(4):
            self._cluster_capacity[dim] -= node.capacity[dim]
        self._count_class(node.state, -1)
        outcomes: list[NodeLossOutcome] = []
        for job_id in list(node.job_ids):
            job = self._running[job_id]
            self._release(job)
            job.attempts += 1
            if job.attempts > job.spec.max_retries:
                outcomes.append(
                    Failed(
                        job_id,
                        f"lost node {node_id}; {job.attempts} failures exceed "
                        f"max_retries={job.spec.max_retries}",
                    )
                )
            else:
                self._pending[job_id] = job
                outcomes.append(Requeued(job_id, job.attempts))
        return outcomes

    # ------------------------------------------------------------------------- jobs

    def submit(self, spec: JobSpec, attempts: int = 0) -> Unschedulable | None:
        """Queue a job, or say why no node of the cluster could ever hold it.

        ``attempts`` counts earlier failed runs (a job requeued after its node lost it).
        Submitting a job that is already known changes nothing (redelivery).
        """
        if spec.job_id in self._pending or spec.job_id in self._running:
            return None
        job = _Job(spec, self._take_seq(), attempts=attempts)
        reason = self._impossible(job)
        if reason is not None:
            return Unschedulable(spec.job_id, reason)
        self._pending[spec.job_id] = job
        return None

    def impossible(self, spec: JobSpec) -> str | None:
        """Why no node of the cluster could ever hold ``spec`` (None if one could).

        Answered per node class and job shape, cached until the cluster's classes change:
        a request costs a lookup, not a scan of every node.
        """
        return self._impossible(_Job(spec, 0, attempts=0))

    def _impossible(self, job: _Job) -> str | None:
        if job.shape not in self._feasibility_cache:
            self._feasibility_cache[job.shape] = _feasibility(
                job.spec, list(self._node_classes.values())
            )
        return self._feasibility_cache[job.shape]

    def restore_assignment(
        self, spec: JobSpec, node_ids: Sequence[str], started_at_ms: int, attempts: int = 0
    ) -> None:
        """Record a job as running where the log says it was assigned (after a restart).

        Room is not checked: the log is the truth, and the core only ever logged
        assignments that fitted. Raises ``KeyError`` naming the node if a node is not known yet.
        """
        nodes = [self._nodes[node_id] for node_id in node_ids]
        self._pending.pop(spec.job_id, None)
        if spec.job_id in self._running:
            self._release(self._running[spec.job_id])
        self._bind(_Job(spec, self._take_seq(), attempts), nodes, started_at_ms)

    def remove_job(self, job_id: str) -> None:
        """The job finished, failed or was cancelled: dequeue it or free what it holds."""
        self._pending.pop(job_id, None)
        self._reservations.pop(job_id, None)
        job = self._running.get(job_id)
        if job is not None:
            self._release(job)

    # ------------------------------------------------------------------- quotas

    def _within_limit(self, job: _Job) -> bool:
        quota = self._config.quotas.get(job.spec.tenant)
        if quota is None:
            return True
        allocated = self._tenant_allocated[job.spec.tenant]
        after = [have + more for have, more in zip(allocated, job.total, strict=True)]
        return _covers(quota.limit.as_tuple(), after)

    def _within_guarantee_after(self, job: _Job) -> bool:
        quota = self._config.quotas.get(job.spec.tenant)
        if quota is None:
            return False
        allocated = self._tenant_allocated[job.spec.tenant]
        after = [have + more for have, more in zip(allocated, job.total, strict=True)]
        return _covers(quota.guaranteed.as_tuple(), after)

    def _borrowing(self, tenant: str) -> bool:
        quota = self._config.quotas.get(tenant)
        guaranteed = quota.guaranteed.as_tuple() if quota else (0, 0, 0, 0)
        return not _covers(guaranteed, self._tenant_allocated[tenant])

    def _dominant_share(self, tenant: str) -> float:
        allocated = self._tenant_allocated[tenant]
        return max(
            (
                have / total
                for have, total in zip(allocated, self._cluster_capacity, strict=True)
                if total > 0
            ),
            default=0.0,
        )

    # -------------------------------------------------------------- bookkeeping

    def _bind(self, job: _Job, nodes: list[_Node], now_ms: int) -> None:
        """Count ``job`` as running on ``nodes``; the caller has checked that it fits."""
        job_id = job.spec.job_id
        for node in nodes:
            self._move_free(node, job.demand, -1)
            node.job_ids[job_id] = None
        job.nodes = nodes
        job.started_at_ms = now_ms
        self._pending.pop(job_id, None)
        self._reservations.pop(job_id, None)
        self._running[job_id] = job
        self._add_to_tenant(job, +1)

    def _release(self, job: _Job) -> None:
        """Free everything ``job`` holds; it is then neither running nor queued."""
        job_id = job.spec.job_id
        for node in job.nodes:
            self._move_free(node, job.demand, +1)
            del node.job_ids[job_id]
        job.nodes = []
        del self._running[job_id]
        self._add_to_tenant(job, -1)

    def _move_free(self, node: _Node, demand: _Vector, sign: int) -> None:
        # The index is sorted by free amounts, so the entry moves with them.
        if node.accepting:
            _unindex(node)
            node.add_free(demand, sign)
            _index(node)
        else:
            node.add_free(demand, sign)

    def _add_to_tenant(self, job: _Job, sign: int) -> None:
        allocated = self._tenant_allocated[job.spec.tenant]
        for dim, amount in enumerate(job.total):
            allocated[dim] += sign * amount
        if job.spec.preemptible:
            self._preemptible_priorities[job.spec.priority] += sign

    def _count_class(self, state: NodeState, change: int) -> None:
        """Keep the node classes the feasibility check runs over; drop its stale answers."""
        key = (
            state.region,
            state.gpu_type,
            tuple(sorted(state.labels.items())),
            state.capacity.as_tuple(),
        )
        representative, count = self._node_classes.get(key, (state, 0))
        if count + change:
            self._node_classes[key] = (representative, count + change)
        else:
            del self._node_classes[key]
        self._feasibility_cache.clear()

    def _buckets_for(self, state: NodeState) -> tuple[_Bucket, _Bucket]:
        return (self._bucket(state.region, state.gpu_type), self._bucket(None, state.gpu_type))

    def _bucket(self, region: str | None, gpu_type: str | None) -> _Bucket:
        bucket = self._buckets.get((region, gpu_type))
        if bucket is None:
            bucket = self._buckets[region, gpu_type] = _Bucket(region, gpu_type)
            self._tiers_cache.clear()
        return bucket

    def _take_seq(self) -> int:
        self._next_seq += 1
        return self._next_seq
