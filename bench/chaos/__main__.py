"""Run the chaos matrix: ``python -m bench.chaos [--short] [--seed N] [--runs N] [--faults PAT]``.

Prints the table and writes ``bench/results/chaos.json`` (``--out``). See
:mod:`bench.chaos` for what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import json
import platform
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.chaos import faults, matrix, stack, workload
from lepton.contract.identity import IdentityKey

if TYPE_CHECKING:
    from collections.abc import Sequence

RESULTS = Path(__file__).resolve().parents[1] / "results" / "chaos.json"


def _options(short: bool, hostile_mib: int | None) -> faults.Options:
    return faults.Options(
        window_s=10 if short else 20,
        ingest_every_s=2.0 if short else 1.0,
        job_every_s=5.0 if short else 3.0,
        settle_s=60 if short else 120,
        recover_timeout_s=60 if short else 120,
        hostile_mib=hostile_mib or (256 if short else 1024),
        garbage_per_topic=2 if short else 10,
        mixed_s=600,
        mixed_job_every_s=12.0,
    )


async def _base_datasets(work: workload.Workload, ledger: workload.Ledger) -> None:
    """The dataset every job trains on, once per tenant, before any fault."""
    for tenant in workload.TENANTS:
        request = await work.ingest("setup", dataset=workload.BASE_DATASET, tenant=tenant)
        assert request is not None, "the broker did not acknowledge the setup ingest"
    if not await ledger.until_settled("setup", 180, ("ingest",)):
        raise RuntimeError("the base datasets were not ingested within 180 s")


async def run_matrix(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    options = _options(args.short, args.hostile_mib)
    entries = [
        e
        for e in matrix.matrix(full=not args.short)
        if not args.faults or any(fnmatch.fnmatch(e.name, p) for p in args.faults.split(","))
    ]
    rng = random.Random(args.seed)
    outcomes: list[faults.Outcome] = []
    async with stack.private_servers(root) as (settings, identity_text):
        running = await stack.start_services(settings, identity_text, root)
        identity = IdentityKey.from_text(identity_text)
        ledger = workload.Ledger()
        background = [
            asyncio.create_task(workload.record(running.kafka(), identity, ledger)),
            asyncio.create_task(stack.sample_memory(running)),
            asyncio.create_task(running.supervision.watch()),
        ]
        try:
            async with workload.Workload(
                running.kafka(), identity, running.inbox, ledger, random.Random(args.seed)
            ) as work:
                await _base_datasets(work, ledger)
                chaos = faults.Chaos(running, work, ledger, rng, options)
                for entry in entries:
                    for index in range(1 if entry.mixed else args.runs):
                        print(f"chaos: {entry.name} #{index} ...", file=sys.stderr, flush=True)
                        outcomes.append(await matrix.run_entry(chaos, entry, index))
                # Late duplicates (a fenced trainer's results) arrive after their runs.
                await asyncio.sleep(5)
                for outcome in outcomes:
                    matrix.judge(chaos, outcome)
        finally:
            for task in background:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*background, return_exceptions=True)
            await stack.stop_services(running)
    return {
        "seed": args.seed,
        "form": "short" if args.short else "full",
        "runs": args.runs,
        "options": {name: getattr(options, name) for name in options.__dataclass_fields__},
        "supervision": running.supervision.note(),
        "commit": _commit(),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "outcomes": [o.as_json() for o in outcomes],
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _commit() -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


def table(result: dict[str, Any]) -> str:
    """One row per fault (its runs summed; recovery and RSS their worst), then the notes."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for outcome in result["outcomes"]:
        rows.setdefault(outcome["fault"], []).append(outcome)
    header = (
        f"{'fault':<26} {'runs':>4} {'submitted':>9} {'completed':>9} {'lost':>4} "
        f"{'dup':>4} {'recover s':>9} {'peak RSS MiB':>20}  result"
    )
    lines = [header, "-" * len(header)]
    notes = []
    for fault, runs in rows.items():
        recovered = [r["recover_s"] for r in runs]
        worst = "never" if None in recovered else f"{max(recovered):.1f}"
        peaks = [(mib, name) for r in runs for name, mib in r["peak_rss_mib"].items()]
        mib, name = max(peaks) if peaks else (0.0, "-")
        failed = sorted({c for r in runs for c, ok in r["checks"].items() if not ok})
        statuses = sorted({r["status"] for r in runs if r["status"] != "ran"})
        verdict = "; ".join(statuses) or ("FAIL: " + ", ".join(failed) if failed else "pass")
        lines.append(
            f"{fault:<26} {len(runs):>4} {sum(r['submitted'] for r in runs):>9} "
            f"{sum(r['completed'] for r in runs):>9} {sum(r['lost'] for r in runs):>4} "
            f"{sum(r['duplicated'] for r in runs):>4} {worst:>9} "
            f"{f'{mib:.0f} {name}':>20}  {verdict}"
        )
        notes += [f"  {r['run']}: " + " | ".join(r["notes"]) for r in runs if r["notes"]]
    return "\n".join([*lines, "", "notes:", *notes, "", f"({result['supervision']})"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--seed", type=int, default=17, help="draws every fault point")
    parser.add_argument("--runs", type=int, default=3, help="runs of each fault")
    parser.add_argument(
        "--short", action="store_true", help="CI form: one run each, small load, no long outages"
    )
    parser.add_argument("--faults", help="comma-separated name patterns (fnmatch) to run")
    parser.add_argument("--hostile-mib", type=int, help="size of the bombs and the long line")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the state dir and logs")
    args = parser.parse_args(argv)
    if args.short:
        args.runs = 1
    root = Path(tempfile.mkdtemp(prefix="lepton-chaos-"))
    try:
        result = asyncio.run(run_matrix(args, root))
    finally:
        if args.keep:
            print(f"chaos: state and service logs kept in {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
