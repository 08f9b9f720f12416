"""The generated datasets have the defects and shapes their docstrings promise."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lepton.data.samples import (
    HOUSE_DISTRICTS,
    HOUSE_TYPES,
    diagnosis,
    fraud,
    house_prices,
    write_messy_csv,
)


def test_house_prices_is_messy_in_known_places() -> None:
    frame = house_prices(rows=100)
    assert list(frame.columns) == ["面积", "房型", "区域", "价格"]
    assert len(frame) == 105
    assert frame.duplicated().sum() == 5
    assert frame["面积"].isna().sum() == 2
    assert frame.loc[12, "面积"] == "一百二十"
    assert frame.loc[13, "价格"] == "1000000000"
    assert set(frame["房型"]) <= set(HOUSE_TYPES)
    assert set(frame["区域"].dropna()) <= set(HOUSE_DISTRICTS)
    assert house_prices(rows=100).equals(frame)


def test_diagnosis_and_fraud() -> None:
    patients = diagnosis()
    assert patients.shape == (569, 32)
    assert set(patients["diagnosis"]) == {0, 1}
    transactions = fraud(rows=20_000)
    assert 0.002 < transactions["is_fraud"].mean() < 0.01
    assert transactions.loc[transactions["is_fraud"] == 1, "amount"].median() > (
        transactions.loc[transactions["is_fraud"] == 0, "amount"].median()
    )


def test_messy_csv_streams_the_requested_rows(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    write_messy_csv(path, 25_000, chunk_rows=10_000)
    frame = pd.read_csv(path)
    assert len(frame) == 25_000
    assert frame.duplicated().sum() > 0
    assert frame["面积"].isna().sum() > 0
