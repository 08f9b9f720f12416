"""The ``lepton`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import logging
import shutil
import sys
import time
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from lepton import stack
from lepton.bus import BrokerUnavailableError, Publisher, ensure_topics
from lepton.config import Settings
from lepton.contract import default_codec
from lepton.db import DatabaseUnavailableError, redacted
from lepton.stack._process import is_alive, spawn, stop_process
from lepton.topics import ALL_TOPICS, Namespace

if TYPE_CHECKING:
    from collections.abc import Callable

app = typer.Typer(
    help="Lepton: an open, event-driven control plane for AI infrastructure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The local stack: a real Kafka broker and PostgreSQL server.")
contract_app = typer.Typer(help="The published event contract.")
data_app = typer.Typer(help="Datasets: list them, share them with other tenants.")
app.add_typer(stack_app, name="stack")
app.add_typer(contract_app, name="contract")
app.add_typer(data_app, name="data")

# soft_wrap: a path or an error is one line, whatever the terminal's width.
console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)
_debug = False

T = TypeVar("T")


def _fail(message: str, hint: str | None = None) -> NoReturn:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    if hint:
        errors.print(f"[dim]hint:[/dim] {hint}", highlight=False)
    raise typer.Exit(1)


def _guarded(action: Callable[[], T]) -> T:
    """Run ``action``; known failures become one line (a traceback only with --debug)."""
    try:
        return action()
    except (stack.StackError, BrokerUnavailableError, DatabaseUnavailableError) as exc:
        if _debug:
            raise
        _fail(str(exc))


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


def _print_status(current: stack.StackStatus, as_json: bool) -> None:
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
        current = _guarded(lambda: stack.up(settings))
    _print_status(current, as_json)


@stack_app.command("down")
def stack_down() -> None:
    """Stop the local stack; its data stays in the state directory."""
    stopped = _guarded(lambda: stack.down(Settings()))
    console.print("stack stopped" if stopped else "no stack was running")


@stack_app.command("status")
def stack_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Where Kafka and PostgreSQL are, and whether they run."""
    _print_status(stack.status(Settings()), as_json)


# --- services ---------------------------------------------------------------------------

# The services `lepton up` starts on this machine, with their command lines.
_LOCAL_SERVICES: dict[str, list[str]] = {
    "scheduler": ["lepton-scheduler"],
    "ingest": ["lepton-ingest"],
    "evaluator": ["lepton-evaluator"],
    "monitor": ["lepton-monitor"],
    "trainer-node-1": ["lepton-trainer", "--node-id", "node-1", "--cpus", "1", "--memory", "2048"],
}


def _service_dir(settings: Settings) -> Path:
    return settings.state_dir / "services"


def _service_pid(settings: Settings, name: str) -> int | None:
    try:
        return int((_service_dir(settings) / f"{name}.pid").read_text())
    except (OSError, ValueError):
        return None


@app.command("up")
def services_up() -> None:
    """Start every service on this machine, in the background (logs in the state directory)."""
    settings = Settings()
    where = _guarded(lambda: stack.endpoints(settings))
    names = Namespace(settings.topic_prefix)
    _guarded(lambda: asyncio.run(ensure_topics(where.kafka_bootstrap, names.all())))
    directory = _service_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    for name, command in _LOCAL_SERVICES.items():
        if is_alive(_service_pid(settings, name)):
            console.print(f"{name}: already running")
            continue
        executable = bin_dir / command[0]
        program = str(executable) if executable.exists() else shutil.which(command[0])
        if program is None:
            _fail(f"{command[0]} not found", "run `make install`")
        pid = spawn([program, *command[1:]], directory / f"{name}.log")
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
    where = _guarded(lambda: stack.endpoints(settings))

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


