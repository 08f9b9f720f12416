"""PostgreSQL effects of an ingest: one transaction per version, under row-level security.

The version table is created, filled by COPY, locked down (RLS forced, visible only through
its catalog row) and recorded in the catalog (:mod:`lepton.data.tables`), with its rejects,
its request and its audit row, in a single transaction: a crash at any point leaves nothing
visible, and the request is simply done again when Kafka redelivers it.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from lepton.data.access import READER_ROLE, TENANT_LOGINS, TENANT_ROLE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection | PoolConnectionProxy

__all__ = [
    "AUDIT_TEXT_CHARS",
    "DATA_SCHEMA",
    "as_tenant",
    "audit",
    "bounded",
    "completed",
    "copy_audit",
    "copy_rejects",
    "copy_rows",
    "create_version_table",
    "discard_version_table",
    "lock_dataset",
    "pending_audit",
    "protect_version_table",
    "published_audit",
    "record_request",
    "set_audit_aside",
]

DATA_SCHEMA = "lepton_data"
# An audit row's free text at most (characters), so that its event stays far below the
# limit of lepton.audit: a reason may quote a source's bytes, a name may be a megabyte.
AUDIT_TEXT_CHARS = 4096


async def as_tenant(connection: Connection, tenant: str) -> None:
    """The rest of the transaction runs as ``lepton_tenant`` for ``tenant``."""
    await connection.execute(f"SET LOCAL ROLE {TENANT_ROLE}")
    await connection.execute("SELECT set_config('app.tenant_id', $1, true)", tenant)


async def lock_dataset(connection: Connection, tenant: str, dataset: str) -> None:
    """Serialise ingests of one dataset (a redelivery racing the original, two requests)."""
    await connection.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        json.dumps([tenant, dataset], ensure_ascii=False),
    )


async def completed(connection: Connection, tenant: str, request_id: str) -> tuple[str, Any] | None:
    """The recorded outcome of a request already handled: ('ready'|'rejected', record)."""
    row = await connection.fetchrow(
        "SELECT outcome, result FROM lepton_ingest.requests WHERE tenant = $1 AND request_id = $2",
        tenant,
        request_id,
    )
    return None if row is None else (row["outcome"], json.loads(row["result"]))


async def create_version_table(connection: Connection, columns: Sequence[tuple[str, str]]) -> str:
    """A new, empty table with generated column names; its name is generated too."""
    table = "ds_" + secrets.token_hex(12)
    definition = ", ".join(f"{name} {kind}" for name, kind in columns)
    await connection.execute(f'CREATE TABLE {DATA_SCHEMA}."{table}" ({definition})')
    return table


async def copy_rows(
    connection: Connection,
    table: str,
    columns: Sequence[str],
    source: AsyncIterator[bytes],
) -> None:
    await connection.copy_to_table(
        table, schema_name=DATA_SCHEMA, columns=list(columns), source=source, format="csv"
    )


async def protect_version_table(connection: Connection, table: str) -> None:
    """Force RLS: rows are visible only while the table's catalog row is visible, to
    whoever reads the catalog (services and the operator as ``lepton_reader``, a tenant's
    own login), who may only SELECT.

    Done after COPY because PostgreSQL refuses COPY FROM into a table whose policies apply
    to the writer; the table is not visible to anyone before the transaction commits.
    """
    readers = f"{TENANT_ROLE}, {READER_ROLE}, {TENANT_LOGINS}"
    await connection.execute(f'ALTER TABLE {DATA_SCHEMA}."{table}" ENABLE ROW LEVEL SECURITY')
    await connection.execute(f'ALTER TABLE {DATA_SCHEMA}."{table}" FORCE ROW LEVEL SECURITY')
    await connection.execute(
        f'CREATE POLICY visible ON {DATA_SCHEMA}."{table}" FOR SELECT TO {readers} '
        f"USING ((SELECT lepton_ingest.table_visible('{table}')))"
    )
    await connection.execute(
        f'GRANT SELECT ON {DATA_SCHEMA}."{table}" TO {READER_ROLE}, {TENANT_LOGINS}'
    )


async def discard_version_table(connection: Connection, table: str) -> None:
    await connection.execute(f'DROP TABLE {DATA_SCHEMA}."{table}"')


async def copy_rejects(
    connection: Connection, tenant: str, dataset: str, request_id: str, spool: Any
) -> None:
    """Rejected rows from a CSV spool (source, source_row, rule, column, reason, raw).

    Through a temporary table: COPY cannot write a table with row-level security.
    """
    await connection.execute(
        "CREATE TEMPORARY TABLE ingest_rejects_in (source text, source_row bigint, rule text, "
        "column_name text, reason text, raw jsonb) ON COMMIT DROP"
    )
    await connection.copy_to_table("ingest_rejects_in", source=spool, format="csv")
    await connection.execute(
        "INSERT INTO lepton_ingest.rejects (owner_tenant, name, request_id, source, source_row, "
        "rule, column_name, reason, raw) SELECT $1, $2, $3, source, source_row, rule, "
        "column_name, reason, raw FROM ingest_rejects_in",
        tenant,
        dataset,
        request_id,
    )


async def record_request(
    connection: Connection,
    tenant: str,
    request_id: str,
    dataset: str,
    outcome: str,
    result: dict[str, Any],
) -> None:
    await connection.execute(
        "INSERT INTO lepton_ingest.requests (tenant, request_id, dataset, outcome, result) "
        "VALUES ($1, $2, $3, $4, $5)",
        tenant,
        request_id,
        dataset,
        outcome,
        json.dumps(result, ensure_ascii=False),
    )


async def copy_audit(pool: asyncpg.Pool, record: Mapping[str, Any], position: str) -> bool:
    """A ``lepton.AuditEvent`` another service published (a denial it made), kept in the
    audit table; False when that position on ``lepton.audit`` was copied already."""
    copied = await pool.fetchval(
        "INSERT INTO lepton_ingest.audit (time, actor, tenant, action, resource, owner, "
        "outcome, detail, region, bus_position) VALUES (to_timestamp($1 / 1000.0), $2, $3, "
        "$4, $5, $6, $7, $8, $9, $10) ON CONFLICT (bus_position) DO NOTHING RETURNING true",
        record["time"],
        record["actor"],
        record["tenant"],
        record["action"],
        record["resource"],
        record.get("owner"),
        record["outcome"],
        record.get("detail"),
        record.get("region"),
        position,
    )
    return bool(copied)


async def audit(
    connection: Connection,
    *,
    tenant: str,
    action: str,
    resource: str,
    outcome: str,
    detail: str | None,
    region: str | None,
    actor: str = "service:ingest",
) -> None:
    """An audit row in the caller's transaction; the relay publishes it after commit (a
    trigger queues it in the outbox and wakes the relay). Its resource and detail are cut
    to :data:`AUDIT_TEXT_CHARS`."""
    await connection.execute(
        "INSERT INTO lepton_ingest.audit (actor, tenant, action, resource, outcome, detail, "
        "region) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        actor,
        tenant,
        action,
        bounded(resource),
        outcome,
        None if detail is None else bounded(detail),
        region,
    )


def bounded(text: str, limit: int = AUDIT_TEXT_CHARS) -> str:
    """``text``, or its first ``limit`` characters and how many there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


