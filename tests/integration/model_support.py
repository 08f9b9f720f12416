"""Models trained in-process and stored as the trainer stores them, for the evaluator's
tests and benchmark."""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pandas as pd

from lepton.data import artifacts
from lepton.services.trainer.training import SearchConfig, train


def stored_model(
    frame: pd.DataFrame,
    config: SearchConfig,
    *,
    artifact_root: Path,
    tenant: str,
    model_id: str,
    model_name: str,
    dataset: dict[str, str],
    sensitive: Collection[str] = (),
) -> tuple[Any, dict[str, Any]]:
    """The fitted pipeline and the ``lepton.ModelReady`` record the trainer would publish
    (``sensitive``: the dataset's sensitive columns; a model reading one is sealed)."""
    result = train(frame, config, sensitive=sensitive)
    uri = artifacts.artifact_uri(str(artifact_root), tenant, model_id)
    sealed_for = tenant if result.sensitive_columns else None
    stored = artifacts.dump(result.pipeline, uri, sealed_for=sealed_for)
    return result.pipeline, {
        "model_id": model_id,
        "job_id": f"job-{model_id}",
        "attempt": 0,
        "tenant": tenant,
        "model_name": model_name,
        "dataset": dataset,
        "problem_type": result.problem_type,
        "target_column": config.target_column,
        "feature_columns": result.feature_columns,
        "algorithm": result.family,
        "parameters": json.dumps(result.params),
        "scoring": result.scoring,
        "cv_score": result.cv_score,
        "cv_fold_scores": result.fold_scores,
        "trials": len(result.trials),
        "training_seconds": result.seconds,
        "artifact_uri": stored.uri,
        "artifact_format": stored.format,
        "artifact_sha256": stored.sha256,
        "holdout_fraction": config.holdout_fraction,
        "split_seed": config.seed,
        "ready_at": time.time_ns() // 1_000_000,
    }
