"""Scaling out: ingest requests/s and evaluations/s with 1, 2 and 3 instances of the
service (processes, one consumer group), and how long a rebalance pauses work.

    .venv/bin/python -m bench.scale_out [--brokers 3] [--requests 60] [--models 24]
                                        [--timeout 300]

It runs against the Kafka and PostgreSQL the settings name (``LEPTON_KAFKA_BOOTSTRAP``,
``LEPTON_DATABASE_URL`` and the rest), else the running local stack: ``lepton stack up``
for one broker, ``lepton stack up --brokers 3`` for the three-broker cluster. The broker
count is read from the cluster and written with the results (``--brokers``: the run stops
unless it is that).

1. ``ingest``: with n = 1, 2, 3 instances (each started and given its partitions before the
   clock starts), ``--requests`` dataset requests (a small CSV each, distinct datasets) are
   published at once; requests/s is that count over the time to the last answer.
2. ``evaluator``: the same with ``--models`` ModelReady records (one ridge model trained
   once, its artifact copied under a model id of its own for each).
3. ``rebalance``: three ingest instances carry a paced stream (half the two-instance
   rate); one is stopped (SIGTERM), a new one joins, one is killed (SIGKILL). For each of
   these moments: the longest silence (no answer at all) in the following
   ``WINDOW_S``, and the worst latency of the requests sent in that window beyond the
   steady median before the first moment, i.e. how long the partitions that moved
   stood still. A killed member's partitions wait for its session timeout (10 s).

Every run also checks correctness: each request and each model answered, duplicates
(a redelivered request is answered again with its recorded outcome) counted.

Prints a table; writes ``bench/results/scale_out.json``. The topics have three partitions
(``lepton.data.requested``, ``lepton.models.ready``): a fourth instance would idle.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.waiting import say

if TYPE_CHECKING:
    from aiokafka.admin import AIOKafkaAdminClient

    from lepton.config import Actor, KafkaAccess
    from lepton.contract.codec import Codec
    from lepton.contract.topics import Namespace
    from tests.integration.processes import Running

RESULTS = Path(__file__).parent / "results" / "scale_out.json"
COUNTS = (1, 2, 3)
WINDOW_S = 12.0
# The paced stream: when each membership change happens, and when the stream ends.
LEAVE_AT_S, JOIN_AT_S, KILL_AT_S, FLOW_S = 8.0, 20.0, 34.0, 50.0


@dataclass
class Answers:
    """Answers as they arrive, by request (or model) id, with when each arrived."""

    by: str
    sent: dict[str, float] = field(default_factory=dict)
    first: dict[str, float] = field(default_factory=dict)
    arrivals: list[float] = field(default_factory=list)
    duplicates: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, record: dict[str, Any], at: float) -> None:
        key = record[self.by]
        self.arrivals.append(at)
        if key in self.first:
            self.duplicates += 1
        else:
            self.first[key] = at
        self.arrived.set()

    async def all_of(self, keys: set[str], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not keys <= self.first.keys():
            left = deadline - time.monotonic()
            if left <= 0:
                missing = len(keys - self.first.keys())
                raise SystemExit(f"gave up waiting for {what}: {missing} never answered")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                continue


async def _follow(kafka: KafkaAccess, codec: Codec, topic: str, answers: Answers) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, **kafka.aiokafka(), auto_offset_reset="earliest")
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for messages in batch.values():
                for message in messages:
                    answers.add(codec.decode(message.value)[1], now)
    finally:
        await consumer.stop()


@dataclass
class Group:
    """The instances of one service, as processes, in the consumer group of a prefix."""

    command: list[str]
    env: dict[str, str]
    group: str
    admin: AIOKafkaAdminClient
    running: list[Running] = field(default_factory=list)

    async def add(self) -> None:
        from tests.integration.processes import start

        self.running.append(await start(self.command, self.env, until="consuming"))

    async def stable(self, members: int, timeout_s: float = 120) -> None:
        """Returns once the group is Stable with ``members`` members (each given its
        partitions); polled, since the broker announces nothing."""
        deadline = time.monotonic() + timeout_s
        while True:
            described = await self.admin.describe_consumer_groups([self.group])
            _, _, state, _, _, found, *_ = described[0].groups[0]
            if state == "Stable" and len(found) == members:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.group}: not Stable with {members} members ({state})")
            await asyncio.sleep(0.2)

    async def stop(self, index: int) -> None:
        await self.running.pop(index).stop()

    async def kill(self, index: int) -> None:
        process = self.running.pop(index).process
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def close(self) -> None:
        while self.running:
            await self.stop(0)


async def _measure(
    group: Group,
    answers: Answers,
    send: Any,
    records: list[tuple[str, dict[str, Any]]],
    timeout_s: float,
) -> dict[str, float]:
    """requests/s of ``records`` sent at once, for 1, 2, 3 instances of ``group``."""
    rates: dict[str, float] = {}
    per_count = len(records) // len(COUNTS)
    for index, count in enumerate(COUNTS):
        while len(group.running) < count:
            await group.add()
        await group.stable(count)
        part = records[index * per_count : (index + 1) * per_count]
        keys = {record[answers.by] for _, record in part}
        start = time.monotonic()
        await send(part)
        await answers.all_of(keys, timeout_s, f"{len(keys)} answers with {count} instances")
        rates[str(count)] = len(part) / (max(answers.first[k] for k in keys) - start)
        say(f"{count} instance(s): {rates[str(count)]:.2f}/s")
    return rates


async def _rebalance(
    group: Group, answers: Answers, send: Any, make: Any, rate: float, timeout_s: float
) -> dict[str, Any]:
    """A paced stream through a leave, a join and a kill (see the module's docstring)."""
    start = time.monotonic()
    moments: dict[str, float] = {}

    async def changes() -> None:
        for name, at in (("leave (SIGTERM)", LEAVE_AT_S), ("join", JOIN_AT_S)):
            await asyncio.sleep(start + at - time.monotonic())
            if name == "join":
                await group.add()  # the moment it subscribed
            else:
                await group.stop(0)
            moments[name] = time.monotonic()
        await asyncio.sleep(start + KILL_AT_S - time.monotonic())
        await group.kill(0)
        moments["leave (SIGKILL)"] = time.monotonic()

    changing = asyncio.create_task(changes())
    keys: set[str] = set()
    sequence = 0
    while (now := time.monotonic()) < start + FLOW_S:
        due = int((now - start) * rate) + 1
        batch = [make() for _ in range(due - sequence)]
        sequence = due
        if batch:
            keys.update(record[answers.by] for _, record in batch)
            await send(batch)
        await asyncio.sleep(0.05)
    await changing
    await answers.all_of(keys, timeout_s, "the paced stream's answers")
    latency = {k: answers.first[k] - answers.sent[k] for k in keys}
    first_change = min(moments.values())
    steady = statistics.median(v for k, v in latency.items() if answers.sent[k] < first_change)
    found: dict[str, Any] = {"offered_per_s": rate, "steady_latency_p50_s": steady}
    for name, at in moments.items():
        window = [v for k, v in latency.items() if at <= answers.sent[k] < at + WINDOW_S]
        arrivals = sorted(t for t in answers.arrivals if at <= t < at + WINDOW_S)
        gaps = [b - a for a, b in zip([at, *arrivals], [*arrivals, at + WINDOW_S], strict=True)]
        found[name] = {
            "longest_silence_s": max(gaps),
            "worst_latency_beyond_steady_s": max(window, default=steady) - steady,
        }
    return found


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    from lepton import devstack
    from lepton.bus import Publisher, ensure_topics
    from lepton.config import Settings
    from lepton.contract.topics import Namespace
    from lepton.runtime.identity import master_key
    from lepton.testing import impersonating, leased, service_codec
    from tests.integration.processes import BIN

    settings = Settings()
    where = devstack.endpoints(settings)
    prefix = f"scale{uuid.uuid4().hex[:8]}."
    names = Namespace(prefix)
    codec = service_codec()
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lepton-scale-") as directory:
        root = Path(directory)
        # The services reach Kafka as the bench does: the local stack's ACLs are for the
        # installation without a prefix (the tests run their services so, too).
        env = os.environ | {
            **where.kafka.environment(),
            "LEPTON_TOPIC_PREFIX": prefix,
            "LEPTON_INGEST_ROOTS": json.dumps([str(root)]),
            "LEPTON_ARTIFACT_ROOT": str(root / "artifacts"),
        }

        def login(actor: Actor) -> dict[str, str]:
            """Each service as its own PostgreSQL login, as ``lepton up`` runs it."""
            return env | {"LEPTON_DATABASE_URL": devstack.endpoints(settings, actor).database_url}

        async with AsyncExitStack() as stack:
            admin = AIOKafkaAdminClient(**where.kafka.aiokafka())
            await admin.start()
            stack.push_async_callback(admin.close)
            cluster = await admin.describe_cluster()
            results["brokers"] = len(cluster["brokers"])
            if args.brokers is not None and args.brokers != results["brokers"]:
                raise SystemExit(
                    f"the cluster has {results['brokers']} broker(s), not {args.brokers}: "
                    f"`lepton stack up --brokers {args.brokers}`, or point the settings at one"
                )
            await ensure_topics(where.kafka, names.all())
            publisher = await stack.enter_async_context(
                Publisher(where.kafka, codec, source="bench", signer=impersonating())
            )
            ingest = Group(
                [str(BIN / "lepton-ingest")], login("ingest"), names.group("lepton-ingest"), admin
            )
            stack.push_async_callback(ingest.close)
            ready = Answers("request_id")
            following = [
                asyncio.create_task(_follow(where.kafka, codec, names.topic(topic).name, answers))
                for topic, answers in (
                    ("lepton.data.ready", ready),
                    ("lepton.data.rejected", ready),
                )
            ]
            made = 0

            def dataset_request() -> tuple[str, dict[str, Any]]:
                nonlocal made
                made += 1
                name = f"d{made}"
                (root / f"{name}.csv").write_text(
                    "x,y\n" + "".join(f"{made},{j}\n" for j in range(200)), encoding="utf-8"
                )
                return f"{tenant}/{name}", _request(tenant, name, f"{name}.csv")

            async def send_requests(batch: list[tuple[str, dict[str, Any]]]) -> None:
                now = time.monotonic()
                for _, record in batch:
                    ready.sent[record["request_id"]] = now
                await publisher.publish_many(names.topic("lepton.data.requested"), batch)

            say("ingest: warming up")
            await ingest.add()
            await ingest.stable(1)
            warm = [dataset_request() for _ in range(3)]
            await send_requests(warm)
            await ready.all_of({r["request_id"] for _, r in warm}, args.timeout, "warm-up")
            requests = [dataset_request() for _ in range(args.requests * len(COUNTS))]
            results["ingest_requests_per_s"] = await _measure(
                ingest, ready, send_requests, requests, args.timeout
            )
            pace = results["ingest_requests_per_s"]["2"] / 2
            say(f"rebalance: a paced stream of {pace:.1f} requests/s for {FLOW_S:.0f} s")
            results["rebalance"] = await _rebalance(
                ingest, ready, send_requests, dataset_request, pace, args.timeout
            )
            houses = _houses(root, tenant)
            await send_requests([houses])
            await ready.all_of({houses[1]["request_id"]}, args.timeout, "the houses dataset")
            await ingest.close()
            results["ingest_answers"] = {
                "requests": len(ready.first),
                "duplicates": ready.duplicates,
            }

            say("evaluator: training a model")
            version = await _version_of(where.kafka, codec, names, houses[1]["request_id"])
            models = _models(root, tenant, version, args.models * len(COUNTS))
            evaluated = Answers("model_id")
            following.append(
                asyncio.create_task(
                    _follow(
                        where.kafka, codec, names.topic("lepton.models.evaluated").name, evaluated
                    )
                )
            )
            key = master_key(settings)
            signed = [(m["model_id"], leased(m, key, names, codec)) for m in models]

            async def send_models(batch: list[tuple[str, dict[str, Any]]]) -> None:
                now = time.monotonic()
                for model_id, _ in batch:
                    evaluated.sent[model_id] = now
                await publisher.publish_many(names.topic("lepton.models.ready"), batch)

            evaluator = Group(
                [str(BIN / "lepton-evaluator")],
                login("evaluator"),
                names.group("lepton-evaluator"),
                admin,
            )
            stack.push_async_callback(evaluator.close)
            results["evaluations_per_s"] = await _measure(
                evaluator, evaluated, send_models, signed, args.timeout
            )
            results["evaluator_answers"] = {
                "models": len(evaluated.first),
                "duplicates": evaluated.duplicates,
            }
            for task in following:
                task.cancel()
            await asyncio.gather(*following, return_exceptions=True)
            await _delete_topics(admin, prefix)
    return results


def _request(tenant: str, dataset: str, uri: str) -> dict[str, Any]:
    return {
        "request_id": uuid.uuid4().hex,
        "tenant": tenant,
        "dataset": dataset,
        "sources": [{"name": "s", "kind": "csv", "uri": uri, "query": None, "options": {}}],
        "spec": None,
        "integration": {"mode": "union", "join_keys": [], "join_how": "inner"},
        "region": None,
        "description": None,
        "requested_at": int(time.time() * 1000),
        "requested_by": "bench",
    }


def _houses(root: Path, tenant: str) -> tuple[str, dict[str, Any]]:
    from bench.evaluator import houses

    houses(300).to_csv(root / "houses.csv", index=False)
    return f"{tenant}/houses", _request(tenant, "houses", "houses.csv")


async def _version_of(kafka: KafkaAccess, codec: Codec, names: Namespace, request: str) -> str:
    """The version the houses request was answered with (read again from the topic)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        names.topic("lepton.data.ready").name, **kafka.aiokafka(), auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async for message in consumer:
            record = codec.decode(message.value)[1]
            if record["request_id"] == request:
                return str(record["version"])
    finally:
        await consumer.stop()
    raise AssertionError("unreachable: the consumer never ends")


def _models(root: Path, tenant: str, version: str, count: int) -> list[dict[str, Any]]:
    """``count`` ModelReady records of one ridge model, each under its own id and copy of
    the artifact, over three model names (challengers judged concurrently)."""
    from bench.evaluator import houses
    from lepton.data import artifacts
    from lepton.services.trainer.training import SearchConfig
    from tests.integration.model_support import stored_model

    dataset = {"name": "houses", "version": version, "owner": tenant}
    config = SearchConfig(target_column="价格", algorithm="ridge", trial_budget=1, seed=7)
    artifact_root = root / "artifacts"
    _, ready = stored_model(
        houses(300),
        config,
        artifact_root=artifact_root,
        tenant=tenant,
        model_id="trained",
        model_name="n0",
        dataset=dataset,
    )
    models = []
    for i in range(count):
        model_id = f"m{i}-{uuid.uuid4().hex[:8]}"
        uri = artifacts.artifact_uri(str(artifact_root), tenant, model_id)
        shutil.copyfile(ready["artifact_uri"], uri)
        models.append(
            ready | {"model_id": model_id, "model_name": f"n{i % 3}", "artifact_uri": uri}
        )
    return models


async def _delete_topics(admin: AIOKafkaAdminClient, prefix: str) -> None:
    names = [name for name in await admin.list_topics() if name.startswith(prefix)]
    if names:
        await admin.delete_topics(names)


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=60, help="requests per instance count")
    parser.add_argument("--models", type=int, default=24, help="models per instance count")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per wait")
    parser.add_argument(
        "--brokers", type=int, help="refuse to run unless the cluster has this many brokers"
    )
    args = parser.parse_args()
    load_before = _load()
    results = asyncio.run(_run(args))
    print(
        f"brokers: {results['brokers']}; cores: {os.cpu_count()} (shared); load before: "
        f"{load_before}, after: {_load()}"
    )
    print(f"{'instances':<12}{'ingest requests/s':>20}{'evaluations/s':>16}")
    for count in COUNTS:
        key = str(count)
        print(
            f"{count:<12}{results['ingest_requests_per_s'][key]:>20.2f}"
            f"{results['evaluations_per_s'][key]:>16.2f}"
        )
    rebalance = results["rebalance"]
    print(
        f"rebalance, ingest at {rebalance['offered_per_s']:.1f} requests/s "
        f"(steady latency p50 {rebalance['steady_latency_p50_s']:.2f} s):"
    )
    print(f"{'moment':<20}{'longest silence':>18}{'worst latency beyond p50':>28}")
    for name in ("leave (SIGTERM)", "join", "leave (SIGKILL)"):
        row = rebalance[name]
        print(
            f"{name:<20}{row['longest_silence_s']:>17.2f}s"
            f"{row['worst_latency_beyond_steady_s']:>27.2f}s"
        )
    print(f"answers: ingest {results['ingest_answers']}, evaluator {results['evaluator_answers']}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "scale_out",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                **results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
