"""End-to-end scheduler benchmark: job requests in, ``assigned`` job events out, one broker.

    .venv/bin/python -m bench.scheduler_e2e [--nodes 10000] [--jobs 20000] [--seconds 10]

The scheduler runs as a subprocess (``lepton-scheduler``), so the load generator and the
event reader in this process do not share its CPU time. Each phase starts a scheduler
of its own on a fresh topic prefix (``bench-e2e-<run>-<phase>.``), so no phase inherits
another's backlog. The scheduler's leader lock is one per database, whatever the topic
prefix, so the run creates a database of its own (dropped at the end): a scheduler left
running elsewhere on the stack's database cannot keep the benchmark's standing by.
Heartbeats of phases 1 and 2 are published once, before the scheduler starts (it
replays them); liveness thresholds are set to an hour so that silent simulated nodes
stay eligible: liveness is not under test here. Nodes are identical (64 cores, 256 GiB),
large enough that no job ever waits for room; jobs ask for 0.5-2 cores, from 4 tenants.

Measurements, in one run:

1. ceiling: raw aiokafka consume -> produce of ``--jobs`` pre-encoded job requests
   (no decoding; one ``send()`` per message), from one topic to another;
2. throughput: ``--nodes`` nodes, then ``--jobs`` requests in one ``publish_many``;
   assignments/s from the first request sent to the last ``assigned`` event read;
3. latency at a paced offered load (10 % and 50 % of the rate measured in 2, then
   1,000 requests/s) for ``--seconds`` each: request sent -> its ``assigned`` event read
   (both clocks are this process's ``perf_counter``);
4. latency at 1,000 requests/s while a separate process publishes heartbeats of
   ``--heartbeat-nodes`` nodes every ``--heartbeat-interval`` seconds (encoded once and
   re-stamped, so that the generator can offer the rate); the rate ingested is read from
   the scheduler's ``/metrics`` (``lepton_messages_total``). Then the scheduler's own
   capacity, with nothing else running: two rounds of heartbeats written while it is
   suspended, timed as it drains them, with its CPU time per heartbeat.

5. what security costs: phase 2 again through each listener of a broker of the
   benchmark's own (``bench.listeners``: PLAINTEXT, SASL_PLAINTEXT with SCRAM-SHA-512,
   SASL_SSL), the scheduler and this process connecting alike, in turns, best of three
   rounds; assignments/s and assignments per scheduler CPU-second ("per CPU-s", steadier
   on shared cores) as ratios against PLAINTEXT.

The scheduler's CPU time is that of both its processes (the deciding one and its
heartbeat digester).

``--phases`` runs some of ``ceiling,throughput,latency,heartbeats,security`` (the table
only).

Prints a table; writes ``bench/results/scheduler_e2e.json``. Targets (issue 3):
>= 5,000 assignments/s at 10,000 nodes; p99 <= 50 ms at 1,000 requests/s, also while
>= 20,000 heartbeats/s are ingested (100,000 nodes at a 5 s interval); (issue 16) SCRAM
costs <= 10 % of the throughput over PLAINTEXT.

``--profile DIR`` runs each scheduler under cProfile (DIR/<phase>.prof) to find hot spots;
its figures are slowed by the profiler, so no JSON is written then.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import platform
import signal
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import confluent_kafka
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from bench.bus import PRODUCER_SETTINGS, Clock, fresh_topic, queue_batches, raw_send_batches
from bench.listeners import SCRAM, TARGET_RATIO, ratios_to_plaintext, three_listeners
from bench.records import Signer, StampedHeartbeats, event_headers
from lepton import devstack
from lepton.bus import Publisher, ensure_topics
from lepton.bus._reader import Reader
from lepton.config import KafkaAccess, Settings
from lepton.contract import default_codec
from lepton.contract.codec import Codec
from lepton.contract.topics import Namespace, Topic, dead_letter_topic
from lepton.testing import impersonating
from tests.integration.scheduler_support import heartbeat, job

RESULTS = Path(__file__).parent / "results"
TARGET_ASSIGNMENTS_PER_S = 5_000
TARGET_P99_MS = 50.0
TARGET_HEARTBEATS_PER_S = 20_000
FIXED_RATE = 1_000  # requests/s of the latency target
# Bounds: a slow scheduler ends a phase with what it did by then, never hangs the run.
START_BOUND_S = 90.0  # scheduler up, leading, caught up with its replay
THROUGHPUT_BOUND_S = 45.0
DRAIN_BOUND_S = 10.0  # after the last paced request, for the last assignments
STOP_BOUND_S = 30.0
PHASE_BOUND_S = 300.0  # a backstop for anything above that could still hang (a dead broker)
# Node and job shapes: every node can hold hundreds of jobs, so nothing waits for room.
NODE_CPU, NODE_MEMORY = 64_000, 262_144
JOB_SHAPES = ((500, 1024), (1000, 2048), (2000, 4096))
TENANTS = ("acme", "globex", "initech", "umbrella")
_HEARTBEAT_TYPE = "lepton.NodeHeartbeat"


# --------------------------------------------------------------------------- records


def nodes(count: int, *, sequence: int = 1) -> list[dict[str, Any]]:
    return [
        heartbeat(f"node-{i:06d}", sequence=sequence, cpu=NODE_CPU, memory=NODE_MEMORY)
        for i in range(count)
    ]


def requests(label: str, count: int) -> list[dict[str, Any]]:
    records = []
    for i in range(count):
        cpu, memory = JOB_SHAPES[i % len(JOB_SHAPES)]
        records.append(
            job(f"{label}-{i:07d}", cpu=cpu, memory=memory, tenant=TENANTS[i % len(TENANTS)])
        )
    return records


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None if there are none."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


async def delete_topics(kafka: KafkaAccess, names: list[str]) -> None:
    """Every run creates hundreds of partitions: left behind, they exhaust the broker's
    file descriptors after a few dozen runs."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        await admin.delete_topics(names, timeout_ms=30_000)
    finally:
        await admin.close()


