"""Issue 21 item 1: without a spec, ingest cleans like a careful analyst, and says so.

The messy house table (the seed's headers, every kind of dirt the issue measured) goes
through the real pipeline with no spec; each rule has its own test, and the inferred spec
is an ordinary spec a user can edit and give back.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from lepton.data import samples
from lepton.data.samples import messy_houses
from lepton.services.ingest.cleaning import Quality
from lepton.services.ingest.pipeline import Outcome, Pipeline
from lepton.services.ingest.spec import ColumnSpec, parse_spec
from tests.unit.test_ingest_hostile_files import _pipeline


def _ingest(pipeline: Pipeline) -> tuple[Outcome, pd.DataFrame]:
    outcome = pipeline.prepare()
    rejects = [piece.rejects for piece in pipeline.pieces()]
    return outcome, pd.concat(rejects, ignore_index=True)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Outcome, pd.DataFrame]:
    root = tmp_path_factory.mktemp("messy")
    messy_houses().to_csv(root / "houses.csv", index=False)
    return _ingest(_pipeline(root, "houses.csv"))


def _rules(quality: Quality) -> dict[tuple[str, str | None], int]:
    return {(r["rule"], r["column"]): r["count"] for r in quality.summary()["rules"]}


def _rejected(rejects: pd.DataFrame, rule: str, column: str) -> pd.DataFrame:
    return rejects[(rejects["rule"] == rule) & (rejects["column_name"] == column)]


def test_an_absurd_price_is_quarantined_with_its_reason(
    messy: tuple[Outcome, pd.DataFrame],
) -> None:
    outcome, rejects = messy
    (row,) = _rejected(rejects, "outlier:mad", "价格").itertuples()
    assert "99999999" in row.reason
    assert "outside" in row.reason
    assert json.loads(row.raw)["价格"] == "99999999"  # kept whole in the rejects table
    assert _rules(outcome.quality)[("outlier:mad", "价格")] == 1
    assert "价格_outlier" not in [name for name, _ in outcome.columns]  # no flag feature


def test_a_negative_area_is_impossible_when_areas_are_otherwise_positive(
    messy: tuple[Outcome, pd.DataFrame],
) -> None:
    outcome, rejects = messy
    (row,) = _rejected(rejects, "range", "面积").itertuples()
    assert "-85" in row.reason
    assert "below 0" in row.reason
    assert outcome.spec.columns["面积"].min == 0


def test_a_formula_as_a_category_is_rejected_as_rare_junk(
    messy: tuple[Outcome, pd.DataFrame],
) -> None:
    _, rejects = messy
    (row,) = _rejected(rejects, "rare", "房屋类型").itertuples()
    assert "HYPERLINK" in row.reason
    assert "spreadsheet formula" in row.reason


def test_an_area_in_words_is_a_type_reject_and_the_text_numbers_are_numbers(
    messy: tuple[Outcome, pd.DataFrame],
) -> None:
    outcome, rejects = messy
    (row,) = _rejected(rejects, "type", "面积").itertuples()
    assert "一百二十" in row.reason
    assert outcome.spec.columns["面积"].type == "float"
    assert outcome.spec.columns["价格"].type == "integer"


def test_every_inferred_rule_is_in_the_quality_report(
    messy: tuple[Outcome, pd.DataFrame],
) -> None:
    outcome, rejects = messy
    rules = _rules(outcome.quality)
    assert rules[("dedupe", None)] == 2
    assert outcome.quality.rows_rejected == len(rejects) == 4
    assert outcome.rows == 308 - 2 - 4


def test_the_inferred_spec_is_a_spec_a_user_can_edit_and_give_back(
    messy: tuple[Outcome, pd.DataFrame], tmp_path: Path
) -> None:
    outcome, _ = messy
    assert outcome.inferred
    text = outcome.spec.to_json()
    assert parse_spec(text) == outcome.spec
    edited = json.loads(text)
    edited["columns"]["面积"]["outliers"]["threshold"] = 1.0  # stricter, by hand
    messy_houses().to_csv(tmp_path / "houses.csv", index=False)
    again, rejects = _ingest(_pipeline(tmp_path, "houses.csv", json.dumps(edited)))
    assert not again.inferred
    assert len(_rejected(rejects, "outlier:mad", "面积")) > 0


def test_a_text_column_neutralises_formulas_and_keeps_plain_numbers(tmp_path: Path) -> None:
    notes = ["quiet street", "-5", "+86 10 1234", "=1+1", "@SUM(A1)", "-cmd|' /C calc'!A0"]
    frame = pd.DataFrame({"note": [f"{n} {i}" if i else n for i, n in enumerate(notes * 10)]})
    frame.loc[1, "note"] = "-5"
    frame.to_csv(tmp_path / "notes.csv", index=False)
    pipeline = _pipeline(tmp_path, "notes.csv")
    outcome = pipeline.prepare()
    assert outcome.spec.columns["note"] == ColumnSpec(type="string", formulas="neutralise")
    stored = b"".join(piece.copy_csv for piece in pipeline.pieces()).decode()
    assert '"\'=1+1 3"' in stored
    assert '\n"-5"\n' in stored  # a plain number is no formula
    assert "'@SUM(A1) 4" in stored
    assert "'-cmd|" in stored
    assert not any(line.lstrip('"').startswith(("=", "@", "+")) for line in stored.splitlines())
    assert _rules(outcome.quality)[("formula:neutralise", "note")] > 0


def test_flags_and_codes_get_no_outlier_rule_and_signed_columns_no_min(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "flag": [0, 1] * 50,
            "balance": [float(i - 50) for i in range(100)],
        }
    ).to_csv(tmp_path / "t.csv", index=False)
    spec = _pipeline(tmp_path, "t.csv").prepare().spec
    assert spec.columns["flag"].outliers is None
    assert spec.columns["balance"].min is None
    assert spec.columns["balance"].outliers is not None
    assert spec.columns["balance"].outliers.scale == "linear"


@pytest.mark.parametrize("maker", [samples.fraud, samples.diagnosis])
def test_real_long_tails_keep_every_row(maker: Callable[[], pd.DataFrame], tmp_path: Path) -> None:
    # Card amounts span orders of magnitude and the large ones are the frauds; lab
    # measurements of tumours have long tails that are the malignant cases. A rule that
    # quarantined them would cut away what the model is for.
    maker().to_csv(tmp_path / "t.csv", index=False)
    pipeline = _pipeline(tmp_path, "t.csv")
    outcome = pipeline.prepare()
    for _ in pipeline.pieces():
        pass
    assert outcome.quality.rows_rejected == 0
    assert any(column.outliers is not None for column in outcome.spec.columns.values())


def test_a_wide_table_shares_one_bounded_budget_for_its_samples(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(60, 200)), columns=[f"c{i}" for i in range(200)]).to_csv(
        tmp_path / "wide.csv", index=False
    )
    pipeline = _pipeline(tmp_path, "wide.csv")  # stats_sample_rows=1000, 10 columns' worth
    spec = pipeline.prepare().spec
    stats = pipeline._stats(spec)
    assert len(stats) == 200  # every column has an outlier rule
    # 10 columns' worth of 1000 values shared by 200 columns, at least 100 each.
    assert {column.capacity for column in stats.values()} == {100}
