"""The SDK against the real broker: what it sends, how it follows a job, how it asks for
predictions. The scheduler's, trainer's and evaluator's parts are played by the test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from lepton import JobRequest, LeptonClient, PredictionFailed, TrainingTask
from lepton.config import KafkaAccess, Settings
from lepton.contract import schemas_dir
from tests.integration.scheduler_support import Namespaced, now_ms

pytestmark = pytest.mark.integration

LEPTON = str(Path(sys.executable).parent / "lepton")


@pytest.fixture
async def space(kafka, codec, publisher) -> Namespaced:
    namespaced = Namespaced(kafka, codec, publisher)
    await namespaced.create()
    return namespaced


@pytest.fixture
async def client(
    space: Namespaced, kafka: KafkaAccess, database_for: Callable[[str], str]
) -> AsyncIterator[LeptonClient]:
    settings = Settings(
        **kafka.settings(),
        database_url=database_for("client"),
        topic_prefix=space.prefix,
    )
    async with LeptonClient(settings, tenant="acme", user="tester") as opened:
        yield opened


def event(job_id: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"job_id": job_id, "kind": kind, "tenant": "acme", "time": now_ms()} | extra


def model_ready(job_id: str, model_id: str) -> dict[str, Any]:
    golden = json.loads((schemas_dir() / "vectors" / "model_ready.json").read_text("utf-8"))
    record: dict[str, Any] = golden[0]["record"]
    return record | {"job_id": job_id, "model_id": model_id, "tenant": "acme"}


async def test_submit_sends_the_built_request_and_wait_follows_it_to_its_model(
    space: Namespaced, client: LeptonClient
) -> None:
    job = JobRequest(tenant="acme", task=TrainingTask(target_column="price"))
    job_id = await client.submit(job)
    async with space.reader("lepton.jobs.requested") as requests:
        sent = await requests.until(lambda record: record["job_id"] == job_id)
    assert sent == job.to_record() | {"submitted_by": "tester"}

    waiting = asyncio.create_task(client.wait(job_id, timeout_s=60))
    story = [
        event(job_id, "queued"),
        event(job_id, "assigned", node_id="a", lease_epoch=1),
        event(job_id, "started", node_id="a", lease_epoch=1),
        event(job_id, "progress", node_id="a", lease_epoch=1, progress_percent=50.0),
        # The node went quiet; the job was placed again under a new lease ...
        event(job_id, "assigned", node_id="b", lease_epoch=2, attempt=1),
        # ... so the old node's late report decides nothing.
        event(job_id, "failed", node_id="a", lease_epoch=1, reason="late"),
        event(job_id, "started", node_id="b", lease_epoch=2, attempt=1),
        event(job_id, "succeeded", node_id="b", lease_epoch=2, attempt=1, model_id="m-2"),
    ]
    await space.send("lepton.models.ready", "m-2", model_ready("another-job", "m-2"))
    await space.send("lepton.models.ready", "m-2", model_ready(job_id, "m-2"))
    for record in story:
        await space.send("lepton.jobs.events", job_id, record)
    await space.send("lepton.jobs.events", "another-job", event("another-job", "failed"))

    outcome = await waiting
    assert outcome.state == "succeeded"
    assert outcome.event.lease_epoch == 2
    assert outcome.model is not None
    assert (outcome.model["model_id"], outcome.model["job_id"]) == ("m-2", job_id)
    kinds = [e.kind async for e in client.events(job_id)]
    assert kinds == [record["kind"] for record in story], "ends with the deciding event"


async def test_events_appended_while_the_sdk_looks_for_where_to_start_are_not_lost(
    space: Namespaced, client: LeptonClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scheduler answers within milliseconds: the job's first events may land after the
    SDK found nothing that recent on the log, and before it positions its reader."""
    job_id = await client.submit(JobRequest(tenant="acme", task=TrainingTask(target_column="y")))
    search = AIOKafkaConsumer.offsets_for_times
    story = [
        event(job_id, "queued"),
        event(job_id, "assigned", node_id="a", lease_epoch=1),
        event(job_id, "started", node_id="a", lease_epoch=1),
        event(job_id, "succeeded", node_id="a", lease_epoch=1),
    ]

    async def then_the_scheduler_answers(self: AIOKafkaConsumer, timestamps: Any) -> Any:
        found = await search(self, timestamps)
        for record in story:
            await space.send("lepton.jobs.events", job_id, record)
        return found

    monkeypatch.setattr(AIOKafkaConsumer, "offsets_for_times", then_the_scheduler_answers)
    async with asyncio.timeout(30):
        kinds = [e.kind async for e in client.events(job_id)]
    assert kinds == ["queued", "assigned", "started", "succeeded"]


