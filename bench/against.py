"""Compare benchmarks at another git revision with the working tree, runs alternated.

    .venv/bin/python -m bench.against REV [--runs 3] [--bench NAME ...] [-- extra args]

REV is checked out into a temporary ``git worktree`` under /tmp; each named benchmark
(default: the Makefile's ``BENCHES``) then runs as ``python -m bench.<name> [extra args]``
with this interpreter, alternately in REV's tree and in the working tree (baseline,
current, baseline, current, ...), so that load from anything else on the machine falls on
both alike. Each run has its own tree on ``PYTHONPATH`` and as its working directory, so
it imports its own ``lepton``, ``services`` and ``bench``; both find the same local stack
(``lepton stack up``) through the state directory. The extra args go to every named
benchmark, so name one benchmark when passing them.

Every numeric figure of each run's ``bench/results/<name>.json`` is kept (nested keys
flattened; list items named by their first distinguishing field), and a table gives, per
figure that varied: the baseline's and the current mean [min-max], current / baseline,
and whether the two ranges overlap. Written to ``bench/results/against-<name>.json``; the
raw JSON and log of every run stay in a directory under /tmp, named in that file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CURRENT = Path(__file__).resolve().parents[1]
RESULTS = CURRENT / "bench" / "results"


@dataclass
class Side:
    """One revision's tree and what its runs produced."""

    label: str
    tree: Path
    commit: str
    runs: list[dict[str, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def _git(*args: str, cwd: Path = CURRENT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_benches() -> list[str]:
    """The Makefile's ``BENCHES``: the one list of benchmarks."""
    found = re.search(r"^BENCHES \?= (.+)$", (CURRENT / "Makefile").read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit("no `BENCHES ?=` line in the Makefile: name benchmarks with --bench")
    return found.group(1).split()


@contextmanager
def checked_out(rev: str) -> Iterator[Path]:
    """REV in a detached worktree under /tmp, removed afterwards."""
    tree = Path(tempfile.mkdtemp(prefix="lepton-against-")) / "tree"
    _git("worktree", "add", "--detach", str(tree), rev)
    try:
        yield tree
    finally:
        _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tree.parent, ignore_errors=True)


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves by dotted path; booleans and strings are dropped."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix: float(value)}
    if isinstance(value, dict):
        items = [(str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"[{name}]", item) for name, item in zip(_item_names(value), value, strict=True)]
    else:
        return {}
    found: dict[str, float] = {}
    for key, item in items:
        path = f"{prefix}{key}" if key.startswith("[") or not prefix else f"{prefix}.{key}"
        found.update(flatten(item, path))
    return found


def _item_names(items: list[Any]) -> list[str]:
    """Names for list items: their first scalar field whose values all differ (``nodes``,
    ``name``, ``seed``...), so that a figure keeps its name if the list's order changes;
    else their indexes."""
    if items and all(isinstance(item, dict) for item in items):
        for key in items[0]:
            values = [item.get(key) for item in items]
            scalars = all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
            if scalars and len(set(values)) == len(values):
                return [f"{key}={v}" for v in values]
    return [str(index) for index in range(len(items))]


def run_once(side: Side, bench: str, extra: list[str], keep: Path, timeout: float) -> None:
    """One run of ``bench`` in ``side``'s tree; its figures or its failure are appended."""
    number = len(side.runs) + len(side.failures) + 1
    result = side.tree / "bench" / "results" / f"{bench}.json"
    result.unlink(missing_ok=True)  # a result left by an earlier run must not pass for this one's
    log = keep / f"{side.label}-{number}.log"
    environment = os.environ | {"PYTHONPATH": str(side.tree)}
    command = [sys.executable, "-m", f"bench.{bench}", *extra]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    print(f"  {side.label} #{number} ({side.commit[:9]}), load {load:.1f} ...", end="", flush=True)
    with log.open("w") as output:
        try:
            done = subprocess.run(
                command,
                cwd=side.tree,
                env=environment,
                stdout=output,
                stderr=output,
                timeout=timeout,
            )
            failure = f"exit {done.returncode}" if done.returncode else ""
        except subprocess.TimeoutExpired:
            failure = f"timed out after {timeout:.0f} s"
    elapsed = time.perf_counter() - started
    if not failure and not result.exists():
        failure = f"wrote no {result.name}"
    if failure:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        side.failures.append(f"run {number}: {failure}; {' | '.join(tail)} (log {log})")
        print(f" FAILED ({failure}, {elapsed:.0f} s); log {log}")
        return
    copy = keep / f"{side.label}-{number}.json"
    shutil.copyfile(result, copy)
    figures = flatten(json.loads(copy.read_text()))
    figures["against.wall_s"] = round(elapsed, 1)
    figures["against.load_before"] = load
    side.runs.append(figures)
    print(f" {elapsed:.0f} s")


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def compare(baseline: Side, current: Side) -> dict[str, dict[str, Any]]:
    """Per figure present in both sides' runs and not constant across all of them."""
    names = [name for name in baseline.runs[0] if all(name in r for r in baseline.runs)]
    compared: dict[str, dict[str, Any]] = {}
    for name in names:
        if not all(name in run for run in current.runs):
            continue
        old = [run[name] for run in baseline.runs]
        new = [run[name] for run in current.runs]
        if len(set(old + new)) == 1:
            continue
        before, after = _spread(old), _spread(new)
        if after["min"] > before["max"]:
            ranges = "current higher"
        elif after["max"] < before["min"]:
            ranges = "current lower"
        else:
            ranges = "overlap"
        compared[name] = {
            "baseline": old,
            "current": new,
            "baseline_spread": before,
            "current_spread": after,
            "ratio": after["mean"] / before["mean"] if before["mean"] else None,
            "ranges": ranges,
        }
    return compared


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _shown(spread: dict[str, float]) -> str:
    return f"{_number(spread['mean'])} [{_number(spread['min'])}-{_number(spread['max'])}]"


def print_table(bench: str, compared: dict[str, dict[str, Any]]) -> None:
    rows = [("figure", "baseline mean [min-max]", "current mean [min-max]", "ratio", "ranges")]
    for name, entry in compared.items():
        ratio = "-" if entry["ratio"] is None else f"{entry['ratio']:.3f}"
        before, after = _shown(entry["baseline_spread"]), _shown(entry["current_spread"])
        rows.append((name, before, after, ratio, entry["ranges"]))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    print(f"\n{bench}: current / baseline")
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def against(rev: str, tree: Path, bench: str, runs: int, extra: list[str], timeout: float) -> None:
    keep = Path(tempfile.mkdtemp(prefix=f"lepton-against-{bench}-"))
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    baseline = Side("baseline", tree, _git("rev-parse", "HEAD", cwd=tree))
    current = Side("current", CURRENT, _git("rev-parse", "HEAD"))
    print(f"{bench}: {rev} against the working tree, {runs} runs each, args {extra}")
    for _ in range(runs):
        for side in (baseline, current):
            run_once(side, bench, extra, keep, timeout)
    compared = compare(baseline, current) if baseline.runs and current.runs else {}
    # A figure one side's JSON lacks (a renamed key) would otherwise vanish unnoticed.
    seen = [{*side.runs[0]} for side in (baseline, current) if side.runs]
    unmatched = sorted(seen[0] ^ seen[1]) if len(seen) == 2 else []
    if unmatched:
        print(f"{bench}: figures in one revision's JSON only: {', '.join(unmatched)}")
    for side in (baseline, current):
        for failure in side.failures:
            print(f"{bench} {side.label} {failure}")
    if compared:
        print_table(bench, compared)
    report = {
        "benchmark": bench,
        "baseline": {"rev": rev, "commit": baseline.commit, "failures": baseline.failures},
        "current": {"commit": current.commit, "dirty": dirty, "failures": current.failures},
        "args": extra,
        "runs": runs,
        "raw": str(keep),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "figures": compared,
        "unmatched": unmatched,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"against-{bench}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {path}; raw runs in {keep}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the baseline: a commit, branch or tag")
    parser.add_argument("--runs", type=int, default=3, help="runs of each revision")
    parser.add_argument("--bench", nargs="+", help="benchmarks (default: the Makefile's)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ours, extra = _split(sys.argv[1:])
    args = parser.parse_args(ours)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # A run stopped with SIGTERM still removes its worktree (the ``finally`` in checked_out).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    benches = args.bench or make_benches()
    if missing := [name for name in benches if not (CURRENT / "bench" / f"{name}.py").exists()]:
        parser.error(f"no such benchmark in bench/: {', '.join(missing)}")
    with checked_out(args.rev) as tree:
        for bench in benches:
            against(args.rev, tree, bench, args.runs, extra, args.timeout)


def _split(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and those after ``--`` for the benchmarks."""
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


if __name__ == "__main__":
    main()
