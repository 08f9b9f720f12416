"""PostgreSQL: an asyncpg pool reached within a bounded time, and ordered SQL migrations.

Migrations are ``NNN_description.sql`` files in a component's directory, applied in
order, each in its own transaction, and recorded in ``lepton_migrations``. An advisory
lock makes it safe for several services to migrate at once; a changed file that was
already applied is an error rather than a silent skip.

Each service applies its own migrations as its own login, so ``lepton_migrations`` and
every unqualified table land in the schema named after that login (``"$user"`` first on
its search path, from the role setup, ``lepton/devstack/roles.sql``): a service owns what
it migrates, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog

from lepton.errors import UnavailableError
from lepton.runtime.metrics import POOL_WAIT

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

_T = TypeVar("_T")

# The shared library's own tables (leader terms), migrated by every service at start.
LIBRARY_MIGRATIONS = Path(__file__).parent / "migrations"

__all__ = [
    "LIBRARY_MIGRATIONS",
    "DatabaseUnavailableError",
    "Migration",
    "connect",
    "load_migrations",
    "migrate",
    "patiently",
    "redacted",
    "unavailable",
]

# Any constant works; it only has to be the same for every Lepton process.
_MIGRATION_LOCK = 0x4C_45_50_54_4F_4E  # "LEPTON"
_MIGRATION_FILE = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class DatabaseUnavailableError(UnavailableError, RuntimeError):
    """PostgreSQL could not be reached within the configured time."""


class _TimedPool(asyncpg.Pool):
    """asyncpg's pool, timing each wait for a connection (``acquire`` and the pool's own
    ``fetch``/``execute`` all take one through ``_acquire``)."""

    async def _acquire(self, timeout: float | None) -> Any:  # noqa: ASYNC109 (asyncpg's)
        with POOL_WAIT.time():
            # asyncpg's own (not in its type stubs): what Pool.acquire's context and the
            # pool's query methods await, in the pinned asyncpg (0.32).
            return await super()._acquire(timeout)  # type: ignore[misc]


async def connect(
    url: str,
    *,
    timeout_s: float = 20.0,
    min_size: int = 1,
    max_size: int = 10,
) -> asyncpg.Pool:
    """A pool, retrying with backoff for at most ``timeout_s``, then a clear error."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    delay = 0.1
    last: BaseException | None = None
    while True:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        try:
            # asyncpg.create_pool's defaults, given a pool class that times its waits.
            pool = _TimedPool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=min(remaining, 10),
                max_queries=50_000,
                max_inactive_connection_lifetime=300.0,
                loop=None,
                connection_class=asyncpg.Connection,
                record_class=asyncpg.Record,
            )
            async with asyncio.timeout(remaining):
                return await pool
        except (OSError, TimeoutError, asyncpg.CannotConnectNowError) as exc:
            last = exc
        await asyncio.sleep(min(delay, max(remaining, 0)))
        delay = min(delay * 2, 2.0)
    raise DatabaseUnavailableError(
        f"PostgreSQL at {redacted(url)} did not answer within {timeout_s:.0f} s "
        f"({type(last).__name__}: {last}); is it running (`lepton stack status`) and "
        "LEPTON_DATABASE_URL right?"
    )


