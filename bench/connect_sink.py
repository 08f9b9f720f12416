"""Kafka Connect sink: job events/s from a topic to PostgreSQL through Debezium's JDBC sink
with Lepton's converter, against Connect's own JsonConverter on the same events, and a
run with the worker killed once in the middle that must lose and double nothing.

    .venv/bin/python -m bench.connect_sink [--events 100000] [--timeout 600]

It runs against the Kafka and PostgreSQL the settings name, else the running local stack
(``lepton stack up``), as the admin (the tests run the worker as the client principal).

1. ``--events`` job events (pre-generated) go to a topic of the test's own as Lepton writes
   them (single-object Avro, signed) and, as JSON with schemas (JsonConverter's envelope),
   to another topic with the same partitions.
2. For each converter in turn, a fresh standalone worker (one sink task, the same sink
   settings) sinks its topic into a table of its own; events/s is the rows written between
   the first row seen and the last, over that time (the worker's start is not counted).
3. ``restart``: Lepton's converter again, into a new table; when about half the rows are
   in, the worker is killed (SIGKILL: offsets of the last batches are not committed, so
   they are delivered again) and started again on the same offsets. The sink upserts on
   Kafka's coordinates (``primary.key.mode=kafka``, ``insert.mode=upsert``): a record
   delivered again overwrites its own row. Checked: exactly ``--events`` rows, each event
   (job id, time) once.

Prints a table; writes ``bench/results/connect_sink.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.waiting import say

if TYPE_CHECKING:
    from lepton.config import KafkaAccess
    from tests.connect.worker import ConnectJars, Warehouse, Worker

RESULTS = Path(__file__).parent / "results" / "connect_sink.json"
SINK_TUNING = {
    # Both converters' runs use the same sink: larger batches than the defaults (500).
    "batch.size": "5000",
    "consumer.override.max.poll.records": "5000",
    "tasks.max": "1",
}

_OPTIONAL_STRING = {"type": "string", "optional": True}
# JobEvent as Connect's JsonConverter carries it (schemas.enable=true): the baseline writes
# each event in this envelope, so that its sink gets the same typed columns.
JSON_SCHEMA = {
    "type": "struct",
    "name": "lepton.JobEvent",
    "optional": False,
    "fields": [
        {"field": "job_id", "type": "string", "optional": False},
        {"field": "kind", "type": "string", "optional": False},
        {"field": "tenant", "type": "string", "optional": False},
        {"field": "node_id", **_OPTIONAL_STRING},
        {"field": "lease_epoch", "type": "int64", "optional": True},
        {"field": "worker_index", "type": "int32", "optional": True},
        {"field": "attempt", "type": "int32", "optional": False},
        {"field": "reason", **_OPTIONAL_STRING},
        {"field": "field", **_OPTIONAL_STRING},
        {"field": "progress_percent", "type": "float", "optional": True},
        {"field": "stage", **_OPTIONAL_STRING},
        {"field": "error_type", **_OPTIONAL_STRING},
        {"field": "model_id", **_OPTIONAL_STRING},
        {
            "field": "time",
            "type": "int64",
            "name": "org.apache.kafka.connect.data.Timestamp",
            "version": 1,
            "optional": False,
        },
    ],
}


def _produce_json(kafka: KafkaAccess, topic: str, events: list[dict[str, Any]]) -> None:
    import confluent_kafka

    producer = confluent_kafka.Producer(
        {**kafka.librdkafka(), "linger.ms": 20, "compression.type": "lz4"}
    )
    for event in events:
        value = json.dumps({"schema": JSON_SCHEMA, "payload": event}).encode()
        while True:
            try:
                producer.produce(topic, value, event["job_id"].encode())
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.1)
    if producer.flush(120) != 0:
        raise SystemExit("the JSON events were not all acknowledged in 120 s")


async def _rows(database_url: str, warehouse: Warehouse, table: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        exists = await connection.fetchval(
            "SELECT to_regclass($1) IS NOT NULL", f"{warehouse.schema}.{table}"
        )
        if not exists:
            return 0
        count: int = await connection.fetchval(f"SELECT count(*) FROM {warehouse.schema}.{table}")
        return count
    finally:
        await connection.close()


async def _until_rows(
    worker: Worker,
    connector: str,
    rows: Any,
    wanted: int,
    timeout_s: float,
) -> tuple[float, int, float]:
    """Waits until ``wanted`` rows are in; returns (time of the first rows seen, how many
    rows were then in, time of the last)."""
    deadline = time.monotonic() + timeout_s
    first: tuple[float, int] | None = None
    while True:
        count = await rows()
        now = time.monotonic()
        if count and first is None:
            first = (now, count)
        if count >= wanted:
            assert first is not None
            return first[0], first[1], now
        await asyncio.to_thread(worker.check, connector)
        if now > deadline:
            raise SystemExit(f"{connector}: {count} of {wanted} rows after {timeout_s:.0f} s")
        await asyncio.sleep(0.2)


async def _sink_rate(
    jars: ConnectJars,
    kafka: KafkaAccess,
    home: Path,
    connector: dict[str, str],
    rows: Any,
    wanted: int,
    timeout_s: float,
) -> dict[str, float]:
    from tests.connect.worker import start_worker

    worker = await asyncio.to_thread(start_worker, jars, kafka, home, {"sink": connector})
    try:
        start, already, end = await _until_rows(worker, "sink", rows, wanted, timeout_s)
    finally:
        await asyncio.to_thread(worker.stop)
    return {"events_per_s": (wanted - already) / (end - start), "seconds": end - start}


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    from lepton import devstack
    from lepton.bus import Publisher, ensure_topics
    from lepton.config import Settings
    from lepton.contract.topics import Namespace, Topic
    from lepton.testing import impersonating, service_codec
    from tests.connect.worker import (
        connect_jars,
        create_warehouse,
        drop_warehouse,
        jdbc_sink,
        job_events,
    )

    settings = Settings()
    where = devstack.endpoints(settings)
    kafka, database_url = where.kafka, where.database_url
    names = Namespace(f"connect{uuid.uuid4().hex[:8]}.")
    lepton_topic = names.topic("lepton.jobs.events")
    json_topic = Topic(
        names.prefix + "bench.jobs.events.json", "JSON", "job id", lepton_topic.partitions
    )
    say("building the converter and fetching the worker's jars")
    jars = await asyncio.to_thread(connect_jars, settings)
    events = job_events(args.events)
    await ensure_topics(kafka, [lepton_topic, json_topic])
    say(f"writing {args.events} job events, as Lepton does and as JSON with schemas")
    async with Publisher(kafka, service_codec(), source="bench", signer=impersonating()) as out:
        for start in range(0, len(events), 10_000):
            chunk = events[start : start + 10_000]
            await out.publish_many(lepton_topic, [(e["job_id"], e) for e in chunk])
    await asyncio.to_thread(_produce_json, kafka, json_topic.name, events)
    warehouse = await create_warehouse(database_url)
    results: dict[str, Any] = {"events": args.events}
    lepton = {
        "value.converter": "dev.lepton.connect.LeptonConverter",
        "value.converter.event": "lepton.JobEvent",
    }
    try:
        with tempfile.TemporaryDirectory(prefix="lepton-connect-bench-") as directory:
            root = Path(directory)

            def table(name: str) -> Any:
                return lambda: _rows(database_url, warehouse, name)

            def sink(topic: str, name: str, converter: dict[str, str]) -> dict[str, str]:
                return (
                    jdbc_sink(topic, name, warehouse, database_url)
                    | SINK_TUNING
                    | converter
                    | {"consumer.override.group.id": names.group(f"connect-{name}")}
                )

            say("sinking through Connect's JsonConverter (the baseline)")
            results["json_converter"] = await _sink_rate(
                jars,
                kafka,
                root / "json",
                sink(
                    json_topic.name,
                    "json_events",
                    {
                        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                        "value.converter.schemas.enable": "true",
                    },
                ),
                table("json_events"),
                args.events,
                args.timeout,
            )
            say("sinking through Lepton's converter")
            results["lepton_converter"] = await _sink_rate(
                jars,
                kafka,
                root / "lepton",
                sink(lepton_topic.name, "lepton_events", lepton),
                table("lepton_events"),
                args.events,
                args.timeout,
            )
            say("sinking again, the worker killed half way")
            results["restart"] = await _restart(
                jars,
                kafka,
                root / "restart",
                sink(lepton_topic.name, "restart_events", lepton),
                table("restart_events"),
                args,
            )
            results["restart"] |= await _check_rows(
                database_url, warehouse, "restart_events", events
            )
    finally:
        await drop_warehouse(database_url, warehouse)
    results["ratio"] = (
        results["lepton_converter"]["events_per_s"] / results["json_converter"]["events_per_s"]
    )
    return results


async def _restart(
    jars: ConnectJars,
    kafka: KafkaAccess,
    home: Path,
    connector: dict[str, str],
    rows: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    from tests.connect.worker import start_worker

    worker = await asyncio.to_thread(start_worker, jars, kafka, home, {"sink": connector})
    try:
        await _until_rows(worker, "sink", rows, args.events // 2, args.timeout)
        at_kill = await rows()
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(30)
    finally:
        await asyncio.to_thread(worker.stop)
    worker = await asyncio.to_thread(start_worker, jars, kafka, home, {"sink": connector})
    try:
        await _until_rows(worker, "sink", rows, args.events, args.timeout)
    finally:
        await asyncio.to_thread(worker.stop)
    return {"rows_when_killed": at_kill}


async def _check_rows(
    database_url: str, warehouse: Any, table: str, events: list[dict[str, Any]]
) -> dict[str, Any]:
    """Rows, distinct Kafka coordinates, and distinct events (job id, time) against the
    events written: lost = written and not found, doubled = rows beyond one per event."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        rows, coordinates, distinct = await connection.fetchrow(
            f"SELECT count(*), count(DISTINCT (__connect_partition, __connect_offset)),"
            f" count(DISTINCT (job_id, time)) FROM {warehouse.schema}.{table}"
        )
    finally:
        await connection.close()
    return {
        "rows": rows,
        "distinct_coordinates": coordinates,
        "lost": len(events) - distinct,
        "doubled": rows - distinct,
    }


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="job events per run")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per wait")
    args = parser.parse_args()
    load_before = _load()
    results = asyncio.run(_run(args))
    print(
        f"{args.events} job events, topic -> PostgreSQL (Debezium JDBC sink, one task); "
        f"2 shared cores ({os.cpu_count()} CPUs seen; load before: {load_before}, after: {_load()})"
    )
    print(f"{'converter':<28}{'events/s':>12}{'seconds':>10}")
    for name, key in (
        ("JsonConverter (baseline)", "json_converter"),
        ("LeptonConverter", "lepton_converter"),
    ):
        row = results[key]
        print(f"{name:<28}{row['events_per_s']:>12,.0f}{row['seconds']:>10.1f}")
    print(f"ratio Lepton / JSON: {results['ratio']:.2f}")
    restart = results["restart"]
    print(
        f"killed at {restart['rows_when_killed']} rows and restarted: {restart['rows']} rows, "
        f"lost {restart['lost']}, doubled {restart['doubled']}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "connect_sink",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "note": "2 shared cores",
                "load_average_before": load_before,
                **results,
            },
            indent=2,
        )
        + "\n"
    )
    if restart["lost"] or restart["doubled"]:
        raise SystemExit("events lost or doubled across the restart")


if __name__ == "__main__":
    main()
