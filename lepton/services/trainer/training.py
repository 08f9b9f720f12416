"""What a training job decides and computes, with no Kafka, database or files inside.

From a data frame and the job's task this module infers the learning problem, picks the
algorithm families that suit it, parses the search space, searches parameters with
Optuna's TPE sampler and median pruning over cross-validation folds, and refits the best
pipeline on all rows. Preprocessing (imputation, one-hot encoding, scaling) is part of
every pipeline, so each fold fits it on its own training rows only: no leakage. Before
the search, :mod:`lepton.services.trainer.protection` decides what a careful analyst
would (identifiers out, numbers written as text read as numbers, many categories
target-encoded, a skewed target on a log scale when cross-validation prefers it); each
decision is a finding (:attr:`TrainingResult.findings`).

The pipeline takes the frame :func:`lepton.data.modeling.model_input` makes (numbers as
float64, other columns as objects with NaN for missing): that is the input contract of a
stored model. A share of the rows (``holdout_fraction``) is kept out of the search and the
refit altogether, split by :func:`lepton.data.modeling.holdout_split`, so that the evaluator
can score the model on rows it never saw.

Columns the dataset declares sensitive are never read by a model (neither features nor
target) unless the job's ``task.options.allow_sensitive_columns`` is ``true``; a model
that reads one says so (:attr:`TrainingResult.sensitive_columns`), and its artifact is
then stored encrypted with its tenant's key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import get_scorer
from sklearn.model_selection import KFold, StratifiedKFold
from threadpoolctl import threadpool_limits

from lepton.contract.algorithms import ALGORITHMS, AUTO, PROBLEM_TYPES
from lepton.data.modeling import as_numbers, holdout_split, labelled, model_input
from lepton.services.trainer.errors import (
    ConstantTarget,
    InvalidTask,
    MissingTargetColumn,
    NoUsableTrial,
    SensitiveTarget,
    TooFewRows,
)
from lepton.services.trainer.pipelines import (
    Problem,
    build_pipeline,
    candidate_families,
    infer_problem,
)
from lepton.services.trainer.protection import (
    PrepFinding,
    choose_target_transform,
    high_cardinality,
    identifier_columns,
    numeric_text_columns,
    target_flags,
)
from lepton.services.trainer.search_space import parse_search_space

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = [
    "ALLOW_SENSITIVE",
    "DEFAULT_HOLDOUT_FRACTION",
    "Progress",
    "SearchConfig",
    "TrainingResult",
    "TrialRecord",
    "prepare",
    "train",
    "trial_share",
]

# Rows kept out for the evaluator unless the job's task.options.holdout_fraction says.
DEFAULT_HOLDOUT_FRACTION = 0.2
# The task option that lets a model read the dataset's sensitive columns.
ALLOW_SENSITIVE = "allow_sensitive_columns"
Progress = Callable[[float, str], None]  # (percent 0..100, stage)


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """The task fields of a ``lepton.JobAssigned`` that shape training."""

    target_column: str
    algorithm: str = AUTO
    problem_type: str | None = None
    search_space: str | None = None
    trial_budget: int = 20
    time_budget_s: float = 300.0
    cv_folds: int = 5
    scoring: str | None = None
    seed: int = 0
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    n_jobs: int = 1  # threads an estimator may use: the job's granted cores
    allow_sensitive_columns: bool = False

    @classmethod
    def from_task(cls, task: Mapping[str, Any], n_jobs: int = 1) -> SearchConfig:
        target = task.get("target_column")
        if not target:
            raise InvalidTask("task.target_column is required for a training job")
        return cls(
            target_column=target,
            algorithm=task.get("algorithm") or AUTO,
            problem_type=task.get("problem_type"),
            search_space=task.get("search_space"),
            trial_budget=int(task.get("trial_budget", 20)),
            time_budget_s=float(task.get("time_budget_s", 300)),
            cv_folds=int(task.get("cv_folds", 5)),
            scoring=task.get("scoring"),
            seed=int(task.get("seed") or 0),
            holdout_fraction=_holdout_option(task.get("options") or {}),
            n_jobs=max(1, n_jobs),
            allow_sensitive_columns=_allow_sensitive_option(task.get("options") or {}),
        )

    def check(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise InvalidTask(
                f"task.algorithm {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}"
            )
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise InvalidTask(f"task.problem_type {self.problem_type!r} is not known")
        if self.trial_budget < 1:
            raise InvalidTask("task.trial_budget must be at least 1")
        if self.time_budget_s <= 0:
            raise InvalidTask("task.time_budget_s must be positive")
        if self.cv_folds < 2:
            raise InvalidTask("task.cv_folds must be at least 2")
        if not 0 <= self.holdout_fraction <= 0.5:
            raise InvalidTask(
                f"task.options.holdout_fraction {self.holdout_fraction} must be between 0 and 0.5"
            )


def _holdout_option(options: Mapping[str, str]) -> float:
    raw = options.get("holdout_fraction")
    if raw is None:
        return DEFAULT_HOLDOUT_FRACTION
    try:
        return float(raw)
    except ValueError:
        raise InvalidTask(f"task.options.holdout_fraction {raw!r} is not a number") from None


def _allow_sensitive_option(options: Mapping[str, str]) -> bool:
    raw = options.get(ALLOW_SENSITIVE, "false")
    if raw.lower() not in ("true", "false"):
        raise InvalidTask(f"task.options.{ALLOW_SENSITIVE} {raw[:100]!r} must be true or false")
    return raw.lower() == "true"


@dataclass(frozen=True, slots=True)
class TrialRecord:
    number: int
    family: str
    params: dict[str, Any]
    state: str  # complete, pruned or fail
    score: float | None
    fold_scores: list[float]


@dataclass(slots=True)
class TrainingResult:
    pipeline: Any  # the refitted sklearn Pipeline (None for a gang worker other than 0)
    problem_type: str
    family: str
    params: dict[str, Any]
    scoring: str
    cv_score: float
    fold_scores: list[float]
    feature_columns: list[str]
    trials: list[TrialRecord] = field(default_factory=list)
    seconds: float = 0.0
    # The dataset's sensitive columns the model reads (features or target): its artifact
    # must be encrypted when there is any.
    sensitive_columns: list[str] = field(default_factory=list)
    # What training left out or transformed on its own, and why.
    findings: list[PrepFinding] = field(default_factory=list)


def prepare(
    frame: pd.DataFrame, config: SearchConfig, sensitive: Collection[str] = ()
) -> tuple[pd.DataFrame, np.ndarray[Any, Any], Problem, list[PrepFinding]]:
    """Features, target, problem and what was read differently or left out (a target of
    numbers written as text, identifier-like columns), as :class:`PrepFinding`; raises a
    :class:`TrainingInputError` that says why the data cannot be trained on as asked.

    ``sensitive``: the columns the dataset declares sensitive; they are left out of the
    features unless the job allows them, and a sensitive target needs the same consent.
    """
    config.check()
    target = config.target_column
    if target in sensitive and not config.allow_sensitive_columns:
        raise SensitiveTarget(
            f"target column {target!r} is sensitive: a model reads it only when the job's "
            f"task.options.{ALLOW_SENSITIVE} is true (its artifact is then encrypted)"
        )
    if target not in frame.columns:
        raise MissingTargetColumn(
            f"target column {target!r} is not in the dataset (columns: "
            f"{', '.join(map(str, frame.columns))})"
        )
    findings: list[PrepFinding] = []
    if config.problem_type in (None, "regression"):
        numbers = numeric_text_columns(model_input(frame[[target]].dropna()))
        if numbers:
            # Regressing on text is impossible and classifying prices absurd: a target of
            # numbers written as text is read as numbers, and the rest are missing.
            frame = frame.assign(**{target: as_numbers(frame[[target]])[:, 0]})
            findings += numbers
    frame = frame[frame[target].notna()]
    left_out = set() if config.allow_sensitive_columns else set(sensitive)
    features = [c for c in frame.columns if c != target and c not in left_out]
    if not features:
        raise InvalidTask(
            "the dataset has no column besides the target"
            + (
                f" that is not sensitive (task.options.{ALLOW_SENSITIVE} allows those)"
                if left_out - {target}
                else ""
            )
        )
    if frame[target].nunique() < 2:
        raise ConstantTarget(
            f"target column {target!r} has a single value over {len(frame)} rows: nothing to learn"
        )
    inferred = infer_problem(frame[target])
    problem: Problem = config.problem_type or inferred  # type: ignore[assignment]
    if problem == "regression" and not pd.api.types.is_numeric_dtype(frame[target].dtype):
        raise InvalidTask(f"target column {target!r} is not numeric: cannot regress on it")
    if problem == "binary" and inferred != "binary":
        raise InvalidTask(f"target column {target!r} does not have exactly two values")
    X, y = labelled(frame, target, features)
    # The held-out rows are gone from here on: the search and the refit never see them.
    kept, _ = holdout_split(y, problem, config.holdout_fraction, config.seed)
    X, y = X.iloc[kept].reset_index(drop=True), y[kept]
    dates = [c for c in features if pd.api.types.is_datetime64_any_dtype(frame[c].dtype)]
    excluded = identifier_columns(X, dates) + target_flags(X, target)
    if len(excluded) == len(X.columns):
        raise InvalidTask(
            "every feature column identifies rows rather than describes them: "
            + "; ".join(finding.message for finding in excluded)
        )
    X = X.drop(columns=[finding.column for finding in excluded])
    findings += excluded
    if len(y) < config.cv_folds:
        raise TooFewRows(
            f"{len(y)} rows with a target value left for training; {config.cv_folds}-fold "
            "cross-validation needs at least one per fold"
        )
    if problem != "regression":
        counts = pd.Series(y).value_counts()
        if counts.min() < config.cv_folds:
            raise TooFewRows(
                f"class {counts.idxmin()!r} has {counts.min()} training rows; "
                f"{config.cv_folds}-fold stratified cross-validation needs at least one per fold"
            )
    return X, y, problem, findings


def trial_share(budget: int, workers: int, index: int) -> int:
    """How many of a gang's ``budget`` trials worker ``index`` runs (they sum to it)."""
    return budget // workers + (1 if index < budget % workers else 0)


