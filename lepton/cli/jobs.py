"""``lepton submit``, ``jobs`` and ``nodes``: work on the cluster, and the cluster."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import warnings
from pathlib import Path  # noqa: TC003  # Typer reads the annotations at run time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Column, Table

from lepton.cli._app import (
    app,
    console,
    errors,
    fail,
    say,
    with_client,
)
from lepton.contract.algorithms import ALGORITHMS
from lepton.sdk.builders import InvalidRequest, JobRequest, describe, millicores
from lepton.sdk.client import DatasetUnchecked

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lepton.sdk.client import LeptonClient
    from lepton.sdk.results import JobEvent, JobHistory

jobs_app = typer.Typer(help="Jobs: list and follow them, show one's history, cancel one.")
app.add_typer(jobs_app, name="jobs")


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
    algorithm: Annotated[
        str | None,
        typer.Option(help=f"Algorithm family: {', '.join(ALGORITHMS)} [default: auto]."),
    ] = None,
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
    no_check: Annotated[
        bool,
        typer.Option(
            "--no-check",
            help="Do not check the dataset and target column in the catalog first (a "
            "dataset still to be ingested: the scheduler waits for it).",
        ),
    ] = False,
) -> None:
    """Submit a job, from flags or a YAML file (waits for the broker's acknowledgement).

    The dataset must exist, be readable by the tenant and hold the target column, unless
    --no-check; if the catalog cannot be reached the job is sent with a warning."""
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
        with warnings.catch_warnings(record=True) as unchecked:
            warnings.simplefilter("always", DatasetUnchecked)
            await client.submit(job, check=not no_check)
        for warning in unchecked:
            errors.print(f"[yellow]warning:[/yellow] {escape(str(warning.message))}")
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


@jobs_app.callback(invoke_without_command=True)
def jobs(
    context: typer.Context,
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
    if context.invoked_subcommand is not None:
        return
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


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="The history as one JSON document.")
    ] = False,
) -> None:
    """A job's request and every event about it, in order, from lepton.jobs.events."""
    history = with_client(lambda client: client.job_history(job_id))
    if as_json:
        say(json.dumps(_history_document(history), ensure_ascii=False))
        return
    pending = " (cancel requested)" if history.cancel_requested else ""
    say(f"{history.job_id}: {history.state}{pending}, tenant {history.tenant}")
    if history.request is not None:
        say(_describe_request(history.request))
    table = Table(
        Column("time", no_wrap=True),
        Column("event", no_wrap=True),
        Column("node", overflow="fold"),
        Column("lease", no_wrap=True),
        "attempt",
        Column("detail", overflow="fold"),
    )
    for event in history.events:
        table.add_row(
            escape(_clock(event.time)),
            escape(event.kind),
            escape(event.node_id or ""),
            str(event.lease_epoch) if event.lease_epoch is not None else "",
            str(event.attempt),
            escape(_detail(event)),
        )
    if history.omitted:
        say(f"{history.omitted:,} earlier events not shown")
    console.print(table)


def _history_document(history: JobHistory) -> dict[str, Any]:
    return {
        "job_id": history.job_id,
        "tenant": history.tenant,
        "state": history.state,
        "cancel_requested": history.cancel_requested,
        "request": history.request,
        "omitted": history.omitted,
        "events": [dataclasses.asdict(event) for event in history.events],
    }


def _clock(time_ms: int) -> str:
    seconds, millis = divmod(time_ms, 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) + f".{millis:03d}"


def _describe_request(request: dict[str, Any]) -> str:
    task, demand, dataset = request["task"], request["demand"], request.get("dataset")
    parts = [f"{task['kind']} {task['algorithm']}"]
    if dataset:
        parts.append(
            f"dataset {dataset['name']}"
            + (f"@{dataset['version']}" if dataset.get("version") else "")
        )
    if task.get("target_column"):
        parts.append(f"target {task['target_column']}")
    parts.append(
        f"{demand['cpu_millicores'] / 1000:g} cores, {demand['memory_mib']:,} MiB"
        + (f", {demand['gpus']} GPUs" if demand["gpus"] else "")
        + (f" x {request['gang_size']} workers" if request.get("gang_size", 1) > 1 else "")
    )
    by = f" by {request['submitted_by']}" if request.get("submitted_by") else ""
    return f"requested {_clock(request['submitted_at'])}{by}: " + ", ".join(parts)


def _detail(event: JobEvent) -> str:
    parts = []
    if event.progress_percent is not None:
        parts.append(f"{event.progress_percent:.0f}%")
    parts += [
        text
        for text in (
            event.stage,
            event.field and f"{event.field}:",
            event.reason,
            event.error_type and f"({event.error_type})",
            event.model_id and f"model {event.model_id}",
        )
        if text
    ]
    return " ".join(parts)


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    tenant: Annotated[
        str | None, typer.Option(help="The tenant you act for (default: the job's own).")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="Why, recorded with the request.")] = None,
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the scheduler's answer.")
    ] = 60.0,
) -> None:
    """Cancel a job: a queued one leaves the queue, a running one is stopped.

    A running job's workers are stopped on every node and its resources freed. A job that
    already ended is left as it is (exit code 1 unless it was cancelled)."""
    done = with_client(
        lambda client: client.cancel(job_id, reason=reason, timeout_s=timeout), tenant=tenant
    )
    why = f": {done.event.reason}" if done.event.reason else ""
    if done.cancelled:
        say(f"{job_id}: cancelled{why}" if done.sent else f"{job_id} was already cancelled{why}")
        return
    before = "" if done.sent else " already"
    fail(
        f"job {job_id}{before} {done.state}{why}: nothing to cancel",
        f"`lepton jobs show {job_id}` shows its history",
    )


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
