"""The catalog's tables moved from ingest's migrations to lepton.data's: old and new databases."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from lepton.data import tables
from lepton.devstack._postgres import ROLES_SQL
from lepton.runtime import database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration


@pytest.fixture
async def fresh_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a database of its own (the catalog's tables have fixed names), after the
    role setup that makes its schemas."""
    name = f"catalog_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        pool = await database.connect(urlunsplit(urlsplit(database_url)._replace(path=name)))
        try:
            await pool.execute(ROLES_SQL.read_text(encoding="utf-8"))
            yield pool
        finally:
            await pool.close()
            await admin.execute(f"DROP DATABASE {name}")
    finally:
        await admin.close()


async def _recorded(pool: asyncpg.Pool) -> list[tuple[str, int]]:
    rows = await pool.fetch("SELECT component, version FROM lepton_migrations ORDER BY 1, 2")
    return [(row["component"], row["version"]) for row in rows]


async def test_a_new_database_gets_the_catalog_once(fresh_pool: asyncpg.Pool) -> None:
    assert await tables.migrate(fresh_pool) == [1, 2, 3, 4]
    assert await tables.migrate(fresh_pool) == []
    assert await _recorded(fresh_pool) == [("catalog", n) for n in (1, 2, 3, 4)]
    assert await fresh_pool.fetchval("SELECT count(*) FROM lepton_ingest.datasets") == 0


async def test_a_database_ingest_migrated_keeps_its_catalog(fresh_pool: asyncpg.Pool) -> None:
    # What ingest did before the move: the same first file, recorded under its own name.
    legacy = database.load_migrations(tables.MIGRATIONS)[:1]
    assert await database.migrate(fresh_pool, "ingest", legacy) == [1]
    await fresh_pool.execute(
        "INSERT INTO lepton_ingest.shares (owner_tenant, name, grantee) VALUES ('a', 'd', 'b')"
    )

    assert await tables.migrate(fresh_pool) == [2, 3, 4]

    assert await _recorded(fresh_pool) == [
        ("catalog", 1),
        ("catalog", 2),
        ("catalog", 3),
        ("catalog", 4),
        ("ingest", 1),
    ]
    assert await fresh_pool.fetchval("SELECT count(*) FROM lepton_ingest.shares") == 1


async def test_a_changed_catalog_file_is_refused_not_adopted(fresh_pool: asyncpg.Pool) -> None:
    legacy = database.load_migrations(tables.MIGRATIONS)[:1]
    await database.migrate(fresh_pool, "ingest", legacy)
    await fresh_pool.execute(
        "UPDATE lepton_migrations SET checksum = 'edited' WHERE component = 'ingest'"
    )
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        await tables.migrate(fresh_pool)
