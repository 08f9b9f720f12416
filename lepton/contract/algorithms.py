"""What a job can ask for: task kinds, problem types and algorithm families.

Declared once here: the scheduler validates job requests against it, the trainer maps
each family to an estimator, and the CLI offers the same names.
"""

from __future__ import annotations

__all__ = ["ALGORITHMS", "AUTO", "PROBLEM_TYPES", "TASK_KINDS"]

TASK_KINDS = ("train", "evaluate", "predict")
PROBLEM_TYPES = ("regression", "binary", "multiclass")
AUTO = "auto"
# Families the trainer can fit; "auto" searches across the ones that suit the problem.
ALGORITHMS = (
    AUTO,
    "linear_regression",
    "ridge",
    "lasso",
    "logistic_regression",
    "svm",
    "random_forest",
    "extra_trees",
    "hist_gradient_boosting",
    "lightgbm",
    "knn",
)
