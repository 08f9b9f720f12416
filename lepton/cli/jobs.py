"""``lepton submit``, ``jobs`` and ``nodes``: work on the cluster, and the cluster."""

from __future__ import annotations

import contextlib
from pathlib import Path  # noqa: TC003  # Typer reads the annotations at run time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Column, Table

from lepton.cli._app import (
    app,
    console,
    fail,
    with_client,
)
from lepton.sdk.builders import InvalidRequest, JobRequest, describe, millicores

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lepton.sdk.client import LeptonClient
    from lepton.sdk.results import JobEvent


_JOB_HINT = (
    "examples/job.yaml shows every field (schemas/job_requested.avsc defines them); "
    "`lepton plan FILE` checks a job file"
)


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", "give a job request as YAML or JSON")
    except yaml.YAMLError as exc:
        # One line, where and what, instead of PyYAML's multi-line report.
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        fail(f"{path} is not valid YAML: {where}: {problem}", _JOB_HINT)
    if not isinstance(loaded, dict):
        fail(f"{path} is not a mapping of job fields", _JOB_HINT)
    return loaded


def build_job(given: dict[str, Any]) -> JobRequest:
    """The job the user described (a file's fields, flags on top), checked as the
    scheduler checks it."""
    try:
        job = JobRequest.model_validate(given)
        job.check()
    except ValidationError as exc:
        fail(f"invalid job: {describe(exc)}", _JOB_HINT)
    except InvalidRequest as exc:
        fail(f"invalid job: {exc}", _JOB_HINT)
    return job


def _given(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


@app.command("submit")
def submit(
    job_file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="A job request as YAML or JSON; flags override it."),
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Who the job belongs to.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name to train on.")] = None,
    target: Annotated[str | None, typer.Option(help="Target column.")] = None,
    algorithm: Annotated[str | None, typer.Option(help="Algorithm family [default: auto].")] = None,
    trials: Annotated[int | None, typer.Option(help="Search trials [default: 20].")] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name [default: dataset].")] = None,
    priority_class: Annotated[
        str | None, typer.Option(help="Priority class name [default: normal].")
    ] = None,
    priority: Annotated[
        int | None, typer.Option(help="Priority number; higher runs first [default: 100].")
    ] = None,
    cpus: Annotated[
        float | None, typer.Option(min=0.001, help="Cores per worker [default: 1].")
    ] = None,
    memory: Annotated[
        int | None, typer.Option(min=1, help="MiB per worker [default: 1024].")
    ] = None,
    gpus: Annotated[int | None, typer.Option(min=0, help="GPUs per worker [default: 0].")] = None,
    job_id: Annotated[str | None, typer.Option(help="Default: a new random id.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job's outcome.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds --wait waits.")] = 3600.0,
) -> None:
    """Submit a job, from flags or a YAML file (waits for the broker's acknowledgement)."""
    given = read_yaml(job_file) if job_file is not None else {}
    given |= _given(
        job_id=job_id,
        tenant=tenant,
        priority_class=priority_class,
        priority=priority,
        dataset=dataset,
    )
    given["task"] = dict(given.get("task") or {}) | _given(
        target_column=target, algorithm=algorithm, trial_budget=trials, model_name=model_name
    )
    if cpus is not None or memory is not None or gpus is not None:
        given["demand"] = dict(given.get("demand") or {"cpu_millicores": 1000, "memory_mib": 1024})
        try:
            cpu = millicores(cpus) if cpus is not None else None
        except InvalidRequest as exc:
            fail(f"invalid job: {exc}", "give the cores per worker as a number, e.g. 0.5")
        given["demand"] |= _given(
            cpu_millicores=cpu,
            memory_mib=memory,
            gpus=gpus,
        )
    if "tenant" not in given:
        fail("the job has no tenant", "say --tenant T, or give `tenant:` in the job file")
    job = build_job(given)

    async def send(client: LeptonClient) -> None:
        await client.submit(job)
        console.print(f"submitted {job.job_id}")
        if wait:
            outcome = await client.wait(job.job_id, timeout_s=timeout)
            _print_outcome(outcome.state, outcome.event, outcome.model)

    with_client(send)


def _print_outcome(state: str, event: JobEvent, model: dict[str, Any] | None) -> None:
    if model is not None:
        console.print(
            f"{event.job_id}: {state}, model {model['model_id']} ({model['algorithm']}, "
            f"{model['scoring']} {model['cv_score']:.4g})"
        )
    else:
        console.print(f"{event.job_id}: {state}" + (f": {event.reason}" if event.reason else ""))
    if state != "succeeded":
        raise typer.Exit(1)


