"""Datasets for tests, demos and benchmarks, generated (never downloaded) and seeded.

- :func:`house_prices`: the seed document's messy house-price table (面积 m², 房型, 区域,
  价格) with duplicates, missing values, wrong types and an outlier.
- :func:`messy_houses`: the house table with the seed's own headers and every kind of dirt
  issue 21 measured (an identifier, a negative area, a formula, a 1e8 price, ...), and
  :func:`house_price`, the rule that generates its prices.
- :func:`diagnosis`: scikit-learn's breast-cancer data as a diagnosis table.
- :func:`fraud`: card transactions with rare fraudulent ones (about 0.5 %).
- :func:`write_messy_csv`: a large messy CSV streamed to disk chunk by chunk.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "HOUSE_DISTRICTS",
    "HOUSE_TYPES",
    "diagnosis",
    "fraud",
    "house_price",
    "house_prices",
    "messy_houses",
    "write_messy_csv",
]

HOUSE_TYPES = ("普通住宅", "公寓", "别墅")
HOUSE_DISTRICTS = ("A区", "B区", "C区")
_TYPE_FACTOR = {"普通住宅": 1.0, "公寓": 0.8, "别墅": 1.9}
_DISTRICT_PRICE = {"A区": 62_000.0, "B区": 45_000.0, "C区": 30_000.0}  # yuan per m²


def house_prices(rows: int = 200, seed: int = 7) -> pd.DataFrame:
    """A messy listing table, every column as text, as a spreadsheet export would give it.

    Defects, at known places so tests can count them: rows 0-4 are repeated at the end
    (5 duplicates); 面积 is missing in rows 10 and 11; 面积 of row 12 is '一百二十' (a wrong
    type); 价格 of row 13 is 1e9 (an outlier); 区域 of row 14 is missing.
    """
    if rows < 20:
        raise ValueError("house_prices needs at least 20 rows to place its defects")
    rng = np.random.default_rng(seed)
    area = rng.uniform(35, 260, rows).round(1)
    kind = rng.choice(HOUSE_TYPES, rows, p=[0.6, 0.3, 0.1])
    district = rng.choice(HOUSE_DISTRICTS, rows)
    unit = np.array(
        [_DISTRICT_PRICE[d] * _TYPE_FACTOR[k] for d, k in zip(district, kind, strict=True)]
    )
    price = (area * unit * rng.normal(1.0, 0.08, rows)).round(-3)
    frame = pd.DataFrame(
        {
            "面积": [f"{value:.1f}" for value in area],
            "房型": kind,
            "区域": district,
            "价格": [f"{value:.0f}" for value in price],
        }
    ).astype(object)
    frame.loc[[10, 11], "面积"] = None
    frame.loc[12, "面积"] = "一百二十"
    frame.loc[13, "价格"] = "1000000000"
    frame.loc[14, "区域"] = None
    return pd.concat([frame, frame.iloc[:5]], ignore_index=True)


# The messy table's pricing rule (price per m² by district, times a factor by type), so
# that a 150 m² 普通住宅 in B区 costs 12,000.
_MESSY_UNIT = {"A区": 110.0, "B区": 80.0, "C区": 55.0}
_MESSY_FACTOR = {"普通住宅": 1.0, "公寓": 0.85, "别墅": 1.6}
MESSY_FORMULA = '=HYPERLINK("http://example.invalid","普通住宅")'


def house_price(area: float, kind: str, district: str) -> float:
    """The price :func:`messy_houses` generates for a house, before its noise."""
    return area * _MESSY_UNIT[district] * _MESSY_FACTOR[kind]


def messy_houses(rows: int = 300, seed: int = 21) -> pd.DataFrame:
    """A house table with the seed's headers (房屋ID, 面积, 房屋类型, 地理位置, 价格) as a
    spreadsheet export gives it (every value text): ``rows`` clean rows priced by
    :func:`house_price` with 5 % noise, then, after them, two duplicates of clean rows and
    one row per defect: a missing 面积, 面积 in words, a missing 地理位置, a negative 面积, a
    formula as 房屋类型 and a 价格 of 99,999,999. 房屋ID numbers the rows (an identifier
    that says nothing about the price)."""
    if rows < 20:
        raise ValueError("messy_houses needs at least 20 rows")
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 220, rows).round(1)
    kind = rng.choice(list(_MESSY_FACTOR), rows, p=[0.6, 0.3, 0.1])
    district = rng.choice(list(_MESSY_UNIT), rows)
    noise = rng.normal(1.0, 0.05, rows)
    price = [
        house_price(a, k, d) * n for a, k, d, n in zip(area, kind, district, noise, strict=True)
    ]
    clean = pd.DataFrame(
        {
            "面积": [f"{value:.1f}" for value in area],
            "房屋类型": kind,
            "地理位置": district,
            "价格": [f"{value:.0f}" for value in price],
        }
    ).astype(object)
    dirty = clean.iloc[[0, 1, 2, 3, 4, 5, 6, 7]].copy()
    dirty.iloc[2, 0] = None  # a missing area
    dirty.iloc[3, 0] = "一百二十"  # an area in words
    dirty.iloc[4, 2] = None  # a missing district
    dirty.iloc[5, 0] = "-85.0"  # a negative area
    dirty.iloc[6, 1] = MESSY_FORMULA  # a formula as a category
    dirty.iloc[7, 3] = "99999999"  # an absurd price
    frame = pd.concat([clean, dirty], ignore_index=True)
    ids = [str(i + 1) for i in range(len(frame))]
    ids[rows], ids[rows + 1] = "1", "2"  # the duplicates repeat their rows whole
    frame.insert(0, "房屋ID", ids)
    return frame


def diagnosis() -> pd.DataFrame:
    """Breast-cancer diagnoses (569 patients, 30 measurements, ``diagnosis`` 1 = malignant)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    frame: pd.DataFrame = data.frame.rename(columns=lambda name: str(name).replace(" ", "_"))
    frame = frame.rename(columns={"target": "benign"})
    frame.insert(0, "patient_id", [f"P{i:05d}" for i in range(len(frame))])
    frame["diagnosis"] = 1 - frame.pop("benign")
    return frame


