"""The ingest service against the real Kafka broker and PostgreSQL server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pandas as pd
import pytest

from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.data.reading import read_dataset
from lepton.data.samples import house_prices
from tests.integration.ingest_support import (
    as_tenant_fetch,
    request,
    running_ingest,
    unique_tenant,
)

pytestmark = pytest.mark.integration

HOUSE_SPEC = json.dumps(
    {
        "columns": {
            "面积": {"type": "float", "missing": "median", "min": 10},
            "房型": {"type": "category", "categories": ["普通住宅", "公寓", "别墅"]},
            "区域": {"type": "category", "categories": ["A区", "B区", "C区"], "nullable": False},
            "价格": {
                "type": "float",
                "outliers": {"method": "iqr", "action": "flag", "threshold": 3},
            },
        }
    },
    ensure_ascii=False,
)


async def test_house_prices_csv_is_cleaned_stored_and_readable(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    house_prices().to_csv(tmp_path / "house.csv", index=False, sep=";", encoding="gbk")
    tenant = unique_tenant()
    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        outcome, ready = await ingest.submit(
            request(
                tenant,
                "house_prices",
                [
                    {
                        "name": "listings",
                        "kind": "csv",
                        "uri": "house.csv",
                        "options": {"delimiter": ";"},
                    }
                ],
                spec=HOUSE_SPEC,
            )
        )
    assert outcome == "ready", ready
    quality = ready["quality"]
    assert quality["rows_read"] == 205
    assert quality["duplicates_removed"] == 5
    assert quality["values_imputed"] == 2
    assert quality["rows_rejected"] == 2  # '一百二十' (type) and the missing 区域 (not_null)
    rules = {(rule["rule"], rule["column"]): rule["count"] for rule in quality["rules"]}
    assert rules[("type", "面积")] == 1
    assert rules[("not_null", "区域")] == 1
    assert rules[("missing:median", "面积")] == 2
    assert rules[("outlier:iqr", "价格")] >= 1
    assert ready["rows"] == 205 - 5 - 2
    assert ready["version"].startswith("sha256:")
    assert ready["lineage"][0]["content_hash"].startswith("sha256:")
    frame = await read_dataset(pool, reader_tenant=tenant, name="house_prices")
    assert len(frame) == ready["rows"]
    assert list(frame.columns) == ["面积", "房型", "区域", "价格", "价格_outlier"]
    assert frame["价格_outlier"].sum() >= 1
    assert frame["价格"].max() == 1e9
    assert set(frame["区域"].dropna()) == {"A区", "B区", "C区"}
    rejects = await as_tenant_fetch(
        pool,
        tenant,
        "SELECT rule, column_name, reason, source, source_row FROM lepton_ingest.rejects "
        "WHERE name = 'house_prices' ORDER BY source_row",
    )
    assert [(r["rule"], r["column_name"], r["source_row"]) for r in rejects] == [
        ("type", "面积", 13),
        ("not_null", "区域", 15),
    ]
    assert "一百二十" in rejects[0]["reason"]


async def _tables(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'lepton_data'")
    return {row["tablename"] for row in rows}


async def test_parquet_jsonl_and_query_sources_are_unioned_with_aligned_columns(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    table = f"warehouse_{unique_tenant().replace('-', '_')}"
    await pool.execute(f"CREATE TABLE {table} (id bigint, amount double precision, city text)")
    await pool.execute(f"INSERT INTO {table} VALUES (5, 50.5, 'Xian'), (6, 60.0, NULL)")
    # The warehouse is ingest's own login here: a warehouse grants it what it may read.
    await pool.execute(f"GRANT SELECT ON {table} TO lepton_ingest")
    pd.DataFrame({"id": [1, 2], "amount": [10.5, 20.0]}).to_parquet(tmp_path / "a.parquet")
    (tmp_path / "b.jsonl").write_text(
        '{"id": 3, "amount": 30, "city": "Beijing"}\n{"id": 4, "amount": 40.25, "city": null}\n',
        encoding="utf-8",
    )
    tenant = unique_tenant()
    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        outcome, ready = await ingest.submit(
            request(
                tenant,
                "payments",
                [
                    {"name": "pq", "kind": "parquet", "uri": "a.parquet"},
                    {"name": "js", "kind": "jsonl", "uri": str(tmp_path / "b.jsonl")},
                    {
                        "name": "db",
                        "kind": "postgres",
                        "uri": "warehouse",
                        "query": f"SELECT id, amount, city FROM {table} ORDER BY id",
                    },
                ],
            )
        )
    assert outcome == "ready", ready
    assert ready["spec_inferred"] is True
    assert [(c["name"], c["type"]) for c in ready["columns"]] == [
        ("id", "integer"),
        ("amount", "float"),
        ("city", "category"),
    ]
    assert [(s["name"], s["kind"], s["rows"]) for s in ready["lineage"]] == [
        ("pq", "parquet", 2),
        ("js", "jsonl", 2),
        ("db", "postgres", 2),
    ]
    frame = await read_dataset(pool, reader_tenant=tenant, name="payments")
    assert frame["id"].tolist() == [1, 2, 3, 4, 5, 6]
    assert frame["amount"].tolist() == [10.5, 20.0, 30.0, 40.25, 50.5, 60.0]
    assert frame["city"].isna().tolist() == [True, True, False, True, False, True]


async def test_join_on_keys_and_conflicting_types(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    house_prices().to_csv(tmp_path / "house.csv", index=False)
    table = f"districts_{unique_tenant().replace('-', '_')}"
    await pool.execute(f"CREATE TABLE {table} (区域 text, 均价 bigint)")
    await pool.execute(f"INSERT INTO {table} VALUES ('A区', 62000), ('B区', 45000)")
    await pool.execute(f"GRANT SELECT ON {table} TO lepton_ingest")
    pd.DataFrame({"区域": [1, 2], "x": [1.0, 2.0]}).to_parquet(tmp_path / "numeric.parquet")
    tenant = unique_tenant()
    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        outcome, ready = await ingest.submit(
            request(
                tenant,
                "joined",
                [
                    {"name": "listings", "kind": "csv", "uri": "house.csv"},
                    {
                        "name": "districts",
                        "kind": "postgres",
                        "uri": "warehouse",
                        "query": f"SELECT 区域, 均价 FROM {table}",
                    },
                ],
                integration={"mode": "join", "join_keys": ["区域"], "join_how": "left"},
            )
        )
        assert outcome == "ready", ready
        frame = await read_dataset(pool, reader_tenant=tenant, name="joined")
        assert set(frame.columns) == {"面积", "房型", "区域", "价格", "均价"}
        by_district = frame.groupby("区域", observed=True)["均价"].first().to_dict()
        assert by_district["A区"] == 62000
        assert by_district["B区"] == 45000
        assert frame.loc[frame["区域"] == "C区", "均价"].isna().all()

        outcome, rejected = await ingest.submit(
            request(
                tenant,
                "conflict",
                [
                    {"name": "listings", "kind": "csv", "uri": "house.csv"},
                    {"name": "numbers", "kind": "parquet", "uri": "numeric.parquet"},
                ],
            )
        )
    assert outcome == "rejected"
    assert rejected["code"] == "type_conflict"
    assert rejected["column"] == "区域"
    assert "category" in rejected["reason"]
    assert "integer" in rejected["reason"]


async def test_same_content_is_one_version_and_redelivery_creates_nothing_twice(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3, 3], "score": [0.5, 1.5, 2.5, 2.5]})
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet")
    tenant = unique_tenant()
    first = request(tenant, "scores", [{"name": "s", "kind": "csv", "uri": "s.csv"}])
    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        before = await _tables(pool)
        _, ready = await ingest.submit(first)
        after_first = await _tables(pool)
        await ingest.send(first)  # a redelivery: same request id
        _, again = await ingest.outcome(first["request_id"])
        _, from_parquet = await ingest.submit(
            request(tenant, "scores", [{"name": "s", "kind": "parquet", "uri": "s.parquet"}])
        )
        after_all = await _tables(pool)
    assert ready["reused"] is False
    assert ready["quality"]["duplicates_removed"] == 1
    assert again == ready
    assert from_parquet["version"] == ready["version"]
    assert from_parquet["reused"] is True
    assert from_parquet["location"] == ready["location"]
    assert len(after_first - before) == 1
    assert after_all == after_first
    versions = await as_tenant_fetch(
        pool, tenant, "SELECT version FROM lepton_ingest.datasets WHERE name = 'scores'"
    )
    assert len(versions) == 1
    requests = await as_tenant_fetch(
        pool, tenant, "SELECT request_id FROM lepton_ingest.requests WHERE dataset = 'scores'"
    )
    assert len(requests) == 2
