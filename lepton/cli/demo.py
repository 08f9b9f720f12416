"""The seed's examples end to end, through the SDK: what ``make demo`` (``lepton demo``) runs.

For each example: write the bundled data set (made here, never downloaded) into the local
inbox, ingest and clean it, submit an ``auto`` training job, follow it to its model, wait
for the evaluator's metrics and champion-and-challenger verdict, then ask the champion
for a prediction. The house-price example answers the seed's own question: what does a
150 m² 普通住宅 in B区 cost?

The services must be running (``lepton up``); the demo only talks to them as any client
would, so everything it shows went through Kafka and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lepton.data import samples
from lepton.errors import LeptonError, LeptonTimeout, MonitorUnavailable
from lepton.sdk.builders import (
    DatasetRef,
    DatasetRequest,
    JobRequest,
    Resources,
    Source,
    TrainingTask,
)
from lepton.sdk.client import LeptonClient

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from lepton.config import Settings

__all__ = [
    "DIAGNOSIS",
    "EXAMPLES",
    "HOUSES",
    "Example",
    "ExampleReport",
    "run",
    "run_example",
    "wait_for_nodes",
]

Say = Callable[[str], None]

_HOUSE_SPEC = {
    "columns": {
        "面积": {"type": "float", "missing": "median", "min": 10},
        "房型": {"type": "category", "categories": list(samples.HOUSE_TYPES)},
        "区域": {
            "type": "category",
            "categories": list(samples.HOUSE_DISTRICTS),
            "nullable": False,
        },
        # The planted 1e9 price is dropped, not flagged: a flag column would be a feature
        # that gives the answer away.
        "价格": {"type": "float", "outliers": {"method": "iqr", "action": "drop", "threshold": 3}},
    }
}


def _diagnosis_records() -> pd.DataFrame:
    # The patient id identifies a row; as a feature it would only be memorised.
    return samples.diagnosis().drop(columns="patient_id")


def _first_patient(records: pd.DataFrame) -> list[dict[str, Any]]:
    measurements = records.drop(columns="diagnosis").iloc[0]
    return [{str(name): float(value) for name, value in measurements.items()}]


@dataclass(frozen=True, slots=True)
class Example:
    """One data set, one training job, one question for its model."""

    title: str
    tenant: str
    dataset: str
    model_name: str
    target: str
    data: Callable[[], pd.DataFrame]
    question: str
    query: Callable[[pd.DataFrame], list[dict[str, Any]]]  # the records to score, from the data
    spec: Mapping[str, Any] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # class label -> what it means
    trial_budget: int = 12
    demand: Resources = field(default_factory=lambda: Resources.of(cpus=1, memory_mib=1024))


HOUSES = Example(
    title="House prices, the seed's example (regression)",
    tenant="demo",
    dataset="house_prices",
    model_name="房价",
    target="价格",
    data=lambda: samples.house_prices(rows=400),
    spec=_HOUSE_SPEC,
    question="a 150 m² 普通住宅 in B区",
    query=lambda _: [{"面积": 150.0, "房型": "普通住宅", "区域": "B区"}],
)

DIAGNOSIS = Example(
    title="Breast-cancer diagnosis, the healthcare example (binary classification)",
    tenant="hospital",
    dataset="diagnosis",
    model_name="diagnosis",
    target="diagnosis",
    data=_diagnosis_records,
    question="the first patient's measurements",
    query=_first_patient,
    labels={"1": "malignant", "0": "benign"},
    # Two cores: only the larger of `lepton up`'s two nodes can hold it.
    demand=Resources.of(cpus=2, memory_mib=1024),
)

EXAMPLES = (HOUSES, DIAGNOSIS)


@dataclass(slots=True)
class ExampleReport:
    """What one example produced, for the summary and for the end-to-end test."""

    example: Example
    dataset_version: str = ""
    rows: int = 0
    job_id: str = ""
    events: list[str] = field(default_factory=list)  # job event kinds, in order
    model: dict[str, Any] = field(default_factory=dict)
    evaluated: dict[str, Any] = field(default_factory=dict)
    verdict: dict[str, Any] | None = None
    prediction: float | str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def wait_for_nodes(client: LeptonClient, count: int, timeout_s: float, say: Say) -> None:
    """Until the monitor sees ``count`` live nodes: the services may have just started."""
    deadline = time.monotonic() + timeout_s
    seen = -1
    while True:
        try:
            alive = [node for node in await client.nodes() if node.get("alive")]
        except MonitorUnavailable:
            alive = []
        if len(alive) != seen:
            seen = len(alive)
            say(f"compute nodes alive: {seen} of {count}")
        if seen >= count:
            return
        if time.monotonic() > deadline:
            raise LeptonError(
                f"only {seen} of {count} compute nodes reported within {timeout_s:.0f} s",
                "are the services running (`lepton up`)? Their logs are in <state>/services/",
            )
        await asyncio.sleep(0.5)  # polling a read model: there is no event to await here


async def _follow(client: LeptonClient, report: ExampleReport, say: Say) -> None:
    """Say the job's events as they come, one line per stage, until its outcome."""
    stage: str | None = None
    async for event in client.events(report.job_id):
        report.events.append(event.kind)
        if event.kind == "progress" and event.stage == stage:
            continue  # one line per stage is enough to follow
        stage = event.stage
        where = f" on {event.node_id}" if event.node_id else ""
        detail = event.stage or event.reason or ""
        percent = f" {event.progress_percent:.0f}%" if event.progress_percent is not None else ""
        say(f"  {event.kind}{where}{percent} {detail}".rstrip())


