"""Benchmark: the evaluator's latency and its batch prediction throughput, in one run.

1. ``latency``: a 200,000-row house-price dataset goes through the ingest service; a
   ridge pipeline is trained on it in-process with ``holdout_fraction`` 0.5, so its
   hold-out is 100,000 rows. Its ModelReady is published ``RUNS`` times (new model ids and
   names, so each is a first evaluation without a champion), then once more under the
   same name as a challenger (champion comparison included); the time from publishing to
   receiving its ``lepton.models.evaluated`` is measured through the real service
   (after ``SETTLE_S`` for the just-created topics and the service's consumer group).
   Target: <= 2 s.
2. ``prediction``: the same model scores ``PREDICT_ROWS`` records given as request rows
   (maps of column -> value), in-process through ``lepton.services.evaluator.prediction`` and
   over Kafka (``lepton.predict.requested`` -> ``lepton.predict.results``, requests of
   ``LEPTON_EVALUATOR_PREDICT_MAX_ROWS`` rows), against plain ``pipeline.predict`` on
   the ready-made frame of the same rows (requests are Avro-encoded before the clock
   starts: the client shares the service's process here). Target: >= 50,000 rows/s.

Usage: python -m bench.evaluator      (writes bench/results/evaluator.json)
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.waiting import started

if TYPE_CHECKING:
    from lepton.config import KafkaAccess

RESULTS = Path(__file__).parent / "results" / "evaluator.json"
DATASET_ROWS = 200_000
RUNS = 4
PREDICT_ROWS = 100_000
REQUEST_ROWS = 10_000
SETTLE_S = 3.0


def houses(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 250, rows).round(1)
    district = rng.choice(["A区", "B区", "C区"], rows)
    kind = rng.choice(["普通住宅", "公寓", "别墅"], rows)
    bonus = pd.Series(district).map({"A区": 900_000, "B区": 400_000, "C区": 0}).to_numpy()
    price = (area * 30_000 + bonus + rng.normal(0, 80_000, rows)).round(0)
    return pd.DataFrame({"面积": area, "房型": kind, "区域": district, "价格": price})


async def _ingest(kafka: KafkaAccess, database_url: str, root: Path, tenant: str) -> dict[str, str]:
    from lepton.config import Settings
    from lepton.sdk.builders import DatasetRequest, Source
    from lepton.sdk.client import LeptonClient
    from lepton.services.ingest.app import create_app
    from lepton.services.ingest.settings import IngestSettings

    prefix = f"bench{uuid.uuid4().hex[:8]}."
    service = create_app(
        IngestSettings(
            **kafka.settings(),
            database_url=database_url,
            topic_prefix=prefix,
            ingest_roots=[root],
            log_level="warning",
        )
    )
    task = asyncio.create_task(service.run())
    await started(service, task)
    settings = Settings(**kafka.settings(), database_url=database_url, topic_prefix=prefix)
    try:
        async with LeptonClient(settings, tenant=tenant, user="bench") as client:
            ready = await client.ingest(
                DatasetRequest(
                    tenant=tenant, dataset="houses", sources=[Source.file(root / "houses.csv")]
                )
            )
    finally:
        service.stop_soon()
        await task
    return {"name": "houses", "version": ready["version"], "owner": tenant}


def _model(
    frame: pd.DataFrame, root: Path, tenant: str, dataset: dict[str, str]
) -> tuple[Any, dict[str, Any]]:
    from lepton.services.trainer.training import SearchConfig
    from tests.integration.model_support import stored_model

    config = SearchConfig(
        target_column="价格",
        algorithm="ridge",
        trial_budget=1,
        cv_folds=3,
        seed=7,
        holdout_fraction=0.5,
    )
    return stored_model(
        frame,
        config,
        artifact_root=root / "artifacts",
        tenant=tenant,
        model_id="bench-model",
        model_name="bench",
        dataset=dataset,
    )


def _request_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    features = frame.drop(columns=["价格"])
    return [
        {"面积": float(a), "房型": str(k), "区域": str(d)}
        for a, k, d in zip(features["面积"], features["房型"], features["区域"], strict=True)
    ]


def _in_process(
    pipeline: Any, ready: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, float]:
    from lepton.data.modeling import model_input
    from lepton.services.evaluator.inputs import input_schema
    from lepton.services.evaluator.prediction import score_rows

    schema = input_schema(pipeline, ready["feature_columns"])
    frame = model_input(pd.DataFrame(rows))[ready["feature_columns"]]
    timings: dict[str, list[float]] = {"baseline": [], "lepton": []}
    for _ in range(3):
        start = time.perf_counter()
        pipeline.predict(frame)
        timings["baseline"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for begin in range(0, len(rows), REQUEST_ROWS):
            score_rows(pipeline, schema, rows[begin : begin + REQUEST_ROWS], REQUEST_ROWS)
        timings["lepton"].append(time.perf_counter() - start)
    return {name: len(rows) / statistics.median(values) for name, values in timings.items()}


async def _through_service(
    kafka: KafkaAccess,
    database_url: str,
    dataset: dict[str, str],
    ready: dict[str, Any],
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    from lepton.bus import Publisher
    from lepton.services.evaluator.app import create_app
    from lepton.services.evaluator.settings import EvaluatorSettings
    from lepton.testing import impersonating, service_codec
    from tests.integration.scheduler_support import Namespaced

    codec = service_codec()
    async with Publisher(kafka, codec, source="bench", signer=impersonating()) as publisher:
        space = Namespaced(kafka, codec, publisher)
        await space.create()
        service = create_app(
            EvaluatorSettings(
                **kafka.settings(),
                database_url=database_url,
                topic_prefix=space.prefix,
                log_level="warning",
                # <root>/<tenant>/<model>.skops: the evaluator reads only under its root.
                artifact_root=str(Path(ready["artifact_uri"]).parents[1]),
                evaluator_predict_max_rows=REQUEST_ROWS,
            )
        )
        task = asyncio.create_task(service.run())
        await started(service, task)
        # Just-created topics take a moment to accept writes (the first publish otherwise
        # retries NotLeaderForPartition for about a second inside the timed window) and
        # the service's consumer to be given its partitions: measure the evaluator, not
        # the broker's setup.
        await asyncio.sleep(SETTLE_S)
        latencies: list[float] = []
        challenger: float | None = None
        try:
            async with space.reader("lepton.models.evaluated") as evaluated:
                base = f"bench-{uuid.uuid4().hex[:6]}"
                for run in range(RUNS + 1):
                    # Each first run is a new name; the last reuses the previous name, so
                    # it is judged against a champion.
                    name = f"{base}-{min(run, RUNS - 1)}"
                    record = ready | {
                        "model_id": f"{base}-m{run}",
                        "model_name": name,
                        "dataset": dataset,
                        "ready_at": int(time.time() * 1000),
                    }
                    start = time.perf_counter()
                    await space.send("lepton.models.ready", record["model_id"], record)
                    result = await evaluated.until(
                        lambda r, m=record["model_id"]: r["model_id"] == m, 300
                    )
                    seconds = time.perf_counter() - start
                    holdout_rows = result["holdout_rows"]  # ingest drops a few duplicates
                    if run < RUNS:
                        latencies.append(seconds)
                    else:
                        challenger = seconds
                model_ref = f"{base}-0"
            async with space.reader("lepton.predict.results") as results:
                requests = [
                    {
                        "request_id": f"{base}-r{index}",
                        "tenant": ready["tenant"],
                        "model": model_ref,
                        "rows": rows[begin : begin + REQUEST_ROWS],
                        "requested_by": "bench",
                        "requested_at": int(time.time() * 1000),
                    }
                    for index, begin in enumerate(range(0, len(rows), REQUEST_ROWS))
                ]
                # One request first, so the model is loaded before the clock starts.
                await space.send(
                    "lepton.predict.requested", "warm", requests[0] | {"request_id": "warm"}
                )
                await results.until(lambda r: r["request_id"] == "warm", 120)
                # The client's Avro encoding is done before the clock starts: the bench
                # and the service share one process (and its GIL), and encoding 10,000-row
                # requests is the client's work, not the service's.
                encoded = [
                    space.encoded("lepton.predict.requested", item["request_id"], item)
                    for item in requests
                ]
                start = time.perf_counter()
                for item, (topic, value, headers) in zip(requests, encoded, strict=True):
                    await publisher.send_raw(topic, item["request_id"].encode(), value, headers)
                answered = 0
                for item in requests:
                    answer = await results.until(
                        lambda r, i=item["request_id"]: r["request_id"] == i, 300
                    )
                    assert answer["error"] is None, answer["error"]
                    answered += len(answer["predictions"])
                kafka_rows_per_s = answered / (time.perf_counter() - start)
        finally:
            service.stop_soon()
            await task
    return {
        "latencies": latencies,
        "challenger": challenger,
        "kafka_rows_per_s": kafka_rows_per_s,
        "holdout_rows": holdout_rows,
    }


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    from lepton import devstack
    from lepton.config import Settings

    settings = Settings()
    where = devstack.endpoints(settings)
    # Each service connects as its own login, as `lepton up` runs it: as the superuser its
    # migrations would be recorded where the real service does not look, and each would
    # then fail the other's start.
    ingest_url = devstack.endpoints(settings, "ingest").database_url
    evaluator_url = devstack.endpoints(settings, "evaluator").database_url
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    load_before = _load()
    with tempfile.TemporaryDirectory(prefix="lepton-bench-") as directory:
        root = Path(directory)
        frame = houses(DATASET_ROWS)
        frame.to_csv(root / "houses.csv", index=False)
        dataset = asyncio.run(_ingest(where.kafka, ingest_url, root, tenant))
        pipeline, ready = _model(frame, root, tenant, dataset)
        rows = _request_rows(houses(PREDICT_ROWS, seed=1))
        in_process = _in_process(pipeline, ready, rows)
        service = asyncio.run(_through_service(where.kafka, evaluator_url, dataset, ready, rows))
    latencies = service["latencies"]
    p50, worst = statistics.median(latencies), max(latencies)
    print(f"load average before: {load_before}; after: {_load()} (2 cores, shared)")
    print(f"{'measure':<44}{'value':>12}{'target':>12}")
    print(f"hold-out rows: {service['holdout_rows']:,}")
    print(f"{'model-ready -> evaluated p50':<44}{p50:>11.2f}s{'<= 2 s':>12}")
    print(f"{'model-ready -> evaluated max':<44}{worst:>11.2f}s")
    print(f"{'... as a challenger (champion compared)':<44}{service['challenger']:>11.2f}s")
    print(f"{'plain pipeline.predict rows/s (baseline)':<44}{in_process['baseline']:>12,.0f}")
    print(f"{'prediction.score_rows rows/s':<44}{in_process['lepton']:>12,.0f}{'>= 50,000':>12}")
    kafka = service["kafka_rows_per_s"]
    print(f"{'over Kafka request/reply rows/s':<44}{kafka:>12,.0f}{'>= 50,000':>12}")
    print(f"score_rows / baseline: {in_process['lepton'] / in_process['baseline']:.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "evaluator",
                "python": platform.python_version(),
                "load_average_before": load_before,
                "load_average_after": _load(),
                "dataset_rows": DATASET_ROWS,
                "holdout_rows": service["holdout_rows"],
                "latency_s": {"runs": latencies, "p50": p50, "max": worst, "target": 2.0},
                "challenger_latency_s": service["challenger"],
                "prediction_rows_per_s": {
                    "baseline_pipeline_predict": in_process["baseline"],
                    "score_rows": in_process["lepton"],
                    "kafka_request_reply": service["kafka_rows_per_s"],
                    "request_rows": REQUEST_ROWS,
                    "target": 50_000,
                },
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
