"""The scheduler's pure decision core: cluster state in, placement decisions out.

``Scheduler`` holds the cluster (nodes, queued jobs, running jobs) as plain in-memory
indexes and turns it into decisions with ``plan(now_ms)``. It does no I/O and reads no
clock: the service feeds it heartbeats and job events, the simulator feeds it a
synthetic trace, and both get the same decisions for the same inputs.

Order. Each plan visits every queued job once, highest priority first. Within one
priority the order is first-in first-out (``submitted_at_ms``, then arrival order);
under the ``drf`` policy it is progressive filling instead: the next job comes from
the tenant whose dominant share (its largest fraction of any cluster resource) is the
smallest, first-in first-out within the tenant. Capacity only shrinks while a plan
runs, so a job that does not fit when visited would not fit later in the same plan: a
job never waits while a lower-priority job takes room it could have used.

Node choice. Nodes are bucketed by (region, GPU type), and again by GPU type alone
for jobs that may run in any region; each bucket keeps its nodes that accept new work
sorted by (free GPUs, free CPU), in short sorted chunks so that an update costs
O(log n) comparisons and a bounded memmove even at 100,000 nodes. A job bisects to the
first node with enough GPUs and CPU and walks up (``binpack``: the most allocated node
that fits) or walks down from the top (``spread``: the least allocated), checking
memory, network, labels and reservations on the way. CPU-only jobs without a GPU-type
constraint try CPU-only nodes first and GPU nodes only when those are full, so GPUs
stay free for GPU work. A gang of N takes the N best nodes, one worker on each, or
nothing. Failures are cached per job shape (demand, gang size, constraints) for the
rest of the plan (capacity only shrinks), so a long queue of identical jobs that
cannot fit costs one scan; the estimate joins the key once some reservation has a
known start, since only then can it change the answer.

Quotas. A tenant's running total may never exceed its limit. Inside the limit a
tenant may borrow idle capacity beyond its guarantee. Borrowed capacity is a loan: a
job whose tenant stays within its guarantee may reclaim it by preempting jobs of
tenants that run beyond their guarantee, whatever their priority or preemptible flag.

Preemption. A job that cannot fit may evict preemptible jobs of lower priority (and
borrowed work, above). On each candidate node the core looks for the cheapest victim
set: the one whose highest victim priority is lowest, then the one with the fewest
victims; the gang takes the N cheapest nodes. Victims are whole jobs: every worker of
a victim gang is stopped and the job requeued (a preemption is not a retry). The room
freed on the victims' nodes is not used by anything else in the same plan: the
victims have not stopped yet, and leaving it for the next plan keeps the priority
order exact.

Backfill. A job that cannot fit (and cannot preempt) may reserve the nodes on which it
will start first, up to ``max_reservations`` jobs per plan; a reservation is kept
across plans while it stays valid, so the reserved nodes drain instead of being
refilled. Later jobs in the order do not use reserved nodes, with one exception (EASY
backfill): a job with an ``estimated_duration_ms`` may use a reserved node if it will
finish before the reservation's start. The start is the time at which every reserved
node has freed enough, computed from the estimated ends of the jobs running there; it
is unknown (and nothing backfills) if a needed job carries no estimate. Jobs without
estimates therefore never delay a reservation; jobs with estimates delay it only if
they overrun their estimate.

Accounting. The core counts what it granted, never the measured usage; a node never
holds more than its capacity in any resource. The shell flags nodes that run hot or
fall silent (``NodeState.accepts_new_work``) and removes dead ones (``remove_node``),
which requeues their jobs (with a retry count) or fails them past ``max_retries``.
"""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING

