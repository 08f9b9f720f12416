"""Property tests: random traces through the simulator, and the core's promises hold.

The simulator checks every plan against its own ledger (built from the decisions
alone), so each property is a count of violations that must stay zero. The traces
are small (a few dozen nodes, minutes of virtual time) to keep each test quick.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lepton.scheduling.entities import (
    Assign,
    JobSpec,
    NodeState,
    Policy,
    Resources,
    SchedulerConfig,
    TenantQuota,
)
from lepton.scheduling.placement import Scheduler
from lepton.scheduling.simulator import SimulationConfig, SimulationReport, simulate

seeds = st.integers(min_value=0, max_value=2**32 - 1)
policies = st.sampled_from(list(Policy))


def small_trace(seed: int, **overrides: Any) -> SimulationReport:
    config = replace(
        SimulationConfig(),
        seed=seed,
        nodes=16,
        horizon_ms=600_000,
        arrival_rate_per_s=0.5,
        mean_job_duration_ms=200_000,
        gang_fraction=0.3,
        max_gang_size=3,
        node_mtbf_ms=1_200_000,
        node_repair_ms=120_000,
        plan_interval_ms=2_000,
        **overrides,
    )
    report = simulate(config)
    assert report.jobs_started > 0, "the trace should exercise the core"
    return report


@settings(max_examples=6, deadline=None)
@given(seed=seeds, policy=policies, max_reservations=st.integers(0, 3))
def test_no_node_resource_is_ever_over_committed_and_gangs_are_whole(
    seed: int, policy: Policy, max_reservations: int
) -> None:
    report = small_trace(seed, policy=policy, max_reservations=max_reservations)
    assert report.overcommit_violations == 0
    assert report.partial_gang_violations == 0


@settings(max_examples=6, deadline=None)
@given(seed=seeds, policy=policies, max_reservations=st.integers(0, 3))
def test_a_higher_priority_job_that_fits_never_waits_behind_a_lower_one(
    seed: int, policy: Policy, max_reservations: int
) -> None:
    report = small_trace(
        seed, policy=policy, max_reservations=max_reservations, check_priority_order=True
    )
    assert report.priority_inversions == 0


@settings(max_examples=6, deadline=None)
@given(
    seed=seeds, policy=policies, guaranteed_gpus=st.integers(0, 8), limit_gpus=st.integers(1, 24)
)
def test_quotas_hold(seed: int, policy: Policy, guaranteed_gpus: int, limit_gpus: int) -> None:
    big = 1 << 40
    quota = TenantQuota(
        guaranteed=Resources(64_000, big, min(guaranteed_gpus, limit_gpus), big),
        limit=Resources(256_000, big, limit_gpus, big),
    )
    tenants = ("alpha", "beta", "gamma")
    report = small_trace(seed, policy=policy, tenants=tenants, quotas=dict.fromkeys(tenants, quota))
    assert report.quota_violations == 0
    assert report.overcommit_violations == 0


@settings(max_examples=20, deadline=None)
@given(
    demands=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 8)), min_size=2, max_size=5),
    node_count=st.integers(1, 6),
)
def test_drf_converges_to_fair_shares(demands: list[tuple[int, int]], node_count: int) -> None:
    """Progressive filling: a tenant ends below another's share minus one of its jobs only
    if its own next job no longer fits anywhere.

    Every tenant queues more than the cluster holds. When tenant j got its last job it had
    the smallest dominant share among tenants whose jobs still fitted, and capacity only
    shrinks within a plan, so a tenant further behind must have been (and still be) blocked.
    """
    capacity = Resources(16_000, 32_768, 0, 0)
    core = Scheduler(SchedulerConfig(policy=Policy.DRF, max_reservations=0))
    free = {}
    for index in range(node_count):
        core.upsert_node(NodeState(f"n{index}", "eu", capacity))
        free[f"n{index}"] = list(capacity.as_tuple())
    total = capacity.times(node_count)
    demand_of: dict[str, Resources] = {}
    per_job: dict[str, float] = {}
    for tenant_index, (cpu_units, memory_units) in enumerate(demands):
        tenant = f"t{tenant_index}"
        demand_of[tenant] = Resources(cpu_units * 500, memory_units * 1_024, 0, 0)
        per_job[tenant] = max(
            cpu_units * 500 / total.cpu_millicores, memory_units * 1_024 / total.memory_mib
        )
        for index in range(int(1 / per_job[tenant]) + 2):  # more than the cluster holds
            core.submit(JobSpec(f"{tenant}-{index}", tenant, demand_of[tenant]))
    shares = dict.fromkeys(per_job, 0.0)
    for decision in core.plan(1_000):
        if isinstance(decision, Assign):
            tenant = decision.job_id.split("-")[0]
            shares[tenant] += per_job[tenant]
            for dim, amount in enumerate(decision.granted.as_tuple()):
                free[decision.node_ids[0]][dim] -= amount

    def still_fits(tenant: str) -> bool:
        wanted = demand_of[tenant].as_tuple()
        return any(all(h >= w for h, w in zip(f, wanted, strict=True)) for f in free.values())

    for behind in shares:
        for ahead in shares:
            if shares[behind] < shares[ahead] - per_job[ahead] - 1e-9:
                assert not still_fits(behind), shares


def test_the_simulation_is_deterministic() -> None:
    first, second = small_trace(7), small_trace(7)
    wall_clock = {"plan_seconds", "decisions_per_second"}
    assert {k: v for k, v in asdict(first).items() if k not in wall_clock} == {
        k: v for k, v in asdict(second).items() if k not in wall_clock
    }


def test_the_report_adds_up() -> None:
    report = small_trace(11)
    running_at_end = (
        report.jobs_submitted
        - report.jobs_unschedulable
        - report.jobs_failed
        - report.jobs_completed
        - report.jobs_still_queued
    )
    assert running_at_end >= 0
    assert report.jobs_still_queued >= 0
    assert report.jobs_started >= report.jobs_completed
    assert 0.0 < report.utilisation["cpu"] <= 1.0
    assert 0.0 < report.fairness_jain <= 1.0
    assert set(report.wait_ms) == {"batch", "standard", "critical"}
    assert report.decisions_per_second > 0
