"""A discrete-event simulator that drives the scheduler's core with a synthetic trace.

``simulate(config)`` builds a heterogeneous cluster (CPU nodes of several sizes, GPU
nodes of several types, spread over regions), then replays, in virtual time, Poisson
job arrivals (mixed shapes, priorities, tenants, gangs, constraints), job completions
after their true durations, and node failures and repairs. Every ``plan_interval_ms``
of virtual time in which something changed it calls ``Scheduler.plan`` and applies
the decisions, exactly as the service would. Everything is drawn from one
``random.Random(seed)``: the same config gives the same report, except for the two
wall-clock fields (``plan_seconds``, ``decisions_per_second``).

The simulator keeps its own ledger of what each node and tenant holds, built only
from the decisions, and checks the core's promises against it: no node resource is
ever over-committed, gangs are whole (N distinct nodes), no tenant exceeds its limit,
and (with ``check_priority_order``) no job waits while a lower-priority job takes room
it could have used. Violations are counted in the report, never raised, so a property
test can assert on them and show the numbers when they fail.
"""

from __future__ import annotations

import heapq
import random
import time
from dataclasses import dataclass, field
from enum import IntEnum

from lepton.scheduling.entities import (
    Assign,
    Constraints,
    Failed,
    JobSpec,
    NodeState,
    Policy,
    Preempt,
    Resources,
    SchedulerConfig,
    TenantQuota,
)
from lepton.scheduling.ledger import Ledger, priority_inversions
from lepton.scheduling.placement import Scheduler

__all__ = [
    "PriorityClass",
    "SimulationConfig",
    "SimulationReport",
    "simulate",
    "synthetic_cluster",
    "synthetic_job",
]

_GIB = 1024


@dataclass(frozen=True, slots=True)
class PriorityClass:
    """A class of jobs: its priority number, whether it may be preempted, its share."""

    name: str
    priority: int
    preemptible: bool
    arrival_weight: float


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """The synthetic cluster, the synthetic trace and the scheduler's configuration."""

    seed: int = 0
    nodes: int = 200
    regions: tuple[str, ...] = ("eu-west", "us-east", "ap-south")
    gpu_types: tuple[str, ...] = ("a100", "h100")
    gpu_node_fraction: float = 0.25
    tenants: tuple[str, ...] = ("alpha", "beta", "gamma", "delta")
    priority_classes: tuple[PriorityClass, ...] = (
        PriorityClass("batch", 0, preemptible=True, arrival_weight=0.5),
        PriorityClass("standard", 100, preemptible=True, arrival_weight=0.35),
        PriorityClass("critical", 1000, preemptible=False, arrival_weight=0.15),
    )
    policy: Policy = Policy.BINPACK
    quotas: dict[str, TenantQuota] = field(default_factory=dict)
    max_reservations: int = 4
    horizon_ms: int = 2 * 3_600_000
    arrival_rate_per_s: float = 1.0
    mean_job_duration_ms: int = 600_000
    gang_fraction: float = 0.1
    max_gang_size: int = 8
    # Jobs that carry an estimate (their true duration) and so may be backfilled.
    estimate_fraction: float = 0.5
    # Mean time between failures of one node; None disables failures.
    node_mtbf_ms: int | None = 24 * 3_600_000
    node_repair_ms: int = 600_000
    plan_interval_ms: int = 1_000
    # Replays every plan against a brute-force oracle: slow, for small property tests.
    check_priority_order: bool = False


@dataclass(frozen=True, slots=True)
class SimulationReport:
    """What happened. Utilisation is time-weighted granted / capacity per resource."""

    nodes: int
    jobs_submitted: int
    jobs_started: int
    jobs_completed: int
    jobs_unschedulable: int
    jobs_failed: int
    jobs_still_queued: int
    preemptions: int
    requeues: int
    node_failures: int
    utilisation: dict[str, float]
    # Priority class -> {"p50", "p90", "p99", "count"}: submit to first start, in ms.
    wait_ms: dict[str, dict[str, float]]
    tenant_dominant_share: dict[str, float]
    fairness_jain: float
    decisions: int
    plan_seconds: float
    decisions_per_second: float
    overcommit_violations: int
    partial_gang_violations: int
    quota_violations: int
    priority_inversions: int


