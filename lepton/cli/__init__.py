"""The ``lepton`` command line: a thin layer over the SDK (:class:`lepton.LeptonClient`).

Every failure a user can act on is one line saying what is wrong and one saying how to fix
it; a traceback only with ``--debug``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
import typer.core
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Column, Table

# Typer carries its own copy of click; its usage errors are only importable from there.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from lepton import devstack
from lepton.bus import Publisher, ensure_topics
from lepton.config import Settings
from lepton.contract import default_codec
from lepton.contract.topics import ALL_TOPICS, Namespace
from lepton.devstack._process import is_alive, spawn, stop_process
from lepton.errors import LeptonError
from lepton.runtime.database import redacted
from lepton.sdk.builders import DatasetRequest, InvalidRequest, JobRequest, Source, describe
from lepton.sdk.client import LeptonClient

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from lepton.sdk.client import JobEvent


class _OneLineErrors(typer.core.TyperGroup):
    """Usage errors (a missing option, a bad value) look like every other error of the
    CLI: one line with the reason, one with a hint; and an unexpected failure shows its
    traceback only with --debug."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except NoArgsIsHelpError as exc:
            console.print(exc.ctx.get_help() if exc.ctx else exc.format_message())
            sys.exit(exc.exit_code)
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx else "lepton"
            _print_error(exc.format_message(), f"`{where} --help` shows what it takes")
            sys.exit(exc.exit_code)
        except ClickException as exc:
            _print_error(exc.format_message())
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.exit(130)
        except Exception as exc:
            if _debug:
                raise
            _print_error(
                f"unexpected {type(exc).__name__}: {exc}", "run with --debug for the traceback"
            )
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Lepton: an open, event-driven control plane for AI infrastructure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The local stack: a real Kafka broker and PostgreSQL server.")
contract_app = typer.Typer(help="The published event contract.")
data_app = typer.Typer(help="Datasets: ingest, list, show and share them.")
models_app = typer.Typer(help="Trained models: list them, roll a champion back.")
app.add_typer(stack_app, name="stack")
app.add_typer(contract_app, name="contract")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

# soft_wrap: a path or an error is one line, whatever the terminal's width.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
_debug = False

T = TypeVar("T")


def _print_error(message: str, hint: str | None = None) -> None:
    errors.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    if hint:
        errors.print(f"[dim]hint:[/dim] {hint}", highlight=False)


def _fail(message: str, hint: str | None = None) -> NoReturn:
    _print_error(message, hint)
    raise typer.Exit(1)


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action``; a :class:`LeptonError` becomes its one line and its hint (a
    traceback only with --debug)."""
    try:
        return action()
    except LeptonError as exc:
        if _debug:
            raise
        _fail(str(exc), exc.hint)


def _with_client(action: Callable[[LeptonClient], Awaitable[T]], *, tenant: str | None = None) -> T:
    """Run ``action`` with a client for ``tenant``; errors become one line."""

    async def go() -> T:
        async with LeptonClient(tenant=tenant, source="lepton/cli") as client:
            return await action(client)

    return _guarded(lambda: asyncio.run(go()))


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    global _debug
    _debug = debug
    # aiokafka warns about retries it then makes on its own (a leader moving, say): noise
    # for a command-line user unless they are debugging.
    logging.basicConfig(level=logging.DEBUG if debug else logging.ERROR, format="%(message)s")


# --- stack ------------------------------------------------------------------------------


def _print_status(current: devstack.StackStatus, as_json: bool) -> None:
    if as_json:
        print(json.dumps(current.as_json()))
        return
    table = Table(show_header=False, box=None)
    table.add_row("running", "[green]yes[/green]" if current.running else "[red]no[/red]")
    table.add_row("kafka", current.kafka_bootstrap or "-")
    url = current.database_url
    table.add_row("postgres", redacted(url) if url else "-")
    table.add_row("state", str(current.state_dir))
    table.add_row("logs", f"{current.kafka_log}\n{current.postgres_log}")
    if current.note:
        table.add_row("note", current.note)
    console.print(table)


@stack_app.command("up")
def stack_up(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Start Kafka and PostgreSQL (or report the stack already running)."""
    settings = Settings()
    spinner = console.status("starting Kafka and PostgreSQL…")
    with contextlib.nullcontext() if as_json else spinner:
        current = _guarded(lambda: devstack.up(settings))
    _print_status(current, as_json)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local stack; its data stays in the state directory."""
    stopped = _guarded(lambda: devstack.down(Settings()))
    console.print("stack stopped" if stopped else "no stack was running")


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Where Kafka and PostgreSQL are, and whether they run."""
    _print_status(devstack.status(Settings()), as_json)


