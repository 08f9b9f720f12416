"""What security costs, measured in one run: a broker of the benchmark's own (in a temporary
directory) listening with PLAINTEXT, SASL_PLAINTEXT (SCRAM-SHA-512) and SASL_SSL at once,
so that the same work through each listener gives ratios against PLAINTEXT on the same
broker, machine and minute (``bench.bus``, ``bench.scheduler_e2e``). Target (issue 16):
SCRAM costs at most 10 % of throughput (ratio >= 0.9)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from bench.waiting import say
from lepton.bus import BrokerUnavailableError, ensure_topics
from lepton.config import KafkaAccess, Settings
from lepton.devstack._kafka import KafkaNode, check_java, fetch_jars
from lepton.devstack._process import free_ports, stop_process

__all__ = ["SCRAM", "TARGET_RATIO", "ratios_to_plaintext", "three_listeners"]

SCRAM = "SASL_PLAINTEXT"
TARGET_RATIO = 0.9
_START_BOUND_S = 90.0


async def _answers(kafka: KafkaAccess) -> bool:
    try:
        await ensure_topics(kafka, [], connect_timeout_s=2)
    except BrokerUnavailableError:
        return False
    return True


@contextmanager
def three_listeners() -> Iterator[dict[str, KafkaAccess]]:
    """The started broker: its super user's access through each listener, by protocol
    (PLAINTEXT first, the baseline); stopped and deleted on exit."""
    settings = Settings()
    java = check_java(settings.java)
    jars = fetch_jars(settings.cache_dir, settings.maven)
    with tempfile.TemporaryDirectory(prefix="lepton-bench-broker-") as home:
        broker, controller, plain, secure = free_ports(4)
        node = KafkaNode(Path(home), broker, controller, bench_ports=(plain, secure))
        pid = node.start(java, jars, settings.kafka_heap)
        try:
            accesses = node.bench_access()
            bound = f"up to {_START_BOUND_S:.0f} s"
            say(f"waiting {bound} for the benchmark's own broker ({node.log_path})")
            deadline = time.monotonic() + _START_BOUND_S
            while not asyncio.run(_answers(accesses["PLAINTEXT"])):
                if time.monotonic() > deadline:
                    raise SystemExit(f"the benchmark's broker did not start: {node.log_path}")
            yield accesses
        finally:
            stop_process(pid)


def ratios_to_plaintext(rates: Mapping[tuple[str, str], float]) -> dict[str, float]:
    """Each (protocol, kind)'s rate (higher is better) over PLAINTEXT's for that kind."""
    return {
        f"{kind}, {protocol} / PLAINTEXT"
        + (f" [target >= {TARGET_RATIO}]" if protocol == SCRAM else ""): round(
            rate / rates["PLAINTEXT", kind], 3
        )
        for (protocol, kind), rate in rates.items()
        if protocol != "PLAINTEXT"
    }
