"""PostgreSQL least privilege, tried on the real server as each actor's own login: no login
may bypass row-level security, readers cannot write what they read, the audit table
cannot be rewritten by anyone, and a tenant's own login reads as that tenant only, its
refused attempts recorded by the database itself."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from lepton import devstack
from lepton.config import Actor, Settings
from lepton.data import tables
from lepton.data.access import AccessDenied, TenantLogin, add_tenant, tenant_role
from lepton.data.catalog import dataset_versions, list_datasets, share_dataset
from lepton.data.reading import read_dataset
from lepton.devstack._postgres import LOGINS, login_role, url_as
from lepton.errors import LeptonError
from lepton.services.ingest import storage

pytestmark = pytest.mark.integration

DatabaseFor = Callable[[Actor], str]
SERVICE_SCHEMAS = {
    "lepton_scheduler": "lepton_scheduler",
    "lepton_ingest": "lepton_ingest",
    "lepton_data": "lepton_ingest",
    "lepton_trainer": "lepton_trainer",
    "lepton_evaluator": "lepton_evaluator",
    "lepton_monitor": "lepton_monitor",
}
TENANT_TABLES = ("datasets", "shares", "rejects", "requests", "audit")


@pytest.fixture(scope="module")
async def ingest(database_for: DatabaseFor) -> AsyncIterator[asyncpg.Pool]:
    """Ingest's own pool, with the catalog migrated as ingest migrates it."""
    pool = await asyncpg.create_pool(database_for("ingest"), min_size=1, max_size=2)
    try:
        await tables.migrate(pool)
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Any]]:
    """Pools on any URL, closed after the test."""
    opened: list[asyncpg.Pool] = []

    async def open_pool(url: str) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        opened.append(pool)
        return pool

    yield open_pool
    for pool in opened:
        await pool.close()


def tenant_name() -> str:
    return "t-" + uuid.uuid4().hex[:10]


async def make_dataset(ingest: asyncpg.Pool, tenant: str, name: str, values: list[int]) -> str:
    """A dataset version stored as the ingest service stores one (its storage functions, as
    ``lepton_tenant`` for ``tenant``); its table's name."""

    async def rows() -> AsyncIterator[bytes]:
        yield "".join(f"{value}\n" for value in values).encode()

    async with ingest.acquire() as connection, connection.transaction():
        await storage.as_tenant(connection, tenant)
        table = await storage.create_version_table(connection, [("c0", "bigint")])
        await storage.copy_rows(connection, table, ["c0"], rows())
        await storage.protect_version_table(connection, table)
        await tables.record_version(
            connection,
            tenant=tenant,
            dataset=name,
            version="v1",
            table=table,
            columns=[{"name": "x", "type": "integer", "nullable": True, "sensitive": False}],
            rows=len(values),
            quality={},
            spec="{}",
            spec_inferred=True,
            lineage=[],
            region=None,
            request_id=uuid.uuid4().hex,
            wrapped_key=None,
        )
    return table


async def in_transaction(connection: asyncpg.Connection, *statements: tuple[Any, ...]) -> None:
    """Each ``(statement, *arguments)`` in one transaction."""
    async with connection.transaction():
        for statement, *args in statements:
            await connection.execute(statement, *args)


async def audit_rows(admin: asyncpg.Pool, tenant: str) -> list[dict[str, Any]]:
    rows = await admin.fetch(
        "SELECT time, actor, tenant, action, resource, owner, outcome, detail, login "
        "FROM lepton_ingest.audit WHERE tenant = $1 ORDER BY id",
        tenant,
    )
    return [dict(row) for row in rows]


async def test_no_login_is_a_superuser_or_bypasses_row_level_security(
    database_for: DatabaseFor, database_url: str, ingest: asyncpg.Pool
) -> None:
    tenant = await add_tenant(database_url, tenant_name())
    roles = [login_role(actor) for actor in LOGINS] + [
        "lepton_tenant",
        "lepton_reader",
        "lepton_tenants",
        tenant.role,
    ]
    found = await ingest.fetch(
        "SELECT rolname, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb, rolreplication "
        "FROM pg_roles WHERE rolname = ANY($1)",
        roles,
    )
    assert sorted(row["rolname"] for row in found) == sorted(roles)
    for row in found:
        assert not any(row[flag] for flag in list(row.keys())[1:]), dict(row)
    # Each actor's URL logs in as its own login, not as the superuser.
    for actor in LOGINS:
        connection = await asyncpg.connect(database_for(actor))
        try:
            who = await connection.fetchrow("SELECT current_user, current_setting('is_superuser')")
        finally:
            await connection.close()
        assert tuple(who) == (login_role(actor), "off")


