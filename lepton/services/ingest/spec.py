"""The dataset spec: what a request declares about its columns and how to clean them.

A spec is JSON (or YAML) text, validated by pydantic models that forbid unknown keys, so a
typo is an error rather than a silently ignored rule. Without a spec, :func:`infer_spec`
derives one from the first chunk of each source and the service records it with the
version. No I/O here.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from lepton.contract.names import InvalidField, check_name

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "NUMERIC",
    "RARE_MIN_VALUES",
    "ColumnSpec",
    "DatasetSpec",
    "IngestRejected",
    "LogicalType",
    "Outliers",
    "check_names",
    "infer_type",
    "parse_spec",
]

# A column needs this many non-null values before its rare values count as junk.
RARE_MIN_VALUES = 100

LogicalType = Literal["integer", "float", "string", "boolean", "datetime", "category"]
NUMERIC: frozenset[str] = frozenset({"integer", "float"})

# A column is inferred as a type when this share of its non-null values parse as it: a
# few wrong values then become rejects instead of turning the whole column into text.
_INFER_MIN_SHARE = 0.9
_CATEGORY_MAX_DISTINCT = 50
_CATEGORY_MAX_SHARE = 0.2
_TRUE = frozenset({"true", "t", "yes", "y"})
_FALSE = frozenset({"false", "f", "no", "n"})


class IngestRejected(Exception):
    """Input the service must refuse: becomes a ``lepton.data.rejected`` event."""

    def __init__(
        self,
        code: str,
        reason: str,
        *,
        source: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.source = source
        self.column = column
        self.row = row


class Outliers(BaseModel):
    """Values far from the rest of their column: flagged (a boolean column beside it) or
    dropped (the row becomes a reject with the reason, kept in the rejects table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["iqr", "zscore", "mad"]
    action: Literal["flag", "drop"] = "flag"
    # IQR multiplier (1.5), z-score (3.0) or robust z-score (3.5): |x - median| over
    # 1.4826 x the median absolute deviation, a z-score that outliers cannot inflate.
    threshold: float | None = None
    # "both": a value is outside only when it is far on the linear scale and also on a
    # log scale (of the positive values), for a non-negative column (prices, amounts,
    # lab measurements): its long tail is data, an absurd value is far on both.
    scale: Literal["linear", "both"] = "linear"

    @model_validator(mode="after")
    def _both_is_robust(self) -> Outliers:
        if self.scale == "both" and self.method != "mad":
            raise ValueError("scale: both needs method: mad")
        return self

    @property
    def limit(self) -> float:
        if self.threshold is not None:
            return self.threshold
        return {"iqr": 1.5, "zscore": 3.0, "mad": 3.5}[self.method]


class ColumnSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: LogicalType = "string"
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    pattern: str | None = None
    sensitive: bool = False
    missing: Literal["keep", "drop", "constant", "median", "mode"] = "keep"
    fill: str | float | bool | None = None
    outliers: Outliers | None = None
    # A text value a spreadsheet would run as a formula (OWASP CSV injection: it starts
    # with =, +, -, @, a tab or a carriage return, and is not a plain number): prefixed
    # with ' so that it stays text wherever the data is opened, or rejected.
    formulas: Literal["keep", "neutralise", "reject"] = "keep"
    # A value that at most this many rows hold (over the whole dataset) is a reject, in a
    # column of at least RARE_MIN_VALUES values: junk among a few categories.
    rare: int | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        numeric = self.type in NUMERIC
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max need a numeric type, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.categories is not None and self.type not in ("category", "string"):
            raise ValueError(f"categories need type category or string, not {self.type}")
        if self.pattern is not None:
            if self.type not in ("category", "string"):
                raise ValueError(f"pattern needs type string or category, not {self.type}")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(
                    f"pattern {self.pattern!r} is not a regular expression: {exc}"
                ) from None
        if self.missing == "median" and not numeric:
            raise ValueError(f"missing: median needs a numeric type, not {self.type}")
        if self.missing == "constant" and self.fill is None:
            raise ValueError("missing: constant needs fill")
        if self.outliers is not None and not numeric:
            raise ValueError(f"outliers need a numeric type, not {self.type}")
        text = self.type in ("category", "string")
        if self.formulas != "keep" and not text:
            raise ValueError(f"formulas need type string or category, not {self.type}")
        if self.rare is not None and not (text and self.rare >= 1):
            raise ValueError("rare needs type string or category and a count of at least 1")
        return self


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, ColumnSpec]
    unique: list[str] = []
    dedupe: Literal["none", "exact", "key"] = "exact"
    extra_columns: Literal["keep", "drop"] = "keep"

    @model_validator(mode="after")
    def _keys_exist(self) -> DatasetSpec:
        unknown = [name for name in self.unique if name not in self.columns]
        if unknown:
            raise ValueError(f"unique names columns the spec does not declare: {unknown}")
        if self.dedupe == "key" and not self.unique:
            raise ValueError("dedupe: key needs unique key columns")
        return self

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_defaults=True), ensure_ascii=False)


def check_names(request: Mapping[str, Any]) -> None:
    """The request's tenant and dataset are names (:mod:`lepton.contract.names`), or
    ``spec_invalid`` naming the field."""
    try:
        check_name(request["tenant"], "tenant")
        check_name(request["dataset"], "dataset")
    except InvalidField as exc:
        raise IngestRejected("spec_invalid", str(exc)) from None


def parse_spec(text: str) -> DatasetSpec:
    """The spec in a request (JSON, or YAML for people), or ``spec_invalid``."""
    try:
        data = json.loads(text)
    except ValueError:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise IngestRejected("spec_invalid", f"spec is neither JSON nor YAML: {exc}") from None
    if not isinstance(data, dict):
        raise IngestRejected("spec_invalid", "spec must be an object with a 'columns' mapping")
    try:
        return DatasetSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        column = (
            str(first["loc"][1]) if len(first["loc"]) > 1 and first["loc"][0] == "columns" else None
        )
        raise IngestRejected(
            "spec_invalid", f"spec {where or 'root'}: {first['msg']}", column=column
        ) from None


def infer_type(values: pd.Series) -> LogicalType:
    """The logical type most (90 %) of a column's non-null values have."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(values.dtype):
        return "integer"
    if pd.api.types.is_float_dtype(values.dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return "datetime"
    present = values.dropna()
    if len(present) == 0:
        return "string"
    if not all(isinstance(value, str) for value in present.head(1000)):
        return _infer_python_objects(present)
    text = present.astype(str).str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    parsed = numbers.notna().mean()
    if parsed >= _INFER_MIN_SHARE:
        whole = text[numbers.notna()].str.fullmatch(r"[+-]?\d+").all()
        return "integer" if whole else "float"
    lowered = text.str.lower()
    if lowered.isin(_TRUE | _FALSE).mean() >= _INFER_MIN_SHARE:
        return "boolean"
    dated = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=True)
    if dated.notna().mean() >= _INFER_MIN_SHARE and text.str.contains(r"\d{4}-\d{2}-\d{2}").all():
        return "datetime"
    distinct = text.nunique()
    if distinct <= _CATEGORY_MAX_DISTINCT and distinct <= max(1, len(text) * _CATEGORY_MAX_SHARE):
        return "category"
    return "string"


def _infer_python_objects(present: pd.Series) -> LogicalType:
    kinds = {type(value) for value in present.head(1000)}
    if kinds <= {bool}:
        return "boolean"
    if kinds <= {int}:
        return "integer"
    if kinds <= {int, float}:
        return "float"
    return infer_type(present.astype(str))
