"""Peak memory of ingest's data path on a 100,000-column CSV (issue 17: it left ingest at
1.39 GB), in this process: the reader and the pipeline as the service runs them, no broker.

    PYTHONPATH=. .venv/bin/python -m bench.ingest_wide_memory [--columns 100000 --rows 3]

Prints the outcome (rows, or the rejection's code and reason) and the peak resident set
(``ru_maxrss``) against the resident set once the libraries are imported. It also runs
against older checkouts (``PYTHONPATH=<checkout>``), whose reader has no bounds, to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from lepton.services.ingest.pipeline import Integration, Pipeline
from lepton.services.ingest.settings import IngestSettings
from lepton.services.ingest.source_limits import Limits, resolve_location
from lepton.services.ingest.sources import SourceReader, SourceRequest
from lepton.services.ingest.spec import IngestRejected


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _bounds(settings: IngestSettings) -> dict[str, Any]:
    """The bounds keyword when this checkout has them (empty on older ones)."""
    if "bounds" not in {field.name for field in dataclasses.fields(Limits)}:
        return {}
    return {"bounds": settings.input_bounds()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--columns", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lepton-wide-") as directory:
        root = Path(directory)
        with (root / "wide.csv").open("w") as out:
            out.write(",".join(f"c{i}" for i in range(args.columns)) + "\n")
            for row in range(args.rows):
                out.write(",".join(str(row) for _ in range(args.columns)) + "\n")
        settings = IngestSettings(ingest_roots=[root])  # every limit at its default
        extra = _bounds(settings)
        limits = Limits(
            roots=(root,),
            remote_protocols=frozenset(),
            max_bytes=settings.ingest_max_file_bytes,
            max_ratio=settings.ingest_max_compression_ratio,
            chunk_bytes=settings.ingest_chunk_bytes,
            chunk_rows=settings.ingest_chunk_rows,
            **extra,
        )
        reader = SourceReader(
            SourceRequest("wide", "csv", "wide.csv", None, {}),
            resolve_location("wide.csv", limits, "wide"),
            limits,
            "csv",
        )
        options = {
            "stats_sample_rows": settings.ingest_stats_sample_rows,
            "max_join_rows": settings.ingest_max_join_rows,
            "max_reject_fraction": settings.ingest_max_reject_fraction,
            **extra,
        }
        accepted = inspect.signature(Pipeline).parameters
        pipeline = Pipeline(
            [reader],
            None,
            Integration(),
            **{key: value for key, value in options.items() if key in accepted},
        )
        baseline = _rss_mib()
        started = time.perf_counter()
        try:
            pipeline.prepare()
            rows = sum(piece.rows for piece in pipeline.pieces())
            outcome = f"stored {rows} rows"
        except IngestRejected as rejected:
            outcome = f"rejected {rejected.code}: {rejected.reason[:200]}"
        elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.columns} columns x {args.rows} rows: {outcome}")
    print(f"RSS after imports {baseline:.0f} MiB, peak {peak:.0f} MiB, {elapsed:.1f} s")


if __name__ == "__main__":
    main()
