"""What a training job decides and computes, with no Kafka, database or files inside.

From a data frame and the job's task this module infers the learning problem, picks the
algorithm families that suit it, parses the search space, spends the trial budget on the
families by successive halving (each family searched by its own TPE sampler, see
:mod:`lepton.services.trainer.allocation` and :mod:`lepton.services.trainer.search`)
within a time budget that includes the refit, and refits the best pipeline on all rows,
or an ensemble of the best trials when it scores better
(:mod:`lepton.services.trainer.ensemble`). Preprocessing (imputation, one-hot encoding,
scaling) is part of every pipeline, so each fold fits it on its own training rows only:
no leakage. Before the search, :mod:`lepton.services.trainer.protection` decides what a
careful analyst would (identifiers out, numbers written as text read as numbers, many
categories target-encoded, a skewed target on a log scale when cross-validation prefers
it); each decision is a finding (:attr:`TrainingResult.findings`).

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
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import get_scorer
from threadpoolctl import threadpool_limits

from lepton.contract.algorithms import ALGORITHMS, AUTO, PROBLEM_TYPES
from lepton.data.modeling import as_numbers, holdout_split, labelled, model_input, shown_label
from lepton.services.trainer.allocation import DEADLINE_SLACK, TimeBudget, refit_estimate
from lepton.services.trainer.ensemble import (
    ENSEMBLE,
    ENSEMBLE_CANDIDATES,
    Ensemble,
    beats,
    nested_scores,
    select,
    voting,
)
from lepton.services.trainer.errors import (
    ConstantTarget,
    InvalidTask,
    MissingTargetColumn,
    NoUsableTrial,
    SensitiveTarget,
    TooFewRows,
)
from lepton.services.trainer.finalists import (
    REPEATS,
    cross_validated,
    folds_for,
    fresh_assignments,
    in_reach,
    seconds_needed,
)
from lepton.services.trainer.pipelines import (
    PARAMETER_ERRORS,
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
from lepton.services.trainer.search import Evaluation, Search, Trial, best_first
from lepton.services.trainer.search_space import (
    parse_search_space,
    starting_point,
    starting_points,
)
from lepton.services.trainer.selection import (
    Candidate,
    flexibility,
    noise,
    simplest_within_noise,
)
from lepton.services.trainer.threshold import (
    DEFAULT_THRESHOLD,
    Threshold,
    fixed,
    scores_labels,
    tune,
)

if TYPE_CHECKING:
    import optuna
    from sklearn.pipeline import Pipeline

__all__ = [
    "ALLOW_SENSITIVE",
    "DEFAULT_HOLDOUT_FRACTION",
    "MAX_CLASSES",
    "MODEL_CHOICE",
    "MODEL_CHOICES",
    "Progress",
    "SearchConfig",
    "TrainingResult",
    "prepare",
    "train",
]

# Rows kept out for the evaluator unless the job's task.options.holdout_fraction says.
DEFAULT_HOLDOUT_FRACTION = 0.2
# The most classes a classifier is trained for. Each class multiplies what a trial keeps
# (its out-of-fold probabilities: rows x classes) and fits (a boosted model's trees): a
# target of more distinct labels is almost always an identifier or a quantity.
MAX_CLASSES = 1000
# The task option that lets a model read the dataset's sensitive columns.
ALLOW_SENSITIVE = "allow_sensitive_columns"
# The task option that says which candidate a search keeps: "simplest" (the default: the
# least flexible within the noise of the best, see selection.py) or "best" (the top
# cross-validation score, as searches did before).
MODEL_CHOICE = "model_choice"
MODEL_CHOICES = ("simplest", "best")
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
    model_choice: str = MODEL_CHOICES[0]

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
            model_choice=(task.get("options") or {}).get(MODEL_CHOICE, MODEL_CHOICES[0]),
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
        if self.model_choice not in MODEL_CHOICES:
            raise InvalidTask(
                f"task.options.{MODEL_CHOICE} {self.model_choice[:100]!r} must be one of "
                f"{', '.join(MODEL_CHOICES)}"
            )
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


@dataclass(slots=True)
class TrainingResult:
    # The refitted sklearn Pipeline, or a VotingRegressor/VotingClassifier of pipelines
    # (None for a gang worker other than 0).
    pipeline: Any
    problem_type: str
    family: str  # or "ensemble": params["members"] lists family, params, weight of each
    params: dict[str, Any]
    scoring: str
    cv_score: float
    fold_scores: list[float]
    feature_columns: list[str]
    trials: list[Trial] = field(default_factory=list)  # in the order they began
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
    distinct = frame[target].nunique()
    if distinct < 2:
        raise ConstantTarget(
            f"target column {target!r} has a single value over {len(frame)} rows: nothing to learn"
        )
    inferred = infer_problem(frame[target])
    problem: Problem = config.problem_type or inferred  # type: ignore[assignment]
    if problem == "regression" and not pd.api.types.is_numeric_dtype(frame[target].dtype):
        raise InvalidTask(f"target column {target!r} is not numeric: cannot regress on it")
    if problem == "binary" and inferred != "binary":
        raise InvalidTask(f"target column {target!r} does not have exactly two values")
    if problem == "multiclass" and distinct > MAX_CLASSES:
        raise InvalidTask(
            f"target column {target!r} has {distinct} distinct values: a classifier is trained "
            f"for at most {MAX_CLASSES} classes (a quantity is learnt with "
            "task.problem_type regression)"
        )
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
                f"class {shown_label(counts.idxmin())!r} has {counts.min()} training rows; "
                f"{config.cv_folds}-fold stratified cross-validation needs at least one per fold"
            )
    return X, y, problem, findings


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
    folds = folds_for(y, problem == "regression", config.cv_folds, config.seed)

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

    budget = TimeBudget(clock, began + config.time_budget_s * (1 - DEADLINE_SLACK))
    search = Search(
        space,
        Evaluation(
            X,
            y,
            folds,
            scorer,
            lambda family, params: pipeline_for(family, params, log_scale=log_scale),
            probabilities=problem != "regression",
        ),
        budget,
        seed=config.seed,
        starting_points={
            family: starting_points(family, ranges, problem, len(X.columns))
            for family, ranges in space.items()
        },
        storage=storage,
        study_name=study_name,
        worker_index=worker_index,
        gang_size=gang_size,
    )

    def after_trial(finished: int) -> None:
        by_time = (clock() - began) / config.time_budget_s
        report(10 + 80 * min(1.0, max(finished / config.trial_budget, by_time)), "searching")

    report(10, "searching")
    # BLAS and OpenMP pools sized to the job's cores: more threads than cores only
    # contend (histogram gradient boosting runs several times slower oversubscribed).
    with threadpool_limits(limits=config.n_jobs):
        search.run(config.trial_budget, after_trial)
        if storage is not None and refit:
            search.await_gang(config.trial_budget)
        trials = search.trials()
        ranked = best_first(trials)
        if not ranked:
            states = sorted({t.state for t in trials})
            raise NoUsableTrial(
                f"none of {len(trials)} trials completed (states: {', '.join(states)}); "
                "the estimator rejected every parameter point tried"
            )
        chosen = _ensemble(ranked, y, folds, scorer, budget, problem) if refit else None
        defaults = {
            family: starting_point(family, ranges, problem, len(X.columns))
            for family, ranges in space.items()
        }

        def estimator(trial: Trial | None) -> Any:
            """The trial's pipeline (None: the ensemble's), unfitted."""
            if trial is not None:
                return pipeline_for(trial.family, trial.params, log_scale=log_scale)
            assert chosen is not None
            members, ensemble = chosen
            return voting(
                [(f"{m.family}_{i}", estimator(m)) for i, m in enumerate(members)],
                ensemble.weights,
                classification=problem != "regression",
            )

        pairs = _candidates(ranked, chosen, defaults)
        if config.model_choice != "best" and refit:
            report(91, "rescoring finalists")
            pairs, rescoring = _rescored(
                pairs, ranked, chosen, estimator, X, y, problem, config, scorer, budget
            )
            findings += rescoring
        kept, candidate, simpler = _simplest(pairs, scoring, config.model_choice)
        findings += simpler
        cv_score, fold_scores = candidate.score, candidate.fold_scores
        if kept is not None:
            family, params = kept.family, kept.params
        else:
            assert chosen is not None
            members, ensemble = chosen
            family = ENSEMBLE
            params = {
                "members": [
                    {"family": m.family, "params": m.params, "weight": w}
                    for m, w in zip(members, ensemble.weights, strict=True)
                ]
            }
        pipeline = None
        if refit:
            report(92, "refitting")
            model: Any = estimator(kept)
            if kept is not None:
                oof = kept.oof
            else:
                assert chosen is not None
                oof = chosen[1].predictions
            if problem == "binary" and oof is not None and scores_labels(scorer):
                classes = np.unique(y)
                threshold = tune(oof, y, folds, scorer, classes, budget.paced())
                if threshold is not None:
                    model = fixed(model, threshold)
                    cv_score, fold_scores = threshold.score, threshold.fold_scores
                    findings.append(
                        _threshold_finding(threshold, scoring, config.target_column, classes[1])
                    )
            pipeline = model.fit(X, y)
    return TrainingResult(
        pipeline=pipeline,
        problem_type=problem,
        family=family,
        params=params,
        scoring=scoring,
        cv_score=cv_score,
        fold_scores=[float(s) for s in fold_scores],
        feature_columns=[str(c) for c in X.columns],
        trials=trials,
        seconds=clock() - began,
        sensitive_columns=[c for c in [*X.columns, config.target_column] if c in sensitive],
        findings=findings,
    )


def _ensemble(
    ranked: Sequence[Trial],
    y: np.ndarray[Any, Any],
    folds: Sequence[tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]],
    scorer: Callable[..., float],
    budget: TimeBudget,
    problem: str,
) -> tuple[list[Trial], Ensemble] | None:
    """The ensemble of the best trials, with its members, if it beats the best single
    trial and its members' refits fit in the time left; None otherwise."""
    candidates = _library(ranked)
    if len(candidates) < 2:
        return None
    classes = None if problem == "regression" else np.unique(y)
    predictions = [t.oof for t in candidates if t.oof is not None]
    ensemble = select(predictions, y, folds, scorer, classes, budget.paced())
    if ensemble is None or not beats(ensemble, float(ranked[0].score or 0.0)):
        return None
    members = [candidates[i] for i in ensemble.members]
    refits = sum(refit_estimate(m.fold_seconds, len(folds)) for m in members)
    if budget.left() < refits:
        return None
    return members, ensemble


