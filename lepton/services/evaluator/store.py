"""The evaluator's PostgreSQL read models: evaluations, champions and verdicts.

Every statement is parameterised. The champion changes only in the transaction that
stores the verdict changing it, and only if it is still the champion the verdict was
decided against (compare-and-set): two evaluators judging models of the same name at
once cannot both win.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

__all__ = [
    "Champion",
    "ChampionChanged",
    "RollbackRejected",
    "Stored",
    "apply_rollback",
    "champions",
    "current_champion",
    "find",
    "mark_published",
    "model_for",
    "record_evaluation",
    "record_failure",
]


class ChampionChanged(RuntimeError):
    """The champion changed while a verdict about it was being decided."""


class RollbackRejected(ValueError):
    """A rollback to a model that is not an evaluated model of that tenant and name."""


@dataclass(frozen=True, slots=True)
class Stored:
    model_id: str
    status: str  # evaluated or failed
    ready: dict[str, Any]
    evaluated: dict[str, Any] | None
    promoted: dict[str, Any] | None
    error_type: str | None
    error_message: str | None
    published: bool


@dataclass(frozen=True, slots=True)
class Champion:
    tenant: str
    model_name: str
    model_id: str
    since: datetime
    ready: dict[str, Any]  # its lepton.ModelReady
    metrics: dict[str, float]  # its hold-out metrics


def _without_lease(ready: dict[str, Any]) -> dict[str, Any]:
    # The lease proved who trained the model when it arrived; it is not the model's data
    # (and its bytes have no JSON form).
    return {name: value for name, value in ready.items() if name != "lease"}


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, allow_nan=False)


def _loaded(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _stored(row: asyncpg.Record) -> Stored:
    return Stored(
        model_id=row["model_id"],
        status=row["status"],
        ready=json.loads(row["ready"]),
        evaluated=_loaded(row["evaluated"]),
        promoted=_loaded(row["promoted"]),
        error_type=row["error_type"],
        error_message=row["error_message"],
        published=row["published"],
    )


_SELECT = (
    "SELECT model_id, status, ready::text, evaluated::text, promoted::text, error_type, "
    "error_message, published FROM lepton_evaluator.evaluations"
)


async def find(pool: asyncpg.Pool, model_id: str) -> Stored | None:
    row = await pool.fetchrow(f"{_SELECT} WHERE model_id = $1", model_id)
    return None if row is None else _stored(row)


async def model_for(
    pool: asyncpg.Pool, tenant: str, model_name: str, model_id: str
) -> Stored | None:
    """The tenant's model of that name and id, evaluated or not; None if there is none."""
    row = await pool.fetchrow(
        f"{_SELECT} WHERE model_id = $1 AND tenant = $2 AND model_name = $3",
        model_id,
        tenant,
        model_name,
    )
    return None if row is None else _stored(row)


async def record_failure(
    pool: asyncpg.Pool, ready: dict[str, Any], error_type: str, message: str
) -> None:
    await pool.execute(
        "INSERT INTO lepton_evaluator.evaluations (model_id, tenant, model_name, status, "
        "ready, error_type, error_message, published) "
        "VALUES ($1, $2, $3, 'failed', $4::jsonb, $5, $6, true) ON CONFLICT DO NOTHING",
        ready["model_id"],
        ready["tenant"],
        ready["model_name"],
        _json(_without_lease(ready)),
        error_type,
        message,
    )


async def _insert_verdict(connection: Any, record: dict[str, Any]) -> bool:
    inserted = await connection.fetchval(
        "INSERT INTO lepton_evaluator.verdicts (tenant, model_name, model_id, verdict, "
        "decided_at, record) VALUES ($1, $2, $3, $4, $5, $6::jsonb) "
        "ON CONFLICT DO NOTHING RETURNING true",
        record["tenant"],
        record["model_name"],
        record["model_id"],
        record["verdict"],
        record["decided_at"],
        _json(record),
    )
    return bool(inserted)


async def _set_champion(
    connection: Any, tenant: str, model_name: str, model_id: str, expected: str | None
) -> None:
    """Make ``model_id`` the champion if ``expected`` still is (None: there is none)."""
    if expected is None:
        done = await connection.fetchval(
            "INSERT INTO lepton_evaluator.champions (tenant, model_name, model_id) "
            "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
            tenant,
            model_name,
            model_id,
        )
    else:
        done = await connection.fetchval(
            "UPDATE lepton_evaluator.champions SET model_id = $3, since = clock_timestamp() "
            "WHERE tenant = $1 AND model_name = $2 AND model_id = $4 RETURNING true",
            tenant,
            model_name,
            model_id,
            expected,
        )
    if not done:
        raise ChampionChanged(
            f"the champion of {tenant}/{model_name} is no longer {expected or 'none'}"
        )


