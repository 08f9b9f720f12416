"""Every kind of bad input gives lepton.data.rejected with a specific reason, an audit row,
and leaves nothing half-written."""

from __future__ import annotations

import gzip
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
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

MAX_BYTES = 20_000_000
CHUNK_BYTES = 64 * 1024


def _write_house(root: Path, name: str = "house.csv", **options: str) -> None:
    house_prices().to_csv(root / name, index=False, **options)  # type: ignore[arg-type]


def _ragged_late(root: Path) -> None:
    # Several chunks parse (and stream into COPY) before the broken row is reached.
    with (root / "late.csv").open("w", encoding="utf-8") as out:
        out.write("a,b,c\n")
        # More rows than one pyarrow block (1 MiB: a line of the line limit must fit in one).
        for i in range(200_000):
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


def _no_newline(root: Path) -> None:
    # The finding was 50 MB; under this module's 20 MB file limit the line limit still
    # stops it after 1 MiB.
    (root / "noline.csv").write_bytes(b"a," + b"x" * (MAX_BYTES - 1_000_000))


def _gzip_one_row(root: Path) -> None:
    # Incompressible, so no ratio guard stops it: only the line limit does, while inflating.
    with gzip.open(root / "row.csv.gz", "wb", compresslevel=1) as out:
        out.write(b"a,b\n1,")
        for _ in range(8):
            out.write(os.urandom(1 << 20).hex().encode())
        out.write(b"\n2,3\n")


def _wide(root: Path) -> None:
    with (root / "wide.csv").open("w") as out:
        out.write(",".join(f"c{i}" for i in range(100_000)) + "\n")
        out.write(",".join("1" * 100_000) + "\n")


