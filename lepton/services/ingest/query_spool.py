"""PostgreSQL query sources, spooled to a temporary Parquet file so they stream like files."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lepton.services.ingest.spec import IngestRejected

if TYPE_CHECKING:
    import asyncpg

__all__ = ["spool_query"]


async def spool_query(
    connection: asyncpg.Connection,
    query: str,
    source: str,
    chunk_rows: int,
    timeout_s: float,
    directory: str | None = None,
) -> tuple[str, str, int]:
    """Run a read-only query and spool its rows to a temporary Parquet file.

    Returns the file, the rows' content hash and the row count; the caller deletes the file.
    """
    digest = hashlib.sha256()
    handle, path = tempfile.mkstemp(prefix="lepton-ingest-", suffix=".parquet", dir=directory)
    os.close(handle)
    writer: pq.ParquetWriter | None = None
    rows = 0
    try:
        async with connection.transaction(readonly=True, isolation="repeatable_read"):
            await connection.execute(
                "SELECT set_config('statement_timeout', $1, true)", f"{int(timeout_s * 1000)}ms"
            )
            cursor = await connection.cursor(query)
            while True:
                records = await cursor.fetch(chunk_rows)
                if not records:
                    break
                columns = list(records[0].keys())
                table = pa.Table.from_pylist(
                    [dict(zip(columns, r.values(), strict=True)) for r in records]
                )
                sink = io.BytesIO()
                pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
                digest.update(sink.getvalue())
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema)
                writer.write_table(table.cast(writer.schema))
                rows += len(records)
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        os.unlink(path)
        raise IngestRejected(
            "empty", f"source {source!r}: the query returned no rows", source=source
        )
    return path, "sha256:" + digest.hexdigest(), rows
