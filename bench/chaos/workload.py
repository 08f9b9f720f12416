"""The work a chaos run submits, and the ledger of what became of it.

Requests are published as the admin (the operator's Kafka user) and signed as their
tenants (:func:`lepton.testing.impersonating`): small CSV ingests under the ingest root and
training jobs on an ingested dataset (the fastest algorithm the trainer offers). A
recorder reads every answer topic, sealed answers opened with the master key
(:func:`lepton.testing.service_codec`), and the dead-letter topics.

An item is *completed* once it has a terminal outcome: ``data.ready`` or ``data.rejected``
for an ingest, ``succeeded``/``failed``/``cancelled``/``rejected`` for a job, and each
model one of our jobs produced is an item of its own, completed by ``models.evaluated``
(the evaluator's share of the work). Its *effects*
are the distinct outcomes it had (a dataset version, a rejection code, a terminal event
under a lease epoch, a model id): a redelivery of the same outcome is one effect, two
models for one job are two. More than one effect is a duplicated effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer

from lepton.bus import Publisher
from lepton.contract.identity import IdentityKey
from lepton.contract.topics import ALL_TOPICS, DLQ_SUFFIX, Namespace, dead_letter_topic
from lepton.sdk.builders import (
    DatasetRef,
    DatasetRequest,
    JobRequest,
    Resources,
    Source,
    TrainingTask,
)
from lepton.testing import impersonating, service_codec

if TYPE_CHECKING:
    from pathlib import Path

    from lepton.config import KafkaAccess

TENANTS = ("chaos-a", "chaos-b")
BASE_DATASET = "base"
TERMINAL_JOB_EVENTS = frozenset({"succeeded", "failed", "cancelled", "rejected"})
ANSWERS = (
    "lepton.data.ready",
    "lepton.data.rejected",
    "lepton.jobs.events",
    "lepton.models.ready",
    "lepton.models.evaluated",
    "lepton.alerts",
)
PUBLISH_TIMEOUT_S = 10.0
GARBAGE_HEADER = "chaos_garbage"


@dataclass(slots=True)
class Item:
    """One unit of submitted work."""

    kind: str  # "ingest", "job", "hostile", "probe"
    id: str  # request id, or job id
    run: str
    submitted_at: float
    label: str = ""  # what a hostile file is


@dataclass(slots=True)
class Ledger:
    """Everything submitted and everything the answer topics said about it."""

    items: dict[str, Item] = field(default_factory=dict)
    # item id -> effect -> when it was first seen (monotonic)
    effects: dict[str, dict[tuple[Any, ...], float]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    # job id -> (kind, node id, when) of each of its events
    job_events: dict[str, list[tuple[str, str | None, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    alerts: list[tuple[dict[str, Any], float]] = field(default_factory=list)
    # garbage id -> copies found on its dead-letter topic (a copy keeps the original's
    # headers, among them GARBAGE_HEADER)
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # source topic -> dead letters of messages that were not garbage
    dead_legit: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # run -> garbage id -> how many services should dead-letter it
    garbage_expected: dict[str, dict[str, int]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # run -> publishes
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, item: Item) -> None:
        self.items[item.id] = item

    def completed(self, item_id: str) -> bool:
        return any(effect[0] != "model" for effect in self.effects.get(item_id, {}))

    def duplicated(self, item_id: str) -> int:
        found = self.effects.get(item_id, {})
        outcomes = sum(1 for effect in found if effect[0] != "model")
        models = sum(1 for effect in found if effect[0] == "model")
        return max(0, outcomes - 1) + max(0, models - 1)

    def of_run(self, run: str, kinds: tuple[str, ...] = ("ingest", "job")) -> list[Item]:
        return [item for item in self.items.values() if item.run == run and item.kind in kinds]

    def pending(self, run: str, kinds: tuple[str, ...] = ("ingest", "job")) -> list[Item]:
        return [item for item in self.of_run(run, kinds) if not self.completed(item.id)]

    async def until_settled(self, run: str, timeout_s: float, kinds: tuple[str, ...]) -> bool:
        """True once every item of ``run`` completed; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.pending(run, kinds):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), min(left, 1.0))
        return True

    def record(self, declared: str, record: dict[str, Any]) -> None:
        now = time.monotonic()
        if declared == "lepton.data.ready":
            self.effects[record["request_id"]].setdefault(("ready", record["version"]), now)
        elif declared == "lepton.data.rejected":
            self.effects[record["request_id"]].setdefault(("rejected", record["code"]), now)
        elif declared == "lepton.jobs.events":
            kind = record["kind"]
            self.job_events[record["job_id"]].append((kind, record.get("node_id"), now))
            if kind in TERMINAL_JOB_EVENTS:
                effect = (kind, record.get("lease_epoch"))
                self.effects[record["job_id"]].setdefault(effect, now)
        elif declared == "lepton.models.ready":
            self.effects[record["job_id"]].setdefault(("model", record["model_id"]), now)
            job = self.items.get(record["job_id"])
            if job is not None and record["model_id"] not in self.items:
                # The evaluator's part of the work: each model of ours gets evaluated.
                self.add(Item("evaluation", record["model_id"], job.run, now))
        elif declared == "lepton.models.evaluated":
            effect = ("evaluated", record["evaluated_at"])
            self.effects[record["model_id"]].setdefault(effect, now)
        elif declared == "lepton.alerts":
            self.alerts.append((record, now))
        self.arrived.set()


def _header(headers: Any, name: str) -> str | None:
    found = [value for key, value in headers or () if key == name]
    return found[-1].decode() if found else None