# --- services ---------------------------------------------------------------------------

# The services `lepton up` starts on this machine, with their command lines.
_LOCAL_SERVICES: dict[str, list[str]] = {
    "scheduler": ["lepton-scheduler"],
    "ingest": ["lepton-ingest"],
    "evaluator": ["lepton-evaluator"],
    "monitor": ["lepton-monitor"],
    # Two compute nodes of different sizes, each a declared slice of this machine.
    "trainer-node-1": ["lepton-trainer", "--node-id", "node-1", "--cpus", "1", "--memory", "2048"],
    "trainer-node-2": [
        "lepton-trainer",
        *("--node-id", "node-2", "--cpus", "2", "--memory", "4096", "--label", "size=large"),
    ],
}


def _service_dir(settings: Settings) -> Path:
    return settings.state_dir / "services"


def local_inbox(settings: Settings) -> Path:
    """Where local files for ingest go when the services run through `lepton up`."""
    inbox = settings.state_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    return inbox


def _service_pid(settings: Settings, name: str) -> int | None:
    try:
        return int((_service_dir(settings) / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


@app.command("up")
def services_up() -> None:
    """Start every service on this machine, in the background (logs in the state directory)."""
    settings = Settings()
    where = _guarded(lambda: devstack.endpoints(settings))
    names = Namespace(settings.topic_prefix)
    _guarded(lambda: asyncio.run(ensure_topics(where.kafka_bootstrap, names.all())))
    directory = _service_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    env: dict[str, str] = {}
    if "LEPTON_INGEST_ROOTS" not in os.environ:
        # Locally, ingest may read the state directory's inbox and the directory `lepton
        # up` ran in; set LEPTON_INGEST_ROOTS to choose others.
        roots = [str(local_inbox(settings)), str(Path.cwd())]
        env["LEPTON_INGEST_ROOTS"] = json.dumps(roots)
        console.print(f"ingest reads local files under: {', '.join(roots)}")
    for name, command in _LOCAL_SERVICES.items():
        if is_alive(_service_pid(settings, name)):
            console.print(f"{name}: already running")
            continue
        executable = bin_dir / command[0]
        program = str(executable) if executable.exists() else shutil.which(command[0])
        if program is None:
            _fail(f"{command[0]} not found", "run `make install`")
        pid = spawn([program, *command[1:]], directory / f"{name}.log", env)
        (directory / f"{name}.pid").write_text(str(pid))
        console.print(f"{name}: started (pid {pid}, log {directory / f'{name}.log'})")


@app.command("down")
def services_down() -> None:
    """Stop the services `lepton up` started (SIGTERM: they finish, commit and close)."""
    settings = Settings()
    for name in _LOCAL_SERVICES:
        pid = _service_pid(settings, name)
        if is_alive(pid):
            stop_process(pid)
            console.print(f"{name}: stopped")
        (_service_dir(settings) / f"{name}.pid").unlink(missing_ok=True)


# --- events -----------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


@app.command("tail")
def tail(
    topic: Annotated[str, typer.Argument(help="A Lepton topic, e.g. lepton.jobs.events.")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest message.")
    ] = False,
    count: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many events.")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a new event.")
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only events with this key.")] = None,
) -> None:
    """Print a topic's events as JSON lines, decoded."""
    settings = Settings()
    try:
        spec = Namespace(settings.topic_prefix).topic(topic)
    except KeyError:
        _fail(f"unknown topic {topic!r}", "one of: " + ", ".join(t.name for t in ALL_TOPICS))
    where = _guarded(lambda: devstack.endpoints(settings))

    async def follow() -> None:
        from aiokafka import AIOKafkaConsumer

        codec = default_codec()
        consumer = AIOKafkaConsumer(
            spec.name,
            bootstrap_servers=where.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="earliest" if from_beginning else "latest",
        )
        await consumer.start()
        seen = 0
        last = time.monotonic()
        try:
            while count is None or seen < count:
                batch = await consumer.getmany(timeout_ms=200)
                messages = [message for records in batch.values() for message in records]
                if not messages and timeout is not None and time.monotonic() - last > timeout:
                    return
                for message in messages:
                    last = time.monotonic()
                    if key is not None and _key(message.key) != key:
                        continue
                    try:
                        kind, record = codec.decode(message.value)
                        line = {
                            "topic": spec.name,
                            "key": _key(message.key),
                            "type": kind,
                            "offset": message.offset,
                            "record": record,
                        }
                    except ValueError as exc:
                        line = {"topic": spec.name, "offset": message.offset, "error": str(exc)}
                    print(json.dumps(line, default=_json_default, ensure_ascii=False), flush=True)
                    seen += 1
                    if count is not None and seen >= count:
                        return
        finally:
            await consumer.stop()

    with contextlib.suppress(KeyboardInterrupt):
        _guarded(lambda: asyncio.run(follow()))


def _key(key: bytes | None) -> str | None:
    return key.decode("utf-8", "replace") if key is not None else None


# --- jobs -------------------------------------------------------------------------------

_JOB_HINT = "see schemas/job_requested.avsc for the fields; `lepton plan` checks a job file"


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"cannot read {path}: {exc}", "give a job request as YAML or JSON")
    if not isinstance(loaded, dict):
        _fail(f"{path} is not a mapping of job fields", _JOB_HINT)
    return loaded


