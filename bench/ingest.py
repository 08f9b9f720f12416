"""Ingest throughput and memory: Lepton's ingest service against a plain pandas script.

    .venv/bin/python -m bench.ingest [--rows 1000000] [--scale 10] [--skip-large] [--timeout S]

On the same messy CSV (``lepton.data.samples.write_messy_csv``), in the same run and against the
same PostgreSQL:

1. baseline: a plain pandas script (read_csv, drop_duplicates, dropna, COPY through
   asyncpg's copy_records_to_table into a new table);
2. lepton: the ingest service end to end (a request on Kafka → read, validate against a
   spec, clean, dedupe, hash, COPY, catalog → lepton.data.ready), timed from the request
   to the ready event;
3. lepton again on a file ``--scale`` times larger, for memory.

Each runs in a subprocess of its own, which reports its peak RSS (``ru_maxrss``), within
``--timeout`` seconds; every step says on standard error what it does or waits for. Prints a
table; writes ``bench/results/ingest.json``. Targets: lepton >= 1.5x the baseline's rows/s;
peak memory on the larger file within 1.2x that of the first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.waiting import bounded, say, started

if TYPE_CHECKING:
    from lepton.config import KafkaAccess

RESULTS = Path(__file__).parent / "results"
SPEC = {
    "columns": {
        "id": {"type": "integer", "nullable": False},
        "面积": {"type": "float", "missing": "drop", "min": 0},
        "房型": {"type": "category", "categories": ["普通住宅", "公寓", "别墅"]},
        "区域": {"type": "category", "categories": ["A区", "B区", "C区"]},
        "价格": {"type": "float", "missing": "drop"},
        "备注": {"type": "string", "missing": "drop"},
    },
    "dedupe": "exact",
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _baseline(path: Path, database_url: str) -> dict[str, Any]:
    import asyncpg
    import pandas as pd

    table = f"bench_baseline_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(database_url)
    try:
        start = time.perf_counter()
        frame = pd.read_csv(path)
        rows_read = len(frame)
        frame = frame.drop_duplicates().dropna()
        await connection.execute(
            f"CREATE TABLE {table} (id bigint, 面积 text, 房型 text, 区域 text, 价格 double "
            "precision, 备注 text)"
        )
        records = [
            (int(r[0]), str(r[1]), r[2], r[3], float(r[4]), r[5])
            for r in frame.itertuples(index=False, name=None)
        ]
        await connection.copy_records_to_table(table, records=records)
        seconds = time.perf_counter() - start
        stored = len(records)
    finally:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
        await connection.close()
    return {"rows_read": rows_read, "rows_stored": stored, "seconds": seconds}


async def _lepton(
    path: Path, database_url: str, kafka: KafkaAccess, answer_timeout_s: float
) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer

    from lepton.bus import Publisher
    from lepton.contract.topics import Namespace
    from lepton.services.ingest.app import create_app
    from lepton.services.ingest.settings import IngestSettings
    from lepton.testing import impersonating, service_codec

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    names = Namespace(prefix)
    codec = service_codec()
    service = create_app(
        IngestSettings(
            **kafka.settings(),
            database_url=database_url,
            topic_prefix=prefix,
            ingest_roots=[path.parent],
            log_level="warning",
        )
    )
    task = asyncio.create_task(service.run())
    await started(service, task)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    request = {
        "request_id": uuid.uuid4().hex,
        "tenant": tenant,
        "dataset": "messy",
        "sources": [
            {"name": "file", "kind": "csv", "uri": path.name, "query": None, "options": {}}
        ],
        "spec": json.dumps(SPEC, ensure_ascii=False),
        "integration": {"mode": "union", "join_keys": [], "join_how": "inner"},
        "region": None,
        "description": None,
        "requested_at": int(time.time() * 1000),
        "requested_by": "bench",
    }
    consumer = AIOKafkaConsumer(
        names.topic("lepton.data.ready").name,
        names.topic("lepton.data.rejected").name,
        **kafka.aiokafka(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with Publisher(kafka, codec, source="bench", signer=impersonating()) as publisher:
            start = time.perf_counter()
            await publisher.publish(names.topic("lepton.data.requested"), tenant, request)
            message = await bounded(
                consumer.getone(),
                f"ingest's answer (lepton.data.ready or .rejected) for {path.name}",
                answer_timeout_s,
                service=task,
            )
            seconds = time.perf_counter() - start
    finally:
        await consumer.stop()
        service.stop_soon()
        await bounded(task, "the ingest service to stop", 60, service=None)
        await _delete_topics(kafka, prefix)
    _, record = codec.decode(message.value)
    if "version" not in record:
        raise SystemExit(f"the ingest was rejected: {record}")
    return {
        "tenant": tenant,
        "rows_read": record["quality"]["rows_read"],
        "rows_stored": record["rows"],
        "seconds": seconds,
        "quality": record["quality"],
        "location": record["location"],
    }


async def _delete_topics(kafka: KafkaAccess, prefix: str) -> None:
    """The run's topics go too: on a shared broker they would pile up partitions."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def _forget(database_url: str, tenant: str) -> None:
    """Remove what the run stored, so benchmarks do not fill the database; its audit
    records stay (the audit table is append-only: a few rows a run)."""
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            tables = await connection.fetch(
                "DELETE FROM lepton_ingest.datasets WHERE owner_tenant = $1 RETURNING table_name",
                tenant,
            )
            for row in tables:
                await connection.execute(f'DROP TABLE lepton_data."{row["table_name"]}"')
            for table, column in (("rejects", "owner_tenant"), ("requests", "tenant")):
                await connection.execute(
                    f"DELETE FROM lepton_ingest.{table} WHERE {column} = $1", tenant
                )
    finally:
        await connection.close()


