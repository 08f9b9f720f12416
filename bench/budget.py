"""Benchmark: what the default automatic search reaches within a time budget.

On scikit-learn's friedman1 (regression, 2,000 rows, noise 1) and wine (multiclass, 178
rows), ``train`` runs with a ``TIME_BUDGET_S`` time budget, one thread, seeds ``SEEDS``:
once with the default trial budget (20), and once with 1,000, so that the time budget is
what stops it (its wall time shows whether the budget held, refit included). Reported per
run: the chosen family, the cross-validation score, the score on the rows held out of the
search and the refit (the evaluator's view), and the wall time against the budget.

Usage: python -m bench.budget [TRIAL_BUDGET ...]    (writes bench/results/budget.json)
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
from sklearn.datasets import load_wine, make_friedman1
from sklearn.metrics import get_scorer
from threadpoolctl import threadpool_limits

from lepton.data.modeling import holdout_split, labelled, model_input
from lepton.services.trainer.training import SearchConfig, train

RESULTS = Path(__file__).parent / "results" / "budget.json"
TIME_BUDGET_S = 60.0
SEEDS = (0,)
TRIAL_BUDGETS = (20, 1000)  # the default, and more than fit in the time budget


def friedman1() -> pd.DataFrame:
    X, y = make_friedman1(n_samples=2000, noise=1.0, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    return frame.assign(y=y)


def wine() -> pd.DataFrame:
    frame: pd.DataFrame = load_wine(as_frame=True).frame
    return frame.rename(columns={"target": "y"})


def measure(
    name: str, frame: pd.DataFrame, problem: str, seed: int, trial_budget: int
) -> dict[str, object]:
    config = SearchConfig(
        target_column="y", time_budget_s=TIME_BUDGET_S, trial_budget=trial_budget, seed=seed
    )
    with threadpool_limits(limits=1):
        began = time.perf_counter()
        result = train(frame, config)
        wall = time.perf_counter() - began
    X, y = labelled(frame, "y", [c for c in frame.columns if c != "y"])
    _, held = holdout_split(y, problem, config.holdout_fraction, seed)
    scorer = get_scorer(result.scoring)
    held_score = float(scorer(result.pipeline, model_input(X.iloc[held]), y[held]))
    return {
        "dataset": name,
        "seed": seed,
        "trial_budget": trial_budget,
        "family": result.family,
        "scoring": result.scoring,
        "trials": len(result.trials),
        "cv_score": result.cv_score,
        "held_out_score": held_score,
        "wall_s": wall,
        "time_budget_s": TIME_BUDGET_S,
    }


def main() -> None:
    warnings.filterwarnings("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budgets = [int(arg) for arg in sys.argv[1:]] or list(TRIAL_BUDGETS)
    rows = [
        measure(name, data(), problem, seed, trial_budget)
        for trial_budget in budgets
        for name, data, problem in (
            ("friedman1", friedman1, "regression"),
            ("wine", wine, "multiclass"),
        )
        for seed in SEEDS
    ]
    header = f"{'dataset':<11}{'seed':>5}{'budget':>7}{'family':>24}{'trials':>7}{'cv':>8}"
    print(f"{header}{'held-out':>10}{'wall s':>8}")
    for row in rows:
        print(
            f"{row['dataset']:<11}{row['seed']:>5}{row['trial_budget']:>7}{row['family']:>24}"
            f"{row['trials']:>7}"
            f"{row['cv_score']:>8.4f}{row['held_out_score']:>10.4f}{row['wall_s']:>8.1f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "budget", "python": sys.version.split()[0], "runs": rows}
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
