"""A job's trace through the scheduler, on the in-memory broker: the assignment continues
the request's trace (it used to start a new one), with and without OpenTelemetry spans."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lepton.bus import continue_trace, trace_with
from lepton.testing import InMemoryBroker
from tests.integration.scheduler_support import heartbeat, job
from tests.unit.scheduler.shell_support import (
    ASSIGNED,
    EVENTS,
    REQUESTED,
    kind,
    request,
    scheduler,
)

SUBMITTED = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Spans made from here to the end of the test, kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_with(provider.get_tracer("tests"))
    try:
        yield exporter
    finally:
        trace_with(None)
        provider.shutdown()


def _trace_id(header: bytes | None) -> str:
    assert header is not None
    return header.split(b"-")[1].decode()


def _span_id(header: bytes | None) -> int:
    assert header is not None
    return int(header.split(b"-")[2], 16)


async def _assign_one(broker: InMemoryBroker) -> None:
    async with scheduler(broker, heartbeat("n", sequence=1, cpu=4000)):
        with continue_trace(SUBMITTED):  # as the client's submit would have sent it
            await request(broker, job("j1"))
        await broker.until(ASSIGNED, lambda r: r["job_id"] == "j1")


async def test_the_assignment_continues_the_requests_trace() -> None:
    broker = InMemoryBroker()
    await _assign_one(broker)
    (requested,) = broker.messages(REQUESTED.name)
    assert _trace_id(requested.header("traceparent")) == TRACE
    kinds = [broker.codec.decode(m.value())[1]["kind"] for m in broker.messages(EVENTS)]
    assert kinds == ["queued", "assigned"]
    for message in [*broker.messages(EVENTS), *broker.messages(ASSIGNED)]:
        assert _trace_id(message.header("traceparent")) == TRACE, message


async def test_a_requeue_when_the_node_is_lost_continues_the_jobs_trace() -> None:
    broker = InMemoryBroker()
    async with scheduler(broker, heartbeat("n", sequence=1, cpu=4000)) as running:
        with continue_trace(SUBMITTED):
            await request(broker, job("j1"))
        await broker.until(ASSIGNED, lambda r: r["job_id"] == "j1")
        running.digester.dead("n")  # the digester's verdict, from no message of the job
        await broker.until(EVENTS, kind("j1", "requeued"))
    stop = broker.messages(ASSIGNED)[-1]
    assert broker.codec.decode(stop.value())[1]["action"] == "stop"
    for message in [*broker.messages(EVENTS), stop]:
        assert _trace_id(message.header("traceparent")) == TRACE, message


def _named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_with_spans_the_assignment_is_a_child_of_the_jobs_wait_in_the_queue(
    exported: InMemorySpanExporter,
) -> None:
    broker = InMemoryBroker()
    await _assign_one(broker)
    spans = exported.get_finished_spans()
    (process,) = _named(spans, f"process {REQUESTED.name}")
    (requested,) = broker.messages(REQUESTED.name)  # sent in a span, child of SUBMITTED
    assert process.parent is not None
    assert process.parent.span_id == _span_id(requested.header("traceparent"))
    (queued,) = _named(spans, "queued")
    assert queued.parent is not None
    assert queued.parent.span_id == process.context.span_id
    assert queued.attributes is not None
    assert queued.attributes["lepton.outcome"] == "assigned"
    # What is sent for the job carries the span it was sent in, a child of its wait.
    sent = {s.context.span_id: s for s in _named(spans, f"send {ASSIGNED}")}
    (instruction,) = broker.messages(ASSIGNED)
    sending = sent[_span_id(instruction.header("traceparent"))]
    assert sending.parent is not None
    assert sending.parent.span_id == queued.context.span_id
    assert {s.context.trace_id for s in (process, queued, sending)} == {int(TRACE, 16)}
    # The placement decided for every job it placed: linked to their waits, in a trace of
    # its own (the flush of the fetch that asked for it, linked to what that fetch held).
    (plan,) = _named(spans, "plan")
    assert plan.context.trace_id != int(TRACE, 16)
    assert [link.context.span_id for link in plan.links] == [queued.context.span_id]
    flush = next(s for s in spans if s.context.span_id == (plan.parent and plan.parent.span_id))
    assert flush.parent is None
    assert process.context.span_id in [link.context.span_id for link in flush.links]
