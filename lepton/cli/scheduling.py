"""``lepton simulate`` and ``plan``: the scheduler's core, on a synthetic cluster or on
the real one (without changing it)."""

from __future__ import annotations

import json
import math
from pathlib import Path  # noqa: TC003  # Typer reads the annotations at run time
from typing import Annotated

import typer
from rich.table import Table

from lepton.cli._app import app, console, fail, with_client
from lepton.cli.jobs import build_job, read_yaml


def _finite(value: float) -> float:
    # Typer's bounds let nan through (every comparison with it is false), and inf past a min.
    if not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number, got {value}")
    return value


@app.command("simulate")
def simulate(
    nodes: Annotated[int, typer.Option(min=1, help="Nodes in the synthetic cluster.")] = 200,
    hours: Annotated[
        float, typer.Option(min=0.01, max=24 * 365, callback=_finite, help="Simulated time.")
    ] = 1.0,
    arrival_rate: Annotated[
        float, typer.Option(min=0.001, max=1e6, callback=_finite, help="Jobs per second.")
    ] = 1.0,
    policy: Annotated[str, typer.Option(help="binpack, spread or drf.")] = "binpack",
    seed: Annotated[int, typer.Option(help="Seed of the synthetic trace.")] = 0,
    failures: Annotated[bool, typer.Option(help="Let nodes fail and recover.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Drive the scheduler's core with a synthetic cluster and trace; report how it did."""
    import dataclasses

    from lepton.scheduling.entities import Policy
    from lepton.scheduling.simulator import SimulationConfig
    from lepton.scheduling.simulator import simulate as run_simulation

    try:
        chosen = Policy(policy)
    except ValueError:
        fail(f"unknown policy {policy!r}", "one of: binpack, spread, drf")
    config = SimulationConfig(
        seed=seed,
        nodes=nodes,
        policy=chosen,
        horizon_ms=int(hours * 3_600_000),
        arrival_rate_per_s=arrival_rate,
    )
    if not failures:
        config = dataclasses.replace(config, node_mtbf_ms=None)
    report = run_simulation(config)
    if as_json:
        print(json.dumps(dataclasses.asdict(report)))
        return
    table = Table("measure", "value", title=f"{nodes} nodes, {hours} h, {policy}")
    for name in (
        "jobs_submitted",
        "jobs_completed",
        "jobs_still_queued",
        "jobs_unschedulable",
        "preemptions",
        "requeues",
        "node_failures",
    ):
        table.add_row(name.replace("_", " "), f"{getattr(report, name):,}")
    for resource, share in report.utilisation.items():
        table.add_row(f"utilisation {resource}", f"{share:.1%}")
    for priority, waits in report.wait_ms.items():
        table.add_row(
            f"wait {priority} p50 / p99",
            f"{waits['p50'] / 1000:.1f} s / {waits['p99'] / 1000:.1f} s",
        )
    table.add_row("fairness (Jain, dominant shares)", f"{report.fairness_jain:.3f}")
    table.add_row("decisions per second", f"{report.decisions_per_second:,.0f}")
    violations = (
        report.overcommit_violations
        + report.partial_gang_violations
        + report.quota_violations
        + report.priority_inversions
    )
    table.add_row("violations", str(violations))
    console.print(table)


@app.command("plan")
def plan(
    spec_file: Annotated[Path, typer.Argument(help="A job request as YAML or JSON.")],
) -> None:
    """Where the job would go now, or why it cannot; changes nothing."""
    job = build_job(read_yaml(spec_file))
    placement = with_client(lambda client: client.plan(job))
    if placement.when == "never":
        console.print(f"[red]never[/red]: {placement.reason}")
        raise typer.Exit(1)
    if placement.preempts:
        console.print(f"would preempt: {', '.join(placement.preempts)}")
    if placement.when == "now":
        console.print(f"[green]now[/green]: {', '.join(placement.node_ids)}")
    elif placement.reason is not None:
        console.print(f"[yellow]waits[/yellow]: {placement.reason}")
        raise typer.Exit(2)