# Per-worker shapes: (weight, cpu_millicores, memory_mib, gpus, network_mbps).
_CPU_SHAPES = (
    (0.5, 500, 1 * _GIB, 0, 100),
    (0.3, 4_000, 16 * _GIB, 0, 1_000),
    (0.2, 16_000, 64 * _GIB, 0, 2_000),
)
_GPU_SHAPES = (
    (0.5, 8_000, 64 * _GIB, 1, 5_000),
    (0.3, 32_000, 256 * _GIB, 4, 20_000),
    (0.2, 64_000, 512 * _GIB, 8, 40_000),
)
_GPU_JOB_FRACTION = 0.3


def synthetic_cluster(config: SimulationConfig, rng: random.Random) -> list[NodeState]:
    """``config.nodes`` nodes: CPU nodes of three sizes, 8-GPU nodes of each GPU type."""
    nodes = []
    for index in range(config.nodes):
        region = rng.choice(config.regions)
        labels = {"disk": rng.choice(("ssd", "ssd", "hdd"))}
        if config.gpu_types and rng.random() < config.gpu_node_fraction:
            gpu_type: str | None = rng.choice(config.gpu_types)
            capacity = Resources(96_000, 1_024 * _GIB, 8, 100_000)
        else:
            gpu_type = None
            cores = rng.choice((16, 32, 64))
            capacity = Resources(cores * 1_000, cores * 4 * _GIB, 0, rng.choice((10_000, 25_000)))
        nodes.append(
            NodeState(f"node-{index:06d}", region, capacity, labels=labels, gpu_type=gpu_type)
        )
    return nodes


def synthetic_job(
    config: SimulationConfig, rng: random.Random, job_id: str, submitted_at_ms: int
) -> tuple[JobSpec, int]:
    """A random job and its true duration in ms."""
    wants_gpu = bool(config.gpu_types) and rng.random() < _GPU_JOB_FRACTION
    shapes = _GPU_SHAPES if wants_gpu else _CPU_SHAPES
    _, cpu, memory, gpus, network = rng.choices(shapes, weights=[s[0] for s in shapes])[0]
    gang_size = 1
    if wants_gpu and rng.random() < config.gang_fraction:
        gang_size = rng.randint(2, config.max_gang_size)
    region = rng.choice(config.regions) if rng.random() < 0.3 else None
    gpu_type = rng.choice(config.gpu_types) if wants_gpu and rng.random() < 0.5 else None
    labels = {"disk": "ssd"} if rng.random() < 0.1 else {}
    weights = [c.arrival_weight for c in config.priority_classes]
    priority_class = rng.choices(config.priority_classes, weights=weights)[0]
    duration_ms = max(1_000, int(rng.expovariate(1 / config.mean_job_duration_ms)))
    spec = JobSpec(
        job_id=job_id,
        tenant=rng.choice(config.tenants),
        demand=Resources(cpu, memory, gpus, network),
        priority=priority_class.priority,
        priority_class=priority_class.name,
        preemptible=priority_class.preemptible,
        gang_size=gang_size,
        constraints=Constraints(region=region, labels=labels, gpu_type=gpu_type),
        submitted_at_ms=submitted_at_ms,
        estimated_duration_ms=duration_ms if rng.random() < config.estimate_fraction else None,
    )
    return spec, duration_ms


class _Event(IntEnum):
    # Order within one instant: repairs and failures first, then completions, arrivals.
    NODE_REPAIRED = 0
    NODE_FAILED = 1
    JOB_FINISHED = 2
    JOB_ARRIVED = 3


def _percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(0, min(len(sorted_values) - 1, round(fraction * len(sorted_values)) - 1))
    return float(sorted_values[rank])