@app.command("submit")
def submit(
    tenant: Annotated[str, typer.Option(help="Who the job belongs to.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset name to train on.")] = None,
    target: Annotated[str | None, typer.Option(help="Target column.")] = None,
    algorithm: Annotated[str, typer.Option(help="Algorithm family, or auto.")] = "auto",
    priority_class: Annotated[str, typer.Option(help="Priority class name.")] = "normal",
    priority: Annotated[int, typer.Option(help="Priority number; higher runs first.")] = 100,
    cpus: Annotated[float, typer.Option(min=0.001, help="Cores per worker.")] = 1.0,
    memory: Annotated[int, typer.Option(min=1, help="MiB per worker.")] = 1024,
    gpus: Annotated[int, typer.Option(min=0, help="GPUs per worker.")] = 0,
    job_id: Annotated[str | None, typer.Option(help="Default: a new random id.")] = None,
) -> None:
    """Submit a training job (waits for the broker's acknowledgement)."""
    job = job_id or f"job-{uuid.uuid4().hex[:12]}"
    record: dict[str, Any] = {
        "job_id": job,
        "tenant": tenant,
        "priority_class": priority_class,
        "priority": priority,
        "task": {"kind": "train", "algorithm": algorithm, "target_column": target},
        "dataset": {"name": dataset} if dataset else None,
        "demand": {
            "cpu_millicores": int(cpus * 1000),
            "memory_mib": memory,
            "gpus": gpus,
            "network_mbps": 0,
        },
        "constraints": {},
        "submitted_at": int(time.time() * 1000),
        "submitted_by": getpass.getuser(),
    }
    settings = Settings()
    where = _guarded(lambda: stack.endpoints(settings))
    requests = Namespace(settings.topic_prefix).topic("lepton.jobs.requested")

    async def send() -> None:
        async with Publisher(where.kafka_bootstrap, default_codec(), source="lepton/cli") as bus:
            await bus.publish(requests, job, record)

    _guarded(lambda: asyncio.run(send()))
    console.print(f"submitted {job}")


# --- data -------------------------------------------------------------------------------


def _with_pool(action: Callable[[Any], Any]) -> Any:
    """Run ``action(pool)`` against the configured database; errors become one line."""
    from lepton import datasets, db

    settings = Settings()
    where = _guarded(lambda: stack.endpoints(settings))

    async def go() -> Any:
        pool = await db.connect(where.database_url, timeout_s=settings.connect_timeout_s)
        try:
            return await action(pool)
        finally:
            await pool.close()

    import asyncpg

    try:
        return _guarded(lambda: asyncio.run(go()))
    except datasets.DatasetError as exc:
        _fail(str(exc), "`lepton data list --tenant T` shows what T may read")
    except asyncpg.UndefinedTableError:
        _fail(
            "this database has no dataset catalog yet",
            "start the ingest service once (`lepton up`)",
        )


TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant you act for.")]

_SOURCE_KINDS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".jsonl": "jsonl"}


