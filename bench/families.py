"""Benchmark: the tree families at their default parameters, as the trainer builds them.

LightGBM and extra-trees against scikit-learn's histogram gradient boosting, each the
estimator :func:`lepton.services.trainer.pipelines.make_estimator` makes (seed 0, one
thread), scored by 5-fold cross-validation on ``make_friedman1`` (1,000 rows, seed 0;
RMSE, lower is better) and scikit-learn's breast-cancer set (macro F1, the trainer's
classification default). One line per family and dataset: where a family stands before
any search.

Usage: python -m bench.families      (writes bench/results/families.json)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sklearn.datasets import load_breast_cancer, make_friedman1
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from lepton.services.trainer.pipelines import make_estimator

RESULTS = Path(__file__).parent / "results" / "families.json"
FAMILIES = ("lightgbm", "extra_trees", "hist_gradient_boosting")


def datasets() -> list[tuple[str, str, str, Any, Any, Any]]:
    """(name, problem, scoring, X, y, folds) of each dataset."""
    X, y = make_friedman1(n_samples=1000, random_state=0)
    cancer_X, cancer_y = load_breast_cancer(return_X_y=True)
    return [
        (
            "friedman1",
            "regression",
            "neg_root_mean_squared_error",
            X,
            y,
            KFold(5, shuffle=True, random_state=0),
        ),
        (
            "breast_cancer",
            "binary",
            "f1_macro",
            cancer_X,
            cancer_y,
            StratifiedKFold(5, shuffle=True, random_state=0),
        ),
    ]


def main() -> None:
    rows = []
    with threadpool_limits(limits=1):
        for name, problem, scoring, X, y, folds in datasets():
            for family in FAMILIES:
                began = time.perf_counter()
                scores = cross_val_score(
                    make_estimator(family, problem, 0, 1), X, y, scoring=scoring, cv=folds
                )
                seconds = time.perf_counter() - began
                # RMSE is scored negated (greater is better); shown as the error itself.
                mean = -scores.mean() if scoring.startswith("neg_") else scores.mean()
                metric = scoring.removeprefix("neg_")
                print(
                    f"{name:<14}{family:<24}{metric:<24}{mean:8.4f} ± {scores.std():.4f}"
                    f"{seconds:8.1f} s"
                )
                rows.append(
                    {
                        "dataset": name,
                        "family": family,
                        "metric": metric,
                        "mean": float(mean),
                        "std": float(scores.std()),
                        "folds": [float(s) for s in scores],
                        "seconds": seconds,
                    }
                )
    RESULTS.write_text(json.dumps({"benchmark": "families", "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
