"""Acting for a tenant on the dataset catalog: row-level security, the audit, the errors.

Every catalog call runs inside PostgreSQL row-level security as the tenant it acts for:
the transaction switches to the ``lepton_tenant`` role (no ``BYPASSRLS``) and sets
``app.tenant_id``, so a tenant sees its own datasets and those shared with it, nothing
else, whatever the pool's login role. Reads, grants, revokes and denials are written to the
audit table in the same transaction; the ingest service relays them to ``lepton.audit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton.errors import LeptonError

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection | PoolConnectionProxy

__all__ = [
    "AUDIT_CHANNEL",
    "TENANT_ROLE",
    "AccessDenied",
    "DatasetError",
    "DatasetNotFound",
    "KeyUnavailable",
    "as_tenant",
    "audit",
    "dataset_resource",
]

TENANT_ROLE = "lepton_tenant"
AUDIT_CHANNEL = "lepton_ingest_audit"


class DatasetError(LeptonError):
    """A dataset request the caller can act on."""

    hint = "`lepton data list --tenant T` shows what T may read"


class DatasetNotFound(DatasetError):
    """No such dataset (or version) for this owner."""


class AccessDenied(DatasetError):
    """The dataset exists but is not shared with the reader (in the reader's region)."""


class KeyUnavailable(DatasetError):
    """The dataset has sensitive columns and no master key was given or configured."""


async def as_tenant(connection: Connection, tenant: str, region: str | None = None) -> None:
    # SET LOCAL and set_config(..., true) end with the transaction, so a pooled connection
    # never carries one tenant's identity into the next use.
    await connection.execute(f"SET LOCAL ROLE {TENANT_ROLE}")
    await connection.execute(
        "SELECT set_config('app.tenant_id', $1, true), set_config('app.region', $2, true)",
        tenant,
        region or "",
    )


async def audit(
    connection: Connection,
    *,
    actor: str,
    tenant: str,
    action: str,
    resource: str,
    owner: str | None,
    outcome: str,
    detail: str | None,
    region: str | None,
) -> None:
    await connection.execute(
        "INSERT INTO lepton_ingest.audit "
        "(actor, tenant, action, resource, owner, outcome, detail, region) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        actor,
        tenant,
        action,
        resource,
        owner if owner != tenant else None,
        outcome,
        detail,
        region,
    )
    await connection.execute(f"NOTIFY {AUDIT_CHANNEL}")


def dataset_resource(owner: str, name: str, version: str | None = None) -> str:
    return f"dataset:{owner}/{name}" + (f"@{version}" if version else "")
