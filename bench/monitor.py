"""Monitor ingest: produce-to-API latency and sustained ingest rate under offered load.

    .venv/bin/python -m bench.monitor [--rates 5000,20000] [--seconds 12]

For each offered rate, a producer in a separate process (so that it does not share the
monitor's event loop) sends heartbeats from 2,000 nodes and job events, pre-generated
and pre-encoded (with the headers a Publisher adds), straight into aiokafka's batches in
50 ms slices, on loopback to the local broker. The
monitor runs in this process with its web server. Every 100 ms a probe heartbeat of one
extra node is published with an increasing sequence; a poller reads
``GET /api/nodes/<probe>`` every 20 ms, and a probe's latency is the time from just
before its publish to the first answer that shows its sequence (or a later one: the
probe's partition is read in order).

Reported per rate: the producer's achieved rate, the monitor's ingest rate during the
load, the backlog left when the producer stopped and how long it took to drain, the
sustained ingest rate (events over load plus drain time), and probe latency p50/p95/max.
Target: p95 <= 1 s at 20,000 events/s offered. Writes ``bench/results/monitor.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing
import os
import platform
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from bench.bus import PRODUCER_SETTINGS, queue_batches
from bench.records import Signer, event_headers, heartbeat
from bench.waiting import bounded, started
from lepton import devstack
from lepton.bus import Event, Publisher, Subscriber, ensure_topics
from lepton.config import KafkaAccess, Settings
from lepton.contract import default_codec
from lepton.contract.identity import Principal, SigningKey
from lepton.contract.topics import Namespace, Topic
from lepton.runtime.identity import master_key
from lepton.services.monitor.app import build
from lepton.services.monitor.settings import MonitorSettings
from lepton.testing import impersonating

RESULTS = Path(__file__).parent / "results"
SLICE_S = 0.05
PROBE_EVERY_S = 0.1
POLL_EVERY_S = 0.02
PROBE_NODE = "probe-node"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def load_records(
    count: int,
) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """Heartbeats (4 in 5) and job events (1 in 5), generated before the clock starts."""
    now = now_ms()
    beats, jobs = [], []
    for i in range(count):
        if i % 5:
            node = f"node-{i % 2000:04d}"
            beats.append(
                (
                    node,
                    heartbeat(
                        i,
                        node_id=node,
                        sent_at=now,
                        agent_started_at=now - 1000,
                        region=("eu", "us", "ap")[i % 3],
                    ),
                )
            )
        else:
            job = f"job-{i % 20000:05d}"
            jobs.append(
                (
                    job,
                    {
                        "job_id": job,
                        "kind": "progress",
                        "tenant": ("acme", "globex")[i % 2],
                        "node_id": f"node-{i % 2000:04d}",
                        "lease_epoch": 1,
                        "worker_index": 0,
                        "attempt": 0,
                        "reason": None,
                        "field": None,
                        "progress_percent": float(i % 100),
                        "stage": "searching",
                        "error_type": None,
                        "model_id": None,
                        "time": now,
                    },
                )
            )
    return beats, jobs


def produce(kafka: KafkaAccess, prefix: str, rate: int, seconds: float, pipe: Any) -> None:
    """The producer process: waits for "go", sends ``rate`` events/s for ``seconds``."""
    asyncio.run(_produce(kafka, prefix, rate, seconds, pipe))


async def _produce(kafka: KafkaAccess, prefix: str, rate: int, seconds: float, pipe: Any) -> None:
    names = Namespace(prefix)
    beats_topic = names.topic("lepton.node.heartbeats")
    jobs_topic = names.topic("lepton.jobs.events")
    beat_records, job_records = load_records(int(rate * seconds))
    beats = Encoded.of(beats_topic, beat_records)
    jobs = Encoded.of(jobs_topic, job_records)
    per_slice = max(1, int(rate * SLICE_S))
    producer = AIOKafkaProducer(**kafka.aiokafka(), **PRODUCER_SETTINGS)
    await producer.start()
    try:
        await producer.partitions_for(beats_topic.name)
        await producer.partitions_for(jobs_topic.name)
        pipe.send("ready")
        pipe.recv()
        started = time.perf_counter()
        cpu = time.process_time()
        sent = 0
        acks: list[asyncio.Future[Any]] = []
        b = j = 0
        slices = int(seconds / SLICE_S)
        for index in range(slices):
            jobs_share = per_slice // 5
            acks += await beats.send(producer, beats_topic.name, b, per_slice - jobs_share)
            acks += await jobs.send(producer, jobs_topic.name, j, jobs_share)
            b += per_slice - jobs_share
            j += jobs_share
            sent += per_slice
            # Offered load on a fixed schedule: sleep until the next slice is due.
            delay = started + (index + 1) * SLICE_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*acks)
        elapsed = time.perf_counter() - started
        pipe.send({"sent": sent, "seconds": elapsed, "cpu_s": time.process_time() - cpu})
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Encoded:
    """Messages encoded before the clock starts: at 20,000 events/s, encoding them as they
    are sent took the producer process half a core, taken from the monitor it loads."""

    keys: list[bytes]
    values: list[bytes]
    headers: list[list[tuple[str, bytes]]]

    @classmethod
    def of(cls, topic: Topic, records: list[tuple[str, dict[str, Any]]]) -> Encoded:
        """Encoded and signed (as each record's natural author), before the clock starts."""
        codec, signer = default_codec(), Signer()
        keys = [key.encode() for key, _ in records]
        values = [codec.encode(topic.event, record) for _, record in records]
        headers = [
            common + signer.headers(topic.name, key, value, record)
            for common, key, value, (_, record) in zip(
                event_headers(topic.event, len(records)), keys, values, records, strict=True
            )
        ]
        return cls(keys, values, headers)

    async def send(
        self, producer: AIOKafkaProducer, topic: str, first: int, count: int
    ) -> list[asyncio.Future[Any]]:
        end = first + count
        return await queue_batches(
            producer,
            topic,
            self.keys[first:end],
            self.values[first:end],
            self.headers[first:end],
        )


def probe(sequence: int, agent_started_at: int) -> dict[str, Any]:
    return {
        "node_id": PROBE_NODE,
        "region": "bench",
        "labels": {},
        "gpu_type": None,
        "capacity": {"cpu_millicores": 1, "memory_mib": 1, "gpus": 0, "network_mbps": 0},
        "usage": {"cpu_millicores": 0, "memory_mib": 0, "gpus": 0, "network_mbps": 0},
        "running_job_ids": [],
        "sent_at": now_ms(),
        "sequence": sequence,
        "agent_started_at": agent_started_at,
        "interval_ms": 100,
    }


@functools.cache
def _operator() -> SigningKey:
    """Whose token the probes carry: an operator's, from the installation's master key."""
    return master_key(Settings()).derive(Principal("operator", "bench"))


async def start_monitor(
    kafka: KafkaAccess, database_url: str, prefix: str
) -> tuple[Any, asyncio.Task[None]]:
    """The monitor running in this process under ``prefix``, consuming."""
    monitor = build(
        MonitorSettings(
            **kafka.settings(),
            database_url=database_url,
            topic_prefix=prefix,
            monitor_port=0,
            monitor_metrics_port=0,
        )
    )
    service_task = asyncio.create_task(monitor.service.run())
    await started(monitor.service, service_task)
    return monitor, service_task


def _get_sequence(url: str) -> int | None:
    # A fresh token per probe, as the SDK sends one: its check is part of what is measured.
    token = _operator().token(int(time.time()) + 60)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # loopback only
            return int(json.loads(response.read())["sequence"])
    except urllib.error.HTTPError:
        return None


async def run_rate(
    kafka: KafkaAccess, database_url: str, rate: int, seconds: float
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    names = Namespace(prefix)
    await ensure_topics(kafka, names.all())
    monitor, service_task = await start_monitor(kafka, database_url, prefix)
    await bounded(monitor.web_ready.wait(), "the monitor's web API", 60, service=service_task)
    assert monitor.url is not None
    assert monitor.monitor is not None
    state = monitor.monitor.state
    probe_url = f"{monitor.url}api/nodes/{PROBE_NODE}"

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=produce, args=(kafka, prefix, rate, seconds, child))
    process.start()
    await asyncio.to_thread(parent.recv)  # "ready": records generated, producer connected

    # Warm-up: the consumer group has joined and the API answers before the clock starts.
    async with Publisher(
        kafka, default_codec(), source="bench-warmup", signer=impersonating()
    ) as warmup:
        await warmup.publish(names.topic("lepton.node.heartbeats"), PROBE_NODE, probe(0, 0))
    for _ in range(600):
        if await asyncio.to_thread(_get_sequence, probe_url) is not None:
            break
        await asyncio.sleep(0.1)

    sent_at: dict[int, float] = {}
    seen_at: dict[int, float] = {}
    done = asyncio.Event()

    async def probes(publisher: Publisher) -> None:
        topic = names.topic("lepton.node.heartbeats")
        started = now_ms()
        sequence = 0
        while not done.is_set():
            sequence += 1
            sent_at[sequence] = time.perf_counter()
            record = probe(sequence, started)
            await publisher.send(topic, PROBE_NODE, record)
            await asyncio.sleep(PROBE_EVERY_S)

    async def poll() -> None:
        latest = 0
        while not done.is_set() or latest < max(sent_at, default=0):
            visible = await asyncio.to_thread(_get_sequence, probe_url)
            now = time.perf_counter()
            if visible is not None and visible > latest:
                for sequence in range(latest + 1, visible + 1):
                    seen_at[sequence] = now
                latest = visible
            await asyncio.sleep(POLL_EVERY_S)

    def consumed() -> int:
        return sum(state.events_by_topic.values())

    async with Publisher(
        kafka, default_codec(), source="bench-probe", signer=impersonating()
    ) as publisher:
        before = consumed()
        probe_task = asyncio.create_task(probes(publisher))
        poll_task = asyncio.create_task(poll())
        started = time.perf_counter()
        parent.send("go")
        report = await asyncio.to_thread(parent.recv)
        load_end = time.perf_counter()
        during = consumed() - before
        done.set()
        await probe_task
        # Drain: everything produced (load plus probes) read by the monitor, bounded.
        target = before + report["sent"] + len(sent_at)
        backlog = max(0, target - consumed())
        for _ in range(1200):  # at most a minute
            if consumed() >= target:
                break
            await asyncio.sleep(0.05)
        drained = time.perf_counter()
        async with asyncio.timeout(30):
            await poll_task
    process.join(10)
    monitor.service.stop_soon()
    await service_task

    latencies = sorted(seen_at[s] - sent_at[s] for s in seen_at if s in sent_at)
    total = consumed() - before

    def q(fraction: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000, 1)

    return {
        "offered_per_s": rate,
        "seconds": round(seconds, 1),
        "produced": report["sent"],
        "produced_per_s": round(report["sent"] / report["seconds"]),
        "producer_cpu_s_per_million": round(report["cpu_s"] / report["sent"] * 1e6, 1),
        "ingest_per_s_during_load": round(during / (load_end - started)),
        "backlog_at_load_end": backlog,
        "drain_s": round(drained - load_end, 2),
        "sustained_ingest_per_s": round(total / (drained - started)),
        "probes": len(latencies),
        "latency_ms_p50": q(0.5),
        "latency_ms_p95": q(0.95),
        "latency_ms_max": round(latencies[-1] * 1000, 1) if latencies else None,
    }


async def drain(kafka: KafkaAccess, database_url: str, count: int) -> dict[str, Any]:
    """The ceiling: a backlog of ``count`` events, read by a bare Subscriber (no-op
    handler, the bus alone) and then by the monitor, on the same broker, no producer."""
    prefix = f"drain{uuid.uuid4().hex[:8]}."
    names = Namespace(prefix)
    await ensure_topics(kafka, names.all())
    beats, jobs = load_records(count)
    codec = default_codec()
    async with Publisher(kafka, codec, source="bench-backlog", signer=impersonating()) as publisher:
        await publisher.publish_many(names.topic("lepton.node.heartbeats"), beats)
        await publisher.publish_many(names.topic("lepton.jobs.events"), jobs)
        finished = asyncio.Event()
        seen = 0

        async def nothing(event: Event) -> None:
            nonlocal seen
            seen += 1
            if seen == count:
                finished.set()

        bare = Subscriber(
            kafka,
            codec,
            publisher,
            topics=[names.topic("lepton.node.heartbeats"), names.topic("lepton.jobs.events")],
            group_id=prefix + "bare",
            handler=nothing,
        )
        await bare.start()
        started, cpu = time.perf_counter(), time.process_time()
        running = asyncio.create_task(bare.run())
        await bounded(
            finished.wait(), f"a bare subscriber to read {count:,} events", 120, service=running
        )
        bare_s, bare_cpu = time.perf_counter() - started, time.process_time() - cpu
        bare.stop_soon()
        await running
        await bare.close()

    monitor, service_task = await start_monitor(kafka, database_url, prefix)
    assert monitor.monitor is not None
    state = monitor.monitor.state
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(2400):  # at most two minutes
        if sum(state.events_by_topic.values()) >= count:
            break
        await asyncio.sleep(0.05)
    monitor_s, monitor_cpu = time.perf_counter() - started, time.process_time() - cpu
    monitor.service.stop_soon()
    await service_task
    return {
        "events": count,
        "bare_subscriber_per_s": round(count / bare_s),
        "bare_cpu_s_per_million": round(bare_cpu / count * 1e6, 1),
        "monitor_per_s": round(count / monitor_s),
        "monitor_cpu_s_per_million": round(monitor_cpu / count * 1e6, 1),
        "monitor_vs_bare": round(bare_s / monitor_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="5000,20000", help="offered events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=12.0, help="load duration per rate")
    parser.add_argument("--backlog", type=int, default=100_000, help="events for the drain test")
    args = parser.parse_args()
    settings = Settings()
    where = devstack.endpoints(settings)
    # The monitor connects as its own login, as `lepton up` runs it: as the superuser its
    # migrations would be recorded where the real monitor does not look, and each would
    # then fail the other's start.
    monitor_url = devstack.endpoints(settings, "monitor").database_url
    rows = []
    for rate in (int(r) for r in args.rates.split(",")):
        rows.append(asyncio.run(run_rate(where.kafka, monitor_url, rate, args.seconds)))
    columns = [
        ("offered/s", "offered_per_s"),
        ("produced/s", "produced_per_s"),
        ("ingest/s (load)", "ingest_per_s_during_load"),
        ("backlog", "backlog_at_load_end"),
        ("drain s", "drain_s"),
        ("sustained/s", "sustained_ingest_per_s"),
        ("probes", "probes"),
        ("p50 ms", "latency_ms_p50"),
        ("p95 ms", "latency_ms_p95"),
        ("max ms", "latency_ms_max"),
    ]
    print(" | ".join(f"{title:>15}" for title, _ in columns))
    for row in rows:
        print(" | ".join(f"{row[key]!s:>15}" for _, key in columns))
    ceiling = asyncio.run(drain(where.kafka, monitor_url, args.backlog))
    print(
        f"\nbacklog of {ceiling['events']} events, no producer running: "
        f"bare Subscriber {ceiling['bare_subscriber_per_s']}/s "
        f"({ceiling['bare_cpu_s_per_million']} CPU-s per million), "
        f"monitor {ceiling['monitor_per_s']}/s ({ceiling['monitor_cpu_s_per_million']} CPU-s "
        f"per million) = {ceiling['monitor_vs_bare']} x the bare bus"
    )
    target = next((row for row in rows if row["offered_per_s"] == 20000), None)
    report = {
        "benchmark": "monitor",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "rows": rows,
        "drain": ceiling,
        "target": {
            "p95_ms_at_20000_per_s": 1000,
            "met": bool(
                target and target["latency_ms_p95"] is not None and target["latency_ms_p95"] <= 1000
            ),
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "monitor.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'monitor.json'}")


if __name__ == "__main__":
    main()
