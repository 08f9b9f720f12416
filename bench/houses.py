"""The messy house table of issue 21 as the benchmarks use it: generated, ingested without
a spec by the ingest service's own ``Pipeline``, and the rows and question it is scored on.

Shared by ``bench.messy_houses`` (several seeds of ``auto``) and ``bench.automl`` (``auto``
against FLAML and untuned baselines).
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lepton.data.modeling import model_input
from lepton.data.samples import house_price, messy_houses
from lepton.services.ingest.input_bounds import Bounds
from lepton.services.ingest.pipeline import Integration, Pipeline
from lepton.services.ingest.source_limits import Limits, resolve_location
from lepton.services.ingest.sources import SourceReader, SourceRequest

TARGET = "价格"
# What the seed document asks: a 150 m² 普通住宅 in B区 (the pricing rule says 12,000).
TRUTH = house_price(150.0, "普通住宅", "B区")


def ingested() -> pd.DataFrame:
    """The table ``lepton data generate messy-houses`` writes, as ingest stores it without a
    spec (no Kafka, no PostgreSQL: the cleaned rows are read back from the canonical CSV)."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        messy_houses().to_csv(root / "houses.csv", index=False)
        bounds = Bounds(1 << 20, 1000, 10**9, 256, 10_000, 1024, 200)
        limits = Limits((root,), frozenset(), 10**8, 50.0, 1 << 20, 100_000, bounds)
        uri = str(root / "houses.csv")
        reader = SourceReader(
            SourceRequest("s", "csv", uri, None, {}),
            resolve_location(uri, limits, "s"),
            limits,
            "csv",
        )
        pipeline = Pipeline(
            [reader],
            None,
            Integration(),
            stats_sample_rows=100_000,
            max_join_rows=0,
            max_reject_fraction=0.5,
            bounds=bounds,
        )
        outcome = pipeline.prepare()
        rows = b"".join(piece.copy_csv for piece in pipeline.pieces())
    return pd.read_csv(io.BytesIO(rows), header=None, names=[n for n, _ in outcome.columns])


def held_out() -> tuple[pd.DataFrame, np.ndarray]:
    """300 fresh clean rows of the same pricing rule (another seed): features as a stored
    pipeline takes them, and their prices."""
    test = messy_houses(seed=99).iloc[:300]
    features = model_input(test.drop(columns=[TARGET]).astype({"面积": float, "房屋ID": int}))
    return features, test[TARGET].astype(float).to_numpy()


def question() -> pd.DataFrame:
    """The seed document's house, with an id from the middle of the table's range."""
    return model_input(
        pd.DataFrame(
            {"房屋ID": [150], "面积": [150.0], "房屋类型": ["普通住宅"], "地理位置": ["B区"]}
        )
    )