# ----------------------------------------------------------------------- the ceiling


async def ceiling(kafka: KafkaAccess, codec: Codec, count: int) -> dict[str, Any]:
    """Raw aiokafka consume -> produce of pre-encoded job requests, no decoding."""
    records = requests("ceiling", count)
    values = [codec.encode("lepton.JobRequested", record) for record in records]
    keys = [record["job_id"].encode() for record in records]
    source, sink = await fresh_topic(kafka), await fresh_topic(kafka)
    producer = AIOKafkaProducer(**kafka.aiokafka(), **PRODUCER_SETTINGS)
    consumer = AIOKafkaConsumer(
        source.name, **kafka.aiokafka(), group_id=None, auto_offset_reset="earliest"
    )
    await asyncio.gather(producer.start(), consumer.start())
    try:
        await raw_send_batches(producer, source.name, keys, values)  # fills the source, untimed
        moved = 0
        pending = []
        deadline = time.perf_counter() + THROUGHPUT_BOUND_S
        with Clock() as clock:
            while moved < count and time.perf_counter() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for messages in batch.values():
                    for message in messages:
                        pending.append(
                            await producer.send(sink.name, message.value, key=message.key)
                        )
                    moved += len(messages)
            await asyncio.gather(*pending)
    finally:
        await asyncio.gather(producer.stop(), consumer.stop())
        await delete_topics(kafka, [source.name, sink.name])
    return {
        "messages": moved,
        "seconds": round(clock.wall, 3),
        "messages_per_s": round(moved / clock.wall),
        "client_cpu_s": round(clock.cpu, 2),
        "complete": moved == count,
    }


# ------------------------------------------------------------------ the scheduler side


class AssignmentReader:
    """Reads the scheduler's job events from the start; notes when each ``assigned`` came.

    Through librdkafka, as the services read: an aiokafka reader of 2,000 events/s took a
    good part of a core that the scheduler shares with it here.
    """

    def __init__(self, kafka: KafkaAccess, topic: str, codec: Codec) -> None:
        self.codec = codec
        self.topic = topic
        self.reader = Reader(kafka, group_id=f"bench-{uuid.uuid4().hex[:8]}", client_id="bench")
        self.assigned: dict[str, float] = {}  # job id -> perf_counter when read
        # job id -> the assigned event's Kafka timestamp: when the scheduler produced it
        self.produced_ms: dict[str, int] = {}
        self.kinds: Counter[str] = Counter()
        self.rejections: list[str] = []
        self._stop = asyncio.Event()

    async def start(self, publisher: Publisher) -> None:
        partitions = sorted(await publisher.partitions(self.topic))
        await self.reader.assign([(self.topic, p) for p in partitions], from_start=True)

    async def run(self) -> None:
        while not self._stop.is_set():
            messages = await self.reader.fetch(5_000, None)
            read_at = time.perf_counter()
            for message in messages:
                _, record = self.codec.decode(message.value())
                self.kinds[record["kind"]] += 1
                if record["kind"] == "assigned":
                    self.assigned.setdefault(record["job_id"], read_at)
                    self.produced_ms.setdefault(record["job_id"], message.timestamp()[1])
                elif record["kind"] == "rejected" and len(self.rejections) < 5:
                    self.rejections.append(f"{record['job_id']}: {record['reason']}")

    def stop(self) -> None:
        self._stop.set()

    async def until_assigned(self, job_ids: Sequence[str], bound_s: float) -> bool:
        """Wait until every job was assigned, at most ``bound_s``; True if all were."""
        missing = list(job_ids)
        deadline = time.perf_counter() + bound_s
        while missing and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)  # read times are stamped by the reader, not here
            missing = [job_id for job_id in missing if job_id not in self.assigned]
        return not missing


