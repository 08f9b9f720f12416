"""bench.against's bookkeeping: which figures a result JSON yields and how two revisions'
runs compare (no benchmark is run)."""

from __future__ import annotations

from pathlib import Path

from bench.against import Side, compare, flatten


def test_flatten_names_list_items_by_their_distinguishing_field() -> None:
    report = {
        "benchmark": "x",
        "ok": True,
        "results": [
            {"nodes": 1000, "kind": "a", "cold": {"decisions_per_s": 10}},
            {"nodes": 10000, "kind": "a", "cold": {"decisions_per_s": 5.5}},
        ],
        "latency": [0.5, 0.7],
    }
    assert flatten(report) == {
        "results[nodes=1000].nodes": 1000.0,
        "results[nodes=1000].cold.decisions_per_s": 10.0,
        "results[nodes=10000].nodes": 10000.0,
        "results[nodes=10000].cold.decisions_per_s": 5.5,
        "latency[0]": 0.5,
        "latency[1]": 0.7,
    }


def test_flatten_falls_back_to_indexes_when_no_field_tells_items_apart() -> None:
    rows = [{"kind": "a", "v": 1}, {"kind": "a", "v": 1}]
    assert flatten({"rows": rows}) == {"rows[0].v": 1.0, "rows[1].v": 1.0}


def _side(label: str, runs: list[dict[str, float]]) -> Side:
    return Side(label, Path("."), "0" * 40, runs=runs)


def test_compare_reports_ratio_and_whether_ranges_overlap() -> None:
    baseline = _side(
        "baseline", [{"rate": 100, "same": 1, "p99": 10}, {"rate": 120, "same": 1, "p99": 12}]
    )
    current = _side(
        "current", [{"rate": 130, "same": 1, "p99": 11}, {"rate": 150, "same": 1, "p99": 9}]
    )
    compared = compare(baseline, current)
    assert set(compared) == {"rate", "p99"}  # a figure equal in every run is left out
    assert compared["rate"]["ranges"] == "current higher"
    assert compared["rate"]["ratio"] == 140 / 110
    assert compared["p99"]["ranges"] == "overlap"
    assert compared["p99"]["baseline_spread"] == {"mean": 11, "min": 10, "max": 12}


def test_compare_skips_figures_missing_from_a_run() -> None:
    baseline = _side("baseline", [{"a": 1, "b": 2}, {"a": 2}])
    current = _side("current", [{"a": 3, "b": 4}, {"a": 4, "b": 5}])
    assert set(compare(baseline, current)) == {"a"}
