"""PostgreSQL: migrations and connection failures, against the real server."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from lepton.devstack._process import free_port
from lepton.runtime import database

pytestmark = pytest.mark.integration


def write_migrations(directory: Path, table: str) -> list[database.Migration]:
    directory.mkdir()
    (directory / "001_create.sql").write_text(f"CREATE TABLE {table} (id int PRIMARY KEY);")
    (directory / "002_seed.sql").write_text(f"INSERT INTO {table} VALUES (1), (2);")
    return database.load_migrations(directory)


async def test_migrations_apply_once_in_order(database_url: str, tmp_path: Path) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    migrations = write_migrations(tmp_path / "m", table)
    pool = await database.connect(database_url)
    try:
        component = f"test-{table}"
        assert await database.migrate(pool, component, migrations) == [1, 2]
        assert await database.migrate(pool, component, migrations) == []
        assert await pool.fetchval(f"SELECT count(*) FROM {table}") == 2
    finally:
        await pool.close()


async def test_two_services_migrating_at_once_apply_each_migration_once(
    database_url: str, tmp_path: Path
) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    migrations = write_migrations(tmp_path / "m", table)
    pools = [await database.connect(database_url) for _ in range(2)]
    try:
        component = f"test-{table}"
        results = await asyncio.gather(*(database.migrate(p, component, migrations) for p in pools))
        assert sorted(results) == [[], [1, 2]]
        assert await pools[0].fetchval(f"SELECT count(*) FROM {table}") == 2
    finally:
        for pool in pools:
            await pool.close()


async def test_a_changed_applied_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    migrations = write_migrations(tmp_path / "m", table)
    pool = await database.connect(database_url)
    try:
        await database.migrate(pool, f"test-{table}", migrations)
        (tmp_path / "m" / "002_seed.sql").write_text(f"INSERT INTO {table} VALUES (3);")
        with pytest.raises(RuntimeError, match="002_seed was changed after it was applied"):
            await database.migrate(pool, f"test-{table}", database.load_migrations(tmp_path / "m"))
    finally:
        await pool.close()


def test_migration_files_must_be_numbered(tmp_path: Path) -> None:
    (tmp_path / "create.sql").write_text("SELECT 1")
    with pytest.raises(ValueError, match=r"NNN_description\.sql"):
        database.load_migrations(tmp_path)


async def test_an_unreachable_database_is_a_clear_error_within_the_timeout() -> None:
    url = f"postgresql://lepton:secret-password@127.0.0.1:{free_port()}/lepton"
    started = time.monotonic()
    with pytest.raises(database.DatabaseUnavailableError) as failure:
        await database.connect(url, timeout_s=1.5)
    assert time.monotonic() - started < 10
    message = str(failure.value)
    assert "did not answer within 2 s" in message
    assert "secret-password" not in message, "the password is never shown"


async def test_the_services_database_is_a_real_postgresql(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        version = await connection.fetchval("SHOW server_version_num")
    finally:
        await connection.close()
    assert int(version) >= 180000