def _worker(args: argparse.Namespace) -> None:
    from lepton.config import Settings

    given = Settings()  # the worker's environment, from _run
    kafka = given.kafka_access()
    assert kafka is not None
    assert given.database_url is not None
    database_url = given.database_url.get_secret_value()
    if args.worker == "baseline":
        result = asyncio.run(_baseline(args.file, database_url))
    elif args.worker == "profile":
        import cProfile
        import pstats

        profile = cProfile.Profile()
        profile.enable()
        result = asyncio.run(_lepton(args.file, database_url, kafka, args.timeout))
        profile.disable()
        pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
    else:
        result = asyncio.run(_lepton(args.file, database_url, kafka, args.timeout))
    result["peak_rss_mib"] = round(_peak_mib(), 1)
    print(json.dumps(result, ensure_ascii=False))


def _run(
    kind: str, path: Path, database_url: str, kafka: KafkaAccess, timeout_s: float
) -> dict[str, Any]:
    rows = f"{path.name} ({path.stat().st_size / 2**20:,.0f} MiB)"
    say(f"{kind}: ingesting {rows}, for at most {timeout_s:.0f} s")
    command = [
        *(sys.executable, "-m", "bench.ingest"),
        *("--worker", kind, "--file", str(path), "--timeout", str(timeout_s)),
    ]
    # Passwords go in the environment, not the command line anyone may read.
    env = {**os.environ, **kafka.environment(), "LEPTON_DATABASE_URL": database_url}
    began = time.monotonic()
    try:
        # Its progress lines (standard error) pass through; its result is its last line.
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            env=env,
            timeout=timeout_s + _WORKER_MARGIN_S,
        )
    except subprocess.TimeoutExpired:
        raise SystemExit(f"{kind} did not finish within {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise SystemExit(f"{kind} failed (status {done.returncode}; its output is above)")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = round(result["rows_read"] / result["seconds"])
    say(f"{kind}: {result['rows_read']:,} rows in {time.monotonic() - began:.1f} s")
    return result


# Beyond the answer's own bound: the worker's start (imports, connections) and cleanup.
_WORKER_MARGIN_S = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds each run may take (an answer from ingest, the baseline's script)",
    )
    parser.add_argument("--worker", choices=["baseline", "lepton", "profile"])
    parser.add_argument("--file", type=Path)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    from lepton import devstack
    from lepton.config import Settings
    from lepton.data.samples import write_messy_csv

    settings = Settings()
    where = devstack.endpoints(settings)
    # The ingest service connects as its own login, as `lepton up` runs it: as the
    # superuser its migrations would be recorded where the real service does not look,
    # and each would then fail the other's start (DuplicateFunctionError).
    ingest_url = devstack.endpoints(settings, "ingest").database_url
    runs: dict[str, dict[str, Any]] = {}

    def lepton_run(name: str, path: Path) -> None:
        runs[name] = _run("lepton", path, ingest_url, where.kafka, args.timeout)
        asyncio.run(_forget(where.database_url, runs[name].pop("tenant")))

    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as directory:
        small = Path(directory) / "messy.csv"
        say(f"writing a messy CSV of {args.rows:,} rows")
        write_messy_csv(small, args.rows)
        runs["baseline"] = _run("baseline", small, where.database_url, where.kafka, args.timeout)
        lepton_run("lepton", small)
        small_bytes = small.stat().st_size
        small.unlink()
        if not args.skip_large:
            large = Path(directory) / "messy-large.csv"
            say(f"writing a messy CSV of {args.rows * args.scale:,} rows (--skip-large: none)")
            write_messy_csv(large, args.rows * args.scale, seed=4)
            lepton_run("lepton_large", large)
            large.unlink()
    speed = runs["lepton"]["rows_per_s"] / runs["baseline"]["rows_per_s"]
    memory = (
        runs["lepton_large"]["peak_rss_mib"] / runs["lepton"]["peak_rss_mib"]
        if "lepton_large" in runs
        else None
    )
    header = ("rows read", "stored", "seconds", "rows/s", "peak RSS MiB")
    print(f"{'run':<14}" + "".join(f"{h:>{14 if h.startswith('peak') else 12}}" for h in header))
    for name, run in runs.items():
        print(
            f"{name:<14}{run['rows_read']:>12,}{run['rows_stored']:>12,}{run['seconds']:>12.2f}"
            f"{run['rows_per_s']:>12,}{run['peak_rss_mib']:>14,.0f}"
        )
    print(f"lepton / baseline rows/s: {speed:.2f} (target >= 1.5)")
    if memory is not None:
        print(f"peak RSS {args.scale}x file / 1x file: {memory:.2f} (target <= 1.2)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest.json").write_text(
        json.dumps(
            {
                "benchmark": "ingest",
                "python": platform.python_version(),
                "rows": args.rows,
                "file_bytes": small_bytes,
                "scale": args.scale,
                "spec": SPEC,
                "runs": runs,
                "speed_ratio": round(speed, 3),
                "speed_target": 1.5,
                "memory_ratio": round(memory, 3) if memory is not None else None,
                "memory_target": 1.2,
            },
            ensure_ascii=False,
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
