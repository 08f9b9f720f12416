"""Reading and sharing datasets that the ingest service stored: the public data API.

Every call runs inside PostgreSQL row-level security as the tenant it acts for: the
transaction switches to the ``lepton_tenant`` role (no ``BYPASSRLS``) and sets
``app.tenant_id``, so a tenant sees its own datasets and those shared with it, nothing
else, whatever the pool's login role. Reads, grants, revokes and denials are written to the
audit table in the same transaction; the ingest service relays them to ``lepton.audit``.

Sensitive columns are stored encrypted (AES-256-GCM per value, with a data key per version
that is wrapped by a per-tenant key derived from ``LEPTON_MASTER_KEY``); :func:`read_dataset`
decrypts them for the owner and for tenants the dataset is shared with.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lepton.errors import LeptonError

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection | PoolConnectionProxy

__all__ = [
    "AccessDenied",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFound",
    "DatasetVersion",
    "KeyUnavailable",
    "dataset_versions",
    "decode_master_key",
    "export_csv",
    "list_datasets",
    "neutralise_formula",
    "read_dataset",
    "revoke_dataset",
    "share_dataset",
    "tenant_key",
    "unwrap_data_key",
    "wrap_data_key",
]

TENANT_ROLE = "lepton_tenant"
AUDIT_CHANNEL = "lepton_ingest_audit"
_NONCE = 12
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class DatasetError(LeptonError):
    """A dataset request the caller can act on."""

    hint = "`lepton data list --tenant T` shows what T may read"


class DatasetNotFound(DatasetError):
    """No such dataset (or version) for this owner."""


class AccessDenied(DatasetError):
    """The dataset exists but is not shared with the reader (in the reader's region)."""


class KeyUnavailable(DatasetError):
    """The dataset has sensitive columns and no master key was given or configured."""


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


def decode_master_key(text: str) -> bytes:
    """The 32-byte master key from its base64 text."""
    key = base64.b64decode(text, validate=True)
    if len(key) != 32:
        raise ValueError("the master key must be 32 bytes (base64 of 32 random bytes)")
    return key


def tenant_key(master: bytes, tenant: str) -> bytes:
    """The tenant's key-wrapping key: HKDF-SHA256 of the master key, bound to the tenant."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"lepton-ingest",
        info=b"lepton tenant key v1\x00" + tenant.encode(),
    ).derive(master)


def _binding(owner: str, name: str) -> bytes:
    return json.dumps([owner, name], ensure_ascii=False).encode()


def wrap_data_key(master: bytes, owner: str, name: str, data_key: bytes) -> bytes:
    """A version's data key encrypted under its tenant's key, bound to the dataset."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(tenant_key(master, owner)).encrypt(nonce, data_key, _binding(owner, name))


def unwrap_data_key(master: bytes, owner: str, name: str, wrapped: bytes) -> bytes:
    return AESGCM(tenant_key(master, owner)).decrypt(
        wrapped[:_NONCE], wrapped[_NONCE:], _binding(owner, name)
    )


def neutralise_formula(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, made inert with a leading quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def export_csv(frame: pd.DataFrame, out: IO[str]) -> None:
    """Write a dataset as CSV for people; text cells starting with = + - @ tab or CR are
    neutralised (stored values stay as they were)."""
    safe = frame.copy()
    for name in safe.columns:
        if not (
            pd.api.types.is_numeric_dtype(safe[name].dtype)
            or pd.api.types.is_bool_dtype(safe[name].dtype)
            or pd.api.types.is_datetime64_any_dtype(safe[name].dtype)
        ):
            safe[name] = safe[name].map(neutralise_formula)
    safe.columns = [neutralise_formula(str(name)) for name in safe.columns]
    safe.to_csv(out, index=False, quoting=csv.QUOTE_MINIMAL)


async def _as_tenant(connection: Connection, tenant: str, region: str | None = None) -> None:
    # SET LOCAL and set_config(..., true) end with the transaction, so a pooled connection
    # never carries one tenant's identity into the next use.
    await connection.execute(f"SET LOCAL ROLE {TENANT_ROLE}")
    await connection.execute(
        "SELECT set_config('app.tenant_id', $1, true), set_config('app.region', $2, true)",
        tenant,
        region or "",
    )


async def _audit(
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


def _resource(owner: str, name: str, version: str | None = None) -> str:
    return f"dataset:{owner}/{name}" + (f"@{version}" if version else "")


async def read_dataset(
    pool: asyncpg.Pool,
    *,
    reader_tenant: str,
    name: str,
    owner_tenant: str | None = None,
    version: str | None = None,
    region: str | None = None,
    actor: str | None = None,
    master_key: bytes | None = None,
) -> pd.DataFrame:
    """A dataset version (the latest when ``version`` is None) as the reader may see it.

    Raises :class:`DatasetNotFound` or :class:`AccessDenied` (both audited). Sensitive
    columns are decrypted with ``master_key`` (default: ``LEPTON_MASTER_KEY``).
    """
    owner = owner_tenant or reader_tenant
    who = actor or reader_tenant
    failure: DatasetError | None = None
    async with pool.acquire() as connection, connection.transaction():
        await _as_tenant(connection, reader_tenant, region)
        row = await connection.fetchrow(
            "SELECT version, table_name, columns, wrapped_key FROM lepton_ingest.datasets "
            "WHERE owner_tenant = $1 AND name = $2 AND ($3::text IS NULL OR version = $3) "
            "ORDER BY created_at DESC LIMIT 1",
            owner,
            name,
            version,
        )
        if row is None:
            exists = await connection.fetchval(
                "SELECT lepton_ingest.dataset_exists($1, $2)", owner, name
            )
            if exists and owner != reader_tenant:
                detail = f"not shared with {reader_tenant}" + (f" in {region}" if region else "")
                failure = AccessDenied(f"{_resource(owner, name)}: {detail}")
            else:
                detail = "no such dataset" + (f" version {version}" if version else "")
                failure = DatasetNotFound(f"{_resource(owner, name, version)}: {detail}")
            await _audit(
                connection,
                actor=who,
                tenant=reader_tenant,
                action="read",
                resource=_resource(owner, name, version),
                owner=owner,
                outcome="denied",
                detail=detail,
                region=region,
            )
        else:
            # The name is generated by ingest (ds_<hex>; the catalog's CHECK enforces it).
            table = row["table_name"]
            rows, records = await _copy_rows(connection, table)
            await _audit(
                connection,
                actor=who,
                tenant=reader_tenant,
                action="read",
                resource=_resource(owner, name, row["version"]),
                owner=owner,
                outcome="allowed",
                detail=f"{rows} rows",
                region=region,
            )
    if failure is not None:
        raise failure
    assert row is not None
    columns: list[dict[str, Any]] = json.loads(row["columns"])
    return _frame(records, columns, owner, name, row["wrapped_key"], master_key)


# How each stored column is selected for COPY ... (FORMAT csv): timestamps as exact
# microseconds since the epoch, every other type as PostgreSQL prints it.
_EPOCH_US = "(extract(epoch from {0}) * 1000000)::bigint"
_ARROW_READ = {
    "int8": pa.int64(),
    "int4": pa.int64(),
    "int2": pa.int64(),
    "float8": pa.float64(),
    "float4": pa.float64(),
    "bool": pa.bool_(),
    "timestamptz": pa.int64(),
    "timestamp": pa.int64(),
}


async def _copy_rows(connection: Connection, table: str) -> tuple[int, pa.Table]:
    """Every row of a version table, as one Arrow table with a column per stored column.

    COPY's CSV is decoded by Arrow's C++ reader (many times faster than building a
    Python object per value): NULL is COPY's unquoted empty field, an empty text is a
    quoted one, so the two stay apart (``quoted_strings_can_be_null=False``)."""
    quoted = f'lepton_data."{table}"'
    statement = await connection.prepare(f"SELECT * FROM {quoted} LIMIT 0")  # noqa: S608
    attributes = statement.get_attributes()
    selected, names, types = [], [], {}
    for index, attribute in enumerate(attributes):
        column = '"' + attribute.name.replace('"', '""') + '"'
        kind = attribute.type.name
        selected.append(
            _EPOCH_US.format(column) if kind in ("timestamptz", "timestamp") else column
        )
        name = f"f{index}"
        names.append(name)
        types[name] = _ARROW_READ.get(kind, pa.string())
    sink = io.BytesIO()
    if selected:
        await connection.copy_from_query(
            f"SELECT {', '.join(selected)} FROM {quoted}",  # noqa: S608
            output=sink,
            format="csv",
        )
    data = sink.getvalue()
    if not data:
        empty = pa.table({name: pa.array([], type=types[name]) for name in names})
        return 0, empty
    parsed = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names),
        # A row of one NULL is an empty line; text may hold newlines (quoted).
        parse_options=pacsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )
    return parsed.num_rows, parsed


def _frame(
    records: pa.Table,
    columns: list[dict[str, Any]],
    owner: str,
    name: str,
    wrapped: bytes | None,
    master_key: bytes | None,
) -> pd.DataFrame:
    data: dict[str, Any] = {}
    cipher: AESGCM | None = None
    for i, column in enumerate(columns):
        stored = records.column(i)
        if column.get("sensitive"):
            if cipher is None:
                cipher = AESGCM(unwrap_data_key(_master(master_key), owner, name, wrapped or b""))
            aad = column["name"].encode()
            texts: list[str | None] = []
            for hexed in stored.to_pylist():  # bytea as COPY prints it: \x and hex
                if hexed is None:
                    texts.append(None)
                    continue
                value = bytes.fromhex(hexed[2:])
                texts.append(cipher.decrypt(value[:_NONCE], value[_NONCE:], aad).decode())
            data[column["name"]] = _typed(pd.Series(texts, dtype="string"), column["type"])
        elif column["type"] == "datetime" and pa.types.is_integer(stored.type):
            # Microseconds since the epoch (see _EPOCH_US), NULL as NaT.
            data[column["name"]] = pd.Series(
                pd.to_datetime(_series(stored), unit="us", utc=True)
            ).dt.as_unit("us")
        elif column["type"] == "category" and pa.types.is_string(stored.type):
            data[column["name"]] = _categories(stored)
        else:
            data[column["name"]] = _typed(_series(stored), column["type"])
    return pd.DataFrame(data)


def _categories(values: pa.ChunkedArray) -> pd.Series:
    """Text as a categorical with sorted string categories (what ``_typed`` makes of it),
    encoded by Arrow rather than by hashing a Python object per row."""
    encoded = pc.dictionary_encode(values.combine_chunks())
    labels = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    order = np.argsort(labels, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    # Positions into the dictionary, -1 for NULL, then into the sorted labels.
    indices = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = np.where(indices >= 0, rank[np.maximum(indices, 0)] if len(rank) else -1, -1)
    categories = pd.Index(labels[order], dtype="string")
    return pd.Series(pd.Categorical.from_codes(codes, dtype=pd.CategoricalDtype(categories)))


def _series(values: pa.ChunkedArray) -> pd.Series:
    """Values as the Series a list of Python objects would make (floats with NaN for
    NULL when the column has any; objects otherwise), vectorised."""
    if pa.types.is_floating(values.type):
        return pd.Series(values.to_numpy(zero_copy_only=False), dtype="float64")
    if pa.types.is_integer(values.type):
        if values.null_count:
            return pd.Series(values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get))
        return pd.Series(values.to_numpy(), dtype="int64")
    return pd.Series(values.to_numpy(zero_copy_only=False), dtype=object)


def _master(master_key: bytes | None) -> bytes:
    if master_key is not None:
        return master_key
    text = os.environ.get("LEPTON_MASTER_KEY")
    if not text:
        raise KeyUnavailable(
            "the dataset has sensitive columns; set LEPTON_MASTER_KEY to read them"
        )
    return decode_master_key(text)


def _typed(values: pd.Series, kind: str) -> pd.Series:
    if kind == "integer":
        return pd.to_numeric(values).astype("Int64")
    if kind == "float":
        return pd.to_numeric(values).astype("Float64")
    if kind == "boolean":
        if values.dtype == "string":
            return values.str.lower().map({"true": True, "false": False}).astype("boolean")
        return values.astype("boolean")
    if kind == "datetime":
        return pd.to_datetime(values, utc=True)
    if kind == "category":
        return values.astype("string").astype("category")
    return values.astype("string")


async def list_datasets(
    pool: asyncpg.Pool, *, reader_tenant: str, region: str | None = None
) -> list[DatasetInfo]:
    """The latest version of every dataset the reader owns or is shared with (from
    ``region``: shares limited to another region are left out)."""
    async with pool.acquire() as connection, connection.transaction():
        await _as_tenant(connection, reader_tenant, region)
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
) -> list[DatasetVersion]:
    """Every version of a dataset the reader may see, newest first: its columns, quality
    summary and lineage, not its rows (so, like :func:`list_datasets`, not audited).

    Raises :class:`DatasetNotFound`, or :class:`AccessDenied` for another tenant's
    dataset that is not shared with the reader.
    """
    owner_tenant = owner or reader_tenant
    async with pool.acquire() as connection, connection.transaction():
        await _as_tenant(connection, reader_tenant, region)
        rows = await connection.fetch(
            "SELECT owner_tenant, name, version, rows, columns, quality, spec_inferred, "
            "lineage, region, created_at FROM lepton_ingest.datasets "
            "WHERE owner_tenant = $1 AND name = $2 ORDER BY created_at DESC",
            owner_tenant,
            name,
        )
        exists = bool(rows) or await connection.fetchval(
            "SELECT lepton_ingest.dataset_exists($1, $2)", owner_tenant, name
        )
    if not rows:
        if exists and owner_tenant != reader_tenant:
            raise AccessDenied(f"{_resource(owner_tenant, name)}: not shared with {reader_tenant}")
        raise DatasetNotFound(f"{_resource(owner_tenant, name)}: no such dataset")
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
    actor: str | None = None,
) -> None:
    """Let ``with_tenant`` read every version of the dataset (only from ``region`` if given)."""
    await _change_share(pool, "grant", owner_tenant, name, with_tenant, region, actor)