def _candidates(
    ranked: Sequence[Trial],
    ensemble: tuple[list[Trial], Ensemble] | None,
    defaults: Mapping[str, Mapping[str, Any]],
) -> list[tuple[Candidate, Trial | None]]:
    """What the selection chooses from, each with its trial (None: the ensemble): each
    family's best trial, its trial at its defaults (``defaults``: each family's starting
    point; a trial is at them when its whole point is) and the ensemble."""
    best: dict[str, Trial] = {}
    untouched: dict[str, Trial] = {}
    for trial in ranked:
        best.setdefault(trial.family, trial)
        if trial.params == defaults.get(trial.family):
            untouched.setdefault(trial.family, trial)
    trials = [*best.values(), *(t for f, t in untouched.items() if t is not best[f])]
    pairs: list[tuple[Candidate, Trial | None]] = [
        (
            Candidate(
                t.family,
                float(t.score or 0.0),
                t.fold_scores,
                flexibility(t.family),
                tuned=t is not untouched.get(t.family),
            ),
            t,
        )
        for t in trials
    ]
    if ensemble is not None:
        members, chosen = ensemble
        families = [m.family for m in members]
        pairs.append(
            (Candidate(ENSEMBLE, chosen.score, chosen.fold_scores, flexibility(*families)), None)
        )
    return pairs


