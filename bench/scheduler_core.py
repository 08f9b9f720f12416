"""Benchmark: decisions per second of the scheduler's in-process core, on one core.

For 1,000, 10,000 and 100,000 synthetic nodes (the simulator's heterogeneous cluster:
CPU nodes of three sizes, 8-GPU nodes of two types, three regions, labels) it queues as
many synthetic jobs as there are nodes, capped at 10,000 for the 100,000-node cluster
(the simulator's mix: 30 % GPU jobs, gangs, region / GPU-type / label constraints,
three priority classes), and times ``Scheduler.plan`` in three situations:

- ``cold``: the first plan, over the empty cluster and the full queue;
- ``saturated``: as many jobs again arrive on the now busy cluster; many wait, some
  preempt lower-priority work, some reserve nodes;
- ``churn``: 10 % of the running jobs finish and as many new jobs arrive.

A decision is one ``Assign``, ``Wait`` or ``Preempt``; assignments per second are
reported beside it, since a ``Wait`` is cheaper than an ``Assign``. Each size runs
``REPEATS`` times on fresh state and reports the median. Every run replays the
decisions against node capacities and fails if any resource of any node was ever
over-committed.

The baseline, measured in the same run, is a plain best-fit loop (binpack: the most
allocated node that fits) that scans every node for each job: the core's default choice
without its indexes, quotas, reservations or preemption. It is timed on the first jobs
of the cold queue (500 at 1,000 nodes, fewer on bigger clusters, at most 2,000,000
node checks); ``ratio`` is cold decisions/s over the baseline's.

Usage: python bench/scheduler_core.py [--quick]   (--quick: 1,000 and 10,000 nodes only)
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path

from lepton.scheduling.entities import Assign, Decision, JobSpec, NodeState, Preempt
from lepton.scheduling.placement import Scheduler
from lepton.scheduling.simulator import SimulationConfig, synthetic_cluster, synthetic_job

TARGET_DECISIONS_PER_S = 20_000
JOB_CAP = 10_000
BASELINE_NODE_CHECKS = 2_000_000
RESULTS = Path(__file__).parent / "results" / "scheduler_core.json"
SCENARIOS = ("cold", "saturated", "churn")


class CapacityLedger:
    """Node holdings rebuilt from decisions alone; raises on any over-commit."""

    def __init__(self, nodes: list[NodeState]) -> None:
        self.capacity = {node.node_id: node.capacity.as_tuple() for node in nodes}
        self.held = {node.node_id: [0, 0, 0, 0] for node in nodes}
        self.running: dict[str, Assign] = {}

    def apply(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            if isinstance(decision, Preempt):
                for victim in decision.victim_job_ids:
                    self.release(victim)
            elif isinstance(decision, Assign):
                self.running[decision.job_id] = decision
                self._move(decision, +1)

    def release(self, job_id: str) -> None:
        self._move(self.running.pop(job_id), -1)

    def _move(self, assign: Assign, sign: int) -> None:
        for node_id in assign.node_ids:
            held = self.held[node_id]
            for dim, amount in enumerate(assign.granted.as_tuple()):
                held[dim] += sign * amount
            if any(h > c for h, c in zip(held, self.capacity[node_id], strict=True)):
                raise AssertionError(f"node {node_id} over-committed: {held}")


def best_fit_baseline(nodes: list[NodeState], jobs: list[JobSpec]) -> float:
    """Decisions/s of a linear best-fit (least free GPUs, then CPU) over every node."""
    free = {node.node_id: list(node.capacity.as_tuple()) for node in nodes}
    started = time.perf_counter()
    for job in jobs:
        demand = job.demand.as_tuple()
        constraints = job.constraints
        fitting = []
        for node in nodes:
            have = free[node.node_id]
            if (
                constraints.region in (None, node.region)
                and constraints.gpu_type in (None, node.gpu_type)
                and all(node.labels.get(k) == v for k, v in constraints.labels.items())
                and all(h >= w for h, w in zip(have, demand, strict=True))
            ):
                fitting.append((have[2], have[0], node.node_id))
        if len(fitting) >= job.gang_size:
            for _, _, node_id in sorted(fitting)[: job.gang_size]:
                for dim, amount in enumerate(demand):
                    free[node_id][dim] -= amount
    return len(jobs) / (time.perf_counter() - started)


def timed_plan(
    scheduler: Scheduler, now_ms: int, ledger: CapacityLedger
) -> tuple[list[Decision], float]:
    started = time.perf_counter()
    decisions = scheduler.plan(now_ms)
    seconds = time.perf_counter() - started
    ledger.apply(decisions)
    return decisions, seconds


def one_run(node_count: int, seed: int) -> dict[str, dict[str, float]]:
    """Fresh cluster and queue; the three scenarios in order; rates per scenario."""
    config = SimulationConfig(nodes=node_count, seed=seed)
    rng = random.Random(seed)
    nodes = synthetic_cluster(config, rng)
    job_count = min(node_count, JOB_CAP)
    arrivals = 0

    def arrive(count: int) -> None:
        nonlocal arrivals
        for _ in range(count):
            scheduler.submit(synthetic_job(config, rng, f"job-{arrivals:07d}", arrivals)[0])
            arrivals += 1

    scheduler = Scheduler()
    ledger = CapacityLedger(nodes)
    started = time.perf_counter()
    for node in nodes:
        scheduler.upsert_node(node)
    setup = {"index_build_s": time.perf_counter() - started}
    started = time.perf_counter()
    arrive(job_count)
    setup["submit_per_s"] = job_count / (time.perf_counter() - started)

    timings: dict[str, tuple[list[Decision], float]] = {}
    timings["cold"] = timed_plan(scheduler, 0, ledger)
    arrive(job_count)
    timings["saturated"] = timed_plan(scheduler, 60_000, ledger)
    finishing = list(ledger.running)[: len(ledger.running) // 10]
    for job_id in finishing:
        scheduler.remove_job(job_id)
        ledger.release(job_id)
    arrive(len(finishing))
    timings["churn"] = timed_plan(scheduler, 120_000, ledger)

    result: dict[str, dict[str, float]] = {"setup": setup}
    for name, (decisions, seconds) in timings.items():
        result[name] = {
            "decisions": len(decisions),
            "assignments": sum(isinstance(d, Assign) for d in decisions),
            "preemptions": sum(isinstance(d, Preempt) for d in decisions),
            "seconds": seconds,
        }
    return result


def measure(node_count: int, repeats: int, seed: int) -> dict[str, object]:
    runs = [one_run(node_count, seed) for _ in range(repeats)]
    summary: dict[str, object] = {
        "nodes": node_count,
        "pending_jobs": min(node_count, JOB_CAP),
        "repeats": repeats,
        "index_build_s": round(statistics.median(r["setup"]["index_build_s"] for r in runs), 3),
        "submit_per_s": round(statistics.median(r["setup"]["submit_per_s"] for r in runs)),
    }
    for name in SCENARIOS:
        seconds = statistics.median(r[name]["seconds"] for r in runs)
        first = runs[0][name]  # the counts are the same in every run: the input is seeded
        summary[name] = {
            "decisions": int(first["decisions"]),
            "assignments": int(first["assignments"]),
            "preemptions": int(first["preemptions"]),
            "seconds": round(seconds, 4),
            "decisions_per_s": round(first["decisions"] / seconds),
            "assignments_per_s": round(first["assignments"] / seconds),
        }
    rng = random.Random(seed)
    config = SimulationConfig(nodes=node_count, seed=seed)
    nodes = synthetic_cluster(config, rng)
    count = min(500, BASELINE_NODE_CHECKS // node_count)
    jobs = [synthetic_job(config, rng, f"b-{i}", i)[0] for i in range(count)]
    summary["baseline_best_fit_decisions_per_s"] = round(best_fit_baseline(nodes, jobs))
    baseline = summary["baseline_best_fit_decisions_per_s"]
    assert isinstance(baseline, int)
    cold = summary["cold"]
    assert isinstance(cold, dict)
    summary["ratio_to_baseline"] = round(cold["decisions_per_s"] / baseline, 1)
    return summary


def main() -> None:
    sizes = [(1_000, 3), (10_000, 3)]
    if "--quick" not in sys.argv:
        sizes.append((100_000, 1))
    results = [measure(size, repeats, seed=42) for size, repeats in sizes]
    header = f"{'nodes':>8} {'jobs':>7} |" + "".join(
        f" {name + ' dec/s':>15} {'assign/s':>9} |" for name in SCENARIOS
    )
    header += f" {'best-fit dec/s':>15} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for row in results:
        line = f"{row['nodes']:>8,} {row['pending_jobs']:>7,} |"
        for name in SCENARIOS:
            scenario = row[name]
            assert isinstance(scenario, dict)
            line += f" {scenario['decisions_per_s']:>15,} {scenario['assignments_per_s']:>9,} |"
        line += f" {row['baseline_best_fit_decisions_per_s']:>15,} {row['ratio_to_baseline']:>6}"
        print(line)
    at_target = next(row for row in results if row["nodes"] == 10_000)
    met = {}
    for name in SCENARIOS:
        scenario = at_target[name]
        assert isinstance(scenario, dict)
        met[name] = scenario["decisions_per_s"] >= TARGET_DECISIONS_PER_S
    verdicts = ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in met.items())
    print(f"target >= {TARGET_DECISIONS_PER_S:,} decisions/s at 10,000 nodes: {verdicts}")
    print("no node resource over-committed in any run")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "scheduler_core",
        "python": sys.version.split()[0],
        "jobs_per_size": f"jobs = nodes, capped at {JOB_CAP:,} (so 10,000 at 100,000 nodes)",
        "target_decisions_per_s_at_10k_nodes": TARGET_DECISIONS_PER_S,
        "target_met": met,
        "results": results,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
