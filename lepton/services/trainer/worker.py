"""One training run, in its own process: ``python -m lepton.services.trainer.worker``.

The agent writes the run's description as one JSON line on the worker's stdin and keeps
the pipe open; the worker answers with JSON lines on stdout (``progress``, then
``result`` or ``failed``). Anything else that would print to stdout goes to stderr, so
that library output never corrupts the protocol. When stdin closes the agent is gone,
and the worker exits rather than train for nobody.

The worker binds itself to its granted cores and caps its address space before it
imports NumPy, so that every thread pool and allocation starts inside the limits.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import threading
from typing import IO, Any

__all__ = ["main"]

# Exit status when the agent disappeared (stdin closed) mid-run.
_ORPHANED = 70


class _Reporter:
    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def send(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message) + "\n")
        self._out.flush()

    def progress(self, percent: float, stage: str) -> None:
        self.send({"event": "progress", "percent": round(percent, 1), "stage": stage})


def _apply_limits(cpus: list[int], memory_mib: int) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    limit = memory_mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _exit_when_orphaned() -> None:
    sys.stdin.read()
    os._exit(_ORPHANED)


async def _load(run: dict[str, Any], allow_sensitive: bool) -> tuple[Any, frozenset[str]]:
    """The dataset version and the names of its sensitive columns; those are left out of
    the frame (never decrypted) unless the job allows a model to read them."""
    import asyncpg

    from lepton.data.catalog import dataset_versions
    from lepton.data.reading import read_dataset

    assignment = run["assignment"]
    dataset = assignment["dataset"]
    connection_pool = await asyncpg.create_pool(run["database_url"], min_size=1, max_size=1)
    try:
        described = await dataset_versions(
            connection_pool,
            reader_tenant=assignment["tenant"],
            name=dataset["name"],
            owner=dataset["owner"],
            version=dataset["version"],
        )
        frame = await read_dataset(
            connection_pool,
            reader_tenant=assignment["tenant"],
            name=dataset["name"],
            owner_tenant=dataset["owner"],
            version=dataset["version"],
            actor=f"trainer:{assignment['node_id']}",
            omit_sensitive=not allow_sensitive,
        )
    finally:
        await connection_pool.close()
    return frame, frozenset(c["name"] for c in described[0].columns if c.get("sensitive"))


def _train(run: dict[str, Any], reporter: _Reporter) -> dict[str, Any]:
    import optuna
    from optuna.storages import JournalStorage

    from lepton.data import artifacts
    from lepton.services.trainer.errors import InvalidTask
    from lepton.services.trainer.study import PostgresJournalBackend
    from lepton.services.trainer.training import SearchConfig, train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    assignment = run["assignment"]
    task = assignment["task"]
    if task["kind"] != "train":
        raise InvalidTask(f"the trainer runs train tasks, not {task['kind']}")
    if assignment.get("dataset") is None:
        raise InvalidTask("a training job needs a dataset")
    config = SearchConfig.from_task(task, n_jobs=max(1, len(run["cpus"])))
    config.check()
    reporter.progress(2, "loading")
    frame, sensitive = asyncio.run(_load(run, config.allow_sensitive_columns))
    reporter.progress(8, "preparing")
    gang_size = int(assignment["gang_size"])
    index = int(assignment["worker_index"])
    backend = None
    if gang_size > 1:
        # One study per job and lease: a requeued gang starts a fresh search.
        backend = PostgresJournalBackend(run["database_url"], run["study_name"])
    try:
        result = train(
            frame,
            config,
            progress=reporter.progress,
            storage=JournalStorage(backend) if backend is not None else None,
            study_name=run["study_name"] if backend is not None else None,
            worker_index=index,
            gang_size=gang_size,
            refit=index == 0,
            sensitive=sensitive,
        )
    finally:
        if backend is not None:
            backend.close()
    stored = None
    if result.pipeline is not None:
        reporter.progress(96, "storing")
        # A model that reads sensitive columns holds their values: sealed for its tenant.
        sealed_for = assignment["tenant"] if result.sensitive_columns else None
        artifact = artifacts.dump(result.pipeline, run["artifact_uri"], sealed_for=sealed_for)
        stored = {"uri": artifact.uri, "sha256": artifact.sha256, "format": artifact.format}
    return {
        "event": "result",
        "problem_type": result.problem_type,
        "algorithm": result.family,
        "parameters": result.params,
        "scoring": result.scoring,
        "cv_score": result.cv_score,
        "cv_fold_scores": result.fold_scores,
        "feature_columns": result.feature_columns,
        "trials": [trial.record(number) for number, trial in enumerate(result.trials)],
        "training_seconds": result.seconds,
        "holdout_fraction": config.holdout_fraction,
        "split_seed": config.seed,
        "preparation": [finding.record() for finding in result.findings],
        "artifact": stored,
    }


def main() -> None:
    reporter = _Reporter(os.fdopen(os.dup(1), "w"))
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    run = json.loads(sys.stdin.readline())
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    try:
        _apply_limits(run["cpus"], run["memory_mib"])
        # Library warnings (scikit-learn's convergence warnings among them) reach the
        # agent's log as the same JSON lines as everything else.
        from lepton.runtime.logs import configure_logging

        configure_logging(run["log_level"])
        reporter.send(_train(run, reporter))
    except MemoryError:
        reporter.send(
            {
                "event": "failed",
                "error_type": "MemoryError",
                "reason": f"the job needed more than its {run['memory_mib']} MiB memory limit",
            }
        )
    except Exception as exc:  # every failure becomes a report; the agent decides what's next
        from lepton.runtime.database import unavailable

        reporter.send(
            {
                "event": "failed",
                "error_type": type(exc).__name__,
                "reason": str(exc),
                # PostgreSQL was away: not the job's fault, worth another attempt.
                "retryable": unavailable(exc),
            }
        )


if __name__ == "__main__":
    main()