def _rescored(
    pairs: Sequence[tuple[Candidate, Trial | None]],
    ranked: Sequence[Trial],
    ensemble: tuple[list[Trial], Ensemble] | None,
    estimator: Callable[[Trial | None], Any],
    X: pd.DataFrame,
    y: np.ndarray[Any, Any],
    problem: str,
    config: SearchConfig,
    scorer: Callable[..., float],
    budget: TimeBudget,
) -> tuple[list[tuple[Candidate, Trial | None]], list[PrepFinding]]:
    """The candidates within reach of the best, scored again on fresh folds
    (:mod:`lepton.services.trainer.finalists`), with a finding that says how their scores
    moved; ``pairs`` unchanged when fewer than two are in reach or the time budget has no
    room for them all (with an ensemble's refit still set aside)."""
    reach = [pairs[i] for i in in_reach([candidate for candidate, _ in pairs])]
    if len(reach) < 2:
        return list(pairs), []
    library = _library(ranked) if any(t is None for _, t in reach) else []
    trials = [t for _, t in reach if t is not None]
    trials += [t for t in library if all(t is not u for u in trials)]
    ensemble_refit = sum(
        refit_estimate(m.fold_seconds, config.cv_folds) for m in (ensemble[0] if ensemble else [])
    )
    needed = sum(seconds_needed(t.fold_seconds, config.cv_folds) for t in trials)
    if not budget.room_for(needed + ensemble_refit):
        return list(pairs), []
    regression = problem == "regression"
    assignments = fresh_assignments(y, regression, config.cv_folds, config.seed)
    try:
        refitted = [
            cross_validated(
                partial(estimator, t),
                X,
                y,
                assignments,
                scorer,
                probabilities=not regression,
                keep_predictions=any(t is member for member in library),
            )
            for t in trials
        ]
    except PARAMETER_ERRORS:
        # A point that fitted the search's folds and fails on others: judged on those.
        return list(pairs), []
    fresh = {id(t): r for t, r in zip(trials, refitted, strict=True)}
    classes = None if regression else np.unique(y)
    scored: list[tuple[Candidate, Trial | None]] = []
    for old, trial in reach:
        if trial is not None:
            more = fresh[id(trial)].fold_scores
        else:  # the ensemble, selected afresh on each assignment's folds but the one scored
            more = []
            for r, folds in enumerate(assignments):
                oofs = [fresh[id(t)].oof[r] for t in library]
                predictions = [oof for oof in oofs if oof is not None]
                more += nested_scores(predictions, y, folds, scorer, classes, budget.paced())
        folds_scores = [*old.fold_scores, *more]
        new = Candidate(
            old.family,
            float(np.mean(folds_scores)),
            folds_scores,
            old.flexibility,
            old.tuned,
            assignments=1 + REPEATS,
        )
        scored.append((new, trial))
    moved = ", ".join(
        f"{_named(old)} {old.score:.4g} → {new.score:.4g}"
        for (old, _), (new, _) in zip(reach, scored, strict=True)
    )
    finding = PrepFinding(
        "finalists_rescored",
        f"the {len(reach)} candidates within reach of the best were cross-validated again "
        f"on {REPEATS} more assignments of the rows to {config.cv_folds} folds, and judged "
        f"on all {config.cv_folds * (REPEATS + 1)} folds' mean (the search's folds favour "
        f"the parameters tuned on them): {moved}",
    )
    return scored, [finding]