def _jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one holds everything."""
    squares = sum(value * value for value in values)
    return 1.0 if squares == 0 else sum(values) ** 2 / (len(values) * squares)


class _Simulation:
    """The event loop; one instance per ``simulate`` call."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)  # noqa: S311 - a reproducible trace, not secrets
        self.scheduler = Scheduler(
            SchedulerConfig(config.policy, config.quotas, config.max_reservations)
        )
        cluster = synthetic_cluster(config, self.rng)
        self.ledger = Ledger({node.node_id: node for node in cluster})
        self.events: list[tuple[int, _Event, int, str]] = []
        self.event_seq = 0
        self.jobs: dict[str, JobSpec] = {}
        self.durations: dict[str, int] = {}
        self.first_start: dict[str, int] = {}
        self.next_token = 0
        self.counts = dict.fromkeys(
            ("completed", "unschedulable", "failed", "preemptions", "requeues", "failures"), 0
        )
        self.violations = dict.fromkeys(("overcommit", "partial_gang", "quota", "priority"), 0)
        self.decisions = 0
        self.plan_seconds = 0.0
        # Time integrals for utilisation and fairness.
        self.clock_ms = 0
        self.granted_integral = [0.0, 0.0, 0.0, 0.0]
        self.capacity_integral = [0.0, 0.0, 0.0, 0.0]
        self.share_integral: dict[str, float] = dict.fromkeys(config.tenants, 0.0)
        for node in cluster:
            self.ledger.node_up(node.node_id)
            self.scheduler.upsert_node(node)
            self._schedule_failure(node.node_id, 0)
        self._schedule_arrivals()

    def _push(self, at_ms: int, kind: _Event, subject: str) -> None:
        self.event_seq += 1
        heapq.heappush(self.events, (at_ms, kind, self.event_seq, subject))

    def _schedule_arrivals(self) -> None:
        at_ms = 0.0
        index = 0
        while True:
            at_ms += self.rng.expovariate(self.config.arrival_rate_per_s) * 1_000
            if at_ms > self.config.horizon_ms:
                return
            spec, duration = synthetic_job(self.config, self.rng, f"job-{index:07d}", int(at_ms))
            self.jobs[spec.job_id] = spec
            self.durations[spec.job_id] = duration
            self._push(int(at_ms), _Event.JOB_ARRIVED, spec.job_id)
            index += 1

    def _schedule_failure(self, node_id: str, now_ms: int) -> None:
        if self.config.node_mtbf_ms is not None:
            delay = int(self.rng.expovariate(1 / self.config.node_mtbf_ms))
            self._push(now_ms + delay, _Event.NODE_FAILED, node_id)

    def run(self) -> SimulationReport:
        interval = self.config.plan_interval_ms
        changed = False
        for tick in range(0, self.config.horizon_ms + 1, interval):
            while self.events and self.events[0][0] <= tick:
                at_ms, kind, _, subject = heapq.heappop(self.events)
                self._advance(at_ms)
                changed |= self._handle(kind, subject, at_ms)
            self._advance(tick)
            if changed:
                self._plan(tick)
                changed = False
        return self._report()

    def _advance(self, now_ms: int) -> None:
        """Integrate granted capacity, total capacity and tenant shares up to now."""
        elapsed = now_ms - self.clock_ms
        if elapsed <= 0:
            return
        capacity = self.ledger.capacity
        for dim in range(4):
            self.granted_integral[dim] += self.ledger.granted[dim] * elapsed
            self.capacity_integral[dim] += capacity[dim] * elapsed
        for tenant, held in self.ledger.tenant_held.items():
            share = max((h / c for h, c in zip(held, capacity, strict=True) if c > 0), default=0.0)
            self.share_integral[tenant] += share * elapsed
        self.clock_ms = now_ms

    def _handle(self, kind: _Event, subject: str, now_ms: int) -> bool:
        """Apply one event; True if the scheduler's inputs changed."""
        if kind is _Event.JOB_ARRIVED:
            if self.scheduler.submit(self.jobs[subject]) is not None:
                self.counts["unschedulable"] += 1
                return False
            return True
        if kind is _Event.JOB_FINISHED:
            job_id, token = subject.rsplit("#", 1)
            run = self.ledger.runs.get(job_id)
            if run is None or run.token != int(token):
                return False  # the run was preempted or lost its node
            self.scheduler.remove_job(job_id)
            self.ledger.drop(self.jobs[job_id])
            self.counts["completed"] += 1
            return True
        if kind is _Event.NODE_FAILED:
            self.counts["failures"] += 1
            for outcome in self.scheduler.remove_node(subject):
                self.ledger.drop(self.jobs[outcome.job_id])
                key = "failed" if isinstance(outcome, Failed) else "requeues"
                self.counts[key] += 1
            self.ledger.node_down(subject)
            self._push(now_ms + self.config.node_repair_ms, _Event.NODE_REPAIRED, subject)
            return True
        self.ledger.node_up(subject)
        self.scheduler.upsert_node(self.ledger.node_states[subject])
        self._schedule_failure(subject, now_ms)
        return True

    def _plan(self, now_ms: int) -> None:
        started = time.perf_counter()
        decisions = self.scheduler.plan(now_ms)
        self.plan_seconds += time.perf_counter() - started
        self.decisions += len(decisions)
        if self.config.check_priority_order:
            self.violations["priority"] += priority_inversions(decisions, self.jobs, self.ledger)
        for decision in decisions:
            if isinstance(decision, Assign):
                self._start(decision, now_ms)
            elif isinstance(decision, Preempt):
                for victim_id in decision.victim_job_ids:
                    self.ledger.drop(self.jobs[victim_id])
                    self.counts["preemptions"] += 1

    def _start(self, decision: Assign, now_ms: int) -> None:
        job = self.jobs[decision.job_id]
        if len(set(decision.node_ids)) != job.gang_size:
            self.violations["partial_gang"] += 1
        self.next_token += 1
        if not self.ledger.hold(job, decision.node_ids, self.next_token):
            self.violations["overcommit"] += 1
        quota = self.config.quotas.get(job.tenant)
        held = self.ledger.tenant_held[job.tenant]
        if quota is not None and any(
            h > limit for h, limit in zip(held, quota.limit.as_tuple(), strict=True)
        ):
            self.violations["quota"] += 1
        self.first_start.setdefault(job.job_id, now_ms)
        finish_at = now_ms + self.durations[job.job_id]
        self._push(finish_at, _Event.JOB_FINISHED, f"{job.job_id}#{self.next_token}")

    def _report(self) -> SimulationReport:
        waits: dict[str, list[int]] = {c.name: [] for c in self.config.priority_classes}
        for job_id, started_at in self.first_start.items():
            job = self.jobs[job_id]
            waits[job.priority_class].append(started_at - job.submitted_at_ms)
        wait_ms = {}
        for name, values in waits.items():
            values.sort()
            wait_ms[name] = {
                "count": float(len(values)),
                **{
                    label: _percentile(values, fraction) if values else 0.0
                    for label, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
                },
            }
        elapsed = max(1, self.clock_ms)
        shares = {tenant: total / elapsed for tenant, total in self.share_integral.items()}
        submitted = len(self.jobs)
        return SimulationReport(
            nodes=self.config.nodes,
            jobs_submitted=submitted,
            jobs_started=len(self.first_start),
            jobs_completed=self.counts["completed"],
            jobs_unschedulable=self.counts["unschedulable"],
            jobs_failed=self.counts["failed"],
            jobs_still_queued=submitted
            - self.counts["unschedulable"]
            - self.counts["failed"]
            - self.counts["completed"]
            - len(self.ledger.runs),
            preemptions=self.counts["preemptions"],
            requeues=self.counts["requeues"],
            node_failures=self.counts["failures"],
            utilisation={
                name: granted / capacity if capacity else 0.0
                for name, granted, capacity in zip(
                    ("cpu", "memory", "gpus", "network"),
                    self.granted_integral,
                    self.capacity_integral,
                    strict=True,
                )
            },
            wait_ms=wait_ms,
            tenant_dominant_share=shares,
            fairness_jain=_jain(list(shares.values())),
            decisions=self.decisions,
            plan_seconds=self.plan_seconds,
            decisions_per_second=self.decisions / self.plan_seconds if self.plan_seconds else 0.0,
            overcommit_violations=self.violations["overcommit"],
            partial_gang_violations=self.violations["partial_gang"],
            quota_violations=self.violations["quota"],
            priority_inversions=self.violations["priority"],
        )


def simulate(config: SimulationConfig) -> SimulationReport:
    """Run the whole trace in virtual time and report what happened."""
    return _Simulation(config).run()
