"""SIGKILL in the middle of an ingest, then a restart: no partial version is ever visible
and the request completes exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from lepton.bus import Publisher
from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.contract.topics import Namespace
from lepton.data.samples import write_messy_csv
from lepton.testing import impersonating
from tests.integration.ingest_support import (
    MASTER_KEY,
    delete_topics,
    request,
    unique_tenant,
)

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "lepton-ingest"), stderr=asyncio.subprocess.PIPE, env=env
    )
    assert process.stderr is not None
    async with asyncio.timeout(60):
        while True:
            line = await process.stderr.readline()
            assert line, f"lepton-ingest exited early with {await process.wait()}"
            if b'"consuming"' in line:
                return process


async def _copy_in_progress(pool: asyncpg.Pool) -> None:
    """Returns once a backend is streaming rows into a version table."""
    async with asyncio.timeout(120):
        # Polls the server's state: there is no event to await for another process's COPY.
        while not await pool.fetchval(  # noqa: ASYNC110
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE state = 'active' AND query LIKE 'COPY \"lepton_data\".%'"
        ):
            await asyncio.sleep(0.02)


async def _all_records(kafka: KafkaAccess, codec: Codec, topic: str) -> list[dict]:
    """Every record on the topic now, from the beginning of each partition to its end."""
    # Without a group, a consumer of a topic is assigned all of its partitions.
    consumer = AIOKafkaConsumer(
        topic, **kafka.aiokafka(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = sorted(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        records = []
        for partition in partitions:
            while await consumer.position(partition) < ends[partition]:
                batch = await consumer.getmany(partition, timeout_ms=1000)
                for message in batch.get(partition, []):
                    records.append(codec.decode(message.value)[1])
        return records
    finally:
        await consumer.stop()


async def test_sigkill_mid_ingest_then_restart(
    kafka: KafkaAccess,
    database_url: str,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
) -> None:
    write_messy_csv(tmp_path / "big.csv", 400_000)
    prefix = f"t{uuid.uuid4().hex[:10]}."
    names = Namespace(prefix)
    env = {
        **os.environ,
        **kafka.environment(),
        "LEPTON_DATABASE_URL": database_for("ingest"),
        "LEPTON_TOPIC_PREFIX": prefix,
        "LEPTON_INGEST_ROOTS": json.dumps([str(tmp_path)]),
        "LEPTON_MASTER_KEY": MASTER_KEY,
        "LEPTON_INGEST_CHUNK_BYTES": str(256 * 1024),
    }
    tenant = unique_tenant()
    record = request(tenant, "big", [{"name": "s", "kind": "csv", "uri": "big.csv"}])
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        tables_before = await pool.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'lepton_data'"
        )
        first = await _start(env)
        try:
            async with Publisher(kafka, codec, source="tests", signer=impersonating()) as publisher:
                await publisher.publish(
                    names.topic("lepton.data.requested"), f"{tenant}/big", record
                )
            await _copy_in_progress(pool)
        finally:
            first.send_signal(signal.SIGKILL)
            await first.wait()
        # Killed mid-COPY: nothing of the version is visible, to anyone.
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM lepton_ingest.datasets WHERE owner_tenant = $1", tenant
            )
            == 0
        )
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM lepton_ingest.requests WHERE tenant = $1", tenant
            )
            == 0
        )

        second = await _start(env)
        try:
            consumer = AIOKafkaConsumer(
                names.topic("lepton.data.ready").name,
                **kafka.aiokafka(),
                auto_offset_reset="earliest",
            )
            await consumer.start()
            try:
                async with asyncio.timeout(240):
                    message = await consumer.getone()
            finally:
                await consumer.stop()
        finally:
            second.send_signal(signal.SIGTERM)
            await second.wait()
        ready = codec.decode(message.value)[1]
        assert ready["request_id"] == record["request_id"]
        assert ready["quality"]["rows_read"] == 400_000
        versions = await pool.fetch(
            "SELECT table_name, rows FROM lepton_ingest.datasets WHERE owner_tenant = $1", tenant
        )
        assert len(versions) == 1
        assert versions[0]["rows"] == ready["rows"]
        assert (
            await pool.fetchval(f'SELECT count(*) FROM lepton_data."{versions[0]["table_name"]}"')
            == ready["rows"]
        )
        # The killed attempt's table died with its transaction: exactly one more table.
        tables_after = await pool.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'lepton_data'"
        )
        assert tables_after == tables_before + 1
        published = await _all_records(kafka, codec, names.topic("lepton.data.ready").name)
        assert [r["request_id"] for r in published] == [record["request_id"]]
    finally:
        await pool.close()
        await delete_topics(kafka, prefix)
