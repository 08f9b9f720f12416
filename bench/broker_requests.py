"""What each kind of Kafka request costs the local broker, in CPU: why consumers gather.

    .venv/bin/python -m bench.broker_requests [--seconds S]

On a machine where the broker shares the cores with the services, the broker's CPU is
mostly a cost per *request*, not per message: a service that polls more often, or a
producer that sends smaller batches, makes the broker work for every one. This measures,
on the local stack's broker (its process is read from ``lepton stack status``):

1. the broker at rest (the baseline every row is measured against);
2. one librdkafka consumer of idle partitions that lets each fetch wait 5, 10, 20 or
   100 ms for data (``fetch.wait.max.ms`` with a ``fetch.min.bytes`` never reached): what
   a service's :class:`~lepton.bus.Subscriber` costs while nothing happens;
3. a producer sending 1,000 single-message produce requests a second;
4. the same, read by a consumer that is answered as soon as data arrives.

Each row gives the requests a second (from librdkafka's statistics), the broker's cores
above the baseline, and so the broker's CPU per request. Prints a table; writes
``bench/results/broker_requests.json``. No target: it informs the subscribers' gather
setting (``lepton.runtime.service._BATCH_GATHER_MS``).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import confluent_kafka
import psutil
from confluent_kafka.admin import AdminClient, NewTopic

from lepton import devstack
from lepton.config import KafkaAccess, Settings

RESULTS = Path(__file__).parent / "results"
PARTITIONS = 15  # as many as the scheduler reads (job requests, job events, ready data)
PRODUCE_RATE = 1_000  # single-message produce requests per second
WAITS_MS = (5, 10, 20, 100)


def _broker() -> tuple[KafkaAccess, psutil.Process]:
    settings = Settings()
    local = devstack.status(settings)
    if local.kafka_pid is None or local.kafka_bootstrap is None:
        raise SystemExit("needs the local stack's broker: run `lepton stack up` first")
    return devstack.endpoints(settings).kafka, psutil.Process(local.kafka_pid)


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


class _Requests:
    """A librdkafka client's requests to the brokers so far, from its statistics."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self, report: str) -> None:
        brokers = json.loads(report)["brokers"].values()
        self.sent = sum(b["tx"] for b in brokers if b["nodeid"] >= 0)


def _consumer(kafka: KafkaAccess, topic: str, settings: dict[str, Any]) -> tuple[Any, _Requests]:
    requests = _Requests()
    consumer = confluent_kafka.Consumer(
        {
            **kafka.librdkafka(),
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "statistics.interval.ms": 500,
            "stats_cb": requests,
            **settings,
        }
    )
    consumer.assign(
        [
            confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_END)
            for p in range(PARTITIONS)
        ]
    )
    return consumer, requests


def _read(consumer: Any) -> None:
    if consumer is None:
        time.sleep(0.1)
    else:
        consumer.consume(1000, 0.1)


def _measure(
    name: str, broker: psutil.Process, seconds: float, consumer: Any, requests: _Requests | None
) -> dict[str, Any]:
    """Broker CPU while ``consumer`` (if any) reads for ``seconds``."""
    settle = time.monotonic() + 2
    while time.monotonic() < settle:  # connected, its statistics flowing
        _read(consumer)
    before_cpu, before_sent = _cpu_s(broker), requests.sent if requests else 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        _read(consumer)
    elapsed = time.monotonic() - start
    cores = (_cpu_s(broker) - before_cpu) / elapsed
    if consumer is not None:
        consumer.close()
    return {
        "name": name,
        "broker_cores": round(cores, 3),
        "consumer_requests_per_s": round(
            ((requests.sent if requests else 0) - before_sent) / elapsed
        ),
    }


def _produce(kafka: KafkaAccess, topic: str, stop: threading.Event) -> None:
    producer = confluent_kafka.Producer({**kafka.librdkafka(), "linger.ms": 0})
    sent, start = 0, time.monotonic()
    while not stop.is_set():
        due = int((time.monotonic() - start) * PRODUCE_RATE)
        while sent < due:
            producer.produce(topic, b"x" * 300, b"%d" % sent)
            sent += 1
        producer.poll(0)
        time.sleep(0.0005)
    producer.flush(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    args = parser.parse_args()
    kafka, broker = _broker()
    topic = f"bench-broker-requests-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.librdkafka())
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
    try:
        rows = [_measure("broker at rest [baseline]", broker, args.seconds, None, None)]
        for wait in WAITS_MS:
            consumer, requests = _consumer(
                kafka, topic, {"fetch.wait.max.ms": wait, "fetch.min.bytes": 1 << 20}
            )
            rows.append(
                _measure(
                    f"idle consumer, fetches wait {wait} ms",
                    broker,
                    args.seconds,
                    consumer,
                    requests,
                )
            )
        stop = threading.Event()
        producing = threading.Thread(target=_produce, args=(kafka, topic, stop))
        producing.start()
        try:
            rows.append(
                _measure(
                    f"{PRODUCE_RATE:,} produce requests/s, 1 message each",
                    broker,
                    args.seconds,
                    None,
                    None,
                )
            )
            rows[-1]["producer_requests_per_s"] = PRODUCE_RATE
            consumer, requests = _consumer(
                kafka, topic, {"fetch.wait.max.ms": 500, "fetch.min.bytes": 1}
            )
            rows.append(
                _measure(
                    "+ a consumer answered as data arrives",
                    broker,
                    args.seconds,
                    consumer,
                    requests,
                )
            )
        finally:
            stop.set()
            producing.join()
    finally:
        admin.delete_topics([topic])
    baseline = rows[0]["broker_cores"]
    for index, row in enumerate(rows[1:], start=1):
        # Each row's requests against what ran without them: the producer alone for the
        # consumer beside it, the broker at rest for the others.
        reference = rows[index - 1] if row["name"].startswith("+") else rows[0]
        added = row["broker_cores"] - reference["broker_cores"]
        count = row.get("producer_requests_per_s") or row["consumer_requests_per_s"]
        row["broker_us_per_request"] = round(added / count * 1e6) if count else None
    cpus = os.cpu_count()
    print(f"\nbroker CPU per request: one local broker, {cpus} CPUs, at rest {baseline} cores\n")
    print(f"{'measurement':48} {'requests/s':>11} {'broker cores':>13} {'us/request':>11}")
    for row in rows:
        count = row.get("producer_requests_per_s") or row["consumer_requests_per_s"]
        cost = row.get("broker_us_per_request")
        shown = "-" if cost is None else f"{cost:,}"
        print(f"{row['name']:48} {count:>11,} {row['broker_cores']:>13} {shown:>11}")
    RESULTS.mkdir(exist_ok=True)
    report = {
        "benchmark": "broker_requests",
        "rows": rows,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (RESULTS / "broker_requests.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {RESULTS / 'broker_requests.json'}")


if __name__ == "__main__":
    main()
