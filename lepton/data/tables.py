"""The dataset catalog's tables (``lepton_ingest.*``), owned here beside the queries that read them.

Ingest writes them; the SDK, the trainer and the evaluator read them. Each of these applies
:func:`migrate` before its first query, so the tables exist whichever starts first.

The migrations were ingest's until they moved here: a database migrated before the move has
``001_catalog.sql`` recorded as component ``ingest``, version 1, from the very same file.
:func:`migrate` first records that row as the catalog's own, so the file is never run twice
(it creates tables and would fail, or worse, on a database that has them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lepton.runtime import database

if TYPE_CHECKING:
    import asyncpg

__all__ = ["COMPONENT", "MIGRATIONS", "migrate"]

COMPONENT = "catalog"
MIGRATIONS = Path(__file__).parent / "migrations"

# A changed checksum is not copied over as agreement: database.migrate refuses it instead.
_ADOPT_INGEST_RECORD = """
INSERT INTO lepton_migrations (component, version, name, checksum, applied_at)
SELECT $1, version, name, checksum, applied_at FROM lepton_migrations
WHERE component = 'ingest' AND version = 1 AND name = 'catalog'
ON CONFLICT (component, version) DO NOTHING
"""


async def migrate(pool: asyncpg.Pool) -> list[int]:
    """Apply the catalog's migrations not applied yet (under any owner); their versions."""
    async with pool.acquire() as connection:
        if await connection.fetchval("SELECT to_regclass('lepton_migrations') IS NOT NULL"):
            await connection.execute(_ADOPT_INGEST_RECORD, COMPONENT)
    return await database.migrate(pool, COMPONENT, database.load_migrations(MIGRATIONS))
