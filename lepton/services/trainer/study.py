"""A gang's shared Optuna study, kept in PostgreSQL.

Optuna's ``JournalStorage`` replays an append-only log of study
operations; every worker that reads the same log sees the same study. This backend keeps
that log in ``lepton_trainer.study_journal``. Appends take a transaction-scoped advisory
lock per study, so log numbers are gap-free and every reader sees one order. (Optuna's
RDB storage would need a synchronous PostgreSQL driver, which Lepton does not ship.)

The worker process runs the search synchronously, so the backend drives asyncpg on a
private event loop of its own.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import asyncpg
from optuna.storages.journal import BaseJournalBackend

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["PostgresJournalBackend"]

# First key of the two-key advisory locks the trainer takes (two-key locks never meet
# the single-key ones other components use).
_LOCK_SPACE = 0x5452_4E52  # "TRNR"


class PostgresJournalBackend(BaseJournalBackend):
    def __init__(self, database_url: str, study: str) -> None:
        self._study = study
        self._loop = asyncio.new_event_loop()
        self._connection: asyncpg.Connection = self._loop.run_until_complete(
            asyncpg.connect(database_url)
        )

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        rows = self._loop.run_until_complete(
            self._connection.fetch(
                "SELECT log FROM lepton_trainer.study_journal "
                "WHERE study = $1 AND seq >= $2 ORDER BY seq",
                self._study,
                log_number_from,
            )
        )
        return [json.loads(row["log"]) for row in rows]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        self._loop.run_until_complete(self._append(logs))

    async def _append(self, logs: list[dict[str, Any]]) -> None:
        async with self._connection.transaction():
            await self._connection.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_SPACE, self._study
            )
            start = await self._connection.fetchval(
                "SELECT coalesce(max(seq) + 1, 0) FROM lepton_trainer.study_journal "
                "WHERE study = $1",
                self._study,
            )
            await self._connection.executemany(
                "INSERT INTO lepton_trainer.study_journal (study, seq, log) VALUES ($1, $2, $3)",
                [(self._study, start + i, json.dumps(log)) for i, log in enumerate(logs)],
            )

    def close(self) -> None:
        self._loop.run_until_complete(self._connection.close())
        self._loop.close()