def _split_params(params: Mapping[str, Any], families: Sequence[str]) -> tuple[str, dict[str, Any]]:
    # Parameters are named family.param, so that families never share a distribution.
    family = params["family"] if len(families) > 1 else families[0]
    prefix = f"{family}."
    return family, {k.removeprefix(prefix): v for k, v in params.items() if k.startswith(prefix)}


def train(
    frame: pd.DataFrame,
    config: SearchConfig,
    *,
    progress: Progress | None = None,
    storage: optuna.storages.BaseStorage | str | None = None,
    sensitive: Collection[str] = (),
    study_name: str | None = None,
    worker_index: int = 0,
    gang_size: int = 1,
    refit: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> TrainingResult:
    """Search, then refit the best pipeline on every row not held out.

    With ``storage`` the study is shared: each gang worker runs its share of the trial
    budget in it, and the one that refits waits for the others' trials before choosing.
    ``sensitive``: the dataset's sensitive columns (see :func:`prepare`).
    """
    began = clock()
    report = progress or (lambda percent, stage: None)
    X, y, problem, findings = prepare(frame, config, sensitive)
    families = candidate_families(problem, config.algorithm)
    space = parse_search_space(config.search_space, families, problem)
    families = tuple(space)
    scoring = config.scoring or ("r2" if problem == "regression" else "f1_macro")
    try:
        scorer = get_scorer(scoring)
    except ValueError:
        raise InvalidTask(f"task.scoring {scoring!r} is not a scikit-learn scorer") from None
    numeric = [c for c in X.columns if X[c].dtype == np.float64]
    as_text = numeric_text_columns(X)
    numeric_text = [str(finding.column) for finding in as_text]
    categorical = [c for c in X.columns if c not in numeric and c not in numeric_text]
    many = high_cardinality(X, categorical)
    encoded = [str(finding.column) for finding in many]
    findings += as_text + many
    splitter = (
        KFold(config.cv_folds, shuffle=True, random_state=config.seed)
        if problem == "regression"
        else StratifiedKFold(config.cv_folds, shuffle=True, random_state=config.seed)
    )
    folds = list(splitter.split(X, y))

    def pipeline_for(
        family: str, params: Mapping[str, Any], *, log_scale: bool = False
    ) -> Pipeline:
        return build_pipeline(
            family,
            problem,
            params,
            numeric=numeric,
            categorical=categorical,
            numeric_text=numeric_text,
            encoded=encoded,
            log_scale=log_scale,
            seed=config.seed,
            n_jobs=config.n_jobs,
        )

    log_scale = False
    if problem == "regression":
        report(9, "choosing the target's scale")
        with threadpool_limits(limits=config.n_jobs):
            log_scale, scale_finding = choose_target_transform(
                X,
                y,
                folds,
                scoring,
                pipeline_for("hist_gradient_boosting", {}),
                config.seed,
                config.target_column,
            )
        if scale_finding is not None:
            findings.append(scale_finding)

    def objective(trial: optuna.Trial) -> float:
        family = (
            trial.suggest_categorical("family", list(families))
            if len(families) > 1
            else families[0]
        )
        params = {
            name: distribution.suggest(trial, f"{family}.{name}")
            for name, distribution in space[family].items()
        }
        trial.set_user_attr("family", family)
        scores: list[float] = []
        for step, (train_rows, test_rows) in enumerate(folds):
            model = clone(pipeline_for(family, params, log_scale=log_scale))
            model.fit(X.iloc[train_rows], y[train_rows])
            scores.append(float(scorer(model, X.iloc[test_rows], y[test_rows])))
            trial.set_user_attr("fold_scores", scores)
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned
        return float(np.mean(scores))

    share = trial_share(config.trial_budget, gang_size, worker_index)
    # Gang workers seed apart, or they would all propose the same first points.
    sampler = optuna.samplers.TPESampler(seed=config.seed + worker_index)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction="maximize",
        sampler=sampler,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1),
        load_if_exists=storage is not None,
    )
    deadline = began + config.time_budget_s

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = sum(1 for t in study.trials if t.state.is_finished())
        by_time = (clock() - began) / config.time_budget_s
        report(10 + 80 * min(1.0, max(done / config.trial_budget, by_time)), "searching")

    report(10, "searching")
    # BLAS and OpenMP pools sized to the job's cores: more threads than cores only
    # contend (histogram gradient boosting runs several times slower oversubscribed).
    with threadpool_limits(limits=config.n_jobs):
        if share > 0:
            study.optimize(
                objective,
                n_trials=share,
                timeout=max(0.0, deadline - clock()),
                # A parameter point an estimator rejects fails that trial, not the search.
                catch=(ValueError, ArithmeticError),
                callbacks=[after_trial],
            )
        if storage is not None and refit:
            _await_gang(study, config.trial_budget, deadline, clock)
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            states = sorted({t.state.name.lower() for t in study.trials})
            raise NoUsableTrial(
                f"none of {len(study.trials)} trials completed (states: {', '.join(states)}); "
                "the estimator rejected every parameter point tried"
            )
        best = max(complete, key=lambda t: (t.value, -t.number))
        family, params = _split_params(best.params, families)
        pipeline = None
        if refit:
            report(92, "refitting")
            pipeline = pipeline_for(family, params, log_scale=log_scale).fit(X, y)
    return TrainingResult(
        pipeline=pipeline,
        problem_type=problem,
        family=family,
        params=params,
        scoring=scoring,
        cv_score=float(best.value or 0.0),
        fold_scores=[float(s) for s in best.user_attrs.get("fold_scores", [])],
        feature_columns=[str(c) for c in X.columns],
        trials=[_record(t, families) for t in study.trials],
        seconds=clock() - began,
        sensitive_columns=[c for c in [*X.columns, config.target_column] if c in sensitive],
        findings=findings,
    )


def _await_gang(
    study: optuna.Study, budget: int, deadline: float, clock: Callable[[], float]
) -> None:
    """Wait until the gang has finished the whole budget, or the time budget is over."""
    while clock() < deadline:
        if sum(1 for t in study.trials if t.state.is_finished()) >= budget:
            return
        time.sleep(0.2)


def _record(trial: optuna.trial.FrozenTrial, families: Sequence[str]) -> TrialRecord:
    family, params = _split_params(trial.params, families) if trial.params else (families[0], {})
    fold_scores = [float(s) for s in trial.user_attrs.get("fold_scores", [])]
    return TrialRecord(
        number=trial.number,
        family=family,
        params=params,
        state=trial.state.name.lower(),
        score=float(trial.value) if trial.value is not None else None,
        fold_scores=fold_scores,
    )