@dataclass
class RunningScheduler:
    names: Namespace
    publisher: Publisher
    reader: AssignmentReader
    process: psutil.Process
    metrics_url: str
    log: Path

    @property
    def requested(self) -> Topic:
        return self.names.topic("lepton.jobs.requested")

    def processes(self) -> list[psutil.Process]:
        """The scheduler and its heartbeat digester."""
        return [self.process, *self.process.children()]

    def cpu_s(self) -> float:
        """CPU time of both of the scheduler's processes."""
        return sum(_cpu_s(process) for process in self.processes())

    def suspend(self) -> list[psutil.Process]:
        suspended = self.processes()
        for process in suspended:
            process.suspend()
        return suspended

    async def probe(self) -> None:
        """One request answered with an assignment: the scheduler is caught up and planning."""
        record = job(f"probe-{uuid.uuid4().hex[:8]}", cpu=100, memory=64)
        await self.publisher.publish_many(self.requested, [(record["job_id"], record)])
        if not await self.reader.until_assigned([record["job_id"]], START_BOUND_S):
            raise RuntimeError(
                f"the scheduler assigned no probe job within {START_BOUND_S:.0f} s "
                f"(rejections: {self.reader.rejections}); see {self.log}"
            )

    async def handled(self, declared: str) -> int:
        """Messages of a topic the scheduler has handled, from its ``/metrics``."""
        topic = self.names.topic(declared).name
        return int(await self._sum("lepton_messages_total", topic=topic, outcome="handled"))

    async def gauge(self, name: str) -> float:
        return await self._sum(name)

    async def published(self, kind: str) -> int:
        """Job events of a kind the scheduler says it published (to check the reader)."""
        return int(await self._sum("lepton_scheduler_events_total", kind=kind))

    async def _sum(self, sample_name: str, **labels: str) -> float:
        """The sum of a metric's samples with these labels, from the scheduler's ``/metrics``."""
        text = await asyncio.to_thread(_fetch, self.metrics_url)
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == sample_name
            and all(sample.labels.get(k) == v for k, v in labels.items())
        )


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # a loaded machine is slow
        return str(response.read().decode())


@asynccontextmanager
async def own_database(url: str, name: str) -> AsyncIterator[str]:
    """A new database on the same server, for this run only; dropped afterwards."""
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urllib.parse.urlparse(url)._replace(path=f"/{name}").geturl()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass(frozen=True)
class Run:
    kafka: KafkaAccess
    database_url: str
    prefix: str
    codec: Codec
    profile: Path | None


def _scheduler_command(run: Run, phase: str) -> list[str]:
    script = Path(sys.executable).with_name("lepton-scheduler")
    if run.profile is None:
        return [str(script)]
    # cProfile.run writes the stats when main() returns, which SIGTERM makes it do.
    return [
        sys.executable,
        "-c",
        "import cProfile, sys; from lepton.services.scheduler.app import main; "
        "cProfile.run('main()', sys.argv[1])",
        str(run.profile / f"{phase}.prof"),
    ]


async def _await_health(process: asyncio.subprocess.Process, log: Path) -> str:
    """The scheduler's health URL, once its log says it leads; errors name the cause."""
    deadline = time.perf_counter() + START_BOUND_S
    url = None
    while time.perf_counter() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"lepton-scheduler exited ({process.returncode}); see {log}")
        for line in (await asyncio.to_thread(log.read_text)).splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "health":
                    url = entry["url"]
                elif entry.get("event") == "leading" and url is not None:
                    return str(url)
        await asyncio.sleep(0.1)
    raise RuntimeError(
        f"lepton-scheduler did not lead within {START_BOUND_S:.0f} s: another scheduler on "
        f"this database may hold the leader lock; see {log}"
    )


@asynccontextmanager
async def scheduler(
    run: Run, phase: str, preload: list[dict[str, Any]] | None = None
) -> AsyncIterator[RunningScheduler]:
    """A ``lepton-scheduler`` subprocess on a fresh prefix, its topics pre-loaded with nodes."""
    names = Namespace(f"{run.prefix}{phase}.")
    await ensure_topics(run.kafka, names.all())
    log = Path(tempfile.gettempdir()) / f"{names.prefix}log"
    reader = AssignmentReader(run.kafka, names.topic("lepton.jobs.events").name, run.codec)
    async with Publisher(run.kafka, run.codec, source="bench", signer=impersonating()) as publisher:
        if preload:
            beats = names.topic("lepton.node.heartbeats")
            await publisher.publish_many(beats, ((node["node_id"], node) for node in preload))
        environment = os.environ | {
            **run.kafka.environment(),
            "LEPTON_DATABASE_URL": run.database_url,
            "LEPTON_TOPIC_PREFIX": names.prefix,
            "LEPTON_NODE_SUSPECT_AFTER_S": "3600",
            "LEPTON_NODE_DEAD_AFTER_S": "7200",
            "LEPTON_HEALTH_PORT": "0",
            "LEPTON_LOG_LEVEL": "info",
        }
        with log.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *_scheduler_command(run, phase), env=environment, stderr=log_file
            )
        await reader.start(publisher)
        reading = asyncio.create_task(reader.run())
        try:
            health = await _await_health(process, log)
            yield RunningScheduler(
                names,
                publisher,
                reader,
                psutil.Process(process.pid),
                health.replace("/healthz", "/metrics"),
                log,
            )
        finally:
            reader.stop()
            await reading
            await reader.reader.close()
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_BOUND_S)
            except TimeoutError:
                process.kill()
                await asyncio.wait_for(process.wait(), STOP_BOUND_S)
            declared = [topic.name for topic in names.all()]
            await delete_topics(run.kafka, declared + list(map(dead_letter_topic, declared)))