# What a job event makes of a job's state in the watch view (as the monitor folds it).
_STATE_AFTER = {
    "queued": "queued",
    "requeued": "queued",
    "assigned": "assigned",
    "started": "running",
    "progress": "running",
    "preempted": "preempted",
    "lost": "lost",
    "succeeded": "succeeded",
    "failed": "failed",
    "rejected": "rejected",
    "cancelled": "cancelled",
}
_FINISHED = frozenset({"succeeded", "failed", "rejected", "cancelled"})
_STATE_STYLE = {"succeeded": "green", "failed": "red", "rejected": "red", "running": "cyan"}


def _fold_job(jobs: dict[str, dict[str, Any]], event: JobEvent) -> None:
    job = jobs.setdefault(
        event.job_id,
        {"job_id": event.job_id, "tenant": event.tenant, "state": "requested", "node_ids": []},
    )
    if job["state"] in _FINISHED:
        return
    job["state"] = _STATE_AFTER.get(event.kind, job["state"])
    if event.kind == "progress":
        job["progress_percent"] = event.progress_percent
        job["stage"] = event.stage or job.get("stage")
    if event.node_id and event.node_id not in job["node_ids"]:
        job["node_ids"].append(event.node_id)
    job["reason"] = event.reason or job.get("reason")
    job["model_id"] = event.model_id or job.get("model_id")


def _jobs_table(jobs: Sequence[dict[str, Any]]) -> Table:
    # Ids are what a user copies into the next command: folded, never cut short.
    table = Table(
        Column("job", overflow="fold"),
        "tenant",
        "state",
        "progress",
        Column("%", justify="right"),
        "stage",
        "nodes",
        Column("detail", overflow="fold"),
    )
    for job in jobs:
        state = job["state"]
        percent = job.get("progress_percent")
        running = state == "running"
        table.add_row(
            job["job_id"],
            job["tenant"],
            f"[{_STATE_STYLE.get(state, 'yellow')}]{state}[/]",
            ProgressBar(total=100, completed=percent or 0, width=24) if running else "",
            f"{percent:.0f}%" if running and percent is not None else "",
            (job.get("stage") or "") if running else "",
            ", ".join(job.get("node_ids") or []),
            job.get("model_id") or job.get("reason") or "",
        )
    return table


@app.command("jobs")
def jobs(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's jobs.")] = None,
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Jobs shown at most.")] = 50,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep the table live, a progress bar per running job.")
    ] = False,
    until_done: Annotated[
        bool, typer.Option("--until-done", help="With --watch: stop when every job shown ended.")
    ] = False,
) -> None:
    """Jobs, most recently changed first (from the monitor)."""
    if until_done and not watch:
        fail("--until-done only applies to --watch", "say `lepton jobs --watch --until-done`")

    async def show(client: LeptonClient) -> None:
        if not watch:
            console.print(_jobs_table(await client.jobs(state=state, tenant=tenant, limit=limit)))
            return
        async with client.follow_jobs() as events:
            # The snapshot is read after the positions are taken: no event falls between.
            shown = {
                job["job_id"]: job
                for job in await client.jobs(state=state, tenant=tenant, limit=limit)
            }

            def done() -> bool:
                return until_done and all(job["state"] in _FINISHED for job in shown.values())

            with Live(_jobs_table(list(shown.values())), console=console) as live:
                if done():
                    return
                async for event in events:
                    if tenant is not None and event.tenant != tenant:
                        continue
                    _fold_job(shown, event)
                    live.update(_jobs_table(list(shown.values())))
                    if done():
                        return

    with contextlib.suppress(KeyboardInterrupt):
        with_client(show)


@app.command("nodes")
def nodes(
    state: Annotated[str, typer.Option(help="alive, dead or all.")] = "all",
) -> None:
    """Compute nodes as their heartbeats tell: capacity, usage, running jobs (from the monitor)."""
    if state not in ("alive", "dead", "all"):
        fail(f"unknown node state {state!r}", "one of: alive, dead, all")
    found = with_client(lambda client: client.nodes(state=state))
    table = Table("node", "region", "alive", "cpu", "memory MiB", "gpus", "jobs", "heartbeat")
    for node in found:
        capacity, usage = node["capacity"], node["usage"]
        table.add_row(
            node["node_id"],
            node["region"],
            "[green]yes[/green]" if node["alive"] else "[red]no[/red]",
            f"{usage['cpu_millicores'] / 1000:.1f} / {capacity['cpu_millicores'] / 1000:.1f}",
            f"{usage['memory_mib']:,} / {capacity['memory_mib']:,}",
            f"{usage['gpus']} / {capacity['gpus']}",
            ", ".join(node["running_job_ids"]) or "-",
            f"{node['last_heartbeat_age_ms'] / 1000:.1f} s ago",
        )
    console.print(table)
