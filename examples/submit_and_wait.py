"""Ingest a CSV, train a model on it and wait for the outcome, with the Python SDK.

Against a local stack with every service running::

    lepton stack up
    LEPTON_INGEST_ROOTS='["/tmp/lepton-data"]' lepton up
    mkdir -p /tmp/lepton-data && lepton data generate houses --out /tmp/lepton-data/houses.csv
    python examples/submit_and_wait.py /tmp/lepton-data/houses.csv --tenant demo --target 价格

The file must lie under one of the ingest service's ``LEPTON_INGEST_ROOTS``. The script
prints the dataset version, every event of the job as it happens, then the model.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from lepton import (
    DatasetRef,
    DatasetRequest,
    JobRequest,
    LeptonClient,
    Resources,
    Source,
    TrainingTask,
)


async def main(path: Path, tenant: str, dataset: str, target: str, trials: int) -> int:
    async with LeptonClient(tenant=tenant) as client:
        ready = await client.ingest(
            DatasetRequest(tenant=tenant, dataset=dataset, sources=[Source.file(path)])
        )
        print(f"dataset {dataset}: version {ready['version'][:19]}, {ready['rows']} rows")

        job_id = await client.submit(
            JobRequest(
                tenant=tenant,
                dataset=DatasetRef(name=dataset),
                task=TrainingTask(target_column=target, trial_budget=trials, cv_folds=3),
                demand=Resources.of(cpus=1, memory_mib=1024),
            )
        )
        print(f"submitted {job_id}")
        async for event in client.events(job_id):  # ends with the event that decides it
            progress = (
                f" {event.progress_percent:.0f}%" if event.progress_percent is not None else ""
            )
            print(f"  {event.kind}{progress} {event.stage or event.reason or ''}".rstrip())

        outcome = await client.wait(job_id, timeout_s=600)
        if outcome.model is None:
            print(f"{job_id}: {outcome.state}: {outcome.event.reason}")
            return 1
        model = outcome.model
        print(
            f"model {model['model_id']}: {model['algorithm']}, "
            f"{model['scoring']} {model['cv_score']:.3f} over {model['trials']} trials"
        )
        return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="a CSV file under LEPTON_INGEST_ROOTS")
    parser.add_argument("--tenant", default="demo")
    parser.add_argument("--dataset", default="houses")
    parser.add_argument("--target", default="价格", help="the column to predict")
    parser.add_argument("--trials", type=int, default=5, help="search trials")
    arguments = parser.parse_args()
    raise SystemExit(
        asyncio.run(
            main(
                arguments.csv,
                arguments.tenant,
                arguments.dataset,
                arguments.target,
                arguments.trials,
            )
        )
    )
