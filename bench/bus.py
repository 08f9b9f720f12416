"""Bus throughput: our Avro bus against raw aiokafka and Kafka's own producer, one broker.

    make bench            # or: .venv/bin/python -m bench.bus [--events N]

Four measurements in one run, on the same broker, with the same producer settings
(idempotent, acks=all, linger 5 ms) and heartbeat-sized messages:

1. ``kafka-producer-perf-test`` (Kafka's ProducerPerformance, from the same Maven jars);
2. raw aiokafka sending pre-encoded bytes (the baseline);
3. our :class:`~lepton.bus.Publisher` encoding each heartbeat to Avro (produce alone);
4. produce -> consume, raw aiokafka against our Publisher + Subscriber (decode + handler).

Records are generated before the clock starts. Prints a table; writes
``bench/results/bus.json``. Target: our bus >= 0.7 x raw aiokafka.

Then what security costs: a broker of the benchmark's own (a temporary directory) listens
with PLAINTEXT, SASL_PLAINTEXT (SCRAM-SHA-512) and SASL_SSL at once; our bus's produce and
produce -> consume run through each, in turns, best of two rounds, as ratios against
PLAINTEXT. Target: SCRAM costs <= 10 % (ratio >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.listeners import ratios_to_plaintext, three_listeners
from bench.records import heartbeat
from bench.waiting import bounded
from lepton import devstack
from lepton.bus import (
    Authenticator,
    Event,
    Publisher,
    Subscriber,
    ensure_topics,
    partition_for,
)
from lepton.config import KafkaAccess, Settings
from lepton.contract import default_codec
from lepton.contract.identity import IdentityKey, Verifier
from lepton.contract.topics import Namespace, Topic
from lepton.devstack._kafka import check_java, fetch_jars, java_classpath
from lepton.devstack._process import write_private
from lepton.testing import impersonating

RESULTS = Path(__file__).parent / "results"
PRODUCER_SETTINGS = {"acks": "all", "enable_idempotence": True, "linger_ms": 5}


def heartbeats(count: int) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        heartbeat(
            i,
            node_id=f"node-{i % 10_000:05d}",
            sent_at=now + i,
            agent_started_at=now,
            labels={"pool": "cpu", "zone": "b"},
            running_job_ids=[f"job-{i:08d}"],
        )
        for i in range(count)
    ]


class Clock:
    """Wall time and this process's CPU time over a block."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def row(name: str, events: int, clock: Clock | None, rate: float | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "events": events,
        "seconds": round(clock.wall, 3) if clock else None,
        "events_per_s": round(rate if rate is not None else events / clock.wall)
        if clock or rate
        else None,
        "client_cpu_s_per_million": round(clock.cpu / events * 1e6, 2) if clock else None,
    }


def _names_of(topic: Topic) -> Namespace:
    return Namespace(topic.name.removesuffix("lepton.node.heartbeats"))


async def fresh_topic(kafka: KafkaAccess, partitions: int = 6) -> Topic:
    # Named as a heartbeats topic under a prefix of its own: what the signed trip's
    # authenticator checks heartbeats against.
    name = f"bench.{uuid.uuid4().hex[:8]}.lepton.node.heartbeats"
    topic = Topic(name, "lepton.NodeHeartbeat", "node id", partitions)
    await ensure_topics(kafka, [topic], with_dead_letters=False)
    return topic


async def raw_send_each(producer: AIOKafkaProducer, topic: str, keys, values) -> None:
    pending = [
        await producer.send(topic, value, key=key) for key, value in zip(keys, values, strict=True)
    ]
    await asyncio.gather(*pending)


async def queue_batches(
    producer: AIOKafkaProducer, topic: str, keys, values, headers=None
) -> list[asyncio.Future[Any]]:
    """Pre-encoded bytes (and headers, one list per message) appended to per-partition
    batches and handed to the producer; returns the batches' acknowledgements."""
    partitions = sorted(await producer.partitions_for(topic))
    batches: dict[int, Any] = {}
    pending = []
    for index, (key, value) in enumerate(zip(keys, values, strict=True)):
        extra = headers[index] if headers is not None else None
        partition = partition_for(key, len(partitions))
        batch = batches.get(partition) or batches.setdefault(partition, producer.create_batch())
        if batch.append(key=key, value=value, timestamp=None, headers=extra) is None:
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
            batch = batches[partition] = producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=extra)
    for partition, batch in batches.items():
        batch.close()
        pending.append(await producer.send_batch(batch, topic, partition=partition))
    return pending


async def raw_send_batches(producer: AIOKafkaProducer, topic: str, keys, values) -> None:
    """aiokafka at its fastest: pre-encoded bytes appended to per-partition batches."""
    await asyncio.gather(*await queue_batches(producer, topic, keys, values))


