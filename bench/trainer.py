"""Benchmark: the trainer's training function against plain scikit-learn, in one run.

1. ``overhead``: one fixed pipeline (imputation, one-hot encoding, histogram gradient
   boosting) cross-validated on 5 folds and refitted, through ``lepton.services.trainer.training
   .train`` (a one-point search space, one trial: Optuna, pruning hooks, input checks and
   bookkeeping included) and through a plain script that builds the same pipeline with
   scikit-learn and calls ``cross_val_score`` then ``fit``. Same data, same folds, one
   thread each; alternated ``REPEATS`` times, medians compared. Target: <= 10 %.
2. ``search``: on scikit-learn's breast-cancer set, an RBF SVM's C and gamma searched by
   the trainer (TPE with median pruning, ``TRIALS`` trials over the grid's continuous
   ranges) against an exhaustive ``GridSearchCV`` over a 10 x 10 grid, same folds and
   metric; for several seeds. Targets: best score within 1 % of the grid's, in at most a
   third of its time.

Usage: python -m bench.trainer      (writes bench/results/trainer.json)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from lepton.services.trainer.training import SearchConfig, train

RESULTS = Path(__file__).parent / "results" / "trainer.json"
REPEATS = 5
TRIALS = 20
SEEDS = (0, 1, 2)
GRID = {"C": np.logspace(-2, 3, 10).tolist(), "gamma": np.logspace(-4, 0, 10).tolist()}
HGB = {"learning_rate": 0.1, "max_iter": 100, "max_leaf_nodes": 31}


def overhead_data(rows: int = 4000) -> pd.DataFrame:
    X, y = make_classification(rows, n_features=20, n_informative=8, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(20)])
    rng = np.random.default_rng(0)
    frame.loc[rng.random(rows) < 0.05, "f0"] = np.nan
    frame["segment"] = np.where(y == 1, rng.choice(["a", "b"], rows), rng.choice(["b", "c"], rows))
    frame["segment"] = frame["segment"].astype(object)
    frame["y"] = y
    return frame


def plain_script(frame: pd.DataFrame) -> float:
    """What a data scientist would write by hand for the same pipeline."""
    X, y = frame.drop(columns="y"), frame["y"].to_numpy()
    numeric = [c for c in X.columns if c != "segment"]
    pipeline = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [
                        ("numeric", SimpleImputer(strategy="median"), numeric),
                        (
                            "categorical",
                            Pipeline(
                                [
                                    ("impute", SimpleImputer(strategy="most_frequent")),
                                    (
                                        "onehot",
                                        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                                    ),
                                ]
                            ),
                            ["segment"],
                        ),
                    ]
                ),
            ),
            ("model", HistGradientBoostingClassifier(random_state=0, **HGB)),
        ]
    )
    scores = cross_val_score(
        pipeline, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), scoring="f1_macro"
    )
    pipeline.fit(X, y)
    return float(scores.mean())


def through_trainer(frame: pd.DataFrame) -> float:
    space = {
        "hist_gradient_boosting": {
            k: {"type": "categorical", "choices": [v]} for k, v in HGB.items()
        }
    }
    result = train(
        frame,
        SearchConfig(
            target_column="y",
            algorithm="hist_gradient_boosting",
            search_space=json.dumps(space),
            trial_budget=1,
            cv_folds=5,
            seed=0,
            holdout_fraction=0.0,  # the plain script sees every row: so does the trainer
        ),
    )
    return result.cv_score


def measure_overhead() -> dict[str, float]:
    frame = overhead_data()
    plain_times, trainer_times = [], []
    plain_score = trainer_score = 0.0
    with threadpool_limits(limits=1):
        for _ in range(REPEATS):
            began = time.perf_counter()
            plain_score = plain_script(frame)
            plain_times.append(time.perf_counter() - began)
            began = time.perf_counter()
            trainer_score = through_trainer(frame)
            trainer_times.append(time.perf_counter() - began)
    plain, trainer = statistics.median(plain_times), statistics.median(trainer_times)
    return {
        "rows": len(frame),
        "plain_s": plain,
        "trainer_s": trainer,
        "overhead_pct": (trainer / plain - 1) * 100,
        "plain_cv_f1": plain_score,
        "trainer_cv_f1": trainer_score,
    }


def measure_search(seed: int) -> dict[str, float]:
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.rename(columns={"target": "y"})
    X, y = frame.drop(columns="y"), frame["y"].to_numpy()
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    grid = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("model", SVC(random_state=seed))]),
        {f"model__{name}": values for name, values in GRID.items()},
        cv=folds,
        scoring="f1_macro",
    )
    with threadpool_limits(limits=1):
        began = time.perf_counter()
        grid.fit(X, y)
        grid_s = time.perf_counter() - began
        space = {
            "svm": {
                name: {"type": "float", "low": min(values), "high": max(values), "log": True}
                for name, values in GRID.items()
            }
        }
        began = time.perf_counter()
        result = train(
            frame,
            SearchConfig(
                target_column="y",
                algorithm="svm",
                search_space=json.dumps(space),
                trial_budget=TRIALS,
                cv_folds=5,
                scoring="f1_macro",
                seed=seed,
                holdout_fraction=0.0,  # the grid searches every row: so does the trainer
            ),
        )
        search_s = time.perf_counter() - began
    grid_best = float(grid.best_score_)
    # The search's best trial, scored on the grid's folds: the model kept may be another
    # candidate, judged on more folds than these (lepton.services.trainer.finalists).
    search_best = max(
        t.score for t in result.trials if t.state == "complete" and t.score is not None
    )
    return {
        "seed": seed,
        "grid_points": len(grid.cv_results_["params"]),
        "grid_best": grid_best,
        "grid_s": grid_s,
        "search_trials": len(result.trials),
        "search_pruned": sum(t.state == "pruned" for t in result.trials),
        "search_best": search_best,
        "search_s": search_s,
        "gap_pct": (grid_best - search_best) / grid_best * 100,
        "time_ratio": search_s / grid_s,
    }


def main() -> None:
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    overhead = measure_overhead()
    searches = [measure_search(seed) for seed in SEEDS]
    worst_gap = max(row["gap_pct"] for row in searches)
    worst_ratio = max(row["time_ratio"] for row in searches)
    print(f"{'measure':<34}{'value':>12}{'target':>12}")
    print(f"{'plain scikit-learn, s (median)':<34}{overhead['plain_s']:>12.3f}")
    print(f"{'through the trainer, s (median)':<34}{overhead['trainer_s']:>12.3f}")
    print(f"{'overhead %':<34}{overhead['overhead_pct']:>12.1f}{'<= 10':>12}")
    print()
    print(
        f"{'seed':<6}{'grid best':>10}{'grid s':>9}{'search best':>13}{'search s':>10}"
        f"{'gap %':>8}{'time ratio':>12}{'pruned':>8}"
    )
    for row in searches:
        print(
            f"{row['seed']:<6}{row['grid_best']:>10.4f}{row['grid_s']:>9.2f}"
            f"{row['search_best']:>13.4f}{row['search_s']:>10.2f}{row['gap_pct']:>8.2f}"
            f"{row['time_ratio']:>12.2f}{row['search_pruned']:>8}"
        )
    print(
        f"worst gap {worst_gap:.2f} % (target <= 1), worst time ratio {worst_ratio:.2f} "
        "(target <= 0.33)"
    )
    report = {
        "benchmark": "trainer",
        "python": sys.version.split()[0],
        "overhead": overhead,
        "search": searches,
        "targets": {"overhead_pct": 10, "gap_pct": 1, "time_ratio": 1 / 3},
        "met": {
            "overhead": overhead["overhead_pct"] <= 10,
            "gap": worst_gap <= 1,
            "time_ratio": worst_ratio <= 1 / 3,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
