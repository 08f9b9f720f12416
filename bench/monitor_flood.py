"""The monitor's memory under a flood of heartbeats from nodes nobody knows.

    .venv/bin/python -m bench.monitor_flood [--nodes 300000] [--seconds 10] [--after 60]
        [--tree DIR] [--set LEPTON_MONITOR_MAX_NODES=50000 ...]

Against the local stack (``lepton stack up``), under a fresh topic prefix: a monitor runs
in its own process (from ``--tree``, a source checkout: this one by default, so that two
versions can be compared), eight real nodes beat every second for the whole run, and
after a warm-up ``--nodes`` heartbeats of as many unknown nodes (pre-encoded and signed)
are sent within ``--seconds``; they never beat again. The monitor's resident memory
(VmRSS) is read every half second.

Reported: RSS before the flood, its peak, RSS once the monitor has read the flood, and
``--after`` seconds later; the nodes the monitor counts then (its /metrics) and the
``node_dead`` alerts it published. Writes ``bench/results/monitor_flood.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.bus import PRODUCER_SETTINGS
from bench.monitor import Encoded
from bench.records import heartbeat
from lepton import devstack
from lepton.bus import Publisher, provision
from lepton.config import KafkaAccess, Settings
from lepton.contract import default_codec
from lepton.contract.topics import Namespace
from lepton.testing import impersonating

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
REAL_NODES = 8
SAMPLE_S = 0.5
WAIT_BOUND_S = 600.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found is not None, "no VmRSS: not Linux?"
    return int(found.group(1)) / 1024


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics/", timeout=10) as answer:
        return str(answer.read().decode())


def nodes_counted(port: int) -> dict[str, float]:
    return {
        state: float(value)
        for state, value in re.findall(
            r'^lepton_nodes\{state="(\w+)"\} (\S+)$', metrics(port), re.M
        )
    }


async def wait_until(what: str, check: Any, bound_s: float = WAIT_BOUND_S) -> None:
    deadline = time.monotonic() + bound_s
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {bound_s:.0f} s")
        await asyncio.sleep(SAMPLE_S)


async def monitor_lag(kafka: KafkaAccess, names: Namespace) -> int:
    """Heartbeats the monitor's consumer group has not committed yet."""
    topic = names.topic("lepton.node.heartbeats").name
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    consumer = AIOKafkaConsumer(topic, **kafka.aiokafka(), group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(names.group("lepton-monitor"))
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = await consumer.end_offsets(partitions)
        return sum(end - (committed[p].offset if p in committed else 0) for p, end in ends.items())
    finally:
        await consumer.stop()
        await admin.close()


async def beat_forever(publisher: Publisher, names: Namespace) -> None:
    """Eight real nodes, beating every second (they keep the heartbeat clock moving)."""
    topic = names.topic("lepton.node.heartbeats")
    started = now_ms() - 1000
    sequence = 0
    while True:
        sequence += 1
        for index in range(REAL_NODES):
            node = f"real-{index}"
            record = heartbeat(sequence, node_id=node, sent_at=now_ms(), agent_started_at=started)
            record["sequence"] = sequence
            await publisher.send(topic, node, record)
        await asyncio.sleep(1.0)


async def node_dead_alerts(kafka: KafkaAccess, names: Namespace) -> dict[str, int]:
    """``node_dead`` alerts published under ``names``: firing per subject, and grouped."""
    consumer = AIOKafkaConsumer(
        names.topic("lepton.alerts").name,
        **kafka.aiokafka(),
        group_id=None,
        auto_offset_reset="earliest",
    )
    codec = default_codec()
    firing = grouped = 0
    await consumer.start()
    try:
        while batch := await consumer.getmany(timeout_ms=3000):
            for messages in batch.values():
                for message in messages:
                    record = codec.decode(message.value)[1]
                    if record["rule"] == "node_dead" and record["state"] == "firing":
                        firing += 1
                        grouped += record["subject"] == "*"
    finally:
        await consumer.stop()
    return {"node_dead_firing": firing, "of_them_grouped": grouped}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings()
    kafka = devstack.endpoints(settings).kafka
    names = Namespace(f"flood{uuid.uuid4().hex[:8]}.")
    await provision(kafka, names)  # the topics, their dead-letter topics and the ACLs
    print(f"encoding {args.nodes:,} heartbeats of unknown nodes ...", flush=True)
    now = now_ms()
    beats_topic = names.topic("lepton.node.heartbeats")
    flood = Encoded.of(
        beats_topic,
        [
            (
                f"ghost-{i:06d}",
                heartbeat(i, node_id=f"ghost-{i:06d}", sent_at=now, agent_started_at=now - 1000),
            )
            for i in range(args.nodes)
        ],
    )
    metrics_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(args.tree),
        "LEPTON_TOPIC_PREFIX": names.prefix,
        "LEPTON_MONITOR_PORT": "0",
        "LEPTON_MONITOR_METRICS_PORT": str(metrics_port),
        **dict(pair.split("=", 1) for pair in args.set),
    }
    log = RESULTS / "monitor_flood.log"
    RESULTS.mkdir(exist_ok=True)
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: ASYNC220  # started once, before any waiting
            [sys.executable, "-c", "from lepton.services.monitor.app import main; main()"],
            cwd=args.tree,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    samples: list[tuple[float, float]] = []

    async def sample_rss() -> None:
        start = time.monotonic()
        while True:
            samples.append((time.monotonic() - start, rss_mib(process.pid)))
            await asyncio.sleep(SAMPLE_S)

    async def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"the monitor exited ({process.returncode}); see {log}")
        try:
            return "lepton_nodes" in await asyncio.to_thread(metrics, metrics_port)
        except OSError:
            return False

    sampling = asyncio.create_task(sample_rss())
    try:
        await wait_until("the monitor's /metrics", healthy, 120)
        async with Publisher(kafka, default_codec(), source="bench", signer=impersonating()) as pub:
            beating = asyncio.create_task(beat_forever(pub, names))
            try:
                await asyncio.sleep(args.warmup)
                before = rss_mib(process.pid)
                print(f"RSS before the flood: {before:.0f} MiB; flooding ...", flush=True)
                producer = AIOKafkaProducer(**kafka.aiokafka(), **PRODUCER_SETTINGS)
                await producer.start()
                try:
                    acks: list[Any] = []
                    slices = max(1, int(args.seconds / 0.1))
                    per_slice = -(-args.nodes // slices)
                    started = time.perf_counter()
                    for index in range(slices):
                        first = index * per_slice
                        count = min(per_slice, args.nodes - first)
                        if count > 0:
                            acks += await flood.send(producer, beats_topic.name, first, count)
                        delay = started + (index + 1) * 0.1 - time.perf_counter()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    await asyncio.gather(*acks)
                    flood_s = time.perf_counter() - started
                finally:
                    await producer.stop()

                async def caught_up() -> bool:
                    return await monitor_lag(kafka, names) <= REAL_NODES

                await wait_until("the monitor reading the flood", caught_up)
                read = rss_mib(process.pid)
                print(f"flood read: RSS {read:.0f} MiB; waiting {args.after:.0f} s", flush=True)
                await asyncio.sleep(args.after)
                after = rss_mib(process.pid)
                counted = await asyncio.to_thread(nodes_counted, metrics_port)
            finally:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
    finally:
        sampling.cancel()
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    alerts = await node_dead_alerts(kafka, names)
    return {
        "tree": str(args.tree),
        "settings": args.set,
        "unknown_nodes": args.nodes,
        "flood_s": round(flood_s, 1),
        "rss_mib_before": round(before),
        "rss_mib_peak": round(max(rss for _, rss in samples)),
        "rss_mib_flood_read": round(read),
        "rss_mib_after": round(after),
        "after_s": args.after,
        "nodes_counted_after": counted,
        **alerts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=300_000, help="unknown nodes in the flood")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the flood")
    parser.add_argument("--after", type=float, default=60.0, help="seconds watched after it")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout the monitor runs from")
    parser.add_argument("--set", action="append", default=[], help="NAME=VALUE for the monitor")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    path = RESULTS / "monitor_flood.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*runs, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