async def record_evaluation(
    pool: asyncpg.Pool,
    ready: dict[str, Any],
    evaluated: dict[str, Any],
    promoted: dict[str, Any] | None,
) -> None:
    """Store an evaluation and its verdict; a promotion replaces the champion the verdict
    names as previous (raises :class:`ChampionChanged` if it is no longer champion, and
    then nothing is stored)."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(
            "INSERT INTO lepton_evaluator.evaluations (model_id, tenant, model_name, status, "
            "ready, evaluated, promoted) VALUES ($1, $2, $3, 'evaluated', $4::jsonb, "
            "$5::jsonb, $6::jsonb)",
            ready["model_id"],
            ready["tenant"],
            ready["model_name"],
            _json(_without_lease(ready)),
            _json(evaluated),
            _json(promoted),
        )
        if promoted is None:
            return
        await _insert_verdict(connection, promoted)
        if promoted["verdict"] == "promoted":
            await _set_champion(
                connection,
                promoted["tenant"],
                promoted["model_name"],
                promoted["model_id"],
                promoted["previous_champion_id"],
            )


async def mark_published(pool: asyncpg.Pool, model_id: str) -> None:
    await pool.execute(
        "UPDATE lepton_evaluator.evaluations SET published = true WHERE model_id = $1",
        model_id,
    )


async def apply_rollback(pool: asyncpg.Pool, record: dict[str, Any]) -> bool:
    """Restore ``record['model_id']`` as champion of its tenant's model name. False when
    this rollback was applied already; :class:`RollbackRejected` when the model is not an
    evaluated model of that tenant and name."""
    tenant, name, model_id = record["tenant"], record["model_name"], record["model_id"]
    async with pool.acquire() as connection, connection.transaction():
        status = await connection.fetchval(
            "SELECT status FROM lepton_evaluator.evaluations "
            "WHERE model_id = $1 AND tenant = $2 AND model_name = $3",
            model_id,
            tenant,
            name,
        )
        if status != "evaluated":
            detail = "was never evaluated" if status is None else f"is {status}"
            raise RollbackRejected(
                f"cannot roll {tenant}/{name} back to {model_id}: that model of "
                f"{tenant}/{name} {detail}"
            )
        if not await _insert_verdict(connection, record):
            return False
        await connection.execute(
            "INSERT INTO lepton_evaluator.champions (tenant, model_name, model_id) "
            "VALUES ($1, $2, $3) ON CONFLICT (tenant, model_name) DO UPDATE "
            "SET model_id = excluded.model_id, since = clock_timestamp()",
            tenant,
            name,
            model_id,
        )
    return True


_CHAMPIONS = (
    "SELECT c.tenant, c.model_name, c.model_id, c.since, e.ready::text, "
    "e.evaluated->'metrics' AS metrics FROM lepton_evaluator.champions c "
    "JOIN lepton_evaluator.evaluations e USING (model_id)"
)


def _champion(row: asyncpg.Record) -> Champion:
    return Champion(
        tenant=row["tenant"],
        model_name=row["model_name"],
        model_id=row["model_id"],
        since=row["since"],
        ready=json.loads(row["ready"]),
        metrics=_loaded(row["metrics"]) or {},
    )


async def current_champion(pool: asyncpg.Pool, tenant: str, model_name: str) -> Champion | None:
    """The champion of ``tenant``'s ``model_name``; None before its first promotion."""
    row = await pool.fetchrow(
        f"{_CHAMPIONS} WHERE c.tenant = $1 AND c.model_name = $2",
        tenant,
        model_name,
    )
    return None if row is None else _champion(row)


async def has_model_named(pool: asyncpg.Pool, tenant: str, model_name: str) -> bool:
    """Whether ``tenant`` has any model, evaluated or not, of that name."""
    found: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM lepton_evaluator.evaluations "
        "WHERE tenant = $1 AND model_name = $2)",
        tenant,
        model_name,
    )
    return found


async def model_names(pool: asyncpg.Pool, tenant: str, limit: int) -> list[str]:
    """Up to ``limit`` of the names ``tenant``'s models go by, alphabetically."""
    rows = await pool.fetch(
        "SELECT DISTINCT model_name FROM lepton_evaluator.evaluations WHERE tenant = $1 "
        "ORDER BY model_name LIMIT $2",
        tenant,
        limit,
    )
    return [row["model_name"] for row in rows]


async def champions(pool: asyncpg.Pool, tenant: str) -> list[Champion]:
    """Every champion of ``tenant``, by model name."""
    rows = await pool.fetch(
        f"{_CHAMPIONS} WHERE c.tenant = $1 ORDER BY c.model_name",
        tenant,
    )
    return [_champion(row) for row in rows]
