"""Kafka Connect reads and writes Lepton's topics through Lepton's converter (issue 19):
a real standalone worker, as the client principal, sinks job events and (sealed) model
evaluations into PostgreSQL through Debezium's JDBC sink and into files as JSON, and a file
source of job requests submits jobs that the real scheduler accepts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from lepton.bus import Publisher
from lepton.config import Actor, KafkaAccess
from lepton.contract.codec import Codec
from lepton.contract.identity import IdentityKey, Principal
from lepton.contract.topics import Namespace, dead_letter_topic
from tests.connect.conftest import client_may_use
from tests.connect.worker import (
    ConnectJars,
    Warehouse,
    Worker,
    jdbc_sink,
    job_events,
    start_worker,
)
from tests.integration.scheduler_support import Namespaced, heartbeat, job, running_scheduler
from tests.integration.test_bus import read_raw
from tests.samples import sample

pytestmark = pytest.mark.integration


def evaluations(count: int) -> list[dict[str, Any]]:
    full = sample("lepton.ModelEvaluated")
    return [
        full | {"model_id": f"model-{n}", "tenant": "acme" if n % 2 else "globex"}
        for n in range(count)
    ]


def group(names: Namespace, connector: str) -> dict[str, str]:
    """Connect's group for a sink (``connect-<name>``), under the test's prefix, where the
    client principal may read it."""
    return {"consumer.override.group.id": names.group(f"connect-{connector}")}


async def until(check: Callable[[], Any], worker: Worker, connectors: list[str], what: str) -> Any:
    """Polls ``check`` until it returns something truthy; fails at once with the task's
    trace if a connector fails, and after two minutes with the worker's log."""
    deadline = time.monotonic() + 120
    while True:
        found = await check()
        if found:
            return found
        await asyncio.to_thread(worker.check, *connectors)
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what} did not happen in 120 s; the worker's log:\n{worker.tail()}"
            )
        await asyncio.sleep(0.5)


def ms(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else value


async def test_a_worker_sinks_job_events_and_sealed_evaluations_into_postgres_and_json_files(
    jars: ConnectJars,
    names: Namespace,
    kafka: KafkaAccess,
    stack_access: Callable[[Actor], KafkaAccess],
    codec: Codec,
    publisher: Publisher,
    identity: IdentityKey,
    warehouse: Warehouse,
    database_url: str,
    tmp_path: Path,
) -> None:
    events, evaluated = job_events(70), evaluations(6)
    jobs_topic, models_topic = (
        names.topic("lepton.jobs.events"),
        names.topic("lepton.models.evaluated"),
    )
    await publisher.publish_many(jobs_topic, [(e["job_id"], e) for e in events])
    await publisher.publish_many(models_topic, [(e["model_id"], e) for e in evaluated])
    lepton = {"value.converter": "dev.lepton.connect.LeptonConverter"}
    sealed = {
        "value.converter.identity.secret": identity.to_text(),
        "value.converter.event": "lepton.ModelEvaluated",
    }
    json_lines = {
        "transforms": "json",
        "transforms.json.type": "dev.lepton.connect.JsonValue",
    }
    connectors = {
        "lepton-jobs-jdbc": jdbc_sink(jobs_topic.name, "job_events", warehouse, database_url)
        | lepton
        | {"value.converter.event": "lepton.JobEvent"}
        | group(names, "lepton-jobs-jdbc"),
        "lepton-models-jdbc": jdbc_sink(
            models_topic.name, "model_evaluations", warehouse, database_url
        )
        | lepton
        | sealed
        | {
            "value.converter.collections.as.json": "true",
            "transforms": "flatten",
            "transforms.flatten.type": "org.apache.kafka.connect.transforms.Flatten$Value",
            "transforms.flatten.delimiter": "_",
        }
        | group(names, "lepton-models-jdbc"),
        "lepton-jobs-file": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "topics": jobs_topic.name,
            "file": str(tmp_path / "jobs.jsonl"),
        }
        | lepton
        | json_lines
        | group(names, "lepton-jobs-file"),
        "lepton-models-file": {
            "connector.class": "org.apache.kafka.connect.file.FileStreamSinkConnector",
            "topics": models_topic.name,
            "file": str(tmp_path / "models.jsonl"),
        }
        | lepton
        | sealed
        | json_lines
        | group(names, "lepton-models-file"),
    }
    # The worker is the client principal, under its ACLs, as in an installation.
    worker = await asyncio.to_thread(
        start_worker, jars, stack_access("client"), tmp_path / "worker", connectors
    )
    try:
        connection = await asyncpg.connect(database_url)
        try:

            async def rows(table: str, count: int) -> list[asyncpg.Record]:
                exists = await connection.fetchval(
                    "SELECT to_regclass($1) IS NOT NULL", f"{warehouse.schema}.{table}"
                )
                if not exists:
                    return []
                found = await connection.fetch(
                    f"SELECT * FROM {warehouse.schema}.{table} ORDER BY __connect_offset"
                )
                return found if len(found) >= count else []

            job_rows = await until(
                lambda: rows("job_events", len(events)),
                worker,
                list(connectors),
                "job events in PostgreSQL",
            )
            model_rows = await until(
                lambda: rows("model_evaluations", len(evaluated)),
                worker,
                list(connectors),
                "evaluations in PostgreSQL",
            )
        finally:
            await connection.close()

        def lines(name: str, count: int) -> Callable[[], Any]:
            async def read() -> list[dict[str, Any]]:
                path = tmp_path / name
                text = path.read_text() if path.exists() else ""
                found = [json.loads(line) for line in text.splitlines()]
                return found if len(found) >= count else []

            return read

        job_lines = await until(
            lines("jobs.jsonl", len(events)), worker, list(connectors), "job events in the file"
        )
        model_lines = await until(
            lines("models.jsonl", len(evaluated)),
            worker,
            list(connectors),
            "evaluations in the file",
        )
    finally:
        await asyncio.to_thread(worker.stop)

    # One row and one line per event, equal field by field: nothing lost, nothing doubled.
    def identity_of(event: dict[str, Any]) -> tuple[str, int]:
        return event["job_id"], event["time"]

    expected = sorted(events, key=identity_of)
    assert (
        sorted(({name: ms(row[name]) for name in events[0]} for row in job_rows), key=identity_of)
        == expected
    )
    assert sorted(job_lines, key=identity_of) == expected
    assert sorted(row["model_id"] for row in model_rows) == sorted(e["model_id"] for e in evaluated)
    by_model = {e["model_id"]: e for e in evaluated}
    for row in model_rows:
        expected = by_model[row["model_id"]]
        assert row["tenant"] == expected["tenant"]
        assert row["dataset_name"] == expected["dataset"]["name"]
        assert json.loads(row["metrics"]) == expected["metrics"]
        assert json.loads(row["findings"]) == expected["findings"]
        assert ms(row["evaluated_at"]) == expected["evaluated_at"]
    assert sorted(json.dumps(line, sort_keys=True) for line in model_lines) == sorted(
        json.dumps(e, sort_keys=True) for e in evaluated
    )
    # The keys never reach the log.
    assert identity.to_text() not in "".join(
        p.read_text(errors="replace") for p in (tmp_path / "worker").glob("*.log")
    )