def _zip_bomb(root: Path) -> None:
    with zipfile.ZipFile(root / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.csv", b"a,b\n" + b"0,0\n" * 25_000_000)


def _truncated(root: Path) -> None:
    pq.write_table(pa.table({"a": list(range(100_000))}), root / "whole.parquet")
    whole = (root / "whole.parquet").read_bytes()
    (root / "cut.parquet").write_bytes(whole[: len(whole) // 2])
    packed = gzip.compress(b"a,b\n" + b"1,2\n" * 100_000)
    (root / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])


def _many_categories(root: Path) -> None:
    pd.DataFrame({"k": [f"v{i}" for i in range(20_000)]}).to_csv(root / "kinds.csv", index=False)


def _too_wide_for_a_page(root: Path) -> None:
    # Within every bound, but 900 out-of-line text values are more than a PostgreSQL page
    # holds (TOAST pointers of 18 bytes each): PostgreSQL refuses the row.
    names = ",".join(f"c{i}" for i in range(900))
    cells = ",".join(os.urandom(500).hex() for _ in range(900))
    (root / "page.csv").write_text(f"{names}\n{cells}\n")


def _links(root: Path) -> None:
    os.mkfifo(root / "pipe.csv")
    os.symlink(root / "loop-b", root / "loop-a")
    os.symlink(root / "loop-a", root / "loop-b")


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
        "outside the directories this ingest service may read (its LEPTON_INGEST_ROOTS)",
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
        "outside the directories this ingest service may read (its LEPTON_INGEST_ROOTS)",
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
        "missing.csv: no such file or directory",
    ),
    "a file with no newline": (
        _no_newline,
        {"sources": [{"name": "s", "kind": "csv", "uri": "noline.csv"}]},
        "line_too_long",
        "LEPTON_INGEST_MAX_LINE_BYTES",
    ),
    "a gzip of one enormous row": (
        _gzip_one_row,
        {"sources": [{"name": "s", "kind": "csv", "uri": "row.csv.gz"}]},
        "line_too_long",
        "LEPTON_INGEST_MAX_LINE_BYTES",
    ),
    "a hundred thousand columns": (
        _wide,
        {"sources": [{"name": "s", "kind": "csv", "uri": "wide.csv"}]},
        "too_many_columns",
        "LEPTON_INGEST_MAX_COLUMNS",
    ),
    "a zip bomb": (
        _zip_bomb,
        {"sources": [{"name": "s", "kind": "csv", "uri": "bomb.zip"}]},
        "unsupported_format",
        "zip archive",
    ),
    "a NUL byte in a value": (
        lambda root: (root / "nul.csv").write_bytes(b"a,b\n1,x\n2,x\x00y\n"),
        {"sources": [{"name": "s", "kind": "csv", "uri": "nul.csv"}]},
        "nul_byte",
        "row 2, column 'b'",
    ),
    "invalid UTF-8 after the detection sample": (
        lambda root: (root / "late-utf8.csv").write_bytes(
            b"a,b\n" + b"1,x\n" * 200_000 + b"2,\xff\xfe\n"
        ),
        {"sources": [{"name": "s", "kind": "csv", "uri": "late-utf8.csv"}]},
        "encoding",
        "invalid UTF8",
    ),
    "a truncated Parquet file": (
        _truncated,
        {"sources": [{"name": "s", "kind": "parquet", "uri": "cut.parquet"}]},
        "source_unreadable",
        "not a readable Parquet file",
    ),
    "a truncated gzip": (
        _truncated,
        {"sources": [{"name": "s", "kind": "csv", "uri": "cut.csv.gz"}]},
        "source_unreadable",
        "truncated gzip",
    ),
    "a column name over the limit": (
        lambda root: (root / "longname.csv").write_text("a," + "n" * 500_000 + "\n1,2\n"),
        {"sources": [{"name": "s", "kind": "csv", "uri": "longname.csv"}]},
        "column_name_too_long",
        "LEPTON_INGEST_MAX_COLUMN_NAME_BYTES",
    ),
    "a category with too many values": (
        _many_categories,
        {
            "sources": [{"name": "s", "kind": "csv", "uri": "kinds.csv"}],
            "spec": json.dumps({"columns": {"k": {"type": "category"}}}),
        },
        "too_many_categories",
        "LEPTON_INGEST_MAX_CATEGORIES",
    ),
    "a spec column name of 300,000 characters is echoed clipped": (
        lambda root: _write_house(root),
        {
            "sources": [{"name": "s", "kind": "csv", "uri": "house.csv"}],
            "spec": json.dumps({"columns": {"x" * 300_000: {"type": "integer"}}}),
        },
        "spec_violation",
        "bytes in all",
    ),
    "a row PostgreSQL cannot store": (
        _too_wide_for_a_page,
        {"sources": [{"name": "s", "kind": "csv", "uri": "page.csv"}]},
        "storage_refused",
        "PostgreSQL cannot store",
    ),
    "a FIFO": (
        _links,
        {"sources": [{"name": "s", "kind": "csv", "uri": "pipe.csv"}]},
        "source_unreadable",
        "not a regular file",
    ),
    "a loop of symbolic links": (
        lambda root: None,
        {"sources": [{"name": "s", "kind": "csv", "uri": "loop-a"}]},
        "source_unreadable",
        "symbolic links",
    ),
    "a NUL byte in the path": (
        lambda root: None,
        {"sources": [{"name": "s", "kind": "csv", "uri": "x\x00.csv"}]},
        "path_not_allowed",
        "NUL",
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
    # Never an echo of the input: the answer stays small whatever the file held.
    assert len(record["reason"].encode()) <= 1024
    assert record["column"] is None or len(record["column"]) <= 200
    # Dataset-level refusals name no source (a spec's verdict, a bound over all sources).
    dataset_level = ("spec_invalid", "spec_violation", "too_many_categories", "storage_refused")
    if code not in dataset_level or fields["sources"][0]["kind"] != "csv":
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


async def test_names_with_shell_and_sql_metacharacters_are_only_data(
    ingest, pool: asyncpg.Pool
) -> None:
    """A file, a source and columns named like shell commands and SQL injections are
    stored as given: nothing runs them (no shell; parameterised SQL; generated table and
    column identifiers)."""
    file_name = "x; touch pwned $(touch pwned2) `touch pwned3` '\"--.csv"
    columns = ['a"; DROP TABLE lepton_ingest.datasets; --', "b' OR '1'='1", "$(rm -rf ~)"]
    frame = pd.DataFrame({columns[0]: [1, 2], columns[1]: ["'; --", "x"], columns[2]: [3, 4]})
    frame.to_csv(ingest.root / file_name, index=False)
    source = "s'; DROP TABLE lepton_ingest.audit; --"
    tenant = unique_tenant()
    outcome, record = await ingest.submit(
        request(tenant, "meta", [{"name": source, "kind": "csv", "uri": file_name}])
    )
    assert outcome == "ready", record
    assert [c["name"] for c in record["columns"]] == columns
    assert record["lineage"][0]["name"] == source
    stored = await read_dataset(pool, reader_tenant=tenant, name="meta")
    assert list(stored.columns) == columns
    assert stored[columns[1]].tolist() == ["'; --", "x"]
    assert _left_behind(ingest.root) == []
    assert await pool.fetchval("SELECT to_regclass('lepton_ingest.datasets') IS NOT NULL")
    assert await pool.fetchval("SELECT to_regclass('lepton_ingest.audit') IS NOT NULL")


def _left_behind(root: Path) -> list[Path]:
    """Files a shell would have made of the metacharacter names, where it would have."""
    return [
        place / name
        for place in (root, Path.cwd())
        for name in ("pwned", "pwned2", "pwned3")
        if (place / name).exists()
    ]
