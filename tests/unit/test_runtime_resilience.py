"""A service's background tasks retried with backoff, its health while they fail, and
outage errors of a handler retried rather than dead-lettered (on the in-memory broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import confluent_kafka
import prometheus_client
import pytest
import structlog

from lepton.bus import Event, TransientError
from lepton.contract.topics import Namespace
from lepton.runtime.resilience import Backoff, Health, kafka_away, patient, supervised
from lepton.runtime.service import BackgroundTaskError, Context, Service, ServiceFault
from lepton.testing import InMemoryBroker, running
from tests.integration.ingest_support import request

REQUESTS = Namespace().topic("lepton.data.requested")


def failures(service: str, task: str) -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "lepton_background_task_failures_total", {"service": service, "task": task}
    )
    return value or 0.0


def a_service(name: str, background: Any, handled: asyncio.Event) -> Service:
    async def factory(context: Context) -> Any:
        async def handle(event: Event) -> None:
            handled.set()

        return handle

    return Service(
        name=name,
        actor="ingest",
        consumes=[REQUESTS.name],
        handler_factory=factory,
        background=[background],
    )


async def test_a_failing_background_task_is_retried_and_the_service_keeps_serving() -> None:
    runs = 0
    third_run = asyncio.Event()

    async def relay(context: Context) -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise ConnectionRefusedError(111, "the broker is away")
        third_run.set()
        await asyncio.Event().wait()

    handled = asyncio.Event()
    service = a_service("flaky-relay", relay, handled)
    broker = InMemoryBroker()
    with structlog.testing.capture_logs() as logs:
        async with running(service, broker):
            await asyncio.wait_for(third_run.wait(), 10)
            assert "task relay" in service.health.problems, "failing: reported as degraded"
            await broker.publisher().publish(REQUESTS, "r", request("acme", "d", []))
            await asyncio.wait_for(handled.wait(), 10)  # the service went on consuming
    assert failures("flaky-relay", "relay") == 2
    retried = [entry for entry in logs if entry["event"] == "background task failed; retrying"]
    assert [entry["attempt"] for entry in retried] == [1, 2]
    assert [entry["in_s"] for entry in retried] == [0.5, 1.0]


async def test_a_service_fault_stops_the_service_with_its_reason() -> None:
    async def listen(context: Context) -> None:
        raise ServiceFault("port 8765 is taken")

    service = a_service("faulty", listen, asyncio.Event())
    with pytest.raises(BackgroundTaskError) as stopped:
        async with running(service, InMemoryBroker()) as task:
            await asyncio.wait_for(task, 10)
    assert isinstance(stopped.value.__cause__, ServiceFault)
    assert "port 8765 is taken" in str(stopped.value)


async def test_a_task_that_runs_again_a_while_is_healthy_again() -> None:
    health = Health("svc")
    runs = 0
    second_run = asyncio.Event()
    seen: list[dict[str, str]] = []  # the problems as the second run found them, then later
    looked = asyncio.Event()

    async def sampler() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")
        seen.append(dict(health.problems))
        second_run.set()
        # Longer than the supervisor's 0.05 s, started after it: its timer fires first.
        await asyncio.sleep(0.1)
        seen.append(dict(health.problems))
        looked.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(
        supervised("sampler", sampler, health, structlog.get_logger(), Backoff(0.01, 0.01), 0.05)
    )
    try:
        await asyncio.wait_for(looked.wait(), 10)
        assert "ConnectionDoesNotExistError" in seen[0]["task sampler"]
        assert seen[1] == {}, "healthy again once the task ran a while"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_outage_in_a_handler_is_transient_and_any_other_error_is_not() -> None:
    raised: list[Exception] = [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        ValueError("a bad record"),
    ]

    async def handler(event: Event) -> None:
        raise raised.pop(0)

    handle = patient(handler)
    for _ in range(2):
        with pytest.raises(TransientError):
            await handle(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a bad record"):
        await handle(None)  # type: ignore[arg-type]


def test_kafka_away_is_told_from_a_refusal() -> None:
    away = confluent_kafka.KafkaException(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError._TRANSPORT)
    )
    refused = confluent_kafka.KafkaException(
        confluent_kafka.KafkaError(confluent_kafka.KafkaError.TOPIC_AUTHORIZATION_FAILED)
    )
    assert kafka_away(away)
    assert not kafka_away(refused)
