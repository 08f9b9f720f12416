"""The Python SDK: submit work to Lepton, follow it, and read what the cluster knows.

::

    from lepton import JobRequest, LeptonClient, TrainingTask

    async with LeptonClient(tenant="acme") as client:
        job_id = await client.submit(
            JobRequest(tenant="acme", dataset="houses", task=TrainingTask(target_column="price"))
        )
        async for event in client.events(job_id):  # ends with the job's outcome
            print(event.kind, event.progress_percent)
        outcome = await client.wait(job_id, timeout_s=600)
        print(outcome.state, outcome.model and outcome.model["model_id"])

The client talks to Lepton the way every service does: requests are Avro events published
with the broker's acknowledgement awaited, answers are read from the answer topics. Lists
of nodes, jobs and models come from the monitor's JSON API (the read model built from every
topic; ``LEPTON_MONITOR_URL``), datasets from PostgreSQL under row-level security as the
client's tenant. Kafka, PostgreSQL and the monitor are each reached on first use, so a
client that only lists nodes needs neither Kafka nor PostgreSQL.

:class:`LeptonClient` is a facade: each of those three is a transport of its own module
(:mod:`lepton.sdk._kafka`, :mod:`lepton.sdk._catalog`, :mod:`lepton.sdk._monitor`), and
the client's methods say what to ask of which.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import time
from typing import TYPE_CHECKING, Any

from lepton.bus import span
from lepton.config import Settings
from lepton.contract.topics import Namespace
from lepton.errors import (
    DatasetRejected,
    LeptonError,
    LeptonTimeout,
    MonitorUnavailable,
    PredictionFailed,
)
from lepton.runtime import identity
from lepton.sdk._catalog import CatalogTransport
from lepton.sdk._checks import DatasetUnchecked, check_dataset
from lepton.sdk._jobs import CANCEL_TIMEOUT_S, CLOCK_SKEW_MS, Story, cancel_job, read_story
from lepton.sdk._kafka import Answers, KafkaTransport, TailedEvent
from lepton.sdk._monitor import MonitorTransport
from lepton.sdk._planning import Placement, place
from lepton.sdk.builders import MAX_PREDICT_ROWS, DatasetRequest, JobRequest, PredictRequest
from lepton.sdk.results import (
    Cancellation,
    JobEvent,
    JobHistory,
    JobOutcome,
    ModelVerdict,
    PredictionResult,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping

    from lepton.contract.codec import Record
    from lepton.contract.identity import Principal
    from lepton.data.catalog import DatasetInfo, DatasetVersion

__all__ = [
    "DatasetRejected",
    "DatasetUnchecked",
    "LeptonClient",
    "LeptonError",
    "LeptonTimeout",
    "MonitorUnavailable",
    "Placement",
    "PredictionFailed",
    "TailedEvent",
]

# How long wait() and evaluation() wait unless told: a training job may take long, but no
# wait of the SDK is unbounded.
JOB_TIMEOUT_S = 3600.0
EVALUATION_TIMEOUT_S = 600.0


class LeptonClient:
    """Submit jobs and datasets, follow jobs, score records, list what the cluster knows.

    Use it as ``async with LeptonClient(...) as client``. ``settings`` default to the
    environment (``LEPTON_*``); ``bootstrap``, ``database_url`` and ``monitor_url``
    override them, and without them the local stack's addresses are used. ``tenant`` is
    who reads datasets and models, predicts and rolls back; ``user`` is recorded as who
    asked in requests (default: the login name), while the catalog's audit names the
    database login that read or shared.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap: str | None = None,
        database_url: str | None = None,
        monitor_url: str | None = None,
        tenant: str | None = None,
        user: str | None = None,
        source: str = "lepton/sdk",
    ) -> None:
        given: dict[str, Any] = {
            "kafka_bootstrap": bootstrap,
            "database_url": database_url,
            "monitor_url": monitor_url,
        }
        base = settings or Settings()
        self.settings = base.model_copy(
            update={name: value for name, value in given.items() if value is not None}
        )
        self.tenant = tenant
        self.user = user or getpass.getuser()
        self.names = Namespace(self.settings.topic_prefix)
        self._kafka = KafkaTransport(self.settings, source)
        self._catalog = CatalogTransport(self.settings)
        self._monitor = MonitorTransport(self.settings)
        self._submitted_at: dict[str, int] = {}

    async def __aenter__(self) -> LeptonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close whatever connections were opened."""
        await self._kafka.close()
        await self._catalog.close()
        await self._monitor.close()

    # --- connections, opened on first use ---------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The Kafka bootstrap servers: the settings', else the local stack's."""
        return self._kafka.access.bootstrap

    def _acting_tenant(self) -> str:
        if not self.tenant:
            raise LeptonError(
                "this call acts for a tenant and none was given",
                "LeptonClient(tenant=...), or --tenant on the command line",
            )
        return self.tenant

    # --- jobs -------------------------------------------------------------------------

    async def submit(self, job: JobRequest, *, check: bool = True) -> str:
        """Publish a job request and return its id once the broker has acknowledged it.

        Raises :class:`lepton.sdk.builders.InvalidRequest` for a job the scheduler would
        reject, before anything is sent. With ``check`` (the default), a job naming a
        dataset is first checked against the dataset catalog, as its tenant: a dataset that
        does not exist or that the tenant may not read (:class:`lepton.DatasetNotFound`,
        :class:`lepton.AccessDenied`) or a target column it lacks (``InvalidRequest``) is
        refused with the closest names; if the catalog cannot be reached the job is sent
        anyway with a :class:`DatasetUnchecked` warning (see :mod:`lepton.sdk._checks`).
        ``check=False`` sends a job for a dataset still to be ingested: the scheduler
        waits for it.
        """
        job.check()
        if check and job.dataset is not None:
            await check_dataset(self._catalog, job)
        if job.submitted_by is None:
            job = job.model_copy(update={"submitted_by": self.user})
        # The first span of the job's trace, which runs on to its model's promotion.
        traced = {"lepton.job_id": job.job_id, "lepton.tenant": job.tenant}
        with span("submit", attributes=traced):
            await self._kafka.publish("lepton.jobs.requested", job.job_id, job.to_record())
        self._submitted_at[job.job_id] = job.submitted_at
        return job.job_id

    async def events(self, job_id: str) -> AsyncIterator[JobEvent]:
        """The job's events as they happen (those already past first); the iteration
        ends after the event that decides its outcome.

        The outcome is decided as the scheduler decides it (its journal's fold): a
        report under a lease the job no longer holds is passed on but ends nothing.
        """
        story = Story(job_id)
        records = self._kafka.keyed("lepton.jobs.events", job_id, self._since(job_id))
        async with contextlib.aclosing(records):
            async for record in records:
                event = story.add(record)
                if event is not None:
                    yield event
                if story.outcome is not None:
                    return

    async def job_history(self, job_id: str) -> JobHistory:
        """The job's request and every event about it on ``lepton.jobs.events`` so far,
        with its state as the scheduler's journal decides it. Read from the log itself
        (the monitor keeps each job's latest state, not its story), from the request's
        submit time when the log still has the request, else from the oldest event kept.
        Raises :class:`RequestError` for a job the log knows nothing of."""
        async with read_story(self._kafka, job_id) as (story, _):
            return story.history()

    async def cancel(
        self, job_id: str, *, reason: str | None = None, timeout_s: float = CANCEL_TIMEOUT_S
    ) -> Cancellation:
        """Cancel a job: a queued one leaves the queue, a running one is stopped on every
        node it runs on and its resources freed; returns once the scheduler has said
        ``cancelled``. A job that already ended is left as it is (``sent`` False, its
        ``state`` says how it ended); cancelling twice is the same as once.

        The request acts for the client's tenant, else the job's own (which only the
        tenant itself or an operator may do). A request the services refuse (a tenant
        cancelling another tenant's job) is still sent, so that it is audited as every
        refused record is, and raises :class:`RequestError` with their reason. Raises
        :class:`LeptonTimeout` if no outcome came within ``timeout_s`` (the request
        stands: a scheduler that was away answers it when it starts).
        """

        def signer() -> Principal:
            return identity.signing_key(self.settings, identity.LOCAL_OPERATOR).principal

        asked = f"cancelled by {self.user}" + (f": {reason}" if reason else "")
        return await cancel_job(self._kafka, job_id, self.tenant, signer, asked, timeout_s)

    def _since(self, job_id: str) -> int | None:
        submitted = self._submitted_at.get(job_id)
        return submitted - CLOCK_SKEW_MS if submitted is not None else None

    async def wait(self, job_id: str, *, timeout_s: float = JOB_TIMEOUT_S) -> JobOutcome:
        """The job's outcome: how it ended and, for a training job that succeeded, its
        ``lepton.ModelReady``. Raises :class:`LeptonTimeout` after ``timeout_s`` seconds
        (an hour unless given: no wait of the SDK is unbounded)."""
        try:
            async with asyncio.timeout(timeout_s):
                last: JobEvent | None = None
                async for event in self.events(job_id):
                    last = event
                assert last is not None  # events() only ends after an event
                model = None
                if last.kind == "succeeded" and last.model_id is not None:
                    model = await self._model_ready(job_id, last.model_id)
                return JobOutcome(job_id, last.kind, last, model)
        except TimeoutError:
            raise LeptonTimeout(
                f"job {job_id} did not finish within {timeout_s:.0f} s",
                "`lepton jobs --watch` shows where it is; is every service up (`lepton up`)?",
            ) from None

    async def _model_ready(self, job_id: str, model_id: str) -> Record:
        readies = self._kafka.keyed("lepton.models.ready", model_id, self._since(job_id))
        async with contextlib.aclosing(readies):
            return await anext(record async for record in readies if record["job_id"] == job_id)

    @contextlib.asynccontextmanager
    async def follow_jobs(self) -> AsyncIterator[AsyncIterator[JobEvent]]:
        """Every job's events from now on: positions are taken on entering the block, so
        a snapshot read inside it (:meth:`jobs`) misses nothing that follows."""
        async with self._kafka.records_from_now("lepton.jobs.events") as records:
            yield (JobEvent.from_record(record) async for record in records)

    # --- data -------------------------------------------------------------------------

    async def ingest(
        self,
        request: DatasetRequest,
        *,
        timeout_s: float = 300.0,
        on_sent: Callable[[str], None] | None = None,
    ) -> Record:
        """Ask the ingest service to store a dataset version; returns its
        ``lepton.DataReady`` record, or raises :class:`DatasetRejected`; raises
        :class:`LeptonTimeout` after ``timeout_s`` without an answer. ``on_sent`` is told
        the request's id once the broker has it (a caller may say what it waits for)."""
        if request.requested_by is None:
            request = request.model_copy(update={"requested_by": self.user})
        async with self._kafka.answers("lepton.data.ready", "lepton.data.rejected") as answers:
            await self._kafka.publish("lepton.data.requested", request.key, request.to_record())
            if on_sent is not None:
                on_sent(request.request_id)
            try:
                kind, answer = (await answers.collect({request.request_id}, timeout_s))[
                    request.request_id
                ]
            except TimeoutError:
                raise LeptonTimeout(
                    f"the ingest service did not answer request {request.request_id} "
                    f"(dataset {request.dataset!r}) within {timeout_s:.0f} s",
                    "is it running (`lepton status`)? A large source may need a longer timeout",
                ) from None
        if kind == "lepton.DataRejected":
            raise DatasetRejected(answer["code"], answer["reason"])
        return answer

    async def datasets(self) -> list[DatasetInfo]:
        """The latest version of every dataset the tenant owns or that is shared with it."""
        from lepton.data import catalog

        async with self._catalog.session() as pool:
            return await catalog.list_datasets(pool, reader_tenant=self._acting_tenant())

    async def dataset(self, name: str, *, owner: str | None = None) -> list[DatasetVersion]:
        """Every version of one dataset the tenant may read, newest first."""
        from lepton.data import catalog

        async with self._catalog.session() as pool:
            return await catalog.dataset_versions(
                pool, reader_tenant=self._acting_tenant(), name=name, owner=owner
            )

    async def share(self, dataset: str, *, with_tenant: str, region: str | None = None) -> None:
        """Let ``with_tenant`` read every version of the tenant's dataset (audited)."""
        from lepton.data import catalog

        async with self._catalog.session() as pool:
            await catalog.share_dataset(
                pool,
                owner_tenant=self._acting_tenant(),
                name=dataset,
                with_tenant=with_tenant,
                region=region,
            )

    async def revoke(self, dataset: str, *, with_tenant: str, region: str | None = None) -> None:
        """Take a share back (the one for ``region``, or every region's); audited."""
        from lepton.data import catalog

        async with self._catalog.session() as pool:
            await catalog.revoke_dataset(
                pool,
                owner_tenant=self._acting_tenant(),
                name=dataset,
                with_tenant=with_tenant,
                region=region,
            )

    # --- the cluster -------------------------------------------------------------------

    async def plan(self, job: JobRequest) -> Placement:
        """Where ``job`` would go now, or why it cannot; publishes nothing. Replays the
        heartbeats and job topics into a scratch copy of the scheduler's core."""
        return await place(job, self._kafka.access, self.names)

    async def tail(
        self,
        topic: str,
        *,
        from_beginning: bool = False,
        key: str | None = None,
        idle_timeout_s: float | None = None,
    ) -> AsyncGenerator[TailedEvent, None]:
        """The events of a Lepton ``topic`` (its declared name, e.g.
        ``lepton.jobs.events``) as they come, decoded; from the oldest one with
        ``from_beginning``, only those with ``key`` if given. Ends after
        ``idle_timeout_s`` without a new event, else never. An event that cannot be
        decoded comes with :attr:`TailedEvent.error` instead of its record."""
        events = self._kafka.tail(
            topic, from_beginning=from_beginning, key=key, idle_timeout_s=idle_timeout_s
        )
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    # --- models -----------------------------------------------------------------------

    async def predict(
        self, model: str, rows: Iterable[Mapping[str, Any]], *, timeout_s: float = 60.0
    ) -> PredictionResult:
        """Score ``rows`` with ``model`` (``name``, ``name@champion`` or ``name@<model
        id>``) through the evaluator's request/reply topics.

        More than :data:`~lepton.sdk.builders.MAX_PREDICT_ROWS` rows go in several requests:
        the first one decides the model version, the others name that version, so every
        row is scored by the same model even if the champion changes meanwhile. Raises
        :class:`PredictionFailed` for an error answer, :class:`LeptonTimeout` if none came.
        """
        tenant = self._acting_tenant()
        given = [dict(row) for row in rows]
        if not given:
            raise LeptonError("there are no rows to score", "give at least one record")
        chunks = [given[i : i + MAX_PREDICT_ROWS] for i in range(0, len(given), MAX_PREDICT_ROWS)]
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with self._kafka.answers("lepton.predict.results") as answers:
            first = await self._ask(answers, tenant, model, chunks[:1], deadline)
            pinned = f"{model.split('@', 1)[0]}@{first[0]['model_id']}"
            rest = await self._ask(answers, tenant, pinned, chunks[1:], deadline)
        results = first + rest
        return PredictionResult(
            model_name=results[0]["model_name"],
            model_id=results[0]["model_id"],
            problem_type=results[0]["problem_type"],
            predictions=[p for result in results for p in result["predictions"]],
            probabilities=[p for result in results for p in result["probabilities"]],
            warnings=sorted({w for result in results for w in result["warnings"]}),
            request_ids=[result["request_id"] for result in results],
        )

    async def _ask(
        self,
        answers: Answers,
        tenant: str,
        model: str,
        chunks: list[list[dict[str, Any]]],
        deadline: float,
    ) -> list[Record]:
        if not chunks:
            return []
        requests = [
            PredictRequest(tenant=tenant, model=model, rows=chunk, requested_by=self.user)
            for chunk in chunks
        ]
        await self._kafka.publish_many(
            "lepton.predict.requested", [(r.request_id, r.to_record()) for r in requests]
        )
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            found = await answers.collect({r.request_id for r in requests}, remaining)
        except TimeoutError:
            raise LeptonTimeout(
                f"the evaluator did not answer {len(requests)} prediction request(s) "
                f"for {model!r} in time",
                "is the evaluator running (`lepton up`)? A large input may need more time",
            ) from None
        results = [found[r.request_id][1] for r in requests]
        for result in results:
            if result["error"] is not None:
                raise PredictionFailed(result["error"]["code"], result["error"]["message"])
        return results

    async def evaluation(
        self, model: Mapping[str, Any], *, timeout_s: float = EVALUATION_TIMEOUT_S
    ) -> ModelVerdict:
        """The evaluator's answer for a model (its ``lepton.ModelReady`` record, as
        :meth:`wait` returns it): the evaluation and the champion-and-challenger verdict.

        ``verdict`` is None when the evaluator judged no promotion (a finding with code
        ``promotion_policy`` says why). Raises :class:`LeptonTimeout` after ``timeout_s``.
        """
        since = int(model["ready_at"]) - CLOCK_SKEW_MS
        model_id = str(model["model_id"])
        try:
            async with asyncio.timeout(timeout_s):
                evaluations = self._kafka.keyed("lepton.models.evaluated", model_id, since)
                async with contextlib.aclosing(evaluations):
                    evaluated = await anext(evaluations)
                if any(f["code"] == "promotion_policy" for f in evaluated["findings"]):
                    return ModelVerdict(evaluated, None)
                key = f"{model['tenant']}/{model['model_name']}"
                verdicts = self._kafka.keyed("lepton.models.promoted", key, since)
                async with contextlib.aclosing(verdicts):
                    async for verdict in verdicts:
                        if verdict["model_id"] == model_id and verdict["decided_by"] is None:
                            return ModelVerdict(evaluated, verdict)
        except TimeoutError:
            pass
        raise LeptonTimeout(
            f"model {model_id} was not evaluated within {timeout_s:.0f} s",
            "is the evaluator running (`lepton up`)? Its log says why a model was refused",
        )

    async def rollback(self, model_name: str, to_model_id: str, *, by: str | None = None) -> None:
        """Make an earlier version of a model the tenant's champion again: publishes a
        ``lepton.ModelPromoted`` with verdict ``rolled_back``, decided by ``by`` (default:
        the client's user), which the evaluator applies."""
        tenant = self._acting_tenant()
        board = [
            entry for entry in await self.models(tenant=tenant) if entry["model_name"] == model_name
        ]
        if not board:
            raise LeptonError(
                f"{tenant} has no model named {model_name!r}",
                f"`lepton models --tenant {tenant}` lists them",
            )
        entry = board[0]
        versions = {version["model_id"]: version for version in entry["models"]}
        if to_model_id not in versions:
            raise LeptonError(
                f"{to_model_id!r} is not an evaluated version of {model_name!r}",
                f"`lepton models --tenant {tenant}` lists its versions",
            )
        if entry["champion"] == to_model_id:
            raise LeptonError(f"{to_model_id} is already the champion of {model_name!r}")
        metric = entry["primary_metric"] or "cv_score"
        champion = versions.get(entry["champion"] or "")
        who = by or self.user
        record = {
            "tenant": tenant,
            "model_name": model_name,
            "model_id": to_model_id,
            "verdict": "rolled_back",
            "previous_champion_id": entry["champion"],
            "policy": json.dumps({"manual": "rollback"}),
            "primary_metric": metric,
            "challenger_score": _score(versions[to_model_id], metric),
            "champion_score": _score(champion, metric) if champion is not None else None,
            "guards": [],
            "evidence": {"method": "none"},
            "reason": f"rolled back to {to_model_id} by {who}",
            "decided_by": who,
            "decided_at": time.time_ns() // 1_000_000,
        }
        await self._kafka.publish("lepton.models.promoted", f"{tenant}/{model_name}", record)

    # --- the monitor's read model -----------------------------------------------------

    async def nodes(self, *, state: str | None = None) -> list[dict[str, Any]]:
        """Compute nodes as their heartbeats tell (``state``: alive, dead or all)."""
        found: list[dict[str, Any]] = (await self._monitor.get("/api/nodes", state=state))["nodes"]
        return found

    async def jobs(
        self, *, state: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Jobs, most recently changed first."""
        found: list[dict[str, Any]] = (
            await self._monitor.get("/api/jobs", state=state, tenant=tenant, limit=limit)
        )["jobs"]
        return found

    async def models(self, *, tenant: str | None = None) -> list[dict[str, Any]]:
        """Per tenant and model name: its evaluated versions, ranked, and the champion."""
        found: list[dict[str, Any]] = (await self._monitor.get("/api/models", tenant=tenant))[
            "leaderboard"
        ]
        return found


def _score(version: Mapping[str, Any], metric: str) -> float:
    value = version.get("metrics", {}).get(metric, version.get("cv_score"))
    return float(value) if value is not None else float("nan")