async def test_a_file_source_of_job_requests_submits_jobs_the_scheduler_accepts(
    jars: ConnectJars,
    kafka: KafkaAccess,
    stack_access: Callable[[Actor], KafkaAccess],
    codec: Codec,
    publisher: Publisher,
    identity: IdentityKey,
    database_for: Callable[[Actor], str],
    tmp_path: Path,
) -> None:
    space = Namespaced(kafka, codec, publisher)
    await space.create()
    await client_may_use(kafka, space.names)
    acme = identity.derive(Principal("tenant", "acme")).to_text()
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "\n".join(
            [
                json.dumps(job("connect-1", tenant="acme")),
                # Not JSON the contract takes: the converter's DataException is tolerated
                # and logged with the field at fault; the lines after it still go.
                json.dumps(_with(job("connect-bad", tenant="acme"), "demand", gpus="two")),
                # Signed with acme's key in globex's name: the scheduler refuses it.
                json.dumps(job("connect-forged", tenant="globex")),
                json.dumps(job("connect-2", tenant="acme", cpu=2000)),
            ]
        )
        + "\n"
    )
    source = {
        "connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
        "file": str(requests),
        "topic": space.names.topic("lepton.jobs.requested").name,
        "value.converter": "dev.lepton.connect.LeptonConverter",
        "value.converter.event": "lepton.JobRequested",
        "producer.override.interceptor.classes": "dev.lepton.connect.SigningInterceptor",
        "producer.override.lepton.signing.secret": acme,
        "errors.tolerance": "all",
        "errors.log.enable": "true",
    }
    await space.send("lepton.node.heartbeats", "n1", heartbeat("n1", sequence=1, cpu=4000))
    async with (
        running_scheduler(space.settings(kafka, database_for("scheduler"))),
        space.reader("lepton.jobs.events") as events,
    ):
        worker = await asyncio.to_thread(
            start_worker,
            jars,
            stack_access("client"),
            tmp_path / "worker",
            {"lepton-requests": source},
        )
        try:
            for job_id in ("connect-1", "connect-2"):
                await events.until(
                    lambda r, j=job_id: r["job_id"] == j and r["kind"] == "queued", 120
                )
                assigned = await events.until(
                    lambda r, j=job_id: r["job_id"] == j and r["kind"] == "assigned", 60
                )
                assert assigned["node_id"] == "n1"
            [letter] = await read_raw(
                kafka, dead_letter_topic(space.names.topic("lepton.jobs.requested").name), 1
            )
            assert (
                b"tenant:acme may not act for tenant globex"
                in dict(letter.headers)["dlq_error_message"]
            )
            log = worker.log_text()
        finally:
            await asyncio.to_thread(worker.stop)
    assert "JobRequested.demand.gpus: expected a whole number, got String" in log
    assert not any(r["job_id"] == "connect-bad" for r in events.seen)
    secret = acme.rsplit(":", 1)[1]
    assert secret not in "".join(
        p.read_text(errors="replace") for p in (tmp_path / "worker").glob("*.log")
    )


def _with(record: dict[str, Any], field: str, **changes: Any) -> dict[str, Any]:
    return record | {field: record[field] | changes}