@data_app.command("generate")
def data_generate(
    kind: Annotated[str, typer.Argument(help="houses, diagnosis or fraud.")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write.")],
) -> None:
    """Write one of the bundled example datasets (made here, never downloaded) as CSV."""
    from lepton import _datagen

    makers = {
        "houses": _datagen.house_prices,
        "diagnosis": _datagen.diagnosis,
        "fraud": _datagen.fraud,
    }
    if kind not in makers:
        _fail(f"unknown example {kind!r}", "one of: " + ", ".join(makers))
    frame = makers[kind]()
    frame.to_csv(out, index=False)
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
    suffix = Path(source.removesuffix(".gz")).suffix.lower()
    chosen = kind or _SOURCE_KINDS.get(suffix)
    if chosen not in {"csv", "parquet", "jsonl"}:
        _fail(f"cannot tell the format of {source!r}", "say --kind csv, parquet or jsonl")
    spec_text = None
    if spec is not None:
        try:
            spec_text = spec.read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot read the spec {spec}: {exc}")
    location = source if "://" in source else str(Path(source).resolve())
    request_id = uuid.uuid4().hex
    record: dict[str, Any] = {
        "request_id": request_id,
        "tenant": tenant,
        "dataset": name,
        "sources": [
            {
                "name": Path(source).name,
                "kind": chosen,
                "uri": location,
                "query": None,
                "options": {},
            }
        ],
        "spec": spec_text,
        "integration": {"mode": "union", "join_keys": [], "join_how": "inner"},
        "region": None,
        "description": None,
        "requested_at": int(time.time() * 1000),
        "requested_by": getpass.getuser(),
    }
    settings = Settings()
    where = _guarded(lambda: stack.endpoints(settings))
    names = Namespace(settings.topic_prefix)

    async def ask() -> tuple[str, dict[str, Any]]:
        from aiokafka import AIOKafkaConsumer

        answers = [names.topic("lepton.data.ready"), names.topic("lepton.data.rejected")]
        consumer = AIOKafkaConsumer(
            *(topic.name for topic in answers),
            bootstrap_servers=where.kafka_bootstrap,
            group_id=None,
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            await consumer.getmany(timeout_ms=100)  # take positions before asking
            async with Publisher(
                where.kafka_bootstrap, default_codec(), source="lepton/cli"
            ) as bus:
                await bus.publish(names.topic("lepton.data.requested"), f"{tenant}/{name}", record)
            async with asyncio.timeout(timeout):
                while True:
                    for messages in (await consumer.getmany(timeout_ms=500)).values():
                        for message in messages:
                            kind_name, answer = default_codec().decode(message.value)
                            if answer.get("request_id") == request_id:
                                return kind_name, answer
        finally:
            await consumer.stop()

    try:
        kind_name, answer = _guarded(lambda: asyncio.run(ask()))
    except TimeoutError:
        _fail(f"no answer within {timeout:.0f} s", "is the ingest service running (`lepton up`)?")
    if kind_name == "lepton.DataRejected":
        _fail(f"rejected ({answer['code']}): {answer['reason']}")
    console.print(
        f"{name}: version {answer['version'][:12]}, {answer['rows']:,} rows"
        + (" (same content as before: reused)" if answer["reused"] else "")
    )


@data_app.command("list")
def data_list(tenant: TenantOption) -> None:
    """Datasets the tenant owns or that are shared with it."""
    from lepton import datasets

    found = _with_pool(lambda pool: datasets.list_datasets(pool, reader_tenant=tenant))
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


@data_app.command("share")
def data_share(
    dataset: Annotated[str, typer.Argument(help="Your dataset's name.")],
    with_tenant: Annotated[str, typer.Option("--with", help="The tenant to share it with.")],
    tenant: TenantOption,
    region: Annotated[str | None, typer.Option(help="Only readers in this region.")] = None,
) -> None:
    """Let another tenant read every version of a dataset (audited)."""
    from lepton import datasets

    _with_pool(
        lambda pool: datasets.share_dataset(
            pool, owner_tenant=tenant, name=dataset, with_tenant=with_tenant, region=region
        )
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
    from lepton import datasets

    _with_pool(
        lambda pool: datasets.revoke_dataset(
            pool, owner_tenant=tenant, name=dataset, with_tenant=with_tenant, region=region
        )
    )
    console.print(f"{dataset}: no longer shared with {with_tenant}")


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

    from lepton.scheduling.model import Policy
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
    import yaml

    from lepton.scheduling.intake import Rejection, job_spec
    from lepton.scheduling.model import Assign, Preempt, Wait
    from lepton.scheduling.placement import Scheduler, feasibility

    try:
        loaded = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"cannot read {spec_file}: {exc}", "give a job request as YAML or JSON")
    if not isinstance(loaded, dict):
        _fail(f"{spec_file} is not a mapping", "see schemas/job_request.avsc for the fields")
    record = _job_record(loaded)
    spec = job_spec(record)
    if isinstance(spec, Rejection):
        _fail(f"invalid job: {spec.field}: {spec.reason}")
    settings = Settings()
    where = _guarded(lambda: stack.endpoints(settings))
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


def _job_record(given: dict[str, Any]) -> dict[str, Any]:
    """A full ``lepton.JobRequested`` record from the fields a user wrote."""
    task = {
        "kind": "train",
        "algorithm": "auto",
        "trial_budget": 20,
        "time_budget_s": 300,
        "cv_folds": 5,
    } | dict(given.get("task") or {})
    demand = {"cpu_millicores": 0, "memory_mib": 0, "gpus": 0, "network_mbps": 0} | dict(
        given.get("demand") or {}
    )
    return (
        {
            "job_id": f"plan-{uuid.uuid4().hex[:8]}",
            "tenant": "default",
            "priority_class": "normal",
            "priority": 100,
            "preemptible": True,
            "gang_size": 1,
            "max_retries": 3,
            "constraints": {},
            "submitted_at": int(time.time() * 1000),
        }
        | given
        | {"task": task, "demand": demand}
    )


async def _read_cluster(where: stack.Endpoints, settings: Settings) -> tuple[list[Any], Any]:
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
    from lepton._vectors import write_vectors

    if write:
        for path in write_vectors():
            console.print(f"wrote {path}")
    else:
        console.print("use --write to regenerate; `make test` checks them")


def main() -> None:
    app()