def _build_job(given: dict[str, Any]) -> JobRequest:
    """The job the user described (a file's fields, flags on top), checked as the
    scheduler checks it."""
    try:
        job = JobRequest.model_validate(given)
        job.check()
    except ValidationError as exc:
        _fail(f"invalid job: {describe(exc)}", _JOB_HINT)
    except InvalidRequest as exc:
        _fail(f"invalid job: {exc}", _JOB_HINT)
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
    given = _read_yaml(job_file) if job_file is not None else {}
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
        given["demand"] |= _given(
            cpu_millicores=round(cpus * 1000) if cpus is not None else None,
            memory_mib=memory,
            gpus=gpus,
        )
    if "tenant" not in given:
        _fail("the job has no tenant", "say --tenant T, or give `tenant:` in the job file")
    job = _build_job(given)

    async def send(client: LeptonClient) -> None:
        await client.submit(job)
        console.print(f"submitted {job.job_id}")
        if wait:
            outcome = await client.wait(job.job_id, timeout_s=timeout)
            _print_outcome(outcome.state, outcome.event, outcome.model)

    _with_client(send)


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
        "",
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
        _fail("--until-done only applies to --watch", "say `lepton jobs --watch --until-done`")

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
        _with_client(show)


@app.command("nodes")
def nodes(
    state: Annotated[str, typer.Option(help="alive, dead or all.")] = "all",
) -> None:
    """Compute nodes as their heartbeats tell: capacity, usage, running jobs (from the monitor)."""
    if state not in ("alive", "dead", "all"):
        _fail(f"unknown node state {state!r}", "one of: alive, dead, all")
    found = _with_client(lambda client: client.nodes(state=state))
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