async def test_each_login_owns_only_its_own_schema_and_readers_own_nothing_they_read(
    ingest: asyncpg.Pool,
) -> None:
    await make_dataset(ingest, tenant_name(), "owned", [1])
    owners = await ingest.fetch(
        "SELECT nspname, nspowner::regrole::text AS owner FROM pg_namespace "
        "WHERE nspname = ANY($1)",
        list(SERVICE_SCHEMAS),
    )
    assert {row["nspname"]: row["owner"] for row in owners} == SERVICE_SCHEMAS
    catalog = await ingest.fetch(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'lepton_ingest'"
    )
    assert {row["tableowner"] for row in catalog} == {"lepton_ingest"}
    versions = await ingest.fetch(
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'lepton_data'"
    )
    assert [row["tableowner"] for row in versions] == ["lepton_tenant"]  # ingest's, by SET ROLE
    # Those that only read the catalog read it as lepton_reader, granted SELECT and nothing
    # else, and own nothing in the catalog's schemas.
    readers = ["lepton_trainer", "lepton_evaluator", "lepton_client", "lepton_reader"]
    owned = await ingest.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname IN ('lepton_ingest', 'lepton_data') "
        "AND c.relowner::regrole::text = ANY($1)",
        readers,
    )
    assert owned == 0
    rights = await ingest.fetchrow(
        "SELECT has_table_privilege('lepton_reader', 'lepton_ingest.datasets', 'SELECT') AS s, "
        "has_table_privilege('lepton_reader', 'lepton_ingest.datasets', "
        "'INSERT, UPDATE, DELETE, TRUNCATE') AS w"
    )
    assert (rights["s"], rights["w"]) == (True, False)