async def run_example(
    client: LeptonClient, example: Example, inbox: Path, say: Say, *, timeout_s: float = 150
) -> ExampleReport:
    """One example through ingest, scheduler, trainer, evaluator and prediction."""
    began = time.monotonic()
    report = ExampleReport(example)
    say(f"\n== {example.title}")
    path = inbox / f"{example.dataset}.csv"
    frame = example.data()
    frame.to_csv(path, index=False)
    ready = await client.ingest(
        DatasetRequest(
            tenant=example.tenant,
            dataset=example.dataset,
            sources=[Source.file(path)],
            spec=json.dumps(example.spec, ensure_ascii=False) if example.spec else None,
        ),
        timeout_s=timeout_s,
    )
    report.dataset_version, report.rows = ready["version"], ready["rows"]
    quality = ready["quality"]
    say(
        f"ingested {example.dataset}: {quality['rows_read']} rows read, "
        f"{quality['duplicates_removed']} duplicates removed, "
        f"{quality['values_imputed']} values imputed, {quality['rows_rejected']} rejected "
        f"-> {ready['rows']} rows, version {ready['version'][:19]}"
    )

    job = JobRequest(
        tenant=example.tenant,
        dataset=DatasetRef(name=example.dataset, version=ready["version"]),
        task=TrainingTask(
            target_column=example.target,
            trial_budget=example.trial_budget,
            time_budget_s=60,
            model_name=example.model_name,
            seed=7,
        ),
        demand=example.demand,
    )
    report.job_id = await client.submit(job)
    say(f"submitted {report.job_id}: algorithm auto, {example.trial_budget} trials")
    try:
        async with asyncio.timeout(timeout_s):
            await _follow(client, report, say)
    except TimeoutError:
        raise LeptonTimeout(
            f"job {report.job_id} did not finish within {timeout_s:.0f} s",
            "`lepton jobs` shows where it is, `lepton status` whether every service runs; "
            "a busy machine may need longer",
        ) from None
    outcome = await client.wait(report.job_id, timeout_s=timeout_s)
    if outcome.model is None:
        raise LeptonError(
            f"job {report.job_id} ended {outcome.state}: {outcome.event.reason}",
            "`lepton tail lepton.jobs.events --from-beginning` shows its events",
        )
    report.model = dict(outcome.model)
    model = report.model
    say(
        f"model {model['model_id'][:8]}: {model['algorithm']} {model['parameters']}, "
        f"cv {model['scoring']} {model['cv_score']:.3f} over {model['trials']} trials "
        f"in {model['training_seconds']:.1f} s"
    )

    judged = await client.evaluation(model, timeout_s=timeout_s)
    report.evaluated, report.verdict = dict(judged.evaluated), judged.verdict
    metrics = report.evaluated["metrics"]
    shown = (
        ("rmse", "mae", "r2")
        if model["problem_type"] == "regression"
        else ("accuracy", "f1_macro", "roc_auc")
    )
    say(
        f"evaluated on {report.evaluated['holdout_rows']} held-out rows: "
        + ", ".join(f"{name} {metrics[name]:,.3f}" for name in shown if name in metrics)
    )
    for finding in report.evaluated["findings"][:4]:
        say(f"  [{finding['severity']}] {finding['message']}")
    if report.verdict is not None:
        say(f"verdict: {report.verdict['verdict']}: {report.verdict['reason']}")

    answer = await client.predict(f"{example.model_name}@champion", example.query(frame))
    report.prediction = answer.predictions[0]
    report.request_ids = answer.request_ids
    if answer.probabilities:
        report.probabilities = answer.probabilities[0]
    named = example.labels
    value = (
        f"{report.prediction:,.0f}"
        if isinstance(report.prediction, float)
        else named.get(str(report.prediction), str(report.prediction))
    )
    odds = (
        " ("
        + ", ".join(f"{named.get(k, k)} {v:.2f}" for k, v in report.probabilities.items())
        + ")"
        if report.probabilities
        else ""
    )
    say(f"prediction for {example.question}: {value}{odds} by model {answer.model_id[:8]}")
    report.seconds = time.monotonic() - began
    return report


async def run(
    settings: Settings, inbox: Path, say: Say, *, tenant_prefix: str = ""
) -> list[ExampleReport]:
    """Every example, after the two compute nodes of ``lepton up`` have reported; each
    acts as its own tenant (``tenant_prefix`` + the example's)."""
    async with LeptonClient(settings) as client:
        await wait_for_nodes(client, 2, 90, say)
    reports = []
    for example in EXAMPLES:
        tenant = tenant_prefix + example.tenant
        async with LeptonClient(settings, tenant=tenant) as client:
            reports.append(
                await run_example(client, dataclasses.replace(example, tenant=tenant), inbox, say)
            )
    return reports