from lepton.scheduling.entities import (
    Assign,
    Decision,
    Policy,
    Preempt,
    Wait,
    WaitReason,
)
from lepton.scheduling.placement.cluster import _Cluster
from lepton.scheduling.placement.indexes import (
    _GPU,
    _SEQ_MASK,
    _Bucket,
    _covers,
    _index_key,
    _Job,
    _labels_match,
    _Node,
    _Shape,
    _Vector,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# (cost: has victims, top victim priority, victim count, node seq), node, victims.
_PreemptionOption = tuple[tuple[bool, int, int, int], "_Node", tuple["_Job", ...]]


@dataclass(slots=True)
class _PlanScratch:
    """What one plan learns as it goes; thrown away when the plan ends."""

    now_ms: int
    reservations_left: int
    decisions: list[Decision] = field(default_factory=list)
    # Node -> the time its reservation starts (None: unknown, so nothing backfills).
    reserved: dict[_Node, int | None] = field(default_factory=dict)
    failed_shapes: set[tuple[_Shape, int | None]] = field(default_factory=set)
    # True once a reservation has a known start, so that estimates allow backfill.
    backfill_windows: bool = False
    # Shape -> the highest priority at which preempting for it failed (without reclaim).
    failed_preemptions: dict[_Shape, int] = field(default_factory=dict)
    capable_counts: dict[_Shape, int] = field(default_factory=dict)

    def failure_key(self, job: _Job) -> tuple[_Shape, int | None]:
        return (job.shape, job.spec.estimated_duration_ms if self.backfill_windows else None)

    def blocks(self, node: _Node, job: _Job) -> bool:
        """True if ``node`` is held for an earlier job and ``job`` cannot backfill it."""
        if node not in self.reserved:
            return False
        start = self.reserved[node]
        duration = job.spec.estimated_duration_ms
        return start is None or duration is None or self.now_ms + duration > start


class Scheduler(_Cluster):
    """Cluster state plus the placement algorithm described in the module docstring.

    Feed it with ``upsert_node``/``remove_node`` (heartbeats, dead nodes), ``submit``
    and ``remove_job`` (requests, completions, cancellations), ``restore_assignment``
    (replaying the log after a restart); ask it for decisions with ``plan``.
    """

    # ------------------------------------------------------------------------- plan

    def plan(self, now_ms: int) -> list[Decision]:
        """One decision per queued job (``Assign`` or ``Wait``), plus ``Preempt``s.

        The core applies its own decisions: assigned jobs count as running and victims
        are requeued, so the next plan starts from the state these decisions create.
        """
        scratch = _PlanScratch(now_ms, reservations_left=self._config.max_reservations)
        for job in self._plan_order():
            self._decide(job, scratch)
        return scratch.decisions

    def _plan_order(self) -> Iterator[_Job]:
        by_priority: defaultdict[int, list[_Job]] = defaultdict(list)
        for job in self._pending.values():
            by_priority[job.spec.priority].append(job)
        for priority in sorted(by_priority, reverse=True):
            jobs = sorted(by_priority[priority], key=attrgetter("fifo_key"))
            if self._config.policy is Policy.DRF:
                yield from self._progressive_filling(jobs)
            else:
                yield from jobs

    def _progressive_filling(self, jobs: list[_Job]) -> Iterator[_Job]:
        """Yield jobs tenant by tenant, always from the tenant with the least share.

        Shares are read again after each yielded job was decided, so an assignment
        moves its tenant back in the line.
        """
        queues: dict[str, deque[_Job]] = defaultdict(deque)
        for job in jobs:
            queues[job.spec.tenant].append(job)
        line = [(self._dominant_share(t), q[0].fifo_key, t) for t, q in queues.items()]
        heapq.heapify(line)
        while line:
            _, _, tenant = heapq.heappop(line)
            queue = queues[tenant]
            yield queue.popleft()
            if queue:
                heapq.heappush(line, (self._dominant_share(tenant), queue[0].fifo_key, tenant))

    def _decide(self, job: _Job, scratch: _PlanScratch) -> None:
        if not self._within_limit(job):
            scratch.decisions.append(Wait(job.spec.job_id, WaitReason.QUOTA_LIMIT))
            return
        nodes = None
        if scratch.failure_key(job) not in scratch.failed_shapes:
            nodes = self._find_free_nodes(job, scratch)
            if nodes is None:
                scratch.failed_shapes.add(scratch.failure_key(job))
        if nodes is None:
            if self._capable_count(job, scratch) < job.spec.gang_size:
                scratch.decisions.append(Wait(job.spec.job_id, WaitReason.NO_ACCEPTING_NODE))
                return
            nodes = self._preempt_for(job, scratch)
        if nodes is None:
            self._reserve_for(job, scratch)
            return
        self._bind(job, nodes, scratch.now_ms)
        scratch.decisions.append(
            Assign(job.spec.job_id, tuple(node.state.node_id for node in nodes), job.spec.demand)
        )

    # ---------------------------------------------------------------- node choice

    def _find_free_nodes(self, job: _Job, scratch: _PlanScratch) -> list[_Node] | None:
        gang = job.spec.gang_size
        ascending = (job.spec.policy or self._config.policy) is not Policy.SPREAD
        chosen: list[_Node] = []
        for tier in self._tiers(job):
            found: list[int] = []
            for bucket in tier:
                found.extend(self._scan(bucket, job, gang - len(chosen), ascending, scratch))
            found.sort(reverse=not ascending)
            chosen.extend(
                self._nodes_by_seq[key & _SEQ_MASK] for key in found[: gang - len(chosen)]
            )
            if len(chosen) == gang:
                return chosen
        return None

    def _scan(
        self, bucket: _Bucket, job: _Job, wanted: int, ascending: bool, scratch: _PlanScratch
    ) -> list[int]:
        """Index keys of up to ``wanted`` nodes of ``bucket`` that fit ``job`` now, best first."""
        cpu, mem, gpu, net = job.demand
        lowest = _index_key(gpu, cpu, 0)
        keys = (
            bucket.keys.ascending_from(lowest) if ascending else bucket.keys.descending_to(lowest)
        )
        nodes_by_seq = self._nodes_by_seq
        reserved = scratch.reserved
        found: list[int] = []
        for key in keys:
            node = nodes_by_seq[key & _SEQ_MASK]
            # Enough GPUs sorts first, so CPU may still be short past the lower bound.
            if node.free_cpu < cpu or node.free_mem < mem or node.free_net < net:
                continue
            if job.labels and not _labels_match(node.state.labels, job.labels):
                continue
            if reserved and scratch.blocks(node, job):
                continue
            found.append(key)
            if len(found) == wanted:
                break
        return found

    def _tiers(self, job: _Job) -> list[list[_Bucket]]:
        """Buckets that match the job's constraints, in the order they should be tried."""
        constraints = job.spec.constraints
        wants_gpu_node = job.demand[_GPU] > 0 or constraints.gpu_type is not None
        key = (constraints.region, constraints.gpu_type, wants_gpu_node)
        tiers = self._tiers_cache.get(key)
        if tiers is None:
            matching = [
                bucket
                for bucket in self._buckets.values()
                if bucket.region == constraints.region
                and constraints.gpu_type in (None, bucket.gpu_type)
            ]
            gpu_buckets = [bucket for bucket in matching if bucket.gpu_type is not None]
            cpu_buckets = [bucket for bucket in matching if bucket.gpu_type is None]
            tiers = [gpu_buckets] if wants_gpu_node else [cpu_buckets, gpu_buckets]
            self._tiers_cache[key] = tiers
        return tiers

    def _matching_nodes(self, job: _Job, tiers: list[list[_Bucket]]) -> Iterator[_Node]:
        """Accepting nodes of ``tiers`` that have the job's labels and could hold it if empty."""
        for tier in tiers:
            for bucket in tier:
                for key in bucket.keys:
                    node = self._nodes_by_seq[key & _SEQ_MASK]
                    if node.big_enough(job):  # the bucket matches region and GPU type
                        yield node

    def _candidate_nodes(
        self, job: _Job, scratch: _PlanScratch, tiers: list[list[_Bucket]]
    ) -> Iterator[_Node]:
        """Matching nodes that no earlier job holds in this plan."""
        return (node for node in self._matching_nodes(job, tiers) if node not in scratch.reserved)

    def _capable_count(self, job: _Job, scratch: _PlanScratch) -> int:
        """How many accepting nodes could hold one worker if empty (capped at the gang)."""
        count = scratch.capable_counts.get(job.shape)
        if count is None:
            count = 0
            for _ in self._matching_nodes(job, self._tiers(job)):
                count += 1
                if count == job.spec.gang_size:
                    break
            scratch.capable_counts[job.shape] = count
        return count

    # ---------------------------------------------------------------- preemption

    def _preempt_for(self, job: _Job, scratch: _PlanScratch) -> list[_Node] | None:
        lenders = self._lenders_for(job)
        may_evict = self._victim_rule(job, lenders)
        if may_evict is None:
            return None
        # Without reclaim, both the room and the evictable jobs only shrink during a plan
        # (later jobs have lower priority, so nothing assigned since is evictable for
        # them): a failure holds for the rest of the plan, at this priority and below.
        failed_at = scratch.failed_preemptions.get(job.shape)
        if not lenders and failed_at is not None and job.spec.priority <= failed_at:
            return None
        # No victim set is cheaper than one job of the lowest evictable priority; once the
        # gang has that many such nodes, the rest of the cluster cannot do better.
        floor = None
        if not lenders:
            floor = min(
                lower
                for lower, count in self._preemptible_priorities.items()
                if count and lower < job.spec.priority
            )
        options: list[_PreemptionOption] = []
        for tier in self._tiers(job):
            # Like placement, prefer the first tier (CPU nodes for CPU work).
            options += self._preemption_options(job, scratch, [tier], may_evict, floor)
            if len(options) >= job.spec.gang_size:
                break
        if len(options) < job.spec.gang_size:
            if not lenders:
                scratch.failed_preemptions.setdefault(job.shape, job.spec.priority)
            return None
        options.sort(key=lambda option: option[0])
        chosen = options[: job.spec.gang_size]
        victims_by_id = {victim.spec.job_id: victim for _, _, vs in chosen for victim in vs}
        for victim in victims_by_id.values():
            # The freed room stays out of this plan (see the module docstring).
            for node in victim.nodes:
                scratch.reserved[node] = None
            self._release(victim)
            self._pending[victim.spec.job_id] = victim
        if victims_by_id:
            scratch.decisions.append(Preempt(job.spec.job_id, tuple(victims_by_id)))
        return [node for _, node, _ in chosen]

    def _preemption_options(
        self,
        job: _Job,
        scratch: _PlanScratch,
        tiers: list[list[_Bucket]],
        may_evict: Callable[[_Job], bool],
        floor: int | None,
    ) -> list[_PreemptionOption]:
        """Candidate nodes with their cheapest victim sets, until the floor is reached."""
        options: list[_PreemptionOption] = []
        cheapest_possible = 0
        for node in self._candidate_nodes(job, scratch, tiers):
            victims = self._cheapest_victims(node, job, may_evict)
            if victims is None:
                continue
            cost = (
                bool(victims),
                max((victim.spec.priority for victim in victims), default=0),
                len(victims),
                node.seq,
            )
            options.append((cost, node, victims))
            if floor is not None and cost[:3] <= (True, floor, 1):
                cheapest_possible += 1
                if cheapest_possible == job.spec.gang_size:
                    break
        return options

    def _lenders_for(self, job: _Job) -> set[str]:
        """Tenants whose borrowed capacity ``job`` may reclaim (it stays within guarantee)."""
        if not self._within_guarantee_after(job):
            return set()
        return {
            tenant
            for tenant in self._tenant_allocated
            if tenant != job.spec.tenant and self._borrowing(tenant)
        }

    def _victim_rule(self, job: _Job, lenders: set[str]) -> Callable[[_Job], bool] | None:
        """Which running jobs ``job`` may evict, or None if there cannot be any."""
        priority = job.spec.priority
        if not lenders and not any(
            count and lower < priority for lower, count in self._preemptible_priorities.items()
        ):
            return None

        def may_evict(victim: _Job) -> bool:
            spec = victim.spec
            return (spec.preemptible and spec.priority < priority) or spec.tenant in lenders

        return may_evict

    def _cheapest_victims(
        self, node: _Node, job: _Job, may_evict: Callable[[_Job], bool]
    ) -> tuple[_Job, ...] | None:
        """The victim set on ``node`` with the lowest top priority, then the fewest jobs."""
        shortfall = [max(0, want - have) for want, have in zip(job.demand, node.free, strict=True)]
        if not any(shortfall):
            return ()
        candidates = [self._running[job_id] for job_id in node.job_ids]
        candidates = [victim for victim in candidates if may_evict(victim)]
        evictable = [sum(amounts) for amounts in zip(*(v.demand for v in candidates), strict=True)]
        if not candidates or not _covers(evictable, shortfall):
            return None
        # Lowest priority first; among equals the newest, which loses the least work.
        candidates.sort(key=lambda victim: (victim.spec.priority, -victim.started_at_ms))
        single = next((v for v in candidates if _covers(v.demand, shortfall)), None)
        greedy: list[_Job] = []
        freed = [0, 0, 0, 0]
        for victim in candidates:
            greedy.append(victim)
            freed = [have + more for have, more in zip(freed, victim.demand, strict=True)]
            if _covers(freed, shortfall):
                break
        # Drop victims the others already make room for, highest priority first.
        for victim in reversed(greedy[:-1]):
            without = [have - less for have, less in zip(freed, victim.demand, strict=True)]
            if _covers(without, shortfall):
                greedy.remove(victim)
                freed = without
        if single is not None and (single.spec.priority, 1) <= (
            greedy[-1].spec.priority,
            len(greedy),
        ):
            return (single,)
        return tuple(greedy)

    # ------------------------------------------------------------------ backfill

    def _reserve_for(self, job: _Job, scratch: _PlanScratch) -> None:
        """Hold nodes for a blocked job if a reservation slot is left, then wait."""
        job_id = job.spec.job_id
        reserved_ids: tuple[str, ...] = ()
        if scratch.reservations_left > 0:
            nodes = self._reservations.get(job_id)
            if nodes is None or not all(self._still_reservable(n, job, scratch) for n in nodes):
                nodes = self._pick_reservation(job, scratch)
            if nodes is None:
                self._reservations.pop(job_id, None)
            else:
                starts = [self._start_time(node, job, scratch.now_ms) for node in nodes]
                start = None if None in starts else max(s for s in starts if s is not None)
                for node in nodes:
                    scratch.reserved[node] = start
                scratch.backfill_windows |= start is not None
                scratch.reservations_left -= 1
                self._reservations[job_id] = nodes
                reserved_ids = tuple(node.state.node_id for node in nodes)
        scratch.decisions.append(Wait(job_id, WaitReason.NO_CAPACITY, reserved_ids))

    def _still_reservable(self, node: _Node, job: _Job, scratch: _PlanScratch) -> bool:
        return (
            self._nodes.get(node.state.node_id) is node
            and node.accepting
            and node not in scratch.reserved
            and node.could_ever_hold(job)
        )

    def _pick_reservation(self, job: _Job, scratch: _PlanScratch) -> list[_Node] | None:
        """The gang's worth of nodes on which the job can start first.

        Ranked by known start time, then (unknown starts) by how little is missing; like
        placement, a later tier (GPU nodes for CPU work) only when the first has too few.
        """
        now = scratch.now_ms
        ranked: list[tuple[bool, int, float, int, _Node]] = []
        for tier in self._tiers(job):
            for node in self._candidate_nodes(job, scratch, [tier]):
                start = self._start_time(node, job, now)
                missing = max(
                    (want - have) / capacity
                    for want, have, capacity in zip(
                        job.demand, node.free, node.capacity, strict=True
                    )
                    if capacity > 0
                )
                ranked.append((start is None, start or 0, missing, node.seq, node))
            if len(ranked) >= job.spec.gang_size:
                break
        if len(ranked) < job.spec.gang_size:
            return None
        ranked.sort(key=lambda rank: rank[:4])
        return [rank[4] for rank in ranked[: job.spec.gang_size]]

    def _start_time(self, node: _Node, job: _Job, now_ms: int) -> int | None:
        """When ``node`` will have room for one worker, from running jobs' estimates."""
        shortfall = [max(0, want - have) for want, have in zip(job.demand, node.free, strict=True)]
        if not any(shortfall):
            return now_ms
        ending: list[tuple[int, _Vector]] = []
        for job_id in node.job_ids:
            running = self._running[job_id]
            if running.spec.estimated_duration_ms is not None:
                end = running.started_at_ms + running.spec.estimated_duration_ms
                ending.append((end, running.demand))
        ending.sort()
        freed = [0, 0, 0, 0]
        for end, demand in ending:
            freed = [have + more for have, more in zip(freed, demand, strict=True)]
            if _covers(freed, shortfall):
                return max(end, now_ms)
        return None
