"""One job's whole trace in a real trace backend (Jaeger v2, in memory, on this machine).

The services run as processes the way ``lepton up`` starts them, with
``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at Jaeger; the job is submitted with ``lepton
submit --wait``, as a user would. Jaeger must then hold one trace that runs from the
submit to the promotion, each step the child of the one that caused it:

submit → send jobs.requested → process (scheduler) → queued → send jobs.assigned →
process (trainer) → train → loading … storing, send models.ready → process (evaluator)
→ evaluate, promote → send models.promoted

and the services' log lines about the job carry that trace's id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lepton.bus import ensure_topics
from lepton.config import KafkaAccess
from lepton.contract.topics import Namespace
from tests.integration.processes import BIN, data_service_env, lepton_cli, running
from tests.tracing.jaeger import Jaeger, Span, jaeger

pytestmark = pytest.mark.integration


def _houses(path: Path) -> None:
    """A small regression dataset: enough rows for a holdout and a two-trial search."""
    rng = np.random.default_rng(7)
    area = rng.uniform(40, 200, 240)
    rooms = rng.integers(1, 6, 240)
    price = 30_000 * area + 50_000 * rooms + rng.normal(0, 100_000, 240)
    pd.DataFrame({"area": area, "rooms": rooms, "price": price}).to_csv(path, index=False)


async def _whole_trace(backend: Jaeger, job_id: str, promoted: str) -> tuple[str, list[Span]]:
    """The job's trace once Jaeger holds all of it: the promotion's send, and the parent of
    every span. Spans are exported in batches as they end, and a parent ends after its
    children, so the promotion's send can arrive a batch before the promotion itself.
    After 90 s, what Jaeger holds by then, for the assertions to say what is missing."""
    seen: tuple[str, list[Span]] | None = None
    try:
        async with asyncio.timeout(90):
            while True:  # bounded: polling a query API, there is no event to await
                found = await backend.traces("lepton-cli", **{"lepton.job_id": job_id})
                if found:
                    seen = found[0], await backend.spans(found[0])
                    held = {s.span_id for s in seen[1]}
                    whole = all(s.parent is None or s.parent in held for s in seen[1])
                    if whole and any(s.name == f"send {promoted}" for s in seen[1]):
                        return seen
                await asyncio.sleep(0.5)
    except TimeoutError:
        if seen is None:
            raise
        return seen


async def test_one_trace_runs_from_submit_to_promotion(
    kafka: KafkaAccess, database_for: Callable[[str], str], tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    names = Namespace(prefix)
    await ensure_topics(kafka, names.all())
    tenant, job_id = f"tr{uuid.uuid4().hex[:6]}", f"traced-{uuid.uuid4().hex[:8]}"
    _houses(tmp_path / "houses.csv")
    async with jaeger(tmp_path) as backend:
        traced = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": backend.otlp_endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans reach Jaeger soon after the work
        }
        env = data_service_env(kafka, database_for("client"), prefix, tmp_path) | traced
        commands = [
            ([str(BIN / "lepton-ingest")], "health"),
            ([str(BIN / "lepton-scheduler")], "health"),
            ([str(BIN / "lepton-evaluator")], "health"),
            ([str(BIN / "lepton-trainer"), "--node-id", "n1", "--cpus", "1"], "health"),
        ]
        async with running(commands, env, database_for) as services:
            client = env | {"LEPTON_DATABASE_URL": database_for("client")}
            ingested = await asyncio.to_thread(
                lepton_cli,
                *("data", "ingest", str(tmp_path / "houses.csv"), "--name", "houses"),
                *("--tenant", tenant),
                env=client,
            )
            assert ingested.returncode == 0, ingested.stderr
            submitted = await asyncio.to_thread(
                lepton_cli,
                *("submit", "--tenant", tenant, "--dataset", "houses", "--target", "price"),
                *("--trials", "2", "--job-id", job_id, "--wait", "--timeout", "240"),
                env=client,
            )
            assert submitted.returncode == 0, submitted.stdout + submitted.stderr
            assert "succeeded" in submitted.stdout, submitted.stdout
            trace_id, spans = await _whole_trace(
                backend, job_id, names.topic("lepton.models.promoted").name
            )
            plans = [
                s
                for plan_trace in await backend.traces("lepton-scheduler", "plan")
                for s in await backend.spans(plan_trace)
                if s.name == "plan"
            ]

    by_id = {s.span_id: s for s in spans}

    def one(name: str, service: str, parent: Span | None = None) -> Span:
        found = [
            s
            for s in spans
            if s.name == name
            and s.service == service
            and (parent is None or s.parent == parent.span_id)
        ]
        under = f" under {parent.name}" if parent else ""
        assert len(found) == 1, (
            f"{len(found)} spans {name!r} of {service}{under}; the trace has "
            + ", ".join(sorted(f"{s.service}:{s.name}" for s in spans))
        )
        return found[0]

    def topic(declared: str) -> str:
        return names.topic(declared).name

    submit = one("submit", "lepton-cli")
    assert submit.parent is None, "the submit starts the trace"
    requested = one(f"send {topic('lepton.jobs.requested')}", "lepton-cli", submit)
    intake = one(f"process {topic('lepton.jobs.requested')}", "lepton-scheduler", requested)
    queued = one("queued", "lepton-scheduler", intake)
    assert queued.tags["lepton.outcome"] == "assigned"
    events = [
        s
        for s in spans
        if s.name == f"send {topic('lepton.jobs.events')}" and s.parent == queued.span_id
    ]
    assert len(events) == 2, "the queued and the assigned job events continue the wait"
    instruction = one(f"send {topic('lepton.jobs.assigned')}", "lepton-scheduler", queued)
    assignment = one(f"process {topic('lepton.jobs.assigned')}", "lepton-trainer", instruction)
    train = one("train", "lepton-trainer", assignment)
    for phase in ("loading", "preparing", "searching", "refitting", "storing"):
        one(phase, "lepton-trainer", train)
    ready = one(f"send {topic('lepton.models.ready')}", "lepton-trainer", train)
    evaluation = one(f"process {topic('lepton.models.ready')}", "lepton-evaluator", ready)
    one("evaluate", "lepton-evaluator", evaluation)
    promote = one("promote", "lepton-evaluator", evaluation)
    assert promote.tags["lepton.verdict"] == "promoted"
    one(f"send {topic('lepton.models.promoted')}", "lepton-evaluator", promote)

    # Every span hangs off the submit: no orphan, no second root.
    for s in spans:
        if s is not submit:
            assert s.parent in by_id, f"{s.service}:{s.name} has no parent in the trace"
    # PostgreSQL queries are spans too (asyncpg's instrumentation), in the services' steps.
    queries = [
        s for s in spans if "postgresql" in (s.tags.get("db.system"), s.tags.get("db.system.name"))
    ]
    assert {s.service for s in queries} >= {"lepton-trainer", "lepton-evaluator"}

    # The placement decided for many jobs at once: its span is in a trace of its own,
    # linked to the wait of each job it placed.
    linked = [s for s in plans if (trace_id, queued.span_id) in s.links]
    assert linked, "no placement span links to the job's wait in the queue"

    # The services' log lines written while handling the job carry its trace id.
    trainer = services[3]  # its log read to its stop
    started = [e for e in trainer.logged("started") if e.get("job") == job_id]
    assert started, "the trainer logged no start of the job"
    assert started[0]["trace_id"] == trace_id
    assert started[0]["span_id"] in by_id