@contextlib.asynccontextmanager
async def evaluator_double(space: Namespaced) -> AsyncIterator[list[dict[str, Any]]]:
    """Answers prediction requests: model ``houses`` is version m-7 and doubles x; any
    other model is unknown. Yields the requests it saw."""
    seen: list[dict[str, Any]] = []
    consumer = AIOKafkaConsumer(
        space.names.topic("lepton.predict.requested").name,
        **space.kafka.aiokafka(),
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()

    async def answer() -> None:
        async for message in consumer:
            request = space.codec.decode(message.value)[1]
            seen.append(request)
            known = request["model"].split("@")[0] == "houses"
            result = {
                "request_id": request["request_id"],
                "tenant": request["tenant"],
                "model_name": request["model"].split("@")[0],
                "model_id": "m-7" if known else None,
                "problem_type": "regression" if known else "unknown",
                "predictions": [row["x"] * 2.0 for row in request["rows"]] if known else [],
                "error": None if known else {"code": "unknown_model", "message": "no such model"},
                "warnings": ["x was clipped"] if known else [],
                "scored_at": now_ms(),
            }
            await space.send("lepton.predict.results", request["request_id"], result)

    task = asyncio.create_task(answer())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def test_predict_splits_large_inputs_and_keeps_one_model_version(
    space: Namespaced, client: LeptonClient
) -> None:
    rows = [{"x": float(i), "note": "普通住宅"} for i in range(2345)]
    async with evaluator_double(space) as seen:
        result = await client.predict("houses", rows, timeout_s=60)
        with pytest.raises(PredictionFailed) as failed:
            await client.predict("villas@champion", [{"x": 1.0}], timeout_s=60)
    assert result.predictions == [row["x"] * 2 for row in rows]
    assert (result.model_name, result.model_id, result.warnings) == (
        "houses",
        "m-7",
        ["x was clipped"],
    )
    # The first chunk learns the version; the others go out together, keyed by their own
    # request ids, so they may arrive in either order.
    assert len(seen[0]["rows"]) == 1000
    assert sorted(len(r["rows"]) for r in seen[1:3]) == [345, 1000]
    assert [r["model"] for r in seen[:3]] == ["houses", "houses@m-7", "houses@m-7"]
    assert len(set(result.request_ids)) == 3
    assert all(r["requested_by"] == "tester" for r in seen)
    assert (failed.value.code, failed.value.message) == ("unknown_model", "no such model")
    assert failed.value.hint is not None


async def test_cli_predict_prints_and_writes_predictions(
    space: Namespaced, kafka: KafkaAccess, database_for: Callable[[str], str], tmp_path: Path
) -> None:
    (tmp_path / "houses.csv").write_text("x,区域\n150,B区\n88.5,A区\n")
    env = os.environ | {
        **kafka.environment(),
        "LEPTON_DATABASE_URL": database_for("client"),
        "LEPTON_TOPIC_PREFIX": space.prefix,
    }

    def lepton(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LEPTON, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )

    common = ["predict", "--tenant", "acme", "--input", str(tmp_path / "houses.csv")]
    async with evaluator_double(space):
        printed = await asyncio.to_thread(lepton, *common, "--model", "houses", "--json")
        written = await asyncio.to_thread(
            lepton, *common, "--model", "houses", "--output", str(tmp_path / "out.jsonl")
        )
        unknown = await asyncio.to_thread(lepton, *common, "--model", "villas")
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert lines == [
        {"x": 150.0, "区域": "B区", "prediction": 300.0},
        {"x": 88.5, "区域": "A区", "prediction": 177.0},
    ]
    assert "warning: x was clipped" in printed.stderr
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8").count("prediction") == 2
    assert unknown.returncode == 1
    assert "error: prediction failed (unknown_model): no such model" in unknown.stderr
    assert "hint:" in unknown.stderr
    assert "Traceback" not in unknown.stderr
