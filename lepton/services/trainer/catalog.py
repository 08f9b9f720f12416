"""The trainer's tables: the runs each agent accepted and the model catalog."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lepton.services.trainer.runs import RunKey, Verdict, judge_run, run_key

if TYPE_CHECKING:
    from collections.abc import Mapping

    import asyncpg

__all__ = ["claim_run", "finish_run", "model_row", "record_model", "record_stop", "unfinished"]


async def claim_run(pool: asyncpg.Pool, node_id: str, assignment: Mapping[str, Any]) -> Verdict:
    """Judge a run instruction against the node's runs of that job and record it."""
    key = run_key(assignment)
    async with pool.acquire() as connection, connection.transaction():
        rows = await connection.fetch(
            "SELECT job_id, lease_epoch, worker_index FROM lepton_trainer.runs "
            "WHERE node_id = $1 AND job_id = $2",
            node_id,
            key[0],
        )
        verdict = judge_run(key, [(r["job_id"], r["lease_epoch"], r["worker_index"]) for r in rows])
        if verdict is not Verdict.DUPLICATE:
            await connection.execute(
                "INSERT INTO lepton_trainer.runs (node_id, job_id, lease_epoch, worker_index, "
                "attempt, gang_size, tenant, status, finished_at) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8, "
                "CASE WHEN $8 = 'running' THEN NULL ELSE clock_timestamp() END)",
                node_id,
                *key,
                int(assignment.get("attempt", 0)),
                int(assignment["gang_size"]),
                assignment["tenant"],
                "running" if verdict is Verdict.START else "stale",
            )
    return verdict


async def record_stop(
    pool: asyncpg.Pool, node_id: str, assignment: Mapping[str, Any], reason: str
) -> None:
    """A stop for a run: ends it if it runs, and keeps a redelivered run from starting."""
    job_id, epoch, index = run_key(assignment)
    await pool.execute(
        "INSERT INTO lepton_trainer.runs (node_id, job_id, lease_epoch, worker_index, attempt, "
        "gang_size, tenant, status, reason, finished_at) VALUES "
        "($1, $2, $3, $4, $5, $6, $7, 'stopped', $8, clock_timestamp()) "
        "ON CONFLICT (node_id, job_id, lease_epoch, worker_index) DO UPDATE "
        "SET status = 'stopped', reason = $8, finished_at = clock_timestamp() "
        "WHERE runs.status = 'running'",
        node_id,
        job_id,
        epoch,
        index,
        int(assignment.get("attempt", 0)),
        int(assignment["gang_size"]),
        assignment["tenant"],
        reason,
    )


async def finish_run(
    pool: asyncpg.Pool,
    node_id: str,
    key: RunKey,
    status: str,
    *,
    reason: str | None = None,
    model_id: str | None = None,
) -> None:
    """Close a running run (a run already closed, e.g. stopped, stays as it is)."""
    await pool.execute(
        "UPDATE lepton_trainer.runs SET status = $5, reason = $6, model_id = $7, "
        "finished_at = clock_timestamp() WHERE node_id = $1 AND job_id = $2 "
        "AND lease_epoch = $3 AND worker_index = $4 AND status = 'running'",
        node_id,
        *key,
        status,
        reason,
        model_id,
    )


async def unfinished(pool: asyncpg.Pool, node_id: str) -> list[dict[str, Any]]:
    """Runs the node accepted and never closed: a previous agent died while running them."""
    rows = await pool.fetch(
        "SELECT job_id, lease_epoch, worker_index, attempt, tenant FROM lepton_trainer.runs "
        "WHERE node_id = $1 AND status = 'running' ORDER BY accepted_at",
        node_id,
    )
    return [dict(row) for row in rows]


def model_row(record: Mapping[str, Any], lease_epoch: int, trials: list[Any]) -> list[Any]:
    """The catalog columns of a ``lepton.ModelReady`` record, in insertion order."""
    dataset = record["dataset"]
    return [
        record["model_id"],
        record["job_id"],
        record["attempt"],
        lease_epoch,
        record["tenant"],
        record["model_name"],
        dataset["owner"],
        dataset["name"],
        dataset["version"],
        record["problem_type"],
        record["target_column"],
        json.dumps(record["feature_columns"], ensure_ascii=False),
        record["algorithm"],
        record["parameters"],
        record["scoring"],
        record["cv_score"],
        json.dumps(record["cv_fold_scores"]),
        json.dumps(trials, ensure_ascii=False),
        record["training_seconds"],
        record["artifact_uri"],
        record["artifact_format"],
        record["artifact_sha256"],
    ]


async def record_model(
    pool: asyncpg.Pool, record: Mapping[str, Any], lease_epoch: int, trials: list[Any]
) -> None:
    """Catalog a model; the same model again (a retried report) changes nothing."""
    await pool.execute(
        "INSERT INTO lepton_trainer.models (model_id, job_id, attempt, lease_epoch, tenant, "
        "model_name, dataset_owner, dataset_name, dataset_version, problem_type, "
        "target_column, feature_columns, algorithm, parameters, scoring, cv_score, "
        "cv_fold_scores, trials, training_seconds, artifact_uri, artifact_format, "
        "artifact_sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
        "$14, $15, $16, $17, $18, $19, $20, $21, $22) ON CONFLICT (model_id) DO NOTHING",
        *model_row(record, lease_epoch, trials),
    )