async def revoke_dataset(
    pool: asyncpg.Pool,
    *,
    owner_tenant: str,
    name: str,
    with_tenant: str,
    region: str | None = None,
    actor: str | None = None,
) -> None:
    """Withdraw a share (the one for ``region``, or every region's when None)."""
    await _change_share(pool, "revoke", owner_tenant, name, with_tenant, region, actor)


async def _change_share(
    pool: asyncpg.Pool,
    action: str,
    owner: str,
    name: str,
    grantee: str,
    region: str | None,
    actor: str | None,
) -> None:
    detail = f"{'to' if action == 'grant' else 'from'} {grantee}" + (
        f" in {region}" if region else ""
    )
    async with pool.acquire() as connection, connection.transaction():
        await _as_tenant(connection, owner)
        owned = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM lepton_ingest.datasets "
            "WHERE owner_tenant = $1 AND name = $2)",
            owner,
            name,
        )
        if owned:
            if action == "grant":
                await connection.execute(
                    "INSERT INTO lepton_ingest.shares (owner_tenant, name, grantee, region) "
                    "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    owner,
                    name,
                    grantee,
                    region or "*",
                )
            else:
                await connection.execute(
                    "DELETE FROM lepton_ingest.shares WHERE owner_tenant = $1 AND name = $2 "
                    "AND grantee = $3 AND ($4::text IS NULL OR region = $4)",
                    owner,
                    name,
                    grantee,
                    region,
                )
        await _audit(
            connection,
            actor=actor or owner,
            tenant=owner,
            action=action,
            resource=_resource(owner, name),
            owner=owner,
            outcome="allowed" if owned else "denied",
            detail=detail if owned else f"{detail}: no such dataset",
            region=region,
        )
    if not owned:
        raise DatasetNotFound(f"{_resource(owner, name)}: no such dataset")