def fraud(rows: int = 20_000, seed: int = 11, rate: float = 0.005) -> pd.DataFrame:
    """Card transactions: amount, hour, merchant category, distance from home, ``is_fraud``.

    Fraud is rare (``rate``) and shows as larger amounts at night far from home.
    """
    rng = np.random.default_rng(seed)
    is_fraud = rng.random(rows) < rate
    amount = np.where(is_fraud, rng.lognormal(6.0, 1.0, rows), rng.lognormal(3.5, 1.0, rows))
    hour = np.where(is_fraud, rng.choice([0, 1, 2, 3, 23], rows), rng.integers(7, 23, rows))
    distance = np.where(is_fraud, rng.exponential(300.0, rows), rng.exponential(8.0, rows))
    merchant = rng.choice(["grocery", "fuel", "online", "travel", "dining"], rows)
    return pd.DataFrame(
        {
            "transaction_id": [f"T{i:08d}" for i in range(rows)],
            "amount": amount.round(2),
            "hour": hour,
            "merchant": merchant,
            "distance_km": distance.round(1),
            "is_fraud": is_fraud.astype(int),
        }
    )


def write_messy_csv(path: Path, rows: int, *, seed: int = 3, chunk_rows: int = 200_000) -> None:
    """A house-price style CSV of ``rows`` rows, written chunk by chunk (bounded memory).

    About 2 % of rows repeat an earlier row of their chunk, 1 % miss 面积, 0.2 % have a
    non-numeric 面积 and 0.01 % an outlying 价格.
    """
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("id,面积,房型,区域,价格,备注\n")
        written = 0
        while written < rows:
            n = min(chunk_rows, rows - written)
            ids = np.arange(written, written + n)
            area = rng.uniform(35, 260, n).round(1).astype(str).astype(object)
            area[rng.random(n) < 0.01] = ""
            area[rng.random(n) < 0.002] = "n/a?"
            kind = rng.choice(HOUSE_TYPES, n)
            district = rng.choice(HOUSE_DISTRICTS, n)
            price = rng.normal(5e6, 1.5e6, n).round(-3)
            price[rng.random(n) < 0.0001] = 9e11
            note = rng.choice(["无", "南北通透", "近地铁", "满五唯一"], n)
            frame = pd.DataFrame(
                {
                    "id": ids,
                    "面积": area,
                    "房型": kind,
                    "区域": district,
                    "价格": price,
                    "备注": note,
                }
            )
            repeat = rng.random(n) < 0.02
            sources = rng.integers(0, n, int(repeat.sum()))
            frame.iloc[np.flatnonzero(repeat)] = frame.iloc[sources].to_numpy()
            frame.to_csv(out, header=False, index=False)
            written += n
