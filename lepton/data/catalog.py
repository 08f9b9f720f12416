"""The dataset catalog: what a tenant may read (datasets, their versions, no rows), and
sharing a dataset with another tenant or withdrawing the share.

Every call acts as the tenant under row-level security (:mod:`lepton.data.access`); a
version's rows are read by :func:`lepton.data.reading.read_dataset`. Refusals, grants and
revokes are recorded by the database, which names who acted from the login.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lepton.data.access import AccessDenied, DatasetNotFound, acting_for, dataset_resource

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

__all__ = [
    "DatasetInfo",
    "DatasetVersion",
    "dataset_versions",
    "list_datasets",
    "revoke_dataset",
    "share_dataset",
]


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    owner_tenant: str
    name: str
    version: str
    rows: int
    columns: list[dict[str, Any]]
    region: str | None
    created_at: datetime
    shared: bool  # True when the reader is not the owner


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """One stored version of a dataset, as the catalog describes it (no data)."""

    owner_tenant: str
    name: str
    version: str
    rows: int
    columns: list[dict[str, Any]]  # name, type, nullable, sensitive
    quality: dict[str, Any]  # the QualitySummary of lepton.data.ready
    spec_inferred: bool
    lineage: list[dict[str, Any]]  # the sources and their content hashes
    region: str | None
    created_at: datetime
    # The spec its rows were cleaned by (inferred or given), as the request's JSON form:
    # a user edits it and ingests again with it.
    spec: dict[str, Any] = field(default_factory=dict)


async def list_datasets(
    pool: asyncpg.Pool, *, reader_tenant: str, region: str | None = None
) -> list[DatasetInfo]:
    """The latest version of every dataset the reader owns or is shared with (from
    ``region``: shares limited to another region are left out)."""
    async with acting_for(pool, reader_tenant, region) as connection:
        rows = await connection.fetch(
            "SELECT DISTINCT ON (owner_tenant, name) owner_tenant, name, version, rows, "
            "columns, region, created_at FROM lepton_ingest.datasets "
            "ORDER BY owner_tenant, name, created_at DESC"
        )
    return [
        DatasetInfo(
            owner_tenant=row["owner_tenant"],
            name=row["name"],
            version=row["version"],
            rows=row["rows"],
            columns=json.loads(row["columns"]),
            region=row["region"],
            created_at=row["created_at"],
            shared=row["owner_tenant"] != reader_tenant,
        )
        for row in rows
    ]


async def dataset_versions(
    pool: asyncpg.Pool,
    *,
    reader_tenant: str,
    name: str,
    owner: str | None = None,
    region: str | None = None,
    version: str | None = None,
) -> list[DatasetVersion]:
    """Every version of a dataset the reader may see (or only ``version``), newest first:
    its columns, quality summary and lineage, not its rows (so, like
    :func:`list_datasets`, a found dataset is not audited).

    Raises :class:`DatasetNotFound`, or :class:`AccessDenied` for another tenant's
    dataset that is not shared with the reader; either is recorded as a denied read.
    """
    owner_tenant = owner or reader_tenant
    refused = None
    async with acting_for(pool, reader_tenant, region) as connection:
        rows = await connection.fetch(
            "SELECT owner_tenant, name, version, rows, columns, quality, spec, spec_inferred, "
            "lineage, region, created_at FROM lepton_ingest.datasets "
            "WHERE owner_tenant = $1 AND name = $2 AND ($3::text IS NULL OR version = $3) "
            "ORDER BY created_at DESC",
            owner_tenant,
            name,
            version,
        )
        if not rows:
            refused = await connection.fetchval(
                "SELECT lepton_ingest.read_refused($1, $2, $3, NULL)", owner_tenant, name, version
            )
    if refused == "not_shared":
        detail = f"not shared with {reader_tenant}" + (f" in {region}" if region else "")
        raise AccessDenied(f"{dataset_resource(owner_tenant, name)}: {detail}")
    if refused is not None:
        detail = "no such dataset" + (f" version {version}" if version else "")
        raise DatasetNotFound(f"{dataset_resource(owner_tenant, name, version)}: {detail}")
    return [
        DatasetVersion(
            owner_tenant=row["owner_tenant"],
            name=row["name"],
            version=row["version"],
            rows=row["rows"],
            columns=json.loads(row["columns"]),
            quality=json.loads(row["quality"]),
            spec_inferred=row["spec_inferred"],
            lineage=json.loads(row["lineage"]),
            region=row["region"],
            created_at=row["created_at"],
            spec=json.loads(row["spec"]),
        )
        for row in rows
    ]


async def share_dataset(
    pool: asyncpg.Pool,
    *,
    owner_tenant: str,
    name: str,
    with_tenant: str,
    region: str | None = None,
) -> None:
    """Let ``with_tenant`` read every version of the dataset (only from ``region`` if given).

    Only the owner's own login or an operator may; the audit names which.
    """
    await _change_share(pool, "grant", owner_tenant, name, with_tenant, region)


async def revoke_dataset(
    pool: asyncpg.Pool,
    *,
    owner_tenant: str,
    name: str,
    with_tenant: str,
    region: str | None = None,
) -> None:
    """Withdraw a share (the one for ``region``, or every region's when None)."""
    await _change_share(pool, "revoke", owner_tenant, name, with_tenant, region)


async def _change_share(
    pool: asyncpg.Pool, action: str, owner: str, name: str, grantee: str, region: str | None
) -> None:
    async with acting_for(pool, owner) as connection:
        outcome = await connection.fetchval(
            "SELECT lepton_ingest.change_share($1, $2, $3, $4)", action, name, grantee, region
        )
    if outcome == "no_such_dataset":
        raise DatasetNotFound(f"{dataset_resource(owner, name)}: no such dataset")
    if outcome != "allowed":
        raise AccessDenied(
            f"{dataset_resource(owner, name)}: only the owner's own login or an operator "
            "may share it"
        )