async def raw_produce(kafka: KafkaAccess, keys, values, send=raw_send_each) -> Clock:
    topic = await fresh_topic(kafka)
    producer = AIOKafkaProducer(**kafka.aiokafka(), **PRODUCER_SETTINGS)
    await producer.start()
    try:
        with Clock() as clock:
            await send(producer, topic.name, keys, values)
    finally:
        await producer.stop()
    return clock


async def bus_send_each(publisher: Publisher, topic: Topic, records) -> None:
    pending = [await publisher.send(topic, record["node_id"], record) for record in records]
    await asyncio.gather(*pending)


async def bus_send_many(publisher: Publisher, topic: Topic, records) -> None:
    await publisher.publish_many(topic, ((record["node_id"], record) for record in records))


async def bus_produce(kafka: KafkaAccess, records, send=bus_send_each) -> Clock:
    topic = await fresh_topic(kafka)
    async with Publisher(kafka, default_codec(), source="bench") as publisher:
        with Clock() as clock:
            await send(publisher, topic, records)
    return clock


async def raw_round_trip(kafka: KafkaAccess, keys, values) -> Clock:
    """Pre-encoded bytes sent one by one, consumed without decoding, committed per batch."""
    topic = await fresh_topic(kafka)
    consumer = AIOKafkaConsumer(
        topic.name,
        **kafka.aiokafka(),
        group_id=f"bench-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    producer = AIOKafkaProducer(**kafka.aiokafka(), **PRODUCER_SETTINGS)
    await asyncio.gather(consumer.start(), producer.start())

    async def consume() -> None:
        seen = 0
        while seen < len(values):
            batch = await consumer.getmany(timeout_ms=500, max_records=500)
            seen += sum(len(messages) for messages in batch.values())
            if batch:
                await consumer.commit()

    try:
        with Clock() as clock:
            reader = asyncio.create_task(consume())
            await raw_send_each(producer, topic.name, keys, values)
            await reader
    finally:
        await asyncio.gather(consumer.stop(), producer.stop())
    return clock


async def bus_round_trip(kafka: KafkaAccess, records, *, signed: bool = False) -> Clock:
    """Heartbeats encoded and sent with publish_many, decoded and handled by a Subscriber;
    ``signed``: each signed by its node and verified by the subscriber, as the services
    do (what record signatures cost, against the same trip unsigned)."""
    topic = await fresh_topic(kafka)
    master = IdentityKey.generate()
    done = asyncio.Event()
    seen = 0

    async def handle(event: Event) -> None:
        nonlocal seen
        seen += 1
        if seen == len(records):
            done.set()

    codec = default_codec()
    signer = impersonating(master) if signed else None
    async with Publisher(kafka, codec, source="bench", signer=signer) as publisher:
        subscriber = Subscriber(
            kafka,
            codec,
            publisher,
            topics=[topic],
            group_id=f"bench-{uuid.uuid4().hex[:6]}",
            handler=handle,
            # The bench's topic is a heartbeats topic under a prefix of its own.
            authenticator=Authenticator(Verifier(master), _names_of(topic), codec)
            if signed
            else None,
        )
        await subscriber.start()
        try:
            with Clock() as clock:
                reader = asyncio.create_task(subscriber.run())
                await bus_send_many(publisher, topic, records)
                await bounded(
                    done.wait(),
                    f"the subscriber to handle {len(records):,} events",
                    300,
                    service=reader,
                )
            subscriber.stop_soon()
            await reader
        finally:
            await subscriber.close()
    return clock


def kafka_perf_test(kafka: KafkaAccess, events: int, size: int) -> dict[str, Any]:
    settings = Settings()
    jars = fetch_jars(settings.cache_dir, settings.maven)
    topic = asyncio.run(fresh_topic(kafka))
    # The Java client's settings, credentials included: in a file only we can read.
    with tempfile.TemporaryDirectory() as private:
        config = Path(private) / "producer.properties"
        write_private(config, kafka.java_properties().encode())
        result = subprocess.run(
            [
                check_java(settings.java),
                "-Xmx512m",
                "-cp",
                java_classpath(jars),
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic",
                topic.name,
                "--num-records",
                str(events),
                "--record-size",
                str(size),
                "--throughput",
                "-1",
                "--producer.config",
                str(config),
                "--producer-props",
                "acks=all",
                "enable.idempotence=true",
                "linger.ms=5",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    summary = result.stdout.strip().splitlines()[-1]
    match = re.search(r"([\d.]+) records/sec", summary)
    rate = float(match.group(1)) if match else float("nan")
    return {
        "name": "kafka-producer-perf-test (Java)",
        "events": events,
        "seconds": None,
        "events_per_s": round(rate),
        "client_cpu_s_per_million": None,
        "raw": summary,
    }


def security_costs(events: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Our bus through each listener of a broker of its own: rows and ratios to PLAINTEXT."""
    records = heartbeats(events)
    best: dict[tuple[str, str], Clock] = {}
    with three_listeners() as accesses:
        for access in accesses.values():  # warm every path up once
            asyncio.run(bus_produce(access, records[: events // 10], bus_send_many))
        for _round in range(2):
            for protocol, access in accesses.items():
                for kind, measure in (
                    ("produce", lambda a: bus_produce(a, records, bus_send_many)),
                    ("produce -> consume", lambda a: bus_round_trip(a, records)),
                ):
                    clock = asyncio.run(measure(access))
                    key = (protocol, kind)
                    if key not in best or clock.wall < best[key].wall:
                        best[key] = clock
    rows = [
        row(f"lepton {kind} over {protocol}", events, clock)
        for (protocol, kind), clock in best.items()
    ]
    return rows, ratios_to_plaintext({key: events / clock.wall for key, clock in best.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--security-only", action="store_true", help="only what SASL and TLS cost")
    args = parser.parse_args()
    if args.security_only:
        report_security(*security_costs(args.events), args.events)
        return
    kafka = devstack.endpoints(Settings()).kafka
    codec = default_codec()
    records = heartbeats(args.events)
    values = [codec.encode("lepton.NodeHeartbeat", record) for record in records]
    keys = [record["node_id"].encode() for record in records]
    size = round(sum(map(len, values)) / len(values))

    async def warm_up() -> None:
        await raw_produce(kafka, keys[:20_000], values[:20_000])
        await bus_produce(kafka, records[:20_000], bus_send_many)

    asyncio.run(warm_up())
    security_rows, security_ratios = security_costs(args.events // 2)
    rows = [kafka_perf_test(kafka, args.events, size)]
    raw_each = asyncio.run(raw_produce(kafka, keys, values))
    raw_batched = asyncio.run(raw_produce(kafka, keys, values, raw_send_batches))
    ours_each = asyncio.run(bus_produce(kafka, records))
    ours_many = asyncio.run(bus_produce(kafka, records, bus_send_many))
    raw_trip = asyncio.run(raw_round_trip(kafka, keys, values))
    our_trip = asyncio.run(bus_round_trip(kafka, records))
    signed_trip = asyncio.run(bus_round_trip(kafka, records, signed=True))
    rows += [
        row("raw aiokafka send(), pre-encoded bytes [baseline]", args.events, raw_each),
        row("raw aiokafka send_batch(), pre-encoded bytes", args.events, raw_batched),
        row("lepton Publisher.send(), Avro-encoding each", args.events, ours_each),
        row("lepton Publisher.publish_many(), Avro-encoding each", args.events, ours_many),
        row("raw aiokafka send() -> consume, no decoding", args.events, raw_trip),
        row("lepton publish_many() -> Subscriber (decode, handler)", args.events, our_trip),
        row("  the same, each signed and verified (HMAC-SHA256)", args.events, signed_trip),
    ]
    ratios = {
        "produce, publish_many / raw send() [target >= 0.7]": round(
            raw_each.wall / ours_many.wall, 3
        ),
        "produce, Publisher.send() / raw send()": round(raw_each.wall / ours_each.wall, 3),
        "produce, publish_many / raw send_batch()": round(raw_batched.wall / ours_many.wall, 3),
        "produce -> consume, lepton / raw [target >= 0.7]": round(raw_trip.wall / our_trip.wall, 3),
        "produce -> consume, signed / unsigned": round(our_trip.wall / signed_trip.wall, 3),
    }
    report = {
        "benchmark": "bus",
        "message_bytes": size,
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "rows": rows,
        "ratios": ratios,
        "security": {"rows": security_rows, "ratios": security_ratios},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"\nbus benchmark: {args.events} heartbeats of {size} bytes, one broker\n")
    print(f"{'measurement':58} {'events/s':>10} {'client CPU s / 1M':>18}")
    for entry in rows:
        cpu = entry["client_cpu_s_per_million"]
        print(
            f"{entry['name']:58} {entry['events_per_s']:>10,} {cpu if cpu is not None else '-':>18}"
        )
    print()
    for name, value in ratios.items():
        print(f"{name:58} {value:>10}")
    report_security(security_rows, security_ratios, args.events // 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bus.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {RESULTS / 'bus.json'}")


def report_security(rows: list[dict[str, Any]], ratios: dict[str, float], events: int) -> None:
    print(f"\nwhat security costs: {events} heartbeats, one broker, three listeners\n")
    for entry in rows:
        print(f"{entry['name']:58} {entry['events_per_s']:>10,}")
    print()
    for name, value in ratios.items():
        print(f"{name:58} {value:>10}")


if __name__ == "__main__":
    main()
