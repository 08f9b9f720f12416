"""The SDK's transport to the dataset catalog in PostgreSQL (read under row-level
security as the client's tenant)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from lepton.errors import CatalogMissing
from lepton.runtime import endpoints

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import asyncpg

    from lepton.config import Settings


class CatalogTransport:
    """A connection pool to the catalog's database, opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def _connect(self) -> asyncpg.Pool:
        from lepton.runtime import database

        async with self._opening:
            if self._pool is None:
                url = self._settings.database_url
                where = (
                    url.get_secret_value()
                    if url
                    else endpoints.resolve(self._settings, "client").database_url
                )
                self._pool = await database.connect(
                    where, timeout_s=self._settings.connect_timeout_s
                )
            return self._pool

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[asyncpg.Pool]:
        """The pool, for calls on the catalog: a catalog that was never created (ingest
        has not run yet) is a :class:`CatalogMissing`, not asyncpg's own error."""
        import asyncpg

        pool = await self._connect()
        try:
            yield pool
        except asyncpg.UndefinedTableError:
            raise CatalogMissing() from None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
