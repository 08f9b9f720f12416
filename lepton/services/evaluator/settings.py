"""The evaluator's settings: each reads ``LEPTON_<NAME>`` like every Lepton setting."""

from __future__ import annotations

from pathlib import Path  # noqa: TC003 - pydantic resolves the annotations at runtime

from pydantic import Field

from lepton.data.artifacts import ArtifactSettings

__all__ = ["EvaluatorSettings"]


class EvaluatorSettings(ArtifactSettings):
    evaluator_cv_folds: int = Field(
        default=5,
        ge=2,
        le=20,
        description="LEPTON_EVALUATOR_CV_FOLDS: cross-validation folds of an evaluation "
        "(stratified for classification), also the folds of the champion comparison.",
    )
    evaluator_cv_max_rows: int = Field(
        default=20_000,
        ge=100,
        description="LEPTON_EVALUATOR_CV_MAX_ROWS: training rows cross-validation, the "
        "training metrics and the leakage probe use at most (a seeded sample): bounds an "
        "evaluation's time whatever the dataset's size. Hold-out metrics use every row.",
    )
    evaluator_importance_max_rows: int = Field(
        default=5_000,
        ge=50,
        description="LEPTON_EVALUATOR_IMPORTANCE_MAX_ROWS: rows permutation importance and "
        "the leakage probe score at most (a seeded sample).",
    )
    evaluator_importance_repeats: int = Field(
        default=3,
        ge=1,
        description="LEPTON_EVALUATOR_IMPORTANCE_REPEATS: shuffles per feature in "
        "permutation importance.",
    )
    evaluator_bootstrap_resamples: int = Field(
        default=200,
        ge=0,
        description="LEPTON_EVALUATOR_BOOTSTRAP_RESAMPLES: resamples of the hold-out for the "
        "interval of a challenger's improvement over the champion (0: no interval).",
    )
    evaluator_bootstrap_max_rows: int = Field(
        default=5_000,
        ge=10,
        description="LEPTON_EVALUATOR_BOOTSTRAP_MAX_ROWS: hold-out rows the bootstrap "
        "resamples at most (a seeded sample).",
    )
    evaluator_policy_file: Path | None = Field(
        default=None,
        description="LEPTON_EVALUATOR_POLICY_FILE: YAML or JSON promotion policies: "
        "defaults per problem type and overrides per '<tenant>/<model name>' glob. Unset: "
        "regression promotes on r2 with mae as guard, classification on f1_macro with "
        "recall_macro as guard.",
    )
    evaluator_plots_root: str | None = Field(
        default=None,
        description="LEPTON_EVALUATOR_PLOTS_ROOT: where evaluation plots (PNG) are written: "
        "a directory or an fsspec URL. Unset: a <model id>.plots directory next to the "
        "model's artifact.",
    )
    evaluator_predict_max_rows: int = Field(
        default=10_000,
        ge=1,
        description="LEPTON_EVALUATOR_PREDICT_MAX_ROWS: records one prediction request may "
        "carry; more is a too_many_rows error.",
    )
    evaluator_model_cache: int = Field(
        default=8,
        ge=1,
        description="LEPTON_EVALUATOR_MODEL_CACHE: loaded models kept in memory for "
        "prediction (least recently used leave first).",
    )
