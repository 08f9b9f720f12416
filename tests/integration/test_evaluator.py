"""The evaluator against the real broker and database: datasets made by ingest, models
trained in-process the trainer's way, and ModelReady events published as the trainer does."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import math
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pandas as pd
import pytest
from aiokafka import AIOKafkaConsumer
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lepton.bus import ensure_topics
from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.contract.topics import dead_letter_topic
from lepton.data import reading
from lepton.data.keys import wrap_data_key
from lepton.data.reading import read_dataset
from lepton.data.samples import house_prices
from lepton.runtime.service import Service
from lepton.services.evaluator import store
from lepton.services.evaluator.app import create_app
from lepton.services.evaluator.settings import EvaluatorSettings
from lepton.services.trainer.training import SearchConfig
from tests.integration.ingest_support import request, running_ingest, unique_tenant
from tests.integration.model_support import stored_model
from tests.integration.scheduler_support import Namespaced, dead_letter_for, now_ms, signed_space

pytestmark = pytest.mark.integration

HOUSE_SPEC = json.dumps(
    {
        "columns": {
            "面积": {"type": "float", "missing": "median", "min": 10},
            "房型": {"type": "category", "categories": ["普通住宅", "公寓", "别墅"]},
            "区域": {"type": "category", "categories": ["A区", "B区", "C区"], "nullable": False},
            "价格": {"type": "float", "outliers": {"method": "iqr", "action": "drop"}},
        }
    },
    ensure_ascii=False,
)
THE_SEEDS_HOUSE = {"面积": 150.0, "房型": "普通住宅", "区域": "B区"}


@pytest.fixture(scope="module")
async def data(
    kafka: KafkaAccess,
    database_url: str,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The seed's house prices through the ingest service, and a version of them whose
    区域 column was renamed (a dataset that no longer matches the model)."""
    root = tmp_path_factory.mktemp("evaluator-data")
    tenant = unique_tenant()
    house_prices(400).to_csv(root / "houses.csv", index=False)
    house_prices(400).rename(columns={"区域": "地区"}).to_csv(root / "renamed.csv", index=False)
    renamed_spec = HOUSE_SPEC.replace("区域", "地区")
    versions: dict[str, dict[str, str]] = {}
    async with running_ingest(kafka, database_for("ingest"), codec, root) as ingest:
        for name, file, spec in [
            ("houses", "houses.csv", HOUSE_SPEC),
            ("houses-renamed", "renamed.csv", renamed_spec),
        ]:
            outcome, ready = await ingest.submit(
                request(tenant, name, [{"name": "s", "kind": "csv", "uri": file}], spec=spec)
            )
            assert outcome == "ready", ready
            versions[name] = {"name": name, "version": ready["version"], "owner": tenant}
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        frame = await read_dataset(pool, reader_tenant=tenant, name="houses")
    finally:
        await pool.close()
    return {"tenant": tenant, "frame": frame, "root": root, **versions}


def model_ready(
    data: dict[str, Any], model_name: str, *, dataset: str = "houses", **task: Any
) -> dict[str, Any]:
    """Train a model of the house prices in-process and store it as the trainer does."""
    config = SearchConfig(
        target_column="价格", trial_budget=2, cv_folds=3, seed=7, **({"algorithm": "ridge"} | task)
    )
    _, ready = stored_model(
        data["frame"],
        config,
        artifact_root=data["root"] / "artifacts",
        tenant=data["tenant"],
        model_id=f"model-{uuid.uuid4().hex[:10]}",
        model_name=model_name,
        dataset=data[dataset],
    )
    return ready


@pytest.fixture(scope="module")
async def space(kafka: KafkaAccess, codec: Codec) -> AsyncIterator[Namespaced]:
    async with signed_space(kafka, codec) as namespaced:
        yield namespaced


