"""The trainer agent: one per compute node.

It sends a heartbeat every interval (with the jobs it runs) and reads only its own
node's partition of ``lepton.jobs.assigned``. Each run instruction is judged against the
runs the node has accepted (``lepton_trainer.runs``): a redelivery changes nothing and a
lease older than one already seen for the job is not started. An accepted run trains in
its own process (``lepton.services.trainer.worker``) pinned to the granted cores under an
address-space limit; the agent relays its progress to ``lepton.jobs.events``, catalogs the
model, publishes ``lepton.models.ready`` and reports ``succeeded`` or ``failed``. A stop
instruction ends the run's process at once. A run still marked running when an agent
starts was lost by the agent before it; the new agent reports it ``lost``.

An agent that could not get a heartbeat out for ``LEPTON_TRAINER_LEASE_S`` reads its
partition to the end before reporting a run that overlapped the silence: a stop for the
run's lease (the scheduler's, once it declared the node dead) voids the run
(:mod:`lepton.services.trainer.lease`, :mod:`lepton.services.trainer.revocation`).

A run that failed because PostgreSQL was away is reported ``lost`` too, with the reason:
not the job's fault, so the scheduler requeues it under its ``max_retries``. What the
agent records of a run once it has started waits for the database to come back
(:func:`~lepton.runtime.database.patiently`); an instruction that cannot be claimed yet is
retried by the consumer, never dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from aiokafka.errors import KafkaError

from lepton.bus import span
from lepton.contract.events import JobAssigned, LeaseProof
from lepton.contract.identity import SIGNATURE_HEADER, Principal
from lepton.contract.job_events import job_event
from lepton.data.artifacts import artifact_uri
from lepton.runtime import endpoints
from lepton.runtime.database import patiently
from lepton.runtime.service import Context, Service, run, start_helper
from lepton.services.trainer import catalog, instruments
from lepton.services.trainer.lease import LeaseClock
from lepton.services.trainer.node import (
    GpuDiscoveryError,
    NodeSpec,
    UsageMeter,
    discover_gpus,
    heartbeat,
    offered_gpus,
)
from lepton.services.trainer.phases import Phases
from lepton.services.trainer.revocation import revocation
from lepton.services.trainer.runs import (
    RunKey,
    Verdict,
    cpu_count_for,
    memory_limit_mib,
    model_id_for,
    pick_cpus,
    pick_gpus,
    run_key,
)
from lepton.services.trainer.settings import TrainerSettings

if TYPE_CHECKING:
    from collections.abc import Mapping

    from lepton.bus import Event, Handler
    from lepton.contract.events import JobEventKind

__all__ = ["Agent", "create_app", "main"]

_MIGRATIONS = Path(__file__).parent / "migrations"
# Reading the node's partition to its end after a silence: longer, and the lease is lost.
_REVOCATION_TIMEOUT_S = 30.0


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class _Run:
    assignment: JobAssigned
    process: asyncio.subprocess.Process
    cpus: list[int]
    model_id: str
    lease: LeaseProof | None  # the scheduler's signed instruction, for the model's proof
    instruction: tuple[str, int, int]  # where that instruction is: topic, partition, offset
    gpus: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    stopping: bool = False  # stopped or superseded: whatever it reports is void
    supervisor: asyncio.Task[None] | None = field(default=None, repr=False)


class Agent:
    """A node agent's state and behaviour; :func:`create_app` wraps it in a Service."""

    def __init__(self, spec: NodeSpec, settings: TrainerSettings, interval_s: float) -> None:
        self.spec = spec
        self.settings = settings
        self.interval_s = interval_s
        self.runs: dict[RunKey, _Run] = {}
        self.lease = LeaseClock(settings.trainer_lease_s, time.monotonic())
        self._context: Context | None = None
        self._available = sorted(os.sched_getaffinity(0))

    @property
    def context(self) -> Context:
        assert self._context is not None, "the agent's service has not started"
        return self._context

    def running_job_ids(self) -> list[str]:
        return sorted({key[0] for key, entry in self.runs.items() if not entry.stopping})

    # -- service hooks ---------------------------------------------------------------

    async def handler(self, context: Context) -> Handler:
        self._context = context
        await self._report_lost()
        return self._handle

    async def send_heartbeats(self, context: Context) -> None:
        heartbeats = context.topic("lepton.node.heartbeats")
        meter = UsageMeter(self.spec)
        started = _now_ms()
        sequence = 0
        while True:
            sequence += 1
            record = heartbeat(
                self.spec,
                # nvidia-smi may take a moment: measure off the event loop.
                await asyncio.to_thread(meter.measure),
                self.running_job_ids(),
                sequence=sequence,
                sent_at_ms=_now_ms(),
                agent_started_at_ms=started,
                interval_ms=int(self.interval_s * 1000),
            )
            await context.publisher.publish(heartbeats, self.spec.node_id, record)
            self.lease.renewed(time.monotonic())
            await asyncio.sleep(self.interval_s)

    async def guard_workers(self, context: Context) -> None:
        """Runs for the service's lifetime; at shutdown it ends every worker. Their runs
        stay marked running, so the next agent on this node reports them lost."""
        try:
            await asyncio.Event().wait()
        finally:
            for entry in list(self.runs.values()):
                entry.stopping = True
                await self._end_process(entry)
            supervisors = [e.supervisor for e in self.runs.values() if e.supervisor]
            await asyncio.gather(*supervisors, return_exceptions=True)

    # -- instructions ----------------------------------------------------------------

    async def _handle(self, event: Event) -> None:
        if event.type != "lepton.JobAssigned":
            return
        assignment = event.record_as(JobAssigned)
        if assignment["node_id"] != self.spec.node_id:
            return
        if assignment["action"] == "run":
            signature = event.headers.get(SIGNATURE_HEADER)
            lease: LeaseProof | None = None
            if signature is not None:
                lease = {"assignment": event.value, "signature": signature}
            await self._start(assignment, lease, (event.topic, event.partition, event.offset))
        elif assignment["action"] == "stop":
            await self._stop(assignment)
        else:
            self.context.log.warning(
                "unknown assignment action", action=assignment["action"], job=assignment["job_id"]
            )

    async def _start(
        self, assignment: JobAssigned, lease: LeaseProof | None, instruction: tuple[str, int, int]
    ) -> None:
        key = run_key(assignment)
        log = self.context.log.bind(job=key[0], epoch=key[1], worker=key[2])
        verdict = await catalog.claim_run(self.context.pool, self.spec.node_id, assignment)
        if verdict is Verdict.DUPLICATE:
            log.info("run instruction already handled")
            return
        if verdict is Verdict.STALE:
            log.warning("stale lease: not started")
            return
        # An earlier lease of the same job on this node is void: its result must not count.
        for other_key, other in list(self.runs.items()):
            if other_key[0] == key[0] and other_key[1] < key[1]:
                await self._halt(other_key, other, f"superseded by lease {key[1]}")
        count = cpu_count_for(assignment["granted"]["cpu_millicores"], len(self._available))
        busy = Counter(cpu for entry in self.runs.values() for cpu in entry.cpus)
        cpus = pick_cpus(self._available, busy, count)
        try:
            gpus = pick_gpus(
                [gpu.index for gpu in self.spec.gpus],
                (gpu for entry in self.runs.values() for gpu in entry.gpus),
                int(assignment["granted"]["gpus"]),
            )
        except RuntimeError as exc:
            await self._fail_before_start(assignment, key, "GpuUnavailable", str(exc))
            return
        memory = memory_limit_mib(
            assignment["granted"]["memory_mib"], self.settings.trainer_memory_floor_mib
        )
        model_id = model_id_for(key[0], key[1])
        job = {
            "assignment": assignment,
            "database_url": endpoints.resolve(self.settings, "trainer").database_url,
            "artifact_uri": artifact_uri(
                self.settings.artifact_location(), assignment["tenant"], model_id
            ),
            "study_name": f"{key[0]}@{key[1]}",
            "cpus": cpus,
            "memory_mib": memory,
            "log_level": self.settings.log_level,
        }
        try:
            process = await start_helper(
                "lepton.services.trainer.worker", job, env=_worker_environment(len(cpus), gpus)
            )
        except OSError as exc:  # no process (fork limits, memory): the job fails, not the agent
            await self._fail_before_start(assignment, key, type(exc).__name__, str(exc))
            return
        entry = _Run(assignment, process, cpus, model_id, lease, instruction, gpus)
        self.runs[key] = entry
        await self._event(assignment, "started")
        log.info("started", pid=process.pid, cpus=cpus, gpus=gpus, memory_mib=memory)
        entry.supervisor = asyncio.create_task(self._supervise(key, entry))

    async def _fail_before_start(
        self, assignment: JobAssigned, key: RunKey, error_type: str, reason: str
    ) -> None:
        await self._event(assignment, "failed", error_type=error_type, reason=reason)
        await self._finish(key, "failed", reason=reason)

    async def _finish(
        self, key: RunKey, outcome: str, *, reason: str | None = None, model_id: str | None = None
    ) -> None:
        """Record how a run ended, once PostgreSQL has it (the run is claimed: a retried
        instruction would not start it again, so this must not fail for an outage)."""
        await patiently(
            lambda: catalog.finish_run(
                self.context.pool,
                self.spec.node_id,
                key,
                outcome,
                reason=reason,
                model_id=model_id,
            ),
            what=f"the outcome of run {key}",
            log=self.context.log,
        )

    async def _stop(self, assignment: JobAssigned) -> None:
        key = run_key(assignment)
        reason = assignment.get("reason") or "stopped by the scheduler"
        await catalog.record_stop(self.context.pool, self.spec.node_id, assignment, reason)
        entry = self.runs.get(key)
        if entry is not None:
            await self._halt(key, entry, reason)
        self.context.log.info("stop", job=key[0], epoch=key[1], running=entry is not None)

    async def _halt(self, key: RunKey, entry: _Run, reason: str) -> None:
        entry.stopping = True
        await self._finish(key, "stopped", reason=reason)
        await self._end_process(entry)

    async def _end_process(self, entry: _Run) -> None:
        process = entry.process
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self.settings.trainer_stop_grace_s):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

    # -- a run's reports -------------------------------------------------------------

    async def _supervise(self, key: RunKey, entry: _Run) -> None:
        # The run is a span, child of its instruction's (this task started in its handler);
        # what it reports (models.ready, succeeded) continues it.
        traced: dict[str, str | int] = {
            "lepton.job_id": key[0],
            "lepton.lease_epoch": key[1],
            "lepton.worker": key[2],
        }
        with span("train", attributes=traced):
            await self._supervised(key, entry)

    async def _supervised(self, key: RunKey, entry: _Run) -> None:
        log = self.context.log.bind(job=key[0], epoch=key[1], worker=key[2])
        outcome: dict[str, Any] | None = None
        phase = Phases()
        try:
            assert entry.process.stdout is not None
            async for line in entry.process.stdout:
                message = json.loads(line)
                if entry.stopping:
                    continue
                if message["event"] == "progress":
                    phase.reached(message["stage"])
                    await self._event(
                        entry.assignment,
                        "progress",
                        progress_percent=message["percent"],
                        stage=message["stage"],
                    )
                else:
                    phase.reached(None)
                    outcome = message
            code = await entry.process.wait()
            if entry.stopping:
                log.info("stopped run ended; its outcome is void", code=code)
                return
            silent = self.lease.lapsed(entry.started, time.monotonic())
            if silent is not None and await self._lease_revoked(key, entry, silent):
                return
            if outcome is None:
                outcome = {
                    "event": "failed",
                    "error_type": "WorkerExited",
                    "reason": f"the training process ended with code {code} and no result "
                    f"(killed by its {_memory(entry)} MiB memory limit or a signal?)",
                }
            if outcome["event"] == "result":
                await self._succeed(key, entry, outcome)
            elif outcome.get("retryable"):
                # Bounded: the scheduler repeats it in the job's requeued event.
                kind, why = outcome["error_type"], outcome["reason"][:500]
                await self._lose(
                    key, entry, kind, f"the run failed while the database was away ({kind}: {why})"
                )
            else:
                await self._fail(key, entry, outcome["error_type"], outcome["reason"])
        except Exception as exc:  # a run's failure must never stop the agent
            log.exception("run supervision failed")
            await self._fail(key, entry, type(exc).__name__, str(exc))
        finally:
            phase.reached(None)
            self.runs.pop(key, None)

    async def _lease_revoked(self, key: RunKey, entry: _Run, silent: float) -> bool:
        """After a silence over the lease (:mod:`lepton.services.trainer.lease`): True, and the
        run ended without a report of its outcome, if the scheduler took the lease back
        meanwhile (:mod:`lepton.services.trainer.revocation`) or if that cannot be told."""
        log = self.context.log.bind(job=key[0], epoch=key[1], silent_s=round(silent, 1))
        try:
            why = await revocation(
                self.context.publisher.kafka,
                self.context.codec,
                entry.instruction,
                key,
                _REVOCATION_TIMEOUT_S,
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            await self._lose(
                key,
                entry,
                "LeaseLapsed",
                f"the agent on {self.spec.node_id} was silent for {silent:.0f} s (over "
                f"LEPTON_TRAINER_LEASE_S={self.settings.trainer_lease_s:g}) and could not "
                f"read whether its lease still holds ({exc!r}); the run's result is void",
            )
            return True
        if why is None:
            log.info("lease held through the silence: reporting the run")
            return False
        log.info("lease revoked during the silence: the run's outcome is void", reason=why)
        await self._finish(key, "stopped", reason=why)
        return True

    async def _succeed(self, key: RunKey, entry: _Run, result: dict[str, Any]) -> None:
        assignment = entry.assignment
        pool = self.context.pool
        instruments.RUN_DURATION.labels("succeeded").observe(time.monotonic() - entry.started)
        if result["artifact"] is None:
            # A gang worker other than 0 ran its share of the search; worker 0 reports.
            await self._event(assignment, "progress", progress_percent=100.0, stage="searched")
            await self._finish(key, "succeeded")
            return
        instruments.count_trials(result["trials"])  # the whole search's, as worker 0 reports
        dataset = assignment["dataset"]
        assert dataset is not None, "the scheduler assigns training jobs with their dataset"
        task = assignment["task"]
        ready = {
            "model_id": entry.model_id,
            "job_id": assignment["job_id"],
            "attempt": assignment["attempt"],
            "tenant": assignment["tenant"],
            "model_name": task.get("model_name") or dataset["name"],
            "dataset": dataset,
            "problem_type": result["problem_type"],
            "target_column": task["target_column"],
            "feature_columns": result["feature_columns"],
            "algorithm": result["algorithm"],
            "parameters": json.dumps(result["parameters"], sort_keys=True),
            "scoring": result["scoring"],
            "cv_score": result["cv_score"],
            "cv_fold_scores": result["cv_fold_scores"],
            "trials": len(result["trials"]),
            "training_seconds": result["training_seconds"],
            "artifact_uri": result["artifact"]["uri"],
            "artifact_format": result["artifact"]["format"],
            "artifact_sha256": result["artifact"]["sha256"],
            "holdout_fraction": result["holdout_fraction"],
            "split_seed": result["split_seed"],
            "preparation": result["preparation"],
            "ready_at": _now_ms(),
            "lease": entry.lease,
        }
        if not entry.stopping:
            await patiently(
                lambda: catalog.record_model(pool, ready, key[1], result["trials"]),
                what=f"the model of run {key}",
                log=self.context.log,
            )
        if entry.stopping:
            # A stop (a cancel, say) came while the run was being reported: its model is
            # never announced, so the evaluator never promotes it.
            self.context.log.info("stopped while reporting; the model is void", job=key[0])
            return
        await self.context.publisher.publish(
            self.context.topic("lepton.models.ready"), entry.model_id, ready
        )
        await self._event(assignment, "succeeded", model_id=entry.model_id)
        # Marked after the report: a crash in between makes the next agent report the run
        # lost, which the scheduler ignores for a finished job; never a second success.
        await self._finish(key, "succeeded", model_id=entry.model_id)
        self.context.log.info("succeeded", job=key[0], model=entry.model_id)

    async def _fail(self, key: RunKey, entry: _Run, error_type: str, reason: str) -> None:
        instruments.RUN_DURATION.labels("failed").observe(time.monotonic() - entry.started)
        await self._event(entry.assignment, "failed", error_type=error_type, reason=reason)
        await self._finish(key, "failed", reason=reason)
        self.context.log.warning("failed", job=key[0], error_type=error_type, reason=reason)

    async def _lose(self, key: RunKey, entry: _Run, error_type: str, reason: str) -> None:
        """A run that failed for no fault of its job (an outage, a lapsed lease): reported
        lost, which the scheduler requeues if the lease is still the job's."""
        instruments.RUN_DURATION.labels("lost").observe(time.monotonic() - entry.started)
        await self._event(entry.assignment, "lost", error_type=error_type, reason=reason)
        await self._finish(key, "lost", reason=reason)
        self.context.log.warning("lost", job=key[0], error_type=error_type, reason=reason)

    async def _report_lost(self) -> None:
        for lost in await catalog.unfinished(self.context.pool, self.spec.node_id):
            reason = f"the agent on {self.spec.node_id} restarted while the run was in progress"
            await self._event(lost, "lost", reason=reason)
            key = (lost["job_id"], lost["lease_epoch"], lost["worker_index"])
            await catalog.finish_run(
                self.context.pool, self.spec.node_id, key, "lost", reason=reason
            )
            self.context.log.warning("lost", job=key[0], epoch=key[1])

    async def _event(
        self,
        run_of: Mapping[str, Any],
        kind: JobEventKind,
        *,
        reason: str | None = None,
        error_type: str | None = None,
        progress_percent: float | None = None,
        stage: str | None = None,
        model_id: str | None = None,
    ) -> None:
        """A ``lepton.JobEvent`` about a run, carrying its lease as the scheduler requires."""
        record = job_event(
            run_of["job_id"],
            kind,
            run_of["tenant"],
            attempt=run_of.get("attempt", 0),
            time_ms=_now_ms(),
            node_id=self.spec.node_id,
            lease_epoch=run_of["lease_epoch"],
            worker_index=run_of["worker_index"],
            reason=reason,
            error_type=error_type,
            progress_percent=progress_percent,
            stage=stage,
            model_id=model_id,
        )
        await self.context.publisher.publish(
            self.context.topic("lepton.jobs.events"), run_of["job_id"], record
        )


def _memory(entry: _Run) -> int:
    return int(entry.assignment["granted"]["memory_mib"])


def _worker_environment(threads: int, gpus: list[int]) -> dict[str, str]:
    # Thread pools sized to the granted cores; few malloc arenas, because each reserves
    # 64 MiB of address space and the worker runs under an address-space limit. CUDA sees
    # only the granted GPUs (none: an empty list hides them all).
    return os.environ | {
        "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus)),
        "OMP_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "MALLOC_ARENA_MAX": "2",
    }


def create_app(
    spec: NodeSpec, settings: TrainerSettings | None = None, interval_s: float = 1.0
) -> Service:
    agent = Agent(spec, settings or TrainerSettings(), interval_s)
    return Service(
        name=f"trainer-{spec.node_id}",
        actor="trainer",
        principal=Principal("node", spec.node_id),
        consumes=["lepton.jobs.assigned"],
        settings=agent.settings,
        migrations=_MIGRATIONS,
        handler_factory=agent.handler,
        background=[agent.send_heartbeats, agent.guard_workers],
        subscribe_key=spec.node_id,
    )


def _cli(
    node_id: Annotated[str, typer.Option(help="This node's unique id.")],
    region: Annotated[str, typer.Option(help="Region the node runs in.")] = "local",
    labels: Annotated[
        list[str] | None, typer.Option("--label", help="key=value, repeatable.")
    ] = None,
    cpus: Annotated[float | None, typer.Option(help="Cores offered (default: all).")] = None,
    memory: Annotated[int | None, typer.Option(help="MiB offered (default: all).")] = None,
    interval: Annotated[float, typer.Option(help="Heartbeat interval, seconds.")] = 1.0,
    gpus: Annotated[
        int | None, typer.Option(help="NVIDIA GPUs offered (default: all nvidia-smi finds).")
    ] = None,
) -> None:
    parsed = dict(label.split("=", 1) for label in labels or [] if "=" in label)
    nvidia_smi = shutil.which("nvidia-smi")
    try:
        offered = offered_gpus(discover_gpus(nvidia_smi), gpus)
    except (GpuDiscoveryError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--gpus") from None
    spec = NodeSpec(node_id, region, parsed, cpus, memory, gpus=offered, nvidia_smi=nvidia_smi)
    run(lambda: create_app(spec, interval_s=interval))


def main() -> None:
    typer.run(_cli)