# -------------------------------------------------------------------------- the phases


async def throughput(run: Run, node_count: int, job_count: int) -> dict[str, Any]:
    async with scheduler(run, "throughput", nodes(node_count)) as running:
        await running.probe()
        records = requests("throughput", job_count)
        job_ids = [record["job_id"] for record in records]
        cpu_before = running.cpu_s()
        start = time.perf_counter()
        await running.publisher.publish_many(
            running.requested, ((record["job_id"], record) for record in records)
        )
        published_s = time.perf_counter() - start
        complete = await running.reader.until_assigned(job_ids, THROUGHPUT_BOUND_S)
        times = [running.reader.assigned[j] for j in job_ids if j in running.reader.assigned]
        end = max(times) if times else time.perf_counter()
        seconds = end - start
        scheduler_cpu = running.cpu_s() - cpu_before
        return {
            "scheduler_says_assigned": await running.published("assigned"),
            "events_read": dict(running.reader.kinds),
            "nodes": node_count,
            "requests": job_count,
            "assigned": len(times),
            "complete": complete,
            "seconds": round(seconds, 3),
            "assignments_per_s": round(len(times) / seconds),
            "requests_published_per_s": round(job_count / published_s),
            # Over the whole wait, which outlasts the last assignment if some never came.
            "scheduler_cpu_share": round(scheduler_cpu / (time.perf_counter() - start), 2),
            # Steadier than the rate on shared cores: what each assignment cost the scheduler.
            "scheduler_cpu_us_per_assignment": round(scheduler_cpu / max(1, len(times)) * 1e6),
            "rejections": running.reader.rejections,
        }


async def offered_load(
    running: RunningScheduler, load: str, ids: str, rate: float, seconds: float
) -> dict[str, Any]:
    """Requests paced at ``rate`` for ``seconds``; latency from send to ``assigned`` read."""
    records = requests(ids, max(1, round(rate * seconds)))
    sent: dict[str, float] = {}
    sent_ms: dict[str, float] = {}  # the same moments on the wall clock Kafka stamps with
    acks = []
    cpu_before = running.cpu_s()
    start = time.perf_counter()
    deadline = start + seconds + DRAIN_BOUND_S
    index = 0
    while index < len(records) and time.perf_counter() < deadline:
        due = min(len(records), int((time.perf_counter() - start) * rate) + 1)
        if due > index:
            batch = records[index:due]
            now, stamp = time.perf_counter(), time.time_ns() // 1_000_000
            for record in batch:
                record["submitted_at"] = stamp
                sent[record["job_id"]] = now
                sent_ms[record["job_id"]] = time.time() * 1000
            # send_many, not publish_many: waiting for acks here would pace by the broker.
            acks += await running.publisher.send_many(
                running.requested, ((record["job_id"], record) for record in batch)
            )
            index = due
        await asyncio.sleep(0.001)
    sending_s = time.perf_counter() - start
    await asyncio.gather(*acks)
    complete = await running.reader.until_assigned(list(sent), DRAIN_BOUND_S)
    elapsed = time.perf_counter() - start
    assigned = running.reader.assigned
    latencies = sorted(
        (assigned[job_id] - at) * 1000 for job_id, at in sent.items() if job_id in assigned
    )
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    # Where the time went: until the scheduler produced the assignment (request sent,
    # fetched, decided), and from then until this benchmark read it back.
    produced = running.reader.produced_ms
    decided = sorted(produced[j] - sent_ms[j] for j in sent if j in produced)
    delivered = sorted(
        (assigned[j] - at) * 1000 - (produced[j] - sent_ms[j])
        for j, at in sent.items()
        if j in produced
    )
    return {
        "load": load,
        "offered_per_s": round(rate),
        "achieved_per_s": round(len(sent) / sending_s),
        "requests": len(sent),
        "assigned": len(latencies),
        "complete": complete,
        "p50_ms": round(p50, 1) if p50 is not None else None,
        # Jobs never assigned count as slower than any that were.
        "p99_ms": round(p99, 1) if p99 is not None and complete else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "to_decision_p50_ms": _rounded(percentile(decided, 0.50)),
        "to_decision_p99_ms": _rounded(percentile(decided, 0.99)),
        "decision_to_read_p50_ms": _rounded(percentile(delivered, 0.50)),
        "decision_to_read_p99_ms": _rounded(percentile(delivered, 0.99)),
        "scheduler_cpu_share": round((running.cpu_s() - cpu_before) / elapsed, 2),
    }


async def latency(run: Run, node_count: int, seconds: float, max_rate: float) -> list[Any]:
    loads = [("10 % of max", 0.1 * max_rate), ("50 % of max", 0.5 * max_rate)]
    # The fixed target load last: if it overloads the scheduler, its backlog spoils nothing.
    loads.append((f"{FIXED_RATE:,}/s", FIXED_RATE))
    async with scheduler(run, "latency", nodes(node_count)) as running:
        await running.probe()
        return [
            await offered_load(running, load, f"latency{i}", max(rate, 1.0), seconds)
            for i, (load, rate) in enumerate(loads)
        ]


