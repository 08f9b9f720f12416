"""Every kind of bad input gives lepton.data.rejected with a specific reason, an audit row,
and leaves nothing half-written."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pandas as pd
import pytest

from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.data.samples import house_prices
from tests.integration.ingest_support import (
    as_tenant_fetch,
    request,
    running_ingest,
    unique_tenant,
)

pytestmark = pytest.mark.integration

MAX_BYTES = 20_000_000
CHUNK_BYTES = 64 * 1024


def _write_house(root: Path, name: str = "house.csv", **options: str) -> None:
    house_prices().to_csv(root / name, index=False, **options)  # type: ignore[arg-type]


def _ragged_late(root: Path) -> None:
    # Several chunks parse (and stream into COPY) before the broken row is reached.
    with (root / "late.csv").open("w", encoding="utf-8") as out:
        out.write("a,b,c\n")
        for i in range(60_000):
            out.write(f"{i},{i * 2},x{i}\n")
        out.write("1,2,3,4\n")


def _bomb(root: Path) -> None:
    with gzip.open(root / "bomb.csv.gz", "wb", compresslevel=9) as out:
        out.write(b"a,b\n")
        block = b"0,0\n" * 250_000
        for _ in range(50):
            out.write(block)


def _big(root: Path) -> None:
    (root / "big.csv").write_bytes(b"a,b\n" + b"1,2\n" * (MAX_BYTES // 4 + 10))


def _outside(root: Path) -> None:
    outside = root.parent / f"{root.name}-outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.csv").write_text("a\n1\n")
    os.symlink(outside / "secret.csv", root / "link.csv")


CASES: dict[str, tuple[Callable[[Path], None], dict, str, str]] = {
    "declared encoding is wrong": (
        lambda root: _write_house(root, "gbk.csv", encoding="gbk"),
        {
            "sources": [
                {"name": "s", "kind": "csv", "uri": "gbk.csv", "options": {"encoding": "utf-8"}}
            ]
        },
        "encoding",
        "is not valid utf-8",
    ),
    "unknown encoding name": (
        lambda root: _write_house(root),
        {
            "sources": [
                {"name": "s", "kind": "csv", "uri": "house.csv", "options": {"encoding": "klingon"}}
            ]
        },
        "encoding",
        "unknown encoding",
    ),
    "ragged rows": (
        lambda root: (root / "ragged.csv").write_text("a,b\n1,2\n3,4,5\n6,7\n"),
        {"sources": [{"name": "s", "kind": "csv", "uri": "ragged.csv"}]},
        "ragged_rows",
        "Expected 2 columns, got 3",
    ),
    "ragged row after streamed chunks": (
        _ragged_late,
        {"sources": [{"name": "s", "kind": "csv", "uri": "late.csv"}]},
        "ragged_rows",
        "Expected 3 columns, got 4",
    ),
    "empty file": (
        lambda root: (root / "empty.csv").write_bytes(b""),
        {"sources": [{"name": "s", "kind": "csv", "uri": "empty.csv"}]},
        "empty",
        "empty file",
    ),
    "header only": (
        lambda root: (root / "header.csv").write_text("a,b\n"),
        {"sources": [{"name": "s", "kind": "csv", "uri": "header.csv"}]},
        "empty",
        "no rows",
    ),
    "over the size limit": (
        _big,
        {"sources": [{"name": "s", "kind": "csv", "uri": "big.csv"}]},
        "too_large",
        "over the limit",
    ),
    "gzip bomb": (
        _bomb,
        {"sources": [{"name": "s", "kind": "csv", "uri": "bomb.csv.gz"}]},
        "compression_ratio",
        "inflates more than",
    ),
    "absolute path outside the roots": (
        lambda root: None,
        {"sources": [{"name": "s", "kind": "csv", "uri": "/etc/passwd"}]},
        "path_not_allowed",
        "outside the allowed roots",
    ),
    "dot-dot in the path": (
        lambda root: None,
        {"sources": [{"name": "s", "kind": "csv", "uri": "sub/../../x.csv"}]},
        "path_not_allowed",
        "'..'",
    ),
    "symbolic link out of the roots": (
        _outside,
        {"sources": [{"name": "s", "kind": "csv", "uri": "link.csv"}]},
        "path_not_allowed",
        "outside the allowed roots",
    ),
    "remote protocol not enabled": (
        lambda root: None,
        {"sources": [{"name": "s", "kind": "csv", "uri": "s3://bucket/x.csv"}]},
        "path_not_allowed",
        "s3:// is not enabled",
    ),
    "spec contradicts the data": (
        lambda root: _write_house(root),
        {
            "sources": [{"name": "s", "kind": "csv", "uri": "house.csv"}],
            "spec": json.dumps({"columns": {"价格": {"type": "float", "max": 100}}}),
        },
        "spec_violation",
        "contradicts the data",
    ),
    "spec names a column no source has": (
        lambda root: _write_house(root),
        {
            "sources": [{"name": "s", "kind": "csv", "uri": "house.csv"}],
            "spec": json.dumps({"columns": {"卧室": {"type": "integer"}}}),
        },
        "spec_violation",
        "'卧室'",
    ),
    "invalid spec": (
        lambda root: _write_house(root),
        {
            "sources": [{"name": "s", "kind": "csv", "uri": "house.csv"}],
            "spec": json.dumps({"columns": {"价格": {"type": "float", "categories": ["x"]}}}),
        },
        "spec_invalid",
        "categories need type category or string",
    ),
    "unknown postgres connection": (
        lambda root: None,
        {"sources": [{"name": "s", "kind": "postgres", "uri": "nowhere", "query": "SELECT 1"}]},
        "source_unreadable",
        "no PostgreSQL connection named 'nowhere'",
    ),
    "failing query": (
        lambda root: None,
        {
            "sources": [
                {
                    "name": "s",
                    "kind": "postgres",
                    "uri": "warehouse",
                    "query": "SELECT * FROM no_such_table",
                }
            ]
        },
        "source_unreadable",
        "no_such_table",
    ),
    "writing query": (
        lambda root: None,
        {
            "sources": [
                {
                    "name": "s",
                    "kind": "postgres",
                    "uri": "warehouse",
                    "query": "CREATE TABLE pwned (a int)",
                }
            ]
        },
        "source_unreadable",
        "read-only transaction",
    ),
    "missing file": (
        lambda root: None,
        {"sources": [{"name": "s", "kind": "csv", "uri": "missing.csv"}]},
        "source_unreadable",
        "FileNotFoundError",
    ),
    "not a parquet file": (
        lambda root: (root / "fake.parquet").write_text("a,b\n1,2\n"),
        {"sources": [{"name": "s", "kind": "parquet", "uri": "fake.parquet"}]},
        "source_unreadable",
        "not a readable Parquet file",
    ),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bad-input")
    for make, *_ in CASES.values():
        make(directory)
    return directory


@pytest.fixture(scope="module")
async def ingest(kafka: KafkaAccess, database_for: Callable[[str], str], codec: Codec, root: Path):
    async with running_ingest(
        kafka,
        database_for("ingest"),
        codec,
        root,
        ingest_max_file_bytes=MAX_BYTES,
        ingest_chunk_bytes=CHUNK_BYTES,
    ) as running:
        yield running


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_input_is_rejected_specifically_and_leaves_nothing(
    case: str, ingest, pool: asyncpg.Pool
) -> None:
    _, fields, code, reason = CASES[case]
    tenant = unique_tenant()
    tables_before = await pool.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'lepton_data'"
    )
    outcome, record = await ingest.submit(request(tenant, "bad", **fields))
    assert outcome == "rejected", record
    assert record["code"] == code, record
    assert reason in record["reason"], record
    if code not in ("spec_invalid", "spec_violation") or fields["sources"][0]["kind"] != "csv":
        assert record["source"] == "s"
    tables_after = await pool.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'lepton_data'"
    )
    assert tables_after == tables_before
    assert await as_tenant_fetch(pool, tenant, "SELECT 1 FROM lepton_ingest.datasets") == []
    assert await as_tenant_fetch(pool, tenant, "SELECT 1 FROM lepton_ingest.rejects") == []
    audit = await pool.fetch(
        "SELECT action, outcome, detail FROM lepton_ingest.audit WHERE tenant = $1", tenant
    )
    assert [(a["action"], a["outcome"]) for a in audit] == [("write", "denied")]
    assert audit[0]["detail"].startswith(code + ":")


async def test_ragged_row_position_is_reported(ingest) -> None:
    _, record = await ingest.submit(
        request(unique_tenant(), "bad", [{"name": "s", "kind": "csv", "uri": "ragged.csv"}])
    )
    assert record["code"] == "ragged_rows"
    assert record["row"] == 3


async def test_detected_encoding_reads_gbk(ingest, pool: asyncpg.Pool) -> None:
    outcome, record = await ingest.submit(
        request(unique_tenant(), "ok", [{"name": "s", "kind": "csv", "uri": "gbk.csv"}])
    )
    assert outcome == "ready", record
    assert [c["name"] for c in record["columns"]] == ["面积", "房型", "区域", "价格"]
    assert pd.Series([1]).sum() == 1


async def test_a_redelivered_rejection_is_answered_again_and_audited_once(
    ingest, pool: asyncpg.Pool
) -> None:
    tenant = unique_tenant()
    record = request(tenant, "bad", [{"name": "s", "kind": "csv", "uri": "empty.csv"}])
    _, first = await ingest.submit(record)
    await ingest.send(record)
    _, again = await ingest.outcome(record["request_id"])
    assert again == first
    assert (
        await pool.fetchval("SELECT count(*) FROM lepton_ingest.audit WHERE tenant = $1", tenant)
        == 1
    )


async def test_sensitive_columns_need_a_master_key(
    kafka: KafkaAccess, database_for: Callable[[str], str], codec: Codec, root: Path
) -> None:
    spec = json.dumps({"columns": {"面积": {"type": "float", "sensitive": True}}})
    async with running_ingest(
        kafka, database_for("ingest"), codec, root, master_key=None
    ) as keyless:
        outcome, record = await keyless.submit(
            request(
                unique_tenant(), "d", [{"name": "s", "kind": "csv", "uri": "house.csv"}], spec=spec
            )
        )
    assert outcome == "rejected"
    assert record["code"] == "spec_invalid"
    assert "LEPTON_MASTER_KEY" in record["reason"]
