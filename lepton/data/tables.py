"""The dataset catalog's tables (``lepton_ingest.*``), owned here beside the queries that read them.

Ingest writes them (:func:`record_version`, in the transaction that fills the version
table) and applies :func:`migrate` at start, as its own login ``lepton_ingest``, which
therefore owns them; the SDK, the trainer and the evaluator read them
(:mod:`lepton.data.catalog`) and find them missing until ingest has started once. Who
applies what: the role setup (``lepton/devstack/roles.sql``, an administrator's, once)
makes the logins, the group roles and each service's schema; every service then applies
its own migrations as its own login; the catalog's migrations grant the readers
(``lepton_reader``, the tenants' own logins) by role name, ``SELECT`` and nothing more.

The migrations were ingest's until they moved here: a database migrated before the move has
``001_catalog.sql`` recorded as component ``ingest``, version 1, from the very same file.
:func:`migrate` first records that row as the catalog's own, so the file is never run twice
(it creates tables and would fail, or worse, on a database that has them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton.runtime import database

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection | PoolConnectionProxy

__all__ = ["COMPONENT", "MIGRATIONS", "catalog_version", "migrate", "record_version"]

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


async def catalog_version(
    connection: Connection, tenant: str, dataset: str, version: str
) -> str | None:
    """The table of an existing version with this content, if any."""
    found: str | None = await connection.fetchval(
        "SELECT table_name FROM lepton_ingest.datasets "
        "WHERE owner_tenant = $1 AND name = $2 AND version = $3",
        tenant,
        dataset,
        version,
    )
    return found


async def record_version(connection: Connection, **fields: Any) -> None:
    await connection.execute(
        "INSERT INTO lepton_ingest.datasets (owner_tenant, name, version, table_name, columns, "
        "rows, quality, spec, spec_inferred, lineage, region, request_id, wrapped_key) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        fields["tenant"],
        fields["dataset"],
        fields["version"],
        fields["table"],
        json.dumps(fields["columns"], ensure_ascii=False),
        fields["rows"],
        json.dumps(fields["quality"], ensure_ascii=False),
        fields["spec"],
        fields["spec_inferred"],
        json.dumps(fields["lineage"], ensure_ascii=False),
        fields["region"],
        fields["request_id"],
        fields["wrapped_key"],
    )