@asynccontextmanager
async def running_evaluator(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    data: dict[str, Any],
    max_rows: int = 50,
) -> AsyncIterator[Service]:
    settings = EvaluatorSettings(
        **kafka.settings(),
        database_url=database_for("evaluator"),
        topic_prefix=space.prefix,
        artifact_root=str(data["root"] / "artifacts"),
        evaluator_predict_max_rows=max_rows,
    )
    service = create_app(settings)
    task = asyncio.create_task(service.run())
    ready = asyncio.create_task(service.ready.wait())
    done, _ = await asyncio.wait({task, ready}, timeout=60, return_when="FIRST_COMPLETED")
    if task in done:
        task.result()
    assert ready in done, "the evaluator did not start"
    try:
        yield service
    finally:
        service.stop_soon()
        await asyncio.wait_for(task, 60)


@pytest.fixture(scope="module")
async def evaluator(
    space: Namespaced, kafka: KafkaAccess, database_for: Callable[[str], str], data: dict[str, Any]
) -> AsyncIterator[Service]:
    async with running_evaluator(space, kafka, database_for, data) as service:
        yield service


@asynccontextmanager
async def dead_letters(space: Namespaced, declared: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(
        dead_letter_topic(space.names.topic(declared).name),
        **space.kafka.aiokafka(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float = 60) -> None:
    """Wait for an effect no event announces (a rollback applied, a message handled)."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def about(model_id: str) -> Any:
    return lambda record: record["model_id"] == model_id


async def evaluated_and_verdict(
    space: Namespaced, ready: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    async with (
        space.reader("lepton.models.evaluated") as evaluated,
        space.reader("lepton.models.promoted") as promoted,
    ):
        await space.send("lepton.models.ready", ready["model_id"], ready)
        return (
            await evaluated.until(about(ready["model_id"]), 120),
            await promoted.until(about(ready["model_id"]), 120),
        )


async def test_a_first_model_is_evaluated_stored_and_promoted(
    space: Namespaced, evaluator: Service, data: dict[str, Any], pool: asyncpg.Pool
) -> None:
    ready = model_ready(data, "房价-first")
    evaluated, verdict = await evaluated_and_verdict(space, ready)
    assert evaluated["problem_type"] == "regression"
    assert evaluated["holdout_rows"] > 50
    assert evaluated["cv_folds"] == 5
    assert evaluated["seed"] == 7
    assert {"rmse", "mae", "r2", "mape", "residual_mean"} <= set(evaluated["metrics"])
    assert evaluated["metrics"]["r2"] > 0.5
    assert all(len(folds) == 5 for folds in evaluated["cv_metrics"].values())
    assert set(evaluated["train_metrics"]) == {"rmse", "mae", "r2", "mape"}
    assert set(evaluated["feature_importance"]) == {"面积", "房型", "区域"}
    codes = {finding["code"] for finding in evaluated["findings"]}
    assert "top_features" in codes
    assert [curve["kind"] for curve in evaluated["curves"]] == ["residuals"]
    assert set(evaluated["plots"]) == {"residuals"}
    png = await asyncio.to_thread(Path(evaluated["plots"]["residuals"]).read_bytes)
    assert png.startswith(b"\x89PNG")
    assert verdict["verdict"] == "promoted"
    assert verdict["previous_champion_id"] is None
    assert verdict["evidence"]["method"] == "none"
    assert verdict["primary_metric"] == "r2"
    champion = await store.current_champion(pool, data["tenant"], "房价-first")
    assert champion is not None
    assert champion.model_id == ready["model_id"]

    # Marked published once the broker took both records, so just after they are read.
    async def marked_published() -> bool:
        found = await store.find(pool, ready["model_id"])
        return found is not None and found.published

    await until(marked_published)
    stored = await store.find(pool, ready["model_id"])
    assert stored is not None
    assert stored.status == "evaluated"
    assert stored.evaluated == evaluated


async def test_a_worse_challenger_keeps_the_champion_with_evidence_and_a_rollback_applies(
    space: Namespaced, evaluator: Service, data: dict[str, Any], pool: asyncpg.Pool
) -> None:
    name = "房价-contest"
    good = model_ready(data, name)
    await evaluated_and_verdict(space, good)
    # Ridge with an enormous penalty predicts little more than the mean price.
    worse = model_ready(
        data,
        name,
        search_space=json.dumps({"ridge": {"alpha": {"type": "float", "low": 1e6, "high": 1e7}}}),
    )
    evaluated, verdict = await evaluated_and_verdict(space, worse)
    assert verdict["verdict"] == "kept_champion"
    assert verdict["previous_champion_id"] == good["model_id"]
    assert verdict["champion_score"] > verdict["challenger_score"]
    evidence = verdict["evidence"]
    assert evidence["method"] == "paired_t_test"
    assert len(evidence["challenger_folds"]) == len(evidence["champion_folds"]) == 5
    assert evidence["challenger_folds"] == evaluated["cv_metrics"]["r2"]
    assert evidence["p_value"] is not None
    assert evidence["ci_low"] is not None
    assert evidence["ci_high"] < 0  # the improvement's interval is all below zero
    assert [guard["metric"] for guard in verdict["guards"]] == ["mae"]
    champion = await store.current_champion(pool, data["tenant"], name)
    assert champion is not None
    assert champion.model_id == good["model_id"]

    # Someone rolls the name back to the worse model on purpose; then to an unknown one.
    rollback = verdict | {
        "verdict": "rolled_back",
        "model_id": worse["model_id"],
        "decided_by": "王小明",
        "reason": "manual rollback",
        "decided_at": now_ms(),
    }
    await space.send("lepton.models.promoted", f"{data['tenant']}/{name}", rollback)

    async def restored() -> bool:
        champion = await store.current_champion(pool, data["tenant"], name)
        return champion is not None and champion.model_id == worse["model_id"]

    await until(restored)
    listed = await store.champions(pool, data["tenant"])
    assert (name, worse["model_id"]) in {(c.model_name, c.model_id) for c in listed}
    async with dead_letters(space, "lepton.models.promoted") as dlq:
        bogus = rollback | {"model_id": "model-nobody", "decided_at": now_ms()}
        await space.send("lepton.models.promoted", f"{data['tenant']}/{name}", bogus)
        headers = await dead_letter_for(dlq, f"{data['tenant']}/{name}")
    assert headers["dlq_error_type"] == "RollbackRejected"
    assert "model-nobody" in headers["dlq_error_message"]
    champion = await store.current_champion(pool, data["tenant"], name)
    assert champion is not None
    assert champion.model_id == worse["model_id"]


async def test_a_redelivered_model_ready_is_not_evaluated_twice(
    space: Namespaced, evaluator: Service, data: dict[str, Any], pool: asyncpg.Pool
) -> None:
    ready = model_ready(data, "房价-again")
    await evaluated_and_verdict(space, ready)
    handled = evaluator._subscriber.handled  # type: ignore[union-attr]
    await space.send("lepton.models.ready", ready["model_id"], ready)

    async def handled_again() -> bool:
        return evaluator._subscriber.handled > handled  # type: ignore[union-attr]

    await until(handled_again)
    async with space.reader("lepton.models.evaluated") as evaluated:
        records = await evaluated.everything()
    assert sum(record["model_id"] == ready["model_id"] for record in records) == 1


async def test_events_stored_but_never_published_are_published_at_the_redelivery(
    space: Namespaced, evaluator: Service, data: dict[str, Any], pool: asyncpg.Pool
) -> None:
    ready = model_ready(data, "房价-crashed")
    evaluated = {
        "model_id": ready["model_id"],
        "tenant": ready["tenant"],
        "model_name": ready["model_name"],
        "dataset": ready["dataset"],
        "problem_type": "regression",
        "holdout_rows": 1,
        "cv_folds": 5,
        "seed": 7,
        "metrics": {"r2": 0.25},
        "evaluated_at": now_ms(),
    }
    # As if an evaluator stored this and crashed before publishing it.
    await store.record_evaluation(pool, ready, evaluated, None)
    async with space.reader("lepton.models.evaluated") as reader:
        await space.send("lepton.models.ready", ready["model_id"], ready)
        published = await reader.until(about(ready["model_id"]), 60)
    assert published["metrics"] == {"r2": 0.25}  # the stored one, not a new evaluation

    async def marked() -> bool:
        stored = await store.find(pool, ready["model_id"])
        return stored is not None and stored.published

    await until(marked)


def tamper(path: Path) -> None:
    path.write_bytes(path.read_bytes() + b"tampered")


async def test_a_tampered_artifact_is_a_specific_failure_and_nothing_is_promoted(
    space: Namespaced, evaluator: Service, data: dict[str, Any], pool: asyncpg.Pool
) -> None:
    ready = model_ready(data, "房价-tampered")
    await asyncio.to_thread(tamper, Path(ready["artifact_uri"]))
    async with dead_letters(space, "lepton.models.ready") as dlq:
        await space.send("lepton.models.ready", ready["model_id"], ready)
        headers = await dead_letter_for(dlq, ready["model_id"])
    assert headers["dlq_error_type"] == "ArtifactInvalid"
    assert "does not match" in headers["dlq_error_message"]
    stored = await store.find(pool, ready["model_id"])
    assert stored is not None
    assert stored.status == "failed"
    assert stored.error_type == "ArtifactInvalid"
    assert await store.current_champion(pool, data["tenant"], "房价-tampered") is None


async def test_a_dataset_whose_columns_no_longer_match_is_a_specific_failure(
    space: Namespaced, evaluator: Service, data: dict[str, Any], pool: asyncpg.Pool
) -> None:
    ready = model_ready(data, "房价-renamed", dataset="houses-renamed")
    async with dead_letters(space, "lepton.models.ready") as dlq:
        await space.send("lepton.models.ready", ready["model_id"], ready)
        headers = await dead_letter_for(dlq, ready["model_id"])
    assert headers["dlq_error_type"] == "DatasetMismatch"
    assert "区域" in headers["dlq_error_message"]
    assert await store.current_champion(pool, data["tenant"], "房价-renamed") is None


def predict_request(tenant: str, model: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "request_id": f"req-{uuid.uuid4().hex[:10]}",
        "tenant": tenant,
        "model": model,
        "rows": rows,
        "requested_by": "tests",
        "requested_at": now_ms(),
    }


async def test_predictions_for_the_seeds_house_and_their_errors(
    space: Namespaced, evaluator: Service, data: dict[str, Any]
) -> None:
    ready = model_ready(data, "房价")
    await evaluated_and_verdict(space, ready)
    tenant = data["tenant"]
    requests = {
        "champion": predict_request(tenant, "房价@champion", [THE_SEEDS_HOUSE]),
        "version": predict_request(
            tenant, f"房价@{ready['model_id']}", [THE_SEEDS_HOUSE, THE_SEEDS_HOUSE | {"面积": 60.0}]
        ),
        "unseen": predict_request(tenant, "房价", [THE_SEEDS_HOUSE | {"区域": "D区"}]),
        "missing": predict_request(tenant, "房价", [{"面积": 150.0, "房型": "普通住宅"}]),
        "invalid": predict_request(tenant, "房价", [THE_SEEDS_HOUSE | {"面积": "一百五十"}]),
        "unknown": predict_request(tenant, "房价@model-nobody", [THE_SEEDS_HOUSE]),
        "stranger": predict_request(unique_tenant(), "房价", [THE_SEEDS_HOUSE]),
        "typo": predict_request(tenant, "房价s", [THE_SEEDS_HOUSE]),
        "too_many": predict_request(tenant, "房价", [THE_SEEDS_HOUSE] * 51),
    }
    answers: dict[str, dict[str, Any]] = {}
    async with space.reader("lepton.predict.results") as results:
        for request_record in requests.values():
            await space.send(
                "lepton.predict.requested", request_record["request_id"], request_record
            )
        for what, request_record in requests.items():
            answers[what] = await results.until(
                lambda r, rid=request_record["request_id"]: r["request_id"] == rid, 60
            )
    price = answers["champion"]
    assert price["error"] is None
    assert price["model_id"] == ready["model_id"]
    assert price["problem_type"] == "regression"
    assert len(price["predictions"]) == 1
    # Prices in the seed's data run about 8,000 to 60,000 a square metre.
    assert 150 * 5_000 < price["predictions"][0] < 150 * 100_000
    assert price["warnings"] == []
    version = answers["version"]["predictions"]
    assert version[0] == pytest.approx(price["predictions"][0])
    assert version[1] < version[0]  # a smaller flat costs less
    unseen = answers["unseen"]
    assert unseen["error"] is None
    assert len(unseen["predictions"]) == 1
    assert "区域" in unseen["warnings"][0]
    assert "D区" in unseen["warnings"][0]
    assert answers["missing"]["error"]["code"] == "missing_columns"
    assert "区域" in answers["missing"]["error"]["message"]
    assert answers["invalid"]["error"]["code"] == "invalid_value"
    assert answers["unknown"]["error"]["code"] == "unknown_model"
    # Another tenant's model is not there for it; a typo hears the names near it.
    assert answers["stranger"]["error"]["code"] == "unknown_model"
    assert "no model yet" in answers["stranger"]["error"]["message"]
    assert answers["typo"]["error"]["code"] == "unknown_model"
    assert "did you mean '房价'?" in answers["typo"]["error"]["message"]
    assert answers["too_many"]["error"]["code"] == "too_many_rows"
    for failed in ("missing", "invalid", "unknown", "stranger", "typo", "too_many"):
        assert answers[failed]["predictions"] == []


async def test_an_answer_too_large_for_its_topic_is_an_error_answer_saying_so(
    space: Namespaced,
    evaluator: Service,
    kafka: KafkaAccess,
    codec: Codec,
    database_for: Callable[[str], str],
    data: dict[str, Any],
) -> None:
    """A prediction answer over its topic's limit was dead-lettered: the requester heard
    nothing. Now it hears ``answer_too_large`` and what to do about it."""
    ready = model_ready(data, "房价")
    await evaluated_and_verdict(space, ready)  # stored, where any evaluator can load it
    async with signed_space(kafka, codec, create=False) as small:
        results = small.names.topic("lepton.predict.results")
        # 2,000 predictions take about 20 kB; the error answer well under 4 kB.
        limited = dataclasses.replace(results, config={"max.message.bytes": "4000"})
        await ensure_topics(kafka, [limited])
        await small.create()
        async with (
            running_evaluator(small, kafka, database_for, data, max_rows=2_000),
            small.reader("lepton.predict.results") as answers,
        ):
            asked = predict_request(
                data["tenant"], f"房价@{ready['model_id']}", [THE_SEEDS_HOUSE] * 2_000
            )
            await small.send("lepton.predict.requested", asked["request_id"], asked)
            answer = await answers.until(lambda r: r["request_id"] == asked["request_id"], 120)
    assert answer["error"]["code"] == "answer_too_large", answer["error"]
    assert "4,000-byte limit" in answer["error"]["message"]
    assert results.name in answer["error"]["message"]
    assert answer["predictions"] == []


async def test_a_version_table_reads_back_value_for_value(pool: asyncpg.Pool) -> None:
    """read_dataset decodes COPY's CSV with Arrow: NULL and empty text stay apart, and
    quotes, newlines, big integers, NaN, timestamps and ciphertext come back as stored."""
    table = f"ds_{uuid.uuid4().hex[:24]}"
    master, data_key = os.urandom(32), os.urandom(32)
    cipher = AESGCM(data_key)

    def sealed(text: str | None) -> bytes | None:
        if text is None:
            return None
        nonce = os.urandom(12)
        return nonce + cipher.encrypt(nonce, text.encode(), b"secret")

    utc = dt.UTC
    rows = [
        (
            1,
            1.5,
            "a",
            "x",
            True,
            dt.datetime(2024, 1, 5, 10, 0, 0, 123456, tzinfo=utc),
            sealed("s"),
        ),
        (None, None, None, None, None, None, None),
        (
            2**60 + 1,
            math.nan,
            "",
            "y",
            False,
            dt.datetime(1969, 12, 31, 23, 59, 59, tzinfo=utc),
            sealed(""),
        ),
        (
            -5,
            1e-300,
            'a "quote", a comma,\na newline, 普通住宅, \\N',
            "x",
            True,
            dt.datetime(2030, 6, 1, tzinfo=dt.timezone(dt.timedelta(hours=8))),
            sealed('a,"b"'),
        ),
    ]
    columns = [
        {"name": "i", "type": "integer"},
        {"name": "f", "type": "float"},
        {"name": "s", "type": "string"},
        {"name": "k", "type": "category"},
        {"name": "b", "type": "boolean"},
        {"name": "d", "type": "datetime"},
        {"name": "secret", "type": "string", "sensitive": True},
    ]
    async with pool.acquire() as connection:
        await connection.execute(
            f'CREATE TABLE lepton_data."{table}" (c0 bigint, c1 double precision, c2 text, '
            "c3 text, c4 boolean, c5 timestamptz, c6 bytea)"
        )
        try:
            await connection.copy_records_to_table(table, schema_name="lepton_data", records=rows)
            count, stored = await reading._copy_rows(connection, table)
        finally:
            await connection.execute(f'DROP TABLE lepton_data."{table}"')
        # One column: a NULL row is an empty line of COPY's CSV, still a row.
        await connection.execute(f'CREATE TABLE lepton_data."{table}" (c0 double precision)')
        try:
            await connection.executemany(
                f'INSERT INTO lepton_data."{table}" VALUES ($1)', [(1.5,), (None,), (2.0,)]
            )
            single = reading._frame(
                (await reading._copy_rows(connection, table))[1],
                [{"name": "x", "type": "float"}],
                "owner",
                "name",
                None,
                None,
            )
        finally:
            await connection.execute(f'DROP TABLE lepton_data."{table}"')
    assert single["x"].isna().tolist() == [False, True, False]
    wrapped = wrap_data_key(master, "owner", "name", data_key)
    frame = reading._frame(stored, columns, "owner", "name", wrapped, master)
    assert count == 4
    assert [str(t) for t in frame.dtypes] == [
        "Int64",
        "Float64",
        "string",
        "category",
        "boolean",
        "datetime64[us, UTC]",
        "string",
    ]
    assert frame["i"].tolist()[0::2] == [1, 2**60 + 1]
    assert frame["i"].isna().tolist()[1]
    assert frame["f"].isna().tolist() == [False, True, True, False]  # NaN reads as missing
    assert frame["s"].tolist()[2:] == ["", rows[3][2]]
    assert frame["s"].isna().tolist() == [False, True, False, False]
    assert frame["k"].cat.categories.tolist() == ["x", "y"]
    assert frame["b"].isna().tolist() == [False, True, False, False]
    assert frame["d"].tolist()[2] == pd.Timestamp("1969-12-31 23:59:59", tz="UTC")
    assert frame["d"].tolist()[3] == pd.Timestamp("2030-05-31 16:00", tz="UTC")
    assert frame["d"].tolist()[0].microsecond == 123456
    assert frame["secret"].tolist()[0::2] == ["s", ""]
    assert frame["secret"].tolist()[3] == 'a,"b"'