# What PostgreSQL being away looks like to a client: a refused or dropped connection
# (class 08), the server shutting down, crashed or still starting (57P01-57P03), or full.
_AWAY = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)
# How long a call waits between tries while PostgreSQL is away: doubling up to a few
# seconds, so that what waited is done within seconds of the server's return.
_RETRY_FIRST_S = 0.2
_RETRY_LAST_S = 5.0


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` says PostgreSQL is away for now (try again later), not that what
    was asked of it is wrong."""
    cause: BaseException | None = error
    while cause is not None:  # a library may wrap what went wrong (optuna's storage)
        # asyncpg's answer for a connection the server already closed (a leader lock's).
        if isinstance(cause, _AWAY) or (
            isinstance(cause, asyncpg.InterfaceError) and "closed" in str(cause)
        ):
            return True
        cause = cause.__cause__
    return False


async def patiently(operation: Callable[[], Awaitable[_T]], *, what: str, log: Any = None) -> _T:
    """``operation()``, tried again with backoff for as long as PostgreSQL is away.

    For an effect that must happen once the server is back (a run's outcome, a lease),
    whose caller has nothing better to do meanwhile; any other error is raised at once.
    """
    log = log or structlog.get_logger("lepton.database")
    delay = _RETRY_FIRST_S
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not unavailable(exc):
                raise
            log.warning("database unavailable; retrying", what=what, in_s=delay, error=repr(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, _RETRY_LAST_S)


def redacted(url: str) -> str:
    """The URL without its password, for error messages and logs."""
    return re.sub(r"://([^:@/]+):[^@/]*@", r"://\1:***@", url)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if match is None:
            raise ValueError(f"{path}: migration files are named NNN_description.sql")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"{directory}: two migrations share a version number")
    return migrations


async def migrate(pool: asyncpg.Pool, component: str, migrations: list[Migration]) -> list[int]:
    """Apply the migrations of ``component`` not applied yet; returns their versions."""
    async with pool.acquire() as connection:
        # Session-level lock: concurrent starters wait here, then see the work done.
        await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        try:
            await connection.execute(
                """
                CREATE TABLE IF NOT EXISTS lepton_migrations (
                    component  text        NOT NULL,
                    version    integer     NOT NULL,
                    name       text        NOT NULL,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (component, version)
                )
                """
            )
            rows = await connection.fetch(
                "SELECT version, checksum FROM lepton_migrations WHERE component = $1",
                component,
            )
            applied = {row["version"]: row["checksum"] for row in rows}
            done = []
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {component}/{migration.version:03d}_{migration.name} "
                            "was changed after it was applied; add a new migration instead"
                        )
                    continue
                async with connection.transaction():
                    await connection.execute(migration.sql)
                    await connection.execute(
                        "INSERT INTO lepton_migrations (component, version, name, checksum) "
                        "VALUES ($1, $2, $3, $4)",
                        component,
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                done.append(migration.version)
            return done
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)


@dataclass(slots=True)
class Leadership:
    """Held while this process is the one active instance of a singleton service.

    ``term`` grows by one at every takeover, so that what a new leader decides can be
    told apart from (and fence) what an old one decided. ``lost`` is set if the session
    holding the lock ends: the holder must stop acting at once.
    """

    term: int
    lost: asyncio.Event


@contextlib.asynccontextmanager
async def leadership(url: str, name: str, *, timeout_s: float = 20.0) -> AsyncIterator[Leadership]:
    """Wait until this process holds the leader lock of ``name``; hold it until exit.

    The lock is a session-level advisory lock on a connection of its own: PostgreSQL
    releases it the moment that session ends, so a standby takes over within seconds of
    the leader dying, however it died. While PostgreSQL is away the campaign waits for
    it (each connection attempt bounded by ``timeout_s``), as it waits for the lock.
    """
    key = int.from_bytes(
        hashlib.sha256(f"lepton-leader:{name}".encode()).digest()[:8], "big", signed=True
    )
    lost = asyncio.Event()

    async def campaign() -> tuple[asyncpg.Connection, int]:
        try:
            async with asyncio.timeout(timeout_s):
                connection = await asyncpg.connect(url)
        except TimeoutError as exc:  # a server that does not answer is away, too
            raise ConnectionError(f"PostgreSQL did not answer within {timeout_s:.0f} s") from exc
        try:
            await connection.execute("SELECT pg_advisory_lock($1)", key)
            # Watched only once held: a standby whose session drops just campaigns again.
            connection.add_termination_listener(lambda _: lost.set())
            term = await connection.fetchval(
                """
                INSERT INTO lepton_leader_terms (service, term) VALUES ($1, 1)
                ON CONFLICT (service) DO UPDATE SET term = lepton_leader_terms.term + 1
                RETURNING term
                """,
                name,
            )
        except BaseException:
            connection.terminate()
            raise
        return connection, int(term)

    connection, term = await patiently(campaign, what=f"the leader lock of {name}")
    try:
        yield Leadership(term=term, lost=lost)
    finally:
        if not connection.is_closed():
            await connection.close()  # ends the session: the lock goes with it