# --- models -----------------------------------------------------------------------------


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's models.")] = None,
) -> None:
    """Models per name: each evaluated version's score, and the champion (from the monitor)."""
    if ctx.invoked_subcommand is not None:
        return
    board = _with_client(lambda client: client.models(tenant=tenant))
    model_id = Column("model id", overflow="fold")
    table = Table("tenant", "name", model_id, "algorithm", "score", "champion")
    for entry in board:
        metric = entry["primary_metric"]
        if not entry["models"]:
            table.add_row(entry["tenant"], entry["model_name"], "-", "-", "not evaluated", "-")
        for version in entry["models"]:
            score = version["metrics"].get(metric) if metric else None
            table.add_row(
                entry["tenant"],
                entry["model_name"],
                version["model_id"],
                version["algorithm"],
                f"{metric} {score:.4g}" if score is not None else "-",
                "[green]★[/green]" if version["champion"] else "",
            )
    console.print(table)


@models_app.command("rollback")
def models_rollback(
    name: Annotated[str, typer.Argument(help="The model name.")],
    to: Annotated[str, typer.Option("--to", help="The model id to make champion again.")],
    tenant: Annotated[str, typer.Option(help="The tenant that owns the model.")],
) -> None:
    """Make an earlier version the champion again (the evaluator applies it)."""
    _with_client(lambda client: client.rollback(name, to), tenant=tenant)
    console.print(f"{name}: rollback to {to} requested")


_INPUT_KINDS = (".csv", ".json", ".jsonl")


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """Records from a CSV (header row), a JSON array of objects or JSON Lines file."""
    suffix = path.suffix.lower()
    if suffix not in _INPUT_KINDS:
        _fail(f"cannot tell the format of {path}", "give a .csv, .json or .jsonl file")
    try:
        if suffix == ".csv":
            import pandas as pd

            frame = pd.read_csv(path)
            rows: Any = frame.astype(object).where(frame.notna(), None).to_dict("records")
        else:
            text = path.read_text(encoding="utf-8")
            rows = (
                json.loads(text)
                if suffix == ".json"
                else [json.loads(line) for line in text.splitlines() if line.strip()]
            )
    except (OSError, ValueError) as exc:
        _fail(f"cannot read {path}: {exc}", "give records as CSV, a JSON array or JSON Lines")
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        _fail(f"{path} does not hold records", "each record is an object: column -> value")
    for number, row in enumerate(rows, 1):
        for column, value in row.items():
            if not isinstance(value, bool | int | float | str | None):
                _fail(
                    f"{path}: record {number}, {column}: {type(value).__name__} is not a value",
                    "values are numbers, text, true/false or null",
                )
    if not rows:
        _fail(f"{path} holds no records", "give at least one record to score")
    return rows


@app.command("predict")
def predict(
    model: Annotated[
        str, typer.Option(help="NAME (its champion), NAME@champion or NAME@<model id>.")
    ],
    input_file: Annotated[
        Path, typer.Option("--input", help="Records to score: .csv, .json or .jsonl.")
    ],
    tenant: Annotated[str, typer.Option(help="The tenant that owns the model.")],
    output: Annotated[
        Path | None, typer.Option(help="Write the records with predictions here (JSON Lines).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for the answers.")] = 60.0,
) -> None:
    """Score records with a model, through the evaluator (Kafka request and reply)."""
    rows = _read_rows(input_file)
    result = _with_client(
        lambda client: client.predict(model, rows, timeout_s=timeout), tenant=tenant
    )
    scored = []
    for i, row in enumerate(rows):
        line = row | {"prediction": result.predictions[i]}
        if result.probabilities:
            line["probabilities"] = result.probabilities[i]
        scored.append(line)
    for warning in result.warnings:
        errors.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if output is not None:
        with output.open("w", encoding="utf-8") as out:
            for line in scored:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
        console.print(f"{len(scored):,} predictions by {result.model_id} written to {output}")
    elif as_json:
        for line in scored:
            print(json.dumps(line, ensure_ascii=False))
    else:
        table = Table(*rows[0], "prediction", title=f"{result.model_name} ({result.model_id})")
        for line in scored:
            table.add_row(
                *(_cell(line.get(column)) for column in rows[0]), _cell(line["prediction"])
            )
        console.print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