def heartbeat_load(
    kafka: KafkaAccess,
    topic_name: str,
    node_count: int,
    interval_s: float,
    bound_s: float,
    stop: Any,
    report: Any,
) -> None:
    """Process entry point: every node's heartbeat once per interval until ``stop``."""
    # The bound also covers sends that hang on an unreachable broker.
    beating = _beat(kafka, topic_name, node_count, interval_s, bound_s, stop, report)
    asyncio.run(asyncio.wait_for(beating, bound_s + STOP_BOUND_S))


def stamped(
    frames: StampedHeartbeats, first: int, count: int, sent_at: int
) -> tuple[list[bytes], list[bytes]]:
    """Keys and values of heartbeats ``first`` .. ``first + count`` of an endless round
    robin over the nodes; each round has a new sequence, so the scheduler accepts all."""
    nodes_count = len(frames)
    keys, values = [], []
    n = first
    while n < first + count:  # a stretch of one round at a time: one sequence number
        index = n % nodes_count
        upto = min(nodes_count, index + first + count - n)
        keys += frames.keys[index:upto]
        values += frames.values(range(index, upto), sent_at=sent_at, sequence=2 + n // nodes_count)
        n += upto - index
    return keys, values


async def _beat(
    kafka: KafkaAccess,
    topic_name: str,
    node_count: int,
    interval_s: float,
    bound_s: float,
    stop: Any,
    report: Any,
) -> None:
    # Encoded once, re-stamped per round, handed to librdkafka without a delivery report
    # each: the generator shares the two cores with the scheduler and the broker, so it
    # must cost far less than what it loads (encoding each, or aiokafka, cost more).
    frames = StampedHeartbeats(default_codec(), nodes(node_count))
    signer = Signer()
    rate = node_count / interval_s
    sent = 0
    round_reported = False
    producer = confluent_kafka.Producer(
        {
            **kafka.librdkafka(),
            "client.id": "bench-heartbeats",
            "enable.idempotence": True,
            "linger.ms": 20,
            "partitioner": "murmur2_random",  # as the bus: a node's beats in one partition
        }
    )
    start = time.perf_counter()
    while not stop.is_set() and time.perf_counter() - start < bound_s:
        due = int((time.perf_counter() - start) * rate) - sent
        if due > 0:
            keys, values = stamped(frames, sent, due, time.time_ns() // 1_000_000)
            # One set of headers for the heartbeats of a tick (their ce_id is the tick's):
            # building seven headers for each cost the generator more than the rest.
            headers = event_headers(_HEARTBEAT_TYPE, 1, first=sent)[0]
            for key, value in zip(keys, values, strict=True):
                # Each signed by its node, as its agent would (about 2 µs of HMAC each).
                signature = signer.headers(topic_name, key, value)
                producer.produce(topic_name, value, key, headers=headers + signature)
            sent += due
        if not round_reported and sent >= node_count:
            report.put(("round", sent))
            round_reported = True
        # Serves librdkafka's events; bounds memory (a full queue raises BufferError).
        producer.poll(0)
        await asyncio.sleep(0.02)
    report.put(("done", sent, time.perf_counter() - start))
    await asyncio.to_thread(producer.flush, STOP_BOUND_S)


class CpuMeter:
    """Cores each process used from now until :meth:`shares`, and the whole machine."""

    def __init__(self, processes: dict[str, psutil.Process | None]) -> None:
        self._processes = {name: p for name, p in processes.items() if p is not None}
        self._before = {name: _cpu_s(p) for name, p in self._processes.items()}
        self._machine = _busy_s()
        self._start = time.perf_counter()

    def shares(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self._start
        found = {
            name: round((_cpu_s(p) - self._before[name]) / elapsed, 2)
            for name, p in self._processes.items()
        }
        found[f"machine ({psutil.cpu_count()} cores)"] = round(
            (_busy_s() - self._machine) / elapsed, 2
        )
        return found


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _busy_s() -> float:
    times = psutil.cpu_times()
    return float(
        times.user
        + times.system
        + times.nice
        + getattr(times, "irq", 0.0)
        + getattr(times, "softirq", 0.0)
    )


def _broker_process(kafka: KafkaAccess) -> psutil.Process | None:
    """The local stack's Kafka broker, if the benchmark runs on it."""
    local = devstack.status(Settings())
    if local.kafka_pid is None or local.kafka_bootstrap != kafka.bootstrap:
        return None
    return psutil.Process(local.kafka_pid)


async def under_heartbeats(
    run: Run, node_count: int, interval_s: float, seconds: float
) -> dict[str, Any]:
    async with scheduler(run, "heartbeats") as running:
        context = multiprocessing.get_context("spawn")  # no copy of this process's event loop
        stop, report = context.Event(), context.Queue()
        generator = context.Process(
            target=heartbeat_load,
            args=(
                run.kafka,
                running.names.topic("lepton.node.heartbeats").name,
                node_count,
                interval_s,
                # Outlasts the first round, the probe, the wait for every node and the load.
                interval_s + 2 * START_BOUND_S + seconds + DRAIN_BOUND_S + STOP_BOUND_S,
                stop,
                report,
            ),
        )
        generator.start()
        try:
            first = await asyncio.to_thread(report.get, True, interval_s + START_BOUND_S)
            if first[0] != "round":
                raise RuntimeError(f"heartbeat generator: {first}")
            await running.probe()
            # The whole cluster known (to the deciding process, not only to the digester)
            # before timing: first sightings cost more than updates.
            for _ in range(int(START_BOUND_S / 0.5)):
                if await running.gauge("lepton_scheduler_nodes") >= node_count:
                    break
                await asyncio.sleep(0.5)
            handled_before, start = await running.handled("lepton.node.heartbeats"), time.time()
            meter = CpuMeter(
                {
                    "scheduler (deciding)": running.process,
                    "scheduler (heartbeat digester)": running.process.children()[0],
                    "broker": _broker_process(run.kafka),
                    "heartbeat generator": psutil.Process(generator.pid),
                    "this benchmark (requests, events)": psutil.Process(),
                }
            )
            result = await offered_load(
                running, f"{FIXED_RATE:,}/s", "heartbeats", FIXED_RATE, seconds
            )
            cpu = meter.shares()
            handled_after, end = await running.handled("lepton.node.heartbeats"), time.time()
        finally:
            stop.set()
            # Its report first: a process does not end while what it queued is unread.
            _, published, generated_s = await asyncio.to_thread(report.get, True, STOP_BOUND_S)
            await asyncio.to_thread(generator.join, STOP_BOUND_S)
            if generator.is_alive():
                generator.terminate()
        # Past every round the generator sent, so the backlog's heartbeats are all accepted.
        capacity = await heartbeat_capacity(
            run.kafka, running, node_count, first=(published // node_count + 1) * node_count
        )
        return (
            result
            | capacity
            | {
                "heartbeat_nodes": node_count,
                "heartbeat_interval_s": interval_s,
                "cpu_cores_used": cpu,
                "heartbeats_offered_per_s": round(node_count / interval_s),
                "heartbeats_published_per_s": round(published / generated_s),
                "heartbeats_ingested_per_s": round(
                    (handled_after - handled_before) / (end - start)
                ),
            }
        )


async def heartbeat_capacity(
    kafka: KafkaAccess, running: RunningScheduler, node_count: int, *, first: int, rounds: int = 2
) -> dict[str, Any]:
    """The scheduler's own heartbeat capacity, with no generator sharing the cores: a
    backlog of ``rounds`` heartbeats per node is written while the scheduler is suspended,
    then timed from its resumption until it has handled all of them."""
    count = rounds * node_count
    frames = StampedHeartbeats(default_codec(), nodes(node_count))
    keys, values = stamped(frames, first, count, time.time_ns() // 1_000_000)
    topic = running.names.topic("lepton.node.heartbeats").name
    signer = Signer()
    headers = [
        common + signer.headers(topic, key, value)
        for common, key, value in zip(
            event_headers(_HEARTBEAT_TYPE, count), keys, values, strict=True
        )
    ]
    # What the live load left must be read first, or it would be timed with the backlog.
    before = -1
    for _ in range(int(DRAIN_BOUND_S / 0.5)):
        handled = await running.handled("lepton.node.heartbeats")
        if handled == before:
            break
        before = handled
        await asyncio.sleep(0.5)
    producer = AIOKafkaProducer(**kafka.aiokafka(), **PRODUCER_SETTINGS)
    await producer.start()
    suspended = running.suspend()
    try:
        await asyncio.gather(*await queue_batches(producer, topic, keys, values, headers))
    finally:
        for process in suspended:
            process.resume()
        await producer.stop()
    cpu_before, start = running.cpu_s(), time.perf_counter()
    deadline = start + THROUGHPUT_BOUND_S
    handled = before
    while handled < before + count and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)  # the scheduler's count is the clock; nothing to await
        handled = await running.handled("lepton.node.heartbeats")
    seconds = time.perf_counter() - start
    drained = min(count, handled - before)
    return {
        "heartbeat_backlog": count,
        "heartbeat_backlog_drained": drained,
        "heartbeats_drained_per_s": round(drained / seconds),
        "scheduler_cpu_us_per_heartbeat": round((running.cpu_s() - cpu_before) / drained * 1e6),
    }


# ------------------------------------------------------------- what security costs

_SECURITY_ROUNDS = 3
_SECURITY_FIGURES = ("assigned", "requests", "complete", "seconds", "assignments_per_s")


async def _through_each_listener(
    accesses: dict[str, KafkaAccess], admin_url: str, node_count: int, job_count: int
) -> dict[str, dict[str, Any]]:
    """The throughput phase through each listener, in turns, best of the rounds."""
    run_id = uuid.uuid4().hex[:8]
    best: dict[str, dict[str, Any]] = {}
    async with own_database(admin_url, f"bench_e2e_{run_id}") as database_url:
        for turn in range(_SECURITY_ROUNDS):
            # Every other round in reverse, so that no listener always runs first or last
            # while what else shares the cores drifts.
            order = list(accesses.items())
            for protocol, access in order if turn % 2 == 0 else reversed(order):
                prefix = f"bench-e2e-{run_id}-{protocol.lower()}{turn}-"
                run = Run(access, database_url, prefix, default_codec(), None)
                async with asyncio.timeout(PHASE_BOUND_S):
                    result = await throughput(run, node_count, job_count)
                fastest = best.get(protocol, {"assignments_per_s": -1})["assignments_per_s"]
                if result["assignments_per_s"] > fastest:
                    best[protocol] = result
                # Per assignment, the cheapest round: steadier than the rate on shared cores.
                best[protocol]["scheduler_cpu_us_per_assignment"] = min(
                    result["scheduler_cpu_us_per_assignment"],
                    best[protocol]["scheduler_cpu_us_per_assignment"],
                )
    return best


def security_costs(node_count: int, job_count: int) -> dict[str, Any]:
    """What SASL/SCRAM and TLS cost the scheduler end to end, against PLAINTEXT."""
    admin_url = devstack.endpoints(Settings()).database_url
    with three_listeners() as accesses:
        best = asyncio.run(_through_each_listener(accesses, admin_url, node_count, job_count))
    rates: dict[tuple[str, str], float] = {}
    for protocol, result in best.items():
        rates[protocol, "assignments/s"] = result["assignments_per_s"]
        rates[protocol, "assignments per CPU-s"] = 1e6 / result["scheduler_cpu_us_per_assignment"]
    return {
        "nodes": node_count,
        "by_protocol": {
            protocol: {
                name: result[name]
                for name in (*_SECURITY_FIGURES, "scheduler_cpu_us_per_assignment")
            }
            for protocol, result in best.items()
        },
        "ratios": ratios_to_plaintext(rates),
    }


# ------------------------------------------------------------------------- reporting


@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, name: str, figure: str, target: str = "-", met: bool | None = None) -> None:
        self.rows.append((name, figure, target, "-" if met is None else "yes" if met else "NO"))

    def print(self) -> None:
        print(f"{'measurement':50} {'figure':>22} {'target':>14} {'met?':>5}")
        for name, figure, target, met in self.rows:
            print(f"{name:50} {figure:>22} {target:>14} {met:>5}")


def _ms(value: float | None) -> str:
    return f"{value:,.1f} ms" if value is not None else "not all assigned"


def _latency_rows(table: Table, entry: dict[str, Any], prefix: str, targeted: bool) -> None:
    name = f"{prefix}latency at {entry['load']} ({entry['achieved_per_s']:,}/s sent)"
    table.add(f"{name}, p50", _ms(entry["p50_ms"]))
    p99 = entry["p99_ms"]
    table.add(
        f"{name}, p99",
        _ms(p99),
        f"<= {TARGET_P99_MS:.0f} ms" if targeted else "-",
        (p99 is not None and p99 <= TARGET_P99_MS) if targeted else None,
    )
    for half in ("to_decision", "decision_to_read"):
        table.add(
            f"  of which {half.replace('_', ' ')}, p50 / p99",
            f"{_ms(entry[f'{half}_p50_ms'])} / {_ms(entry[f'{half}_p99_ms'])}",
        )


PHASES = ("ceiling", "throughput", "latency", "heartbeats", "security")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    where = devstack.endpoints(Settings())
    run_id = uuid.uuid4().hex[:8]
    found: dict[str, Any] = {}
    async with own_database(where.database_url, f"bench_e2e_{run_id}") as database_url:
        run = Run(
            where.kafka,
            database_url,
            f"bench-e2e-{run_id}-",
            default_codec(),
            args.profile,
        )
        if "ceiling" in args.phases:
            async with asyncio.timeout(PHASE_BOUND_S):
                found["ceiling"] = await ceiling(run.kafka, run.codec, args.jobs)
        if "throughput" in args.phases:
            async with asyncio.timeout(PHASE_BOUND_S):
                found["throughput"] = await throughput(run, args.nodes, args.jobs)
        if "latency" in args.phases:
            # Without a throughput phase, the loads are shares of the target rate.
            top = found.get("throughput", {}).get("assignments_per_s", TARGET_ASSIGNMENTS_PER_S)
            async with asyncio.timeout(PHASE_BOUND_S):
                found["latency"] = await latency(run, args.nodes, args.seconds, top)
        if "heartbeats" in args.phases:
            async with asyncio.timeout(PHASE_BOUND_S):
                found["under_heartbeats"] = await under_heartbeats(
                    run, args.heartbeat_nodes, args.heartbeat_interval, args.seconds
                )
    return found


def tabulate(found: dict[str, Any]) -> Table:
    """The measurements of the phases that ran, against their targets."""
    table = Table()
    raw, rate = found.get("ceiling"), found.get("throughput")
    if raw is not None:
        table.add("raw aiokafka consume -> produce (ceiling)", f"{raw['messages_per_s']:,} msg/s")
    if rate is not None:
        table.add(
            f"throughput at {rate['nodes']:,} nodes, {rate['assigned']:,}/{rate['requests']:,} "
            "jobs",
            f"{rate['assignments_per_s']:,} /s",
            f">= {TARGET_ASSIGNMENTS_PER_S:,} /s",
            rate["complete"] and rate["assignments_per_s"] >= TARGET_ASSIGNMENTS_PER_S,
        )
    if rate is not None:
        table.add(
            "scheduler CPU per assignment (throughput phase)",
            f"{rate['scheduler_cpu_us_per_assignment']:,} us",
            f"<= {1e6 / TARGET_ASSIGNMENTS_PER_S:,.0f} us",
        )
    if raw is not None and rate is not None:
        table.add(
            "throughput / ceiling",
            f"{rate['assignments_per_s'] / raw['messages_per_s']:.3f}",
        )
    for entry in found.get("latency", ()):
        _latency_rows(table, entry, "", entry["offered_per_s"] == FIXED_RATE)
    loaded = found.get("under_heartbeats")
    if loaded is not None:
        table.add(
            f"heartbeats published ({loaded['heartbeat_nodes']:,} nodes, "
            f"{loaded['heartbeat_interval_s']:g} s)",
            f"{loaded['heartbeats_published_per_s']:,} /s",
            f"{loaded['heartbeats_offered_per_s']:,} /s",
        )
        table.add(
            "heartbeats ingested by the scheduler",
            f"{loaded['heartbeats_ingested_per_s']:,} /s",
            f">= {TARGET_HEARTBEATS_PER_S:,} /s",
            loaded["heartbeats_ingested_per_s"] >= TARGET_HEARTBEATS_PER_S,
        )
        _latency_rows(table, loaded, "heartbeats on: ", True)
        table.add(
            f"heartbeat backlog drained by the scheduler alone ({loaded['heartbeat_backlog']:,})",
            f"{loaded['heartbeats_drained_per_s']:,} /s",
            f">= {TARGET_HEARTBEATS_PER_S:,} /s",
            loaded["heartbeat_backlog_drained"] == loaded["heartbeat_backlog"]
            and loaded["heartbeats_drained_per_s"] >= TARGET_HEARTBEATS_PER_S,
        )
        table.add(
            "scheduler CPU per heartbeat (backlog)",
            f"{loaded['scheduler_cpu_us_per_heartbeat']:,} us",
            f"<= {1e6 / TARGET_HEARTBEATS_PER_S:,.0f} us",
        )
    secured = found.get("security")
    if secured is not None:
        for protocol, result in secured["by_protocol"].items():
            table.add(
                f"throughput over {protocol} ({result['assigned']:,}/{result['requests']:,} jobs)",
                f"{result['assignments_per_s']:,} /s, "
                f"{result['scheduler_cpu_us_per_assignment']:,} us CPU",
            )
        for name, ratio in secured["ratios"].items():
            targeted = name.startswith("assignments/s") and f", {SCRAM} /" in name
            table.add(
                name.split(" [", 1)[0],
                f"{ratio:.3f}",
                f">= {TARGET_RATIO}" if targeted else "-",
                ratio >= TARGET_RATIO if targeted else None,
            )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per paced load")
    parser.add_argument("--heartbeat-nodes", type=int, default=100_000)
    parser.add_argument("--heartbeat-interval", type=float, default=5.0)
    parser.add_argument(
        "--phases",
        type=lambda text: [p for p in text.split(",") if p],
        default=list(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)}; JSON is written for all only",
    )
    parser.add_argument("--profile", type=Path, help="cProfile each scheduler into this dir")
    args = parser.parse_args()
    if unknown := set(args.phases) - set(PHASES):
        parser.error(f"unknown phases {sorted(unknown)}; choose from {','.join(PHASES)}")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    # New topics' leaders take a moment to settle: aiokafka's retry warnings would bury the table.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    found = asyncio.run(measure(args))
    if "security" in args.phases:
        found["security"] = security_costs(args.nodes, args.jobs)
    table = tabulate(found)

    print(
        f"\nscheduler end to end: lepton-scheduler as a subprocess, one broker, "
        f"{os.cpu_count()} CPUs\n"
    )
    table.print()
    shares = [f"{e['load']} {e['scheduler_cpu_share']}" for e in found.get("latency", ())]
    if "throughput" in found:
        shares.insert(0, f"throughput {found['throughput']['scheduler_cpu_share']}")
        if found["throughput"]["rejections"]:
            print(f"rejections seen: {found['throughput']['rejections']}")
    if "under_heartbeats" in found:
        shares.append(f"heartbeats on {found['under_heartbeats']['scheduler_cpu_share']}")
    print("\nscheduler CPU (share of one core): " + ", ".join(shares))
    if "under_heartbeats" in found:
        cores = found["under_heartbeats"]["cpu_cores_used"]
        print("cores used under heartbeats: " + ", ".join(f"{k} {v}" for k, v in cores.items()))
    if args.profile is not None:
        print(f"\nprofiles in {args.profile}; figures are slowed by cProfile, no JSON written")
        return
    if set(found) != {"ceiling", "throughput", "latency", "under_heartbeats", "security"}:
        print("\nsome phases only: no JSON written")
        return
    report = {
        "benchmark": "scheduler_e2e",
        "scheduler": "subprocess (lepton-scheduler), a fresh one and topic prefix per phase",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "table": [
            dict(zip(("measurement", "figure", "target", "met"), r, strict=True))
            for r in table.rows
        ],
        **found,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scheduler_e2e.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {RESULTS / 'scheduler_e2e.json'}")


if __name__ == "__main__":
    main()