def _library(ranked: Sequence[Trial]) -> list[Trial]:
    """The trials an ensemble is selected from: the best that kept their predictions."""
    return [t for t in ranked[:ENSEMBLE_CANDIDATES] if t.oof is not None]


def _simplest(
    pairs: Sequence[tuple[Candidate, Trial | None]], scoring: str, choice: str
) -> tuple[Trial | None, Candidate, list[PrepFinding]]:
    """The trial to keep (None: the ensemble) and its candidate, by
    :func:`simplest_within_noise`, with a finding when it is not the top score. ``choice``
    "best": the top score, whatever it is."""
    candidates = [candidate for candidate, _ in pairs]
    top = max(candidates, key=lambda c: c.score)
    kept = top if choice == "best" else simplest_within_noise(candidates)
    single = next(t for candidate, t in pairs if candidate is kept)
    if kept is top:
        return single, kept, []
    return (
        single,
        kept,
        [
            PrepFinding(
                "simpler_model",
                f"{_named(kept)} kept rather than {_named(top)}: cross-validated {scoring} "
                f"{kept.score:.4g} against {top.score:.4g}, within the folds' noise (one "
                f"standard error, {noise(candidates):.2g}) of the best; the least "
                "flexible model, and a family's defaults before its tuning, are kept when "
                "cross-validation cannot tell them from the best",
            )
        ],
    )


def _named(candidate: Candidate) -> str:
    if candidate.family == ENSEMBLE:
        return "the ensemble"
    if not candidate.tuned:
        return f"{candidate.family} at its defaults"
    return f"{candidate.family}'s best trial"


def _threshold_finding(
    threshold: Threshold, scoring: str, target: str, positive: Any
) -> PrepFinding:
    return PrepFinding(
        "decision_threshold",
        f"the model predicts {target} {shown_label(positive)} when that class's probability "
        f"is at least {threshold.value:g} rather than {DEFAULT_THRESHOLD:g}: cross-validated "
        f"{scoring} was {threshold.score:.4g} against {threshold.default_score:.4g} "
        "(threshold chosen on the search's out-of-fold probabilities)",
        target,
    )
