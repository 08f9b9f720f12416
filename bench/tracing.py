"""What OpenTelemetry tracing costs the bus: the same produce and produce -> consume runs
of :mod:`bench.bus` with no tracer (``OTEL_EXPORTER_OTLP_ENDPOINT`` unset: what every
service does by default) and with the SDK exporting every span over OTLP to a real
Jaeger (in memory, started by the benchmark).

    .venv/bin/python -m bench.tracing [--events N]     # on the local stack (`lepton stack up`)

With a tracer, each message is sent in a ``send`` span and handled in a ``process`` span:
two spans per message, batched and exported by the SDK's worker thread, which shares the
interpreter with the bus. Off and on alternate in one process, best of ``--rounds`` each,
reported as ratios (on / off, 1.0 = free). Writes ``bench/results/tracing.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bus import RESULTS, Clock, bus_produce, bus_round_trip, bus_send_many, heartbeats, row
from lepton import devstack
from lepton.bus import trace_with
from lepton.config import KafkaAccess, Settings
from lepton.runtime import tracing
from tests.tracing.jaeger import jaeger

MODES = ("off", "on")


async def _measure(kafka: KafkaAccess, events: int, rounds: int) -> dict[str, dict[str, Clock]]:
    records = heartbeats(events)
    best: dict[str, dict[str, Clock]] = {mode: {} for mode in MODES}
    with tempfile.TemporaryDirectory() as workdir:
        async with jaeger(Path(workdir)) as backend:
            provider = tracing.configure(
                "lepton-bench",
                settings=tracing.TracingSettings(exporter_otlp_endpoint=backend.otlp_endpoint),
            )
            assert provider is not None
            tracer = provider.get_tracer("lepton")
            try:
                for mode in MODES:  # warm up both paths
                    trace_with(tracer if mode == "on" else None)
                    await bus_produce(kafka, records[:20_000], bus_send_many)
                for _ in range(rounds):
                    for mode in MODES:
                        trace_with(tracer if mode == "on" else None)
                        measured = {
                            "produce": await bus_produce(kafka, records, bus_send_many),
                            "round_trip": await bus_round_trip(kafka, records),
                        }
                        # What is left to export is exported before the next round starts.
                        await asyncio.to_thread(provider.force_flush)
                        for name, clock in measured.items():
                            if name not in best[mode] or clock.wall < best[mode][name].wall:
                                best[mode][name] = clock
            finally:
                trace_with(None)
                await asyncio.to_thread(provider.shutdown)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    kafka = devstack.endpoints(Settings()).kafka
    best = asyncio.run(_measure(kafka, args.events, args.rounds))
    rows: list[dict[str, Any]] = []
    for name, label in (
        ("produce", "publish_many()"),
        ("round_trip", "publish_many() -> Subscriber"),
    ):
        for mode in MODES:
            rows.append(row(f"{label}, tracing {mode}", args.events, best[mode][name]))
    ratios = {
        f"{name}: tracing on / off (throughput)": round(
            best["off"][name].wall / best["on"][name].wall, 3
        )
        for name in ("produce", "round_trip")
    }
    report = {
        "benchmark": "tracing",
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "rows": rows,
        "ratios": ratios,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(f"\ntracing benchmark: {args.events} heartbeats, best of {args.rounds}, one broker\n")
    print(f"{'measurement':50} {'events/s':>10} {'client CPU s / 1M':>18}")
    for entry in rows:
        print(
            f"{entry['name']:50} {entry['events_per_s']:>10,} "
            f"{entry['client_cpu_s_per_million']:>18}"
        )
    print()
    for name, value in ratios.items():
        print(f"{name:50} {value:>10}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tracing.json").write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {RESULTS / 'tracing.json'}")


if __name__ == "__main__":
    main()