async def record(kafka: KafkaAccess, identity: IdentityKey, ledger: Ledger) -> None:
    """Forever: every answer and every dead letter into ``ledger``. Survives broker
    outages (the consumer reconnects; a failed start is tried again)."""
    codec = service_codec(identity)
    declared = {name: name for name in ANSWERS}
    dead = {dead_letter_topic(t.name) for t in ALL_TOPICS}
    while True:
        consumer = AIOKafkaConsumer(
            *declared, *dead, **kafka.aiokafka(), auto_offset_reset="earliest", group_id=None
        )
        try:
            await consumer.start()
            async for message in consumer:
                if message.topic in dead:
                    garbage = _header(message.headers, GARBAGE_HEADER)
                    if garbage is None:
                        ledger.dead_legit[message.topic.removesuffix(DLQ_SUFFIX)] += 1
                    else:
                        ledger.dead_letters[garbage] += 1
                    ledger.arrived.set()
                    continue
                try:
                    decoded = codec.decode(message.value)[1]
                except Exception:  # garbage on an answer topic is not ours to judge
                    continue
                ledger.record(declared[message.topic], decoded)
        except asyncio.CancelledError:
            raise
        except Exception:  # an outage: start again
            await asyncio.sleep(1)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()


@dataclass(slots=True)
class Workload:
    """Submits work to the private stack and notes it in the ledger."""

    kafka: KafkaAccess
    identity: IdentityKey
    inbox: Path
    ledger: Ledger
    rng: random.Random
    publisher: Publisher | None = None
    names: Namespace = field(default_factory=Namespace)
    count: int = 0

    async def __aenter__(self) -> Workload:
        self.publisher = Publisher(
            self.kafka,
            service_codec(self.identity),
            source="chaos",
            signer=impersonating(self.identity),
        )
        await self.publisher.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publisher.stop(), 30)

    def csv(self, rows: int = 60) -> Path:
        """A small regression table: y = 2 x1 - x2 + noise."""
        self.count += 1
        path = self.inbox / f"load-{self.count}-{uuid.uuid4().hex[:6]}.csv"
        lines = ["x1,x2,y"]
        for _ in range(rows):
            x1, x2 = self.rng.uniform(0, 10), self.rng.uniform(0, 10)
            lines.append(f"{x1:.3f},{x2:.3f},{2 * x1 - x2 + self.rng.gauss(0, 0.1):.3f}")
        path.write_text("\n".join(lines) + "\n")
        return path

    async def _publish(self, run: str, declared: str, key: str, record: dict[str, Any]) -> bool:
        assert self.publisher is not None
        try:
            await asyncio.wait_for(
                self.publisher.publish(self.names.topic(declared), key, record), PUBLISH_TIMEOUT_S
            )
        except Exception:  # not acknowledged: never submitted
            self.ledger.refused[run] += 1
            return False
        return True

    async def ingest(
        self,
        run: str,
        source: Source | None = None,
        *,
        dataset: str | None = None,
        kind: str = "ingest",
        label: str = "",
        tenant: str | None = None,
    ) -> str | None:
        """Request an ingest (of a fresh small CSV unless ``source`` is given); its id
        once the broker acknowledged it."""
        request = DatasetRequest(
            tenant=tenant or self.rng.choice(TENANTS),
            dataset=f"load-{self.count + 1}",
            sources=[source or Source.file(self.csv())],
        )
        key, record = request.key, request.to_record()
        if dataset is not None:
            # Named after the SDK's checks, which refuse a hostile name before it is sent:
            # the service's own edge is what a chaos run tries.
            key, record = f"{record['tenant']}/{dataset}", record | {"dataset": dataset}
        submitted = time.monotonic()
        if not await self._publish(run, "lepton.data.requested", key, record):
            return None
        self.ledger.add(Item(kind, request.request_id, run, submitted, label))
        return request.request_id

    async def job(self, run: str, tenant: str | None = None) -> str | None:
        """Submit a small training job on the tenant's base dataset."""
        job = JobRequest(
            tenant=tenant or self.rng.choice(TENANTS),
            task=TrainingTask(
                algorithm="linear_regression",
                target_column="y",
                problem_type="regression",
                trial_budget=1,
                cv_folds=2,
                time_budget_s=60,
            ),
            dataset=DatasetRef(name=BASE_DATASET),
            demand=Resources.of(cpus=0.5, memory_mib=512),
        )
        submitted = time.monotonic()
        if not await self._publish(run, "lepton.jobs.requested", job.job_id, job.to_record()):
            return None
        self.ledger.add(Item("job", job.job_id, run, submitted))
        return job.job_id

    async def stream(
        self, run: str, duration_s: float, ingest_every_s: float, job_every_s: float
    ) -> None:
        """Ingests and jobs at a steady pace for ``duration_s``."""
        began = time.monotonic()
        next_ingest = next_job = began
        while (now := time.monotonic()) < began + duration_s:
            if now >= next_ingest:
                next_ingest += ingest_every_s
                await self.ingest(run)
            if now >= next_job:
                next_job += job_every_s
                await self.job(run)
            await asyncio.sleep(max(0.0, min(next_ingest, next_job) - time.monotonic()))

    async def probe(self, run: str, timeout_s: float) -> bool:
        """One ingest, submitted and answered within ``timeout_s``: the stack does work."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            request = await self.ingest(run, kind="probe")
            if request is None:
                await asyncio.sleep(1)
                continue
            while time.monotonic() < deadline:
                if self.ledger.completed(request):
                    return True
                self.ledger.arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ledger.arrived.wait(), 1.0)
        return False