# --- data -------------------------------------------------------------------------------

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant you act for.")]


@data_app.command("generate")
def data_generate(
    kind: Annotated[str, typer.Argument(help="houses, diagnosis or fraud.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
) -> None:
    """Write one of the bundled example datasets (made here, never downloaded) as CSV."""
    from lepton.data import samples

    makers = {
        "houses": samples.house_prices,
        "diagnosis": samples.diagnosis,
        "fraud": samples.fraud,
    }
    if kind not in makers:
        _fail(f"unknown example {kind!r}", "one of: " + ", ".join(makers))
    frame = makers[kind]()
    try:
        frame.to_csv(out, index=False)
    except OSError as exc:
        _fail(f"cannot write {out}: {exc}", "give a file in a directory you can write to")
    console.print(f"{kind}: {len(frame):,} rows written to {out}")


@data_app.command("ingest")
def data_ingest(
    source: Annotated[str, typer.Argument(help="A file path (under LEPTON_INGEST_ROOTS) or URL.")],
    name: Annotated[str, typer.Option("--name", help="The dataset's name.")],
    tenant: TenantOption,
    spec: Annotated[
        Path | None, typer.Option(help="A dataset spec (YAML or JSON); inferred if absent.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="csv, parquet or jsonl (default: from the extension).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the result.")] = 300.0,
) -> None:
    """Ask the ingest service to load, clean and store a dataset; wait for its answer."""
    if kind not in (None, "csv", "parquet", "jsonl"):
        _fail(f"unknown source kind {kind!r}", "say --kind csv, parquet or jsonl")
    spec_text = None
    if spec is not None:
        try:
            spec_text = spec.read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot read the spec {spec}: {exc}", "give a dataset spec as YAML or JSON")
    try:
        request = DatasetRequest(
            tenant=tenant,
            dataset=name,
            sources=[Source.file(source, kind=kind)],  # type: ignore[arg-type]  # checked above
            spec=spec_text,
        )
    except InvalidRequest as exc:
        _fail(str(exc), "say --kind csv, parquet or jsonl")
    except ValidationError as exc:
        _fail(f"invalid dataset request: {describe(exc)}")
    answer = _with_client(lambda client: client.ingest(request, timeout_s=timeout))
    console.print(
        f"{name}: version {answer['version'][:12]}, {answer['rows']:,} rows"
        + (" (same content as before: reused)" if answer["reused"] else "")
    )


@data_app.command("list")
def data_list(tenant: TenantOption) -> None:
    """Datasets the tenant owns or that are shared with it."""
    found = _with_client(lambda client: client.datasets(), tenant=tenant)
    table = Table("owner", "name", "version", "rows", "region", "created")
    for info in found:
        table.add_row(
            info.owner_tenant,
            info.name,
            info.version[:12],
            f"{info.rows:,}",
            info.region or "-",
            info.created_at.isoformat(timespec="seconds"),
        )
    console.print(table)


@data_app.command("show")
def data_show(
    dataset: Annotated[str, typer.Argument(help="The dataset's name.")],
    tenant: TenantOption,
    owner: Annotated[
        str | None, typer.Option(help="Its owner, for a dataset shared with you.")
    ] = None,
) -> None:
    """A dataset's versions, the latest one's columns and its quality summary."""
    versions = _with_client(lambda client: client.dataset(dataset, owner=owner), tenant=tenant)
    latest = versions[0]
    history = Table("version", "rows", "region", "spec", "created", title=f"{dataset} versions")
    for version in versions:
        history.add_row(
            version.version[:19],
            f"{version.rows:,}",
            version.region or "-",
            "inferred" if version.spec_inferred else "given",
            version.created_at.isoformat(timespec="seconds"),
        )
    columns = Table("column", "type", "nullable", "sensitive", title="columns (latest)")
    for column in latest.columns:
        columns.add_row(
            column["name"],
            column["type"],
            "yes" if column.get("nullable") else "no",
            "yes" if column.get("sensitive") else "",
        )
    quality = latest.quality
    summary = Table("quality (latest)", "count")
    for measure in (
        "rows_read",
        "rows_rejected",
        "duplicates_removed",
        "values_imputed",
        "outliers_flagged",
    ):
        summary.add_row(measure.replace("_", " "), f"{quality.get(measure, 0):,}")
    for rule in quality.get("rules", []):
        where = f" ({rule['column']})" if rule.get("column") else ""
        summary.add_row(f"  {rule['rule']}{where}", f"{rule['count']:,}")
    console.print(f"{latest.owner_tenant}/{dataset}", highlight=False)
    console.print(history, columns, summary)


@data_app.command("share")
def data_share(
    dataset: Annotated[str, typer.Argument(help="Your dataset's name.")],
    with_tenant: Annotated[str, typer.Option("--with", help="The tenant to share it with.")],
    tenant: TenantOption,
    region: Annotated[str | None, typer.Option(help="Only readers in this region.")] = None,
) -> None:
    """Let another tenant read every version of a dataset (audited)."""
    _with_client(
        lambda client: client.share(dataset, with_tenant=with_tenant, region=region),
        tenant=tenant,
    )
    console.print(f"{dataset}: shared with {with_tenant}" + (f" in {region}" if region else ""))


@data_app.command("revoke")
def data_revoke(
    dataset: Annotated[str, typer.Argument(help="Your dataset's name.")],
    with_tenant: Annotated[str, typer.Option("--with", help="The tenant to revoke.")],
    tenant: TenantOption,
    region: Annotated[str | None, typer.Option(help="Only this region's share.")] = None,
) -> None:
    """Take back a share (audited)."""
    _with_client(
        lambda client: client.revoke(dataset, with_tenant=with_tenant, region=region),
        tenant=tenant,
    )
    console.print(f"{dataset}: no longer shared with {with_tenant}")


@app.command("demo")
def demo() -> None:
    """The seed's examples end to end: ingest, train, evaluate, promote, predict (needs
    `lepton up`)."""
    from lepton.cli import demo as examples

    settings = Settings()
    began = time.monotonic()
    reports = _guarded(
        lambda: asyncio.run(
            examples.run(
                settings,
                local_inbox(settings),
                lambda line: console.print(line, markup=False, highlight=False),
            )
        )
    )
    table = Table("example", "model", "held-out score", "verdict", "prediction", title="Summary")
    for report in reports:
        metrics = report.evaluated["metrics"]
        metric = "r2" if report.model["problem_type"] == "regression" else "f1_macro"
        prediction = report.prediction
        table.add_row(
            report.example.dataset,
            f"{report.model['algorithm']} {report.model['model_id'][:8]}",
            f"{metric} {metrics.get(metric, float('nan')):.3f}",
            report.verdict["verdict"] if report.verdict else "not judged",
            f"{prediction:,.0f}"
            if isinstance(prediction, float)
            else report.example.labels.get(str(prediction), str(prediction)),
        )
    console.print(table)
    console.print(f"finished in {time.monotonic() - began:.0f} s")
    console.print(f"dashboard: {settings.monitor_url}/", highlight=False)
    console.print("explore: lepton models --tenant demo; lepton jobs; lepton nodes")
    console.print("stop everything: make demo-down (lepton down && lepton stack down)")


# --- scheduling -------------------------------------------------------------------------


@app.command("simulate")
def simulate(
    nodes: Annotated[int, typer.Option(min=1, help="Nodes in the synthetic cluster.")] = 200,
    hours: Annotated[float, typer.Option(min=0.01, help="Simulated time.")] = 1.0,
    arrival_rate: Annotated[float, typer.Option(min=0.001, help="Jobs per second.")] = 1.0,
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
        _fail(f"unknown policy {policy!r}", "one of: binpack, spread, drf")
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
    from lepton.scheduling.entities import Assign, Preempt, Wait
    from lepton.scheduling.intake import Rejection, job_spec
    from lepton.scheduling.placement import Scheduler, feasibility

    spec = job_spec(_build_job(_read_yaml(spec_file)).to_record())
    assert not isinstance(spec, Rejection)  # _build_job checked it
    settings = Settings()
    where = _guarded(lambda: devstack.endpoints(settings))
    nodes, journal = _guarded(lambda: asyncio.run(_read_cluster(where, settings)))
    impossible = feasibility(spec, nodes)
    if impossible is not None:
        console.print(f"[red]never[/red]: {impossible}")
        raise typer.Exit(1)
    from lepton.scheduling.journal import Status, restore

    core = Scheduler()
    now = int(time.time() * 1000)
    restore(core, nodes, journal, now)
    for entry in journal.jobs.values():
        if entry.status is Status.QUEUED and not isinstance(entry.spec, Rejection):
            core.submit(entry.spec, entry.attempt)
    core.submit(spec)
    for decision in core.plan(now):
        if isinstance(decision, Preempt) and decision.for_job_id == spec.job_id:
            console.print(f"would preempt: {', '.join(decision.victim_job_ids)}")
        elif isinstance(decision, Assign) and decision.job_id == spec.job_id:
            console.print(f"[green]now[/green]: {', '.join(decision.node_ids)}")
            return
        elif isinstance(decision, Wait) and decision.job_id == spec.job_id:
            console.print(f"[yellow]waits[/yellow]: {decision.reason.value.replace('_', ' ')}")
            raise typer.Exit(2)


async def _read_cluster(where: devstack.Endpoints, settings: Settings) -> tuple[list[Any], Any]:
    """The cluster as the log tells it: the latest heartbeat per node, and every job."""
    from lepton.bus import Event, Subscriber
    from lepton.scheduling.intake import node_state
    from lepton.scheduling.journal import Journal

    names = Namespace(settings.topic_prefix)
    latest: dict[str, dict[str, Any]] = {}
    journal = Journal()

    async def read(event: Event) -> None:
        declared = event.topic.removeprefix(names.prefix)
        if declared == "lepton.node.heartbeats":
            latest[event.record["node_id"]] = event.record
        elif declared == "lepton.jobs.requested":
            journal.request(event.record)
        else:
            journal.fold(event.record)

    topics = [
        names.topic(t)
        for t in ("lepton.node.heartbeats", "lepton.jobs.requested", "lepton.jobs.events")
    ]
    async with Publisher(where.kafka_bootstrap, default_codec(), source="lepton/cli") as bus:
        reader = Subscriber(
            where.kafka_bootstrap,
            default_codec(),
            bus,
            topics=topics,
            group_id="lepton-plan",
            handler=read,
            replay=True,
        )
        await reader.start()
        task = asyncio.create_task(reader.run())
        try:
            await reader.caught_up.wait()
        finally:
            reader.stop_soon()
            await task
            await reader.close()
    return [node_state(record) for record in latest.values()], journal


# --- contract ---------------------------------------------------------------------------


@contract_app.command("vectors")
def contract_vectors(
    write: Annotated[bool, typer.Option("--write", help="Rewrite schemas/vectors/.")] = False,
) -> None:
    """Check (or rewrite) the golden test vectors against the codec."""
    from lepton.contract.vectors import write_vectors

    if write:
        for path in write_vectors():
            console.print(f"wrote {path}")
    else:
        console.print("use --write to regenerate; `make test` checks them")


def main() -> None:
    app()