@pytest.mark.parametrize("actor", ["trainer", "evaluator", "client"])
async def test_a_login_that_reads_the_catalog_cannot_write_it(
    actor: Actor, database_for: DatabaseFor, ingest: asyncpg.Pool
) -> None:
    tenant = tenant_name()
    table = await make_dataset(ingest, tenant, "read-only", [1, 2])
    reader = await asyncpg.connect(database_for(actor))
    writes = [
        "INSERT INTO lepton_ingest.datasets (owner_tenant, name, version, table_name, columns, "
        "rows, quality, spec, spec_inferred, lineage, request_id) VALUES ($1, 'x', 'v', "
        "'ds_000000000000000000000000', '[]', 0, '{}', '{}', true, '[]', 'r')",
        "UPDATE lepton_ingest.datasets SET rows = 0 WHERE owner_tenant = $1",
        "DELETE FROM lepton_ingest.datasets WHERE owner_tenant = $1",
        "INSERT INTO lepton_ingest.shares (owner_tenant, name, grantee) VALUES ($1, 'x', 'y')",
        f'DELETE FROM lepton_data."{table}" WHERE $1::text IS NOT NULL',
    ]
    try:
        for statement in writes:
            for acting in (False, True):  # as its login, and acting for the tenant
                act = [("SELECT lepton_ingest.act_for($1, NULL)", tenant)] if acting else []
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await in_transaction(reader, *act, (statement, tenant))
        for other in ("lepton_tenant", "lepton_ingest"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute(f"SET ROLE {other}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("CREATE TABLE lepton_ingest.mine (a int)")
        # What it may do: read the tenant's rows, acting for it.
        async with reader.transaction():
            await reader.fetchval("SELECT lepton_ingest.act_for($1, NULL)", tenant)
            assert len(await reader.fetch(f'SELECT * FROM lepton_data."{table}"')) == 2
    finally:
        await reader.close()


@pytest.mark.parametrize("login", [*LOGINS, "tenant"])
async def test_the_audit_table_cannot_be_rewritten_by_any_login(
    login: str,
    database_for: DatabaseFor,
    database_url: str,
    ingest: asyncpg.Pool,
    connect: Callable[[str], Any],
) -> None:
    tenant = tenant_name()
    async with ingest.acquire() as connection, connection.transaction():
        await storage.as_tenant(connection, tenant)
        await storage.audit(
            connection,
            tenant=tenant,
            action="write",
            resource="x",
            outcome="denied",
            detail="to rewrite",
            region=None,
        )
    if login == "tenant":
        url = url_as(database_url, *_credentials(await add_tenant(database_url, tenant)))
    else:
        url = database_for(login)  # type: ignore[arg-type]
    connection = await asyncpg.connect(url)
    try:
        for statement in (
            "UPDATE lepton_ingest.audit SET outcome = 'allowed' WHERE tenant = $1",
            "DELETE FROM lepton_ingest.audit WHERE tenant = $1",
            "TRUNCATE lepton_ingest.audit",
        ):
            args = [tenant] if "$1" in statement else []
            # As the login, and as each group it may become (SET ROLE fails for the others).
            for role in (None, "lepton_tenant", "lepton_reader"):
                become = [(f"SET LOCAL ROLE {role}",)] if role else []
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await in_transaction(connection, *become, (statement, *args))
    finally:
        await connection.close()
    rows = await audit_rows(await connect(database_url), tenant)
    assert [(row["outcome"], row["detail"]) for row in rows] == [("denied", "to rewrite")]


async def test_the_audit_table_refuses_even_its_owner_granting_itself_the_right(
    ingest: asyncpg.Pool,
) -> None:
    """Grants alone would not do: the owner may grant itself what was revoked. The table's
    trigger refuses the statement whoever runs it."""
    regrant = "GRANT UPDATE, DELETE, TRUNCATE ON lepton_ingest.audit TO lepton_ingest"
    async with ingest.acquire() as connection:
        for statement in (
            "UPDATE lepton_ingest.audit SET outcome = 'allowed'",
            "DELETE FROM lepton_ingest.audit WHERE false",  # even one that changes no row
            "TRUNCATE lepton_ingest.audit",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await in_transaction(connection, (regrant,), (statement,))


async def test_row_level_security_is_forced_on_every_tenant_table(ingest: asyncpg.Pool) -> None:
    table = await make_dataset(ingest, tenant_name(), "forced", [1])
    names = [f"lepton_ingest.{name}" for name in TENANT_TABLES] + [f'lepton_data."{table}"']
    flags = await ingest.fetch(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE oid = ANY($1::regclass[])",
        names,
    )
    assert len(flags) == len(names)
    assert all(row["relrowsecurity"] and row["relforcerowsecurity"] for row in flags), flags


async def test_a_tenant_login_reads_as_its_tenant_only_and_its_attempts_are_audited(
    database_url: str,
    database_for: DatabaseFor,
    ingest: asyncpg.Pool,
    connect: Callable[[str], Any],
) -> None:
    a, b = tenant_name(), tenant_name()
    await make_dataset(ingest, a, "mine", [1, 2, 3])
    theirs = await make_dataset(ingest, b, "secret", [4, 5])
    login_a = await add_tenant(database_url, a)
    login_b = await add_tenant(database_url, b)
    pool_a = await connect(url_as(database_url, *_credentials(login_a)))
    admin = await connect(database_url)
    started = await admin.fetchval("SELECT clock_timestamp()")

    # What A's login sees: its own, nothing of B's, whatever it sets.
    assert [d.name for d in await list_datasets(pool_a, reader_tenant=a)] == ["mine"]
    async with pool_a.acquire() as connection:
        await connection.execute("SELECT set_config('app.tenant_id', $1, false)", b)
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM lepton_ingest.datasets WHERE owner_tenant = $1", b
            )
            == 0
        )
        assert await connection.fetch(f'SELECT * FROM lepton_data."{theirs}"') == []
        for group in ("lepton_reader", "lepton_tenant"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await connection.execute(f"SET ROLE {group}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute(
                "INSERT INTO lepton_ingest.audit (actor, tenant, action, resource, outcome) "
                "VALUES ('tenant:x', $1, 'read', 'x', 'allowed')",
                a,
            )

    # `data show` and a read of B's dataset: refused, and recorded by the database.
    with pytest.raises(AccessDenied, match="not shared"):
        await dataset_versions(pool_a, reader_tenant=a, name="secret", owner=b)
    with pytest.raises(AccessDenied, match="not shared"):
        await read_dataset(pool_a, reader_tenant=a, name="secret", owner_tenant=b, actor="me")
    # Acting for B: refused, and recorded too.
    with pytest.raises(AccessDenied, match=f"acts for {a} only"):
        await list_datasets(pool_a, reader_tenant=b)
    with pytest.raises(AccessDenied):
        await share_dataset(pool_a, owner_tenant=b, name="secret", with_tenant=a)

    # A shares its own dataset: the grant's actor is A's proven login, and B's login reads it.
    await share_dataset(pool_a, owner_tenant=a, name="mine", with_tenant=b)
    pool_b = await connect(url_as(database_url, *_credentials(login_b)))
    shared = await read_dataset(pool_b, reader_tenant=b, name="mine", owner_tenant=a)
    assert shared["x"].tolist() == [1, 2, 3]

    rows = await audit_rows(admin, a)
    denied = [row for row in rows if row["outcome"] == "denied"]
    assert [(r["action"], r["resource"], r["owner"], r["detail"]) for r in denied] == [
        ("read", f"dataset:{b}/secret", b, f"not shared with {a}"),
        ("read", f"dataset:{b}/secret", b, f"not shared with {a}"),
        ("read", f"tenant:{b}", b, f"this login acts for {a} only"),
        ("read", f"tenant:{b}", b, f"this login acts for {a} only"),
    ]
    grant = [row for row in rows if row["action"] == "grant"]
    assert [(r["outcome"], r["detail"]) for r in grant] == [("allowed", f"to {b}")]
    for row in denied + grant:
        # Who: the login PostgreSQL authenticated, whatever the caller claimed ("me").
        assert (row["actor"], row["tenant"], row["login"]) == (f"tenant:{a}", a, login_a.role)
        assert started <= row["time"] <= started + dt.timedelta(minutes=5)
    reads_b = await audit_rows(admin, b)
    assert [(r["actor"], r["action"], r["outcome"]) for r in reads_b][-1] == (
        f"tenant:{b}",
        "read",
        "allowed",
    )


async def test_services_and_the_operator_act_for_a_tenant_they_name(
    database_url: str,
    database_for: DatabaseFor,
    ingest: asyncpg.Pool,
    connect: Callable[[str], Any],
) -> None:
    owner, other = tenant_name(), tenant_name()
    await make_dataset(ingest, owner, "data", [7])
    trainer = await connect(database_for("trainer"))
    operator = await connect(database_for("client"))
    admin = await connect(database_url)

    frame = await read_dataset(trainer, reader_tenant=owner, name="data", actor="trainer:n1")
    assert frame["x"].tolist() == [7]
    with pytest.raises(AccessDenied):
        await read_dataset(trainer, reader_tenant=other, name="data", owner_tenant=owner)
    # A service may read for a tenant; sharing is the owner's or an operator's.
    with pytest.raises(AccessDenied, match="operator"):
        await share_dataset(trainer, owner_tenant=owner, name="data", with_tenant=other)
    # The operator reads as any tenant and may share for it.
    assert [d.name for d in await list_datasets(operator, reader_tenant=owner)] == ["data"]
    await share_dataset(operator, owner_tenant=owner, name="data", with_tenant=other)

    rows = await audit_rows(admin, owner)
    assert [(r["actor"], r["login"], r["action"], r["outcome"]) for r in rows] == [
        ("trainer:n1", "lepton_trainer", "read", "allowed"),
        ("service:trainer", "lepton_trainer", "grant", "denied"),
        ("operator:lepton_client", "lepton_client", "grant", "allowed"),
    ]
    refused = await audit_rows(admin, other)
    assert [(r["actor"], r["outcome"], r["detail"]) for r in refused] == [
        ("service:trainer", "denied", f"not shared with {other}")
    ]


async def test_add_tenant_never_takes_over_a_role_that_is_not_the_tenants(
    database_url: str, ingest: asyncpg.Pool, connect: Callable[[str], Any]
) -> None:
    tenant = tenant_name()
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE ROLE "{tenant_role(tenant)}" LOGIN')
    finally:
        await admin.close()
    with pytest.raises(LeptonError, match="is not"):
        await add_tenant(database_url, tenant)
    again = tenant_name()
    first = await add_tenant(database_url, again)
    second = await add_tenant(database_url, again)  # a new password for the same login
    assert (first.role, first.password != second.password) == (second.role, True)
    assert second.password not in repr(second)
    # A name no role could carry gets a digest; the login proves the tenant all the same.
    odd = "租户 " + uuid.uuid4().hex + "x" * 40
    login = await add_tenant(await connect(database_url), odd)
    assert login.role.startswith("lepton_tenant_")
    assert len(login.role.encode()) <= 63
    connection = await asyncpg.connect(url_as(database_url, login.role, login.password))
    try:
        assert await connection.fetchval("SELECT lepton_ingest.login_tenant()") == odd
    finally:
        await connection.close()


def test_the_local_stack_keeps_the_logins_passwords_to_itself(
    stack_settings: Settings, database_for: DatabaseFor
) -> None:
    if stack_settings.database_url is not None:
        pytest.skip("the servers were given: no local stack")
    home = stack_settings.state_dir / "postgres"
    roles = home / "roles.json"
    assert roles.stat().st_mode & 0o777 == 0o600
    passwords = json.loads(roles.read_text())
    assert sorted(passwords) == sorted(LOGINS)
    status = json.dumps(devstack.status(stack_settings).as_json())
    log = (home / "postgres.log").read_text(errors="replace")
    for password in passwords.values():
        assert password not in status
        assert password not in log
    assert all(passwords[actor] in database_for(actor) for actor in LOGINS)


def _credentials(login: TenantLogin) -> tuple[str, str]:
    return login.role, login.password