async def pending_audit(connection: Connection, limit: int) -> list[asyncpg.Record]:
    """Audit rows still to publish (not set aside), oldest first, locked for this
    transaction; rows another relay holds are skipped."""
    # The audit table is append-only: what is still to publish is its outbox's rows.
    return list(
        await connection.fetch(
            "SELECT a.id, a.time, a.actor, a.tenant, a.action, a.resource, a.owner, "
            "a.outcome, a.detail, a.region FROM lepton_ingest.audit_outbox o "
            "JOIN lepton_ingest.audit a USING (id) WHERE o.set_aside_at IS NULL "
            "ORDER BY o.id LIMIT $1 FOR UPDATE OF o SKIP LOCKED",
            limit,
        )
    )


async def published_audit(connection: Connection, ids: Sequence[int]) -> None:
    await connection.execute("DELETE FROM lepton_ingest.audit_outbox WHERE id = ANY($1)", ids)


async def set_audit_aside(connection: Connection, audit_id: int, reason: str) -> None:
    """An audit row that can never be published stays in the outbox, marked, and is not
    tried again."""
    await connection.execute(
        "UPDATE lepton_ingest.audit_outbox SET set_aside_at = clock_timestamp(), "
        "set_aside_reason = $2 WHERE id = $1",
        audit_id,
        bounded(reason),
    )
