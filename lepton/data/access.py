"""Acting for a tenant on the dataset catalog: row-level security, who is proven, the errors.

Every catalog read runs inside PostgreSQL row-level security as one tenant
(:func:`acting_for`). A tenant's own login (:func:`add_tenant`) *is* its tenant: the
database knows it from the login, and it can act for no other. A service or the
operator's client names the tenant it acts for (a service, the tenant of a request whose
signature it verified), switching to the ``lepton_reader`` role (no ``BYPASSRLS``) for the
transaction. Reads, refusals, grants and revokes are recorded in the audit table by the
database's own functions, which name the actor from the login; the ingest service relays
that table to ``lepton.audit``. The roles are those of ``lepton/devstack/roles.sql``, the
rules are in ``lepton/data/migrations/002_proven_tenants.sql``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lepton.errors import LeptonError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection | PoolConnectionProxy

__all__ = [
    "AUDIT_CHANNEL",
    "READER_ROLE",
    "TENANT_LOGINS",
    "TENANT_ROLE",
    "AccessDenied",
    "DatasetError",
    "DatasetNotFound",
    "KeyUnavailable",
    "TenantLogin",
    "acting_for",
    "add_tenant",
    "dataset_resource",
    "tenant_role",
]

# What ingest switches to while it writes for the tenant of a request.
TENANT_ROLE = "lepton_tenant"
# What a service or the operator switches to while it reads for a tenant it names.
READER_ROLE = "lepton_reader"
# The group of every tenant's own login.
TENANT_LOGINS = "lepton_tenants"
AUDIT_CHANNEL = "lepton_ingest_audit"

_TENANT_ROLE_PREFIX = "lepton_tenant_"
# A role name is at most 63 bytes; other tenant names get a digest instead.
_READABLE_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,49}$")
_SCRAM_ITERATIONS = 4096


class DatasetError(LeptonError):
    """A dataset request the caller can act on."""

    hint = "`lepton data list --tenant T` shows what T may read"


class DatasetNotFound(DatasetError):
    """No such dataset (or version) for this owner."""


class AccessDenied(DatasetError):
    """The dataset exists but is not shared with the reader (in the reader's region), or
    the login may not act for that tenant."""


class KeyUnavailable(DatasetError):
    """The dataset has sensitive columns and no master key was given or configured."""


@contextlib.asynccontextmanager
async def acting_for(
    pool: asyncpg.Pool, tenant: str, region: str | None = None
) -> AsyncIterator[Connection]:
    """A connection in a transaction that reads the catalog as ``tenant`` (from
    ``region``, for shares limited to one).

    Raises :class:`AccessDenied` for a tenant's own login asked to act for another
    tenant; the refusal is recorded before it is raised. The role and settings end with
    the transaction, so a pooled connection never carries one tenant into the next use.
    """
    async with pool.acquire() as connection, connection.transaction():
        acting = await connection.fetchval("SELECT lepton_ingest.act_for($1, $2)", tenant, region)
        if acting == tenant:
            yield connection
            return
    raise AccessDenied(f"tenant:{tenant}: this login acts for {acting} only")


def dataset_resource(owner: str, name: str, version: str | None = None) -> str:
    return f"dataset:{owner}/{name}" + (f"@{version}" if version else "")


@dataclass(frozen=True, slots=True)
class TenantLogin:
    """A tenant's own PostgreSQL login: whoever holds it reads as that tenant, and only."""

    tenant: str
    role: str
    password: str = field(repr=False)


def tenant_role(tenant: str) -> str:
    """The name of ``tenant``'s own login role."""
    if _READABLE_TENANT.match(tenant):
        return _TENANT_ROLE_PREFIX + tenant
    return _TENANT_ROLE_PREFIX + hashlib.sha256(tenant.encode()).hexdigest()[:40]


async def add_tenant(admin: asyncpg.Pool | str, tenant: str) -> TenantLogin:
    """Create ``tenant``'s own login (or give it a new password), with a random password.

    ``admin`` is a pool or URL of a role that may create roles and grant
    ``lepton_tenants`` and that may write ``lepton_ingest.tenant_roles``: the local
    stack's superuser (``devstack.endpoints(settings, "admin")``) or an operator's. The
    catalog must exist (ingest has started once). The password travels only as its SCRAM
    verifier, so it is in no statement a server could log.
    """
    import asyncpg

    if not tenant:
        raise ValueError("a tenant needs a name")
    role = tenant_role(tenant)
    password = secrets.token_urlsafe(32)
    verifier = _scram_verifier(password)
    if isinstance(admin, str):
        connection = await asyncpg.connect(admin)
        try:
            async with connection.transaction():
                await _create_login(connection, tenant, role, verifier)
        finally:
            await connection.close()
    else:
        async with admin.acquire() as pooled, pooled.transaction():
            await _create_login(pooled, tenant, role, verifier)
    return TenantLogin(tenant=tenant, role=role, password=password)


async def _create_login(connection: Connection, tenant: str, role: str, verifier: str) -> None:
    registered = await connection.fetchval(
        "SELECT tenant FROM lepton_ingest.tenant_roles WHERE role_name = $1", role
    )
    exists = await connection.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role
    )
    if (exists or registered is not None) and registered != tenant:
        raise LeptonError(
            f"role {role} exists and is not {tenant}'s login",
            "drop it, or give the tenant another name",
        )
    # The name is checked (or a digest) and the verifier is base64 and punctuation: both
    # are safe between their quotes. Neither statement takes parameters.
    verb = "ALTER" if exists else "CREATE"
    await connection.execute(
        f'{verb} ROLE "{role}" LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE '
        f"NOREPLICATION NOBYPASSRLS PASSWORD '{verifier}'"
    )
    await connection.execute(f'GRANT {TENANT_LOGINS} TO "{role}"')
    await connection.execute(
        "INSERT INTO lepton_ingest.tenant_roles (role_name, tenant) VALUES ($1, $2) "
        "ON CONFLICT (role_name) DO NOTHING",
        role,
        tenant,
    )


def _scram_verifier(password: str) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, RFC 7677), as libpq's
    ``PQencryptPasswordConn`` computes it. The password is ASCII, so SASLprep keeps it."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
