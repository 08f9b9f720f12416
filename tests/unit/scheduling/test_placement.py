"""Unit tests of the scheduler's decision core, one behaviour at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from lepton.scheduling.entities import (
    Assign,
    Constraints,
    Decision,
    Failed,
    JobSpec,
    NodeState,
    Policy,
    Preempt,
    Requeued,
    Resources,
    SchedulerConfig,
    TenantQuota,
    Unschedulable,
    Wait,
    WaitReason,
)
from lepton.scheduling.placement import Scheduler, feasibility


def node(
    node_id: str,
    cpu: int = 8_000,
    memory: int = 32_768,
    gpus: int = 0,
    *,
    gpu_type: str | None = None,
    region: str = "eu",
    labels: dict[str, str] | None = None,
    accepts_new_work: bool = True,
) -> NodeState:
    return NodeState(
        node_id,
        region,
        Resources(cpu, memory, gpus, 10_000),
        labels=labels or {},
        gpu_type=gpu_type,
        accepts_new_work=accepts_new_work,
    )


def job(
    job_id: str,
    cpu: int = 1_000,
    memory: int = 1_024,
    gpus: int = 0,
    *,
    tenant: str = "t1",
    priority: int = 0,
    preemptible: bool = False,
    gang_size: int = 1,
    constraints: Constraints | None = None,
    submitted_at_ms: int = 0,
    estimated_duration_ms: int | None = None,
    policy: Policy | None = None,
    max_retries: int = 3,
) -> JobSpec:
    return JobSpec(
        job_id=job_id,
        tenant=tenant,
        demand=Resources(cpu, memory, gpus, 0),
        priority=priority,
        preemptible=preemptible,
        gang_size=gang_size,
        constraints=constraints or Constraints(),
        submitted_at_ms=submitted_at_ms,
        estimated_duration_ms=estimated_duration_ms,
        policy=policy,
        max_retries=max_retries,
    )


def scheduler(nodes: list[NodeState], jobs: Sequence[JobSpec] = (), **config: Any) -> Scheduler:
    core = Scheduler(SchedulerConfig(**config))
    for state in nodes:
        core.upsert_node(state)
    for spec in jobs:
        assert core.submit(spec) is None
    return core


def by_job(decisions: list[Decision]) -> dict[str, Decision]:
    return {
        (d.for_job_id + "/preempt" if isinstance(d, Preempt) else d.job_id): d for d in decisions
    }


def assigned_nodes(decisions: list[Decision], job_id: str) -> tuple[str, ...]:
    decision = by_job(decisions)[job_id]
    assert isinstance(decision, Assign), decision
    return decision.node_ids


# ------------------------------------------------------------------ node choice


def test_binpack_takes_the_most_allocated_node_that_fits() -> None:
    core = scheduler([node("a"), node("b")], [job("filler", cpu=6_000)])
    first = assigned_nodes(core.plan(0), "filler")
    core.submit(job("next", cpu=1_000))
    assert assigned_nodes(core.plan(1), "next") == first


def test_binpack_skips_a_fuller_node_that_does_not_fit() -> None:
    core = scheduler([node("a"), node("b")], [job("filler", cpu=6_000)])
    first = assigned_nodes(core.plan(0), "filler")
    core.submit(job("big", cpu=4_000))
    assert assigned_nodes(core.plan(1), "big") != first


def test_spread_takes_the_least_allocated_node() -> None:
    core = scheduler([node("a"), node("b")], [job("filler", cpu=2_000)], policy=Policy.SPREAD)
    first = assigned_nodes(core.plan(0), "filler")
    core.submit(job("next", cpu=1_000))
    assert assigned_nodes(core.plan(1), "next") != first


def test_a_job_may_override_the_configured_policy() -> None:
    core = scheduler([node("a"), node("b")], [job("filler", cpu=2_000)], policy=Policy.SPREAD)
    first = assigned_nodes(core.plan(0), "filler")
    core.submit(job("packed", cpu=1_000, policy=Policy.BINPACK))
    assert assigned_nodes(core.plan(1), "packed") == first


def test_memory_and_cpu_are_both_checked() -> None:
    core = scheduler([node("small-mem", memory=1_024), node("big-mem", memory=65_536)])
    core.submit(job("mem-heavy", memory=16_384))
    assert assigned_nodes(core.plan(0), "mem-heavy") == ("big-mem",)


def test_region_label_and_gpu_type_constraints_hold() -> None:
    nodes = [
        node("eu-a100", 64_000, 262_144, 8, gpu_type="a100", region="eu"),
        node("us-a100", 64_000, 262_144, 8, gpu_type="a100", region="us"),
        node("us-h100", 64_000, 262_144, 8, gpu_type="h100", region="us", labels={"ib": "yes"}),
    ]
    core = scheduler(
        nodes,
        [
            job("in-eu", gpus=1, constraints=Constraints(region="eu")),
            job("wants-h100", gpus=1, constraints=Constraints(gpu_type="h100")),
            job("wants-ib", gpus=1, constraints=Constraints(labels={"ib": "yes"})),
            job("us-a100", gpus=1, constraints=Constraints(region="us", gpu_type="a100")),
        ],
    )
    decisions = core.plan(0)
    assert assigned_nodes(decisions, "in-eu") == ("eu-a100",)
    assert assigned_nodes(decisions, "wants-h100") == ("us-h100",)
    assert assigned_nodes(decisions, "wants-ib") == ("us-h100",)
    assert assigned_nodes(decisions, "us-a100") == ("us-a100",)


def test_cpu_jobs_keep_off_gpu_nodes_while_cpu_nodes_have_room() -> None:
    nodes = [node("gpu", 64_000, 262_144, 8, gpu_type="a100"), node("cpu", 4_000)]
    core = scheduler(nodes, [job("cpu-1", cpu=2_000), job("cpu-2", cpu=2_000), job("cpu-3")])
    decisions = core.plan(0)
    assert assigned_nodes(decisions, "cpu-1") == ("cpu",)
    assert assigned_nodes(decisions, "cpu-2") == ("cpu",)
    assert assigned_nodes(decisions, "cpu-3") == ("gpu",)  # CPU nodes full: fall back


def test_a_node_flagged_for_no_new_work_gets_none() -> None:
    core = scheduler([node("hot", accepts_new_work=False), node("cool", cpu=2_000)])
    core.submit(job("j", cpu=1_000))
    assert assigned_nodes(core.plan(0), "j") == ("cool",)
    core.submit(job("k", cpu=4_000))
    assert by_job(core.plan(1))["k"] == Wait("k", WaitReason.NO_ACCEPTING_NODE)


def test_a_flagged_node_takes_work_again_when_it_recovers() -> None:
    core = scheduler([node("a", accepts_new_work=False)], [job("j")])
    assert isinstance(by_job(core.plan(0))["j"], Wait)
    core.upsert_node(node("a"))
    assert assigned_nodes(core.plan(1), "j") == ("a",)


# ------------------------------------------------------------------------ gangs


def test_a_gang_takes_distinct_nodes_all_at_once() -> None:
    core = scheduler([node(f"n{i}") for i in range(4)], [job("gang", cpu=6_000, gang_size=3)])
    nodes = assigned_nodes(core.plan(0), "gang")
    assert len(set(nodes)) == 3


def test_a_gang_that_cannot_be_whole_takes_nothing() -> None:
    core = scheduler([node("a"), node("b")], [job("filler", cpu=6_000)], max_reservations=0)
    core.plan(0)
    core.submit(job("gang", cpu=6_000, gang_size=2))
    core.submit(job("small", cpu=1_000))
    decisions = core.plan(1)
    assert isinstance(by_job(decisions)["gang"], Wait)
    assert isinstance(by_job(decisions)["small"], Assign)  # no half-gang holds room


# ------------------------------------------------------------------- ordering


def test_higher_priority_goes_first_and_fifo_within_a_priority() -> None:
    jobs = [
        job("low", cpu=8_000, priority=1, submitted_at_ms=0),
        job("high-late", cpu=8_000, priority=9, submitted_at_ms=20),
        job("high-early", cpu=8_000, priority=9, submitted_at_ms=10),
    ]
    core = scheduler([node("only")], jobs, max_reservations=0)
    decisions = core.plan(100)
    assert [d.job_id for d in decisions if isinstance(d, Assign)] == ["high-early"]
    assert list(by_job(decisions)) == ["high-early", "high-late", "low"]


def test_a_small_lower_priority_job_runs_when_the_higher_one_cannot_fit() -> None:
    core = scheduler([node("a", cpu=4_000)], [job("huge", cpu=4_000, priority=5)])
    core.plan(0)
    core.submit(job("blocked", cpu=2_000, priority=5))
    core.submit(job("small-low", cpu=500, priority=1))
    core.upsert_node(node("b", cpu=1_000))
    decisions = core.plan(1)
    assert isinstance(by_job(decisions)["blocked"], Wait)
    assert assigned_nodes(decisions, "small-low") == ("b",)


# ------------------------------------------------------------------ preemption


def test_preemption_evicts_the_lowest_priority_preemptible_job() -> None:
    nodes = [node("a", cpu=4_000), node("b", cpu=4_000)]
    running = [
        job("p1", cpu=4_000, priority=1, preemptible=True),
        job("p5", cpu=4_000, priority=5, preemptible=True),
    ]
    core = scheduler(nodes, running)
    placed = core.plan(0)
    core.submit(job("urgent", cpu=4_000, priority=10))
    decisions = core.plan(1)
    assert by_job(decisions)["urgent/preempt"] == Preempt("urgent", ("p1",))
    assert assigned_nodes(decisions, "urgent") == assigned_nodes(placed, "p1")
    # The victim is queued again (not decided in this plan) and comes back when there is room.
    assert "p1" not in by_job(decisions)
    core.remove_job("urgent")
    assert isinstance(by_job(core.plan(2))["p1"], Assign)


def test_preemption_prefers_fewer_victims_at_equal_priority() -> None:
    nodes = [node("two-small", cpu=4_000), node("one-big", cpu=4_000)]
    core = scheduler(nodes)
    core.restore_assignment(job("s1", cpu=2_000, preemptible=True), ["two-small"], 0)
    core.restore_assignment(job("s2", cpu=2_000, preemptible=True), ["two-small"], 0)
    core.restore_assignment(job("big", cpu=4_000, preemptible=True), ["one-big"], 0)
    core.submit(job("urgent", cpu=4_000, priority=10))
    assert by_job(core.plan(1))["urgent/preempt"] == Preempt("urgent", ("big",))


def test_preemption_prefers_lower_priority_victims_over_fewer() -> None:
    nodes = [node("two-low", cpu=4_000), node("one-mid", cpu=4_000)]
    core = scheduler(nodes)
    core.restore_assignment(job("low1", cpu=2_000, priority=1, preemptible=True), ["two-low"], 0)
    core.restore_assignment(job("low2", cpu=2_000, priority=1, preemptible=True), ["two-low"], 0)
    core.restore_assignment(job("mid", cpu=4_000, priority=5, preemptible=True), ["one-mid"], 0)
    core.submit(job("urgent", cpu=4_000, priority=10))
    victims = by_job(core.plan(1))["urgent/preempt"]
    assert isinstance(victims, Preempt)
    assert set(victims.victim_job_ids) == {"low1", "low2"}


def test_preemption_never_touches_non_preemptible_or_equal_priority_work() -> None:
    core = scheduler([node("a", cpu=4_000), node("b", cpu=4_000)])
    core.restore_assignment(job("pinned", cpu=4_000, priority=1), ["a"], 0)
    core.restore_assignment(job("peer", cpu=4_000, priority=10, preemptible=True), ["b"], 0)
    core.submit(job("urgent", cpu=4_000, priority=10))
    decisions = core.plan(1)
    assert not any(isinstance(d, Preempt) for d in decisions)
    assert isinstance(by_job(decisions)["urgent"], Wait)


def test_a_victim_gang_is_evicted_whole() -> None:
    nodes = [node("a", cpu=4_000), node("b", cpu=4_000), node("c", cpu=4_000)]
    core = scheduler(nodes, max_reservations=0)
    core.restore_assignment(job("gang", cpu=4_000, gang_size=2, preemptible=True), ["a", "b"], 0)
    core.restore_assignment(job("solo", cpu=4_000, priority=5), ["c"], 0)
    core.submit(job("urgent", cpu=4_000, priority=10))
    decisions = core.plan(1)
    assert by_job(decisions)["urgent/preempt"] == Preempt("urgent", ("gang",))
    # The other half of the gang is free now but stays out of this plan.
    core.submit(job("later", cpu=4_000))
    assert isinstance(by_job(core.plan(2))["later"], Assign)


# ---------------------------------------------------------------------- quotas


def quota(guaranteed_cpu: int, limit_cpu: int) -> TenantQuota:
    big = 1 << 40
    return TenantQuota(
        Resources(guaranteed_cpu, big, big, big), Resources(limit_cpu, big, big, big)
    )


def test_a_tenant_never_exceeds_its_limit() -> None:
    core = scheduler(
        [node("a", cpu=16_000)],
        [job("one", cpu=4_000), job("two", cpu=4_000)],
        quotas={"t1": quota(2_000, 6_000)},
    )
    decisions = by_job(core.plan(0))
    assert isinstance(decisions["one"], Assign)
    assert decisions["two"] == Wait("two", WaitReason.QUOTA_LIMIT)


def test_idle_capacity_is_borrowed_and_reclaimed_when_its_owner_needs_it() -> None:
    quotas = {"lender": quota(8_000, 16_000), "borrower": quota(0, 16_000)}
    core = scheduler([node("a", cpu=8_000)], quotas=quotas)
    # The lender is idle: the borrower may use the whole node, beyond its zero guarantee.
    core.submit(job("borrowed", cpu=8_000, tenant="borrower", priority=50))
    assert isinstance(by_job(core.plan(0))["borrowed"], Assign)
    # The lender wants its guarantee back: borrowed work goes, whatever its priority.
    core.submit(job("owner", cpu=8_000, tenant="lender", priority=0))
    decisions = by_job(core.plan(1))
    assert decisions["owner/preempt"] == Preempt("owner", ("borrowed",))
    assert isinstance(decisions["owner"], Assign)


def test_no_reclaim_beyond_the_guarantee() -> None:
    quotas = {"lender": quota(4_000, 16_000), "borrower": quota(0, 16_000)}
    core = scheduler([node("a", cpu=8_000)], quotas=quotas)
    core.submit(job("borrowed", cpu=8_000, tenant="borrower", priority=50))
    core.plan(0)
    core.submit(job("too-much", cpu=8_000, tenant="lender", priority=0))
    assert isinstance(by_job(core.plan(1))["too-much"], Wait)


# ---------------------------------------------------------------------- backfill


def backfill_cluster() -> Scheduler:
    """Two nodes; 'wide' needs both and is blocked by 'running', which ends at 1,000."""
    core = scheduler([node("a", cpu=4_000), node("b", cpu=4_000)])
    core.restore_assignment(job("running", cpu=2_000, estimated_duration_ms=1_000), ["a"], 0)
    core.submit(job("wide", cpu=4_000, gang_size=2, priority=5))
    return core


def test_a_blocked_job_reserves_nodes_and_waits() -> None:
    decisions = backfill_cluster().plan(0)
    # The free node first: it is ready now, 'a' only at 1,000.
    assert decisions == [Wait("wide", WaitReason.NO_CAPACITY, reserved_node_ids=("b", "a"))]


def test_backfill_never_delays_the_reserved_start() -> None:
    core = backfill_cluster()
    core.submit(job("no-estimate", cpu=1_000))
    core.submit(job("too-long", cpu=1_000, estimated_duration_ms=5_000))
    core.submit(job("short", cpu=1_000, estimated_duration_ms=500))
    decisions = by_job(core.plan(0))
    assert decisions["no-estimate"] == Wait("no-estimate", WaitReason.NO_CAPACITY)
    assert decisions["too-long"] == Wait("too-long", WaitReason.NO_CAPACITY)
    assert isinstance(decisions["short"], Assign)
    # Once 'running' and 'short' end, the wide job starts as planned.
    core.remove_job("running")
    core.remove_job("short")
    assert assigned_nodes(core.plan(1_000), "wide") in {("a", "b"), ("b", "a")}


def test_jobs_outside_the_reserved_nodes_run_freely() -> None:
    core = backfill_cluster()
    core.upsert_node(node("c", cpu=2_000))
    core.submit(job("elsewhere", cpu=2_000))
    assert assigned_nodes(core.plan(0), "elsewhere") == ("c",)


def test_a_reservation_is_kept_across_plans() -> None:
    core = backfill_cluster()
    first = by_job(core.plan(0))["wide"]
    # A node that would free up sooner appears: the held nodes keep draining instead.
    core.upsert_node(node("c", cpu=4_000))
    core.restore_assignment(job("brief", cpu=2_000, estimated_duration_ms=500), ["c"], 0)
    assert by_job(core.plan(1))["wide"] == first


# ------------------------------------------------------------------ feasibility


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        (job("r", constraints=Constraints(region="mars")), "no node has region='mars'"),
        (
            job("g", gpus=1, constraints=Constraints(gpu_type="tpu")),
            "no node has gpu_type='tpu'",
        ),
        (
            job("l", constraints=Constraints(labels={"disk": "nvme"})),
            "no node has label disk='nvme'",
        ),
        (job("c", cpu=64_000), "demand exceeds every node in the cluster: cpu_millicores 64000"),
        (job("gpu", gpus=4), "demand exceeds every node in the cluster: gpus 4 > 0"),
        (job("gang", cpu=8_000, gang_size=3), "gang of 3 needs 3 distinct nodes; only 2"),
        (job("zero", cpu=0, memory=0), "demand asks for no resources at all"),
        (job("neg", cpu=-1), "demand must not be negative"),
        (job("nogang", gang_size=0), "gang_size must be at least 1"),
    ],
)
def test_feasibility_names_the_reason(spec: JobSpec, reason: str) -> None:
    nodes = [node("a"), node("b", region="us")]
    answer = feasibility(spec, nodes)
    assert answer is not None
    assert answer.startswith(reason), answer


def test_feasibility_ignores_load_and_flags() -> None:
    busy = NodeState(
        "a", "eu", Resources(8_000, 8_192, 0, 0), usage=Resources(8_000), accepts_new_work=False
    )
    assert feasibility(job("j", cpu=8_000, memory=8_192), [busy]) is None


def test_submit_rejects_what_no_node_could_ever_hold() -> None:
    core = scheduler([node("a")])
    assert core.submit(job("huge", cpu=1_000_000)) == Unschedulable(
        "huge", "demand exceeds every node in the cluster: cpu_millicores 1000000 > 8000"
    )
    assert core.plan(0) == []


def test_submitting_twice_changes_nothing() -> None:
    core = scheduler([node("a")], [job("j")])
    assert core.submit(job("j")) is None
    assert len(core.plan(0)) == 1


# ------------------------------------------------------------------- node loss


def test_a_lost_node_requeues_its_jobs_then_fails_them_past_max_retries() -> None:
    core = scheduler([node("a"), node("b")], [job("j", max_retries=1)])
    first = assigned_nodes(core.plan(0), "j")[0]
    assert core.remove_node(first) == [Requeued("j", 1)]
    second = assigned_nodes(core.plan(1), "j")[0]
    assert second != first
    outcome = core.remove_node(second)
    assert len(outcome) == 1
    assert isinstance(outcome[0], Failed)
    assert "max_retries=1" in outcome[0].reason
    assert core.plan(2) == []


def test_losing_one_node_of_a_gang_releases_all_of_it() -> None:
    core = scheduler([node(n, cpu=4_000) for n in "abc"])
    core.restore_assignment(job("gang", cpu=4_000, gang_size=2), ["a", "b"], 0)
    assert core.remove_node("a") == [Requeued("gang", 1)]
    core.submit(job("fits-on-b", cpu=4_000))
    decisions = by_job(core.plan(1))
    assert isinstance(decisions["gang"], Assign) or isinstance(decisions["fits-on-b"], Assign)
    placed = [n for d in decisions.values() if isinstance(d, Assign) for n in d.node_ids]
    assert sorted(placed) == ["b", "c"]


def test_remove_job_frees_what_it_held() -> None:
    core = scheduler([node("a", cpu=4_000)], [job("first", cpu=4_000)])
    core.plan(0)
    core.submit(job("second", cpu=4_000))
    assert isinstance(by_job(core.plan(1))["second"], Wait)
    core.remove_job("first")
    assert isinstance(by_job(core.plan(2))["second"], Assign)


def test_a_shrunken_node_takes_no_new_work_until_released() -> None:
    core = scheduler([node("a", cpu=8_000)])
    core.restore_assignment(job("big", cpu=6_000), ["a"], 0)
    core.upsert_node(node("a", cpu=4_000))  # e.g. cores taken offline
    core.submit(job("small", cpu=500))
    assert isinstance(by_job(core.plan(1))["small"], Wait)
    core.remove_job("big")
    assert isinstance(by_job(core.plan(2))["small"], Assign)


# -------------------------------------------------------------------------- DRF


def test_drf_reproduces_the_papers_example() -> None:
    # Ghodsi et al. 2011: 9 CPUs, 18 GB; A needs <1 CPU, 4 GB>, B <3 CPUs, 1 GB> per task.
    core = scheduler([node("n", cpu=9_000, memory=18_432)], policy=Policy.DRF)
    for i in range(10):
        core.submit(job(f"a{i}", cpu=1_000, memory=4_096, tenant="A", submitted_at_ms=i))
        core.submit(job(f"b{i}", cpu=3_000, memory=1_024, tenant="B", submitted_at_ms=i))
    started = [d.job_id[0] for d in core.plan(100) if isinstance(d, Assign)]
    assert sorted(started) == ["a", "a", "a", "b", "b"]


def test_drf_lets_the_tenant_with_the_smaller_share_go_first() -> None:
    core = scheduler([node("n", cpu=4_000)], policy=Policy.DRF, max_reservations=0)
    core.restore_assignment(job("rich-running", cpu=2_000, tenant="rich"), ["n"], 0)
    core.submit(job("rich-next", cpu=2_000, tenant="rich", submitted_at_ms=1))
    core.submit(job("poor-next", cpu=2_000, tenant="poor", submitted_at_ms=2))
    decisions = by_job(core.plan(10))
    assert isinstance(decisions["poor-next"], Assign)
    assert isinstance(decisions["rich-next"], Wait)
