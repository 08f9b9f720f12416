"""The trace a message continues: its W3C ``traceparent``, and OpenTelemetry spans when a
tracer is set (:func:`trace_with`, which :mod:`lepton.runtime.tracing` calls when an OTLP
endpoint is configured).

Without a tracer nothing here makes a span: a message's ``traceparent`` carries the trace
id of what caused it and a random span id, as it always did, and the hot paths test one
module global. With a tracer, the subscriber handles each message in a ``process`` span
(child of the span that sent it), every message is sent in a ``send`` span (its
``traceparent`` is that span's context), and :func:`span` opens a span of a service's own
(a phase, a placement) where the work is. :func:`current_trace` is always the
``traceparent`` of the innermost of them, so code that keeps a trace to continue later
(the scheduler's queue) works the same with and without spans.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Iterable, Iterator, Mapping

    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

__all__ = [
    "continue_trace",
    "current_trace",
    "span",
    "start_span",
    "trace_with",
    "traceparent_of",
    "tracing",
]


class _Traced(Protocol):
    """What carries a trace lazily: the event being handled (its headers are read only
    if someone asks, which for most messages nobody does: reading them costs more than
    decoding the value)."""

    @property
    def headers(self) -> Mapping[str, bytes]: ...


# The trace of what is being handled, so that what a handler publishes continues it: the
# raw header, or the event being handled.
_current_trace: contextvars.ContextVar[bytes | _Traced | None] = contextvars.ContextVar(
    "lepton_traceparent", default=None
)

# The tracer spans are made with; None: no spans at all (the default).
_tracer: Tracer | None = None


def trace_with(tracer: Tracer | None) -> None:
    """Make spans with ``tracer`` from now on (None: none). Called once at start, before
    any publisher or subscriber runs."""
    global _tracer
    _tracer = tracer


def tracing() -> bool:
    """Whether spans are made (a tracer is set)."""
    return _tracer is not None


def current_trace() -> bytes | None:
    """The ``traceparent`` of what is being handled: the innermost span's with a tracer,
    else the handled message's own header (None outside a handler)."""
    current = _current_trace.get()
    if current is None or isinstance(current, bytes):
        return current
    return current.headers.get("traceparent")


@contextlib.contextmanager
def continue_trace(traceparent: bytes | None) -> Iterator[None]:
    """What is published (and, with a tracer, every span opened) inside continues this
    trace, as if its message were being handled."""
    token = _current_trace.set(traceparent)
    attached = None
    if _tracer is not None and traceparent is not None:
        parent = _remote(traceparent)
        if parent is not None:
            attached = otel_context.attach(parent)
    try:
        yield
    finally:
        if attached is not None:
            otel_context.detach(attached)
        _current_trace.reset(token)


def _trace_id(traceparent: bytes | None) -> str | None:
    # W3C traceparent: version-traceid-spanid-flags
    if traceparent is None:
        return None
    parts = traceparent.decode("ascii", "replace").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def _ids(traceparent: bytes | None = None) -> tuple[bytes, bytes]:
    """A CloudEvents id and a W3C traceparent continuing the given trace, or the current
    one, if any (without a tracer: the span id is random, no span is made)."""
    # One call to the OS for all random bits: this runs for every message.
    random = os.urandom(40).hex()
    trace_id = _trace_id(traceparent or current_trace()) or random[48:80]
    return random[:32].encode(), f"00-{trace_id}-{random[32:48]}-01".encode()


def traceparent_of(started: Span) -> bytes | None:
    """The W3C ``traceparent`` that continues ``started`` (None for no span)."""
    context = started.get_span_context()
    if not context.is_valid:
        return None
    return b"00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags)


def _span_context(traceparent: bytes) -> trace.SpanContext | None:
    parts = traceparent.split(b"-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        context = trace.SpanContext(
            int(parts[1], 16),
            int(parts[2], 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(parts[3][:2], 16)),
        )
    except ValueError:  # a header from outside that is not hexadecimal
        return None
    return context if context.is_valid else None


def _remote(traceparent: bytes) -> otel_context.Context | None:
    """An OpenTelemetry context whose current span is the one ``traceparent`` names."""
    context = _span_context(traceparent)
    if context is None:
        return None
    return trace.set_span_in_context(trace.NonRecordingSpan(context))


def _parent(continues: bytes | None) -> otel_context.Context | None:
    """The context a new span starts in: ``continues``, else the current trace, else
    OpenTelemetry's current context (None)."""
    traceparent = continues or current_trace()
    return _remote(traceparent) if traceparent is not None else None


def _links(traces: Iterable[bytes | None]) -> list[trace.Link]:
    found = (_span_context(t) for t in traces if t is not None)
    return [trace.Link(context) for context in found if context is not None]


def start_span(
    name: str,
    *,
    continues: bytes | None = None,
    links: Iterable[bytes | None] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    root: bool = False,
) -> Span:
    """A span the caller ends (``.end()``), for work that outlives one block (a job's
    wait in the queue, a training phase reported by a worker process): child of
    ``continues`` (else of the current trace), or the first of a new trace if ``root``;
    ``links`` to the traces of what it gathers (fan-in). Without a tracer: a span that
    records nothing, whose :func:`traceparent_of` is None."""
    if _tracer is None:
        return trace.INVALID_SPAN
    parent = otel_context.Context() if root else _parent(continues)
    return _tracer.start_span(
        name, parent, kind, attributes=attributes, links=_links(links) or None
    )


@contextlib.contextmanager
def span(
    name: str,
    *,
    continues: bytes | None = None,
    links: Iterable[bytes | None] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
    kind: trace.SpanKind = trace.SpanKind.INTERNAL,
    root: bool = False,
) -> Iterator[Span]:
    """A span around the block (see :func:`start_span`), current inside it: what is
    published or opened there is its child. An exception leaving the block is recorded
    on it. Without a tracer: nothing."""
    if _tracer is None:
        yield trace.INVALID_SPAN
        return
    started = start_span(
        name, continues=continues, links=links, attributes=attributes, kind=kind, root=root
    )
    token = _current_trace.set(traceparent_of(started))
    try:
        with trace.use_span(started, end_on_exit=True):
            yield started
    finally:
        _current_trace.reset(token)


def processing(topic: str, group: str, partition: int, offset: int, traced: _Traced) -> Span:
    """The span a consumer handles a message in: child of the span that sent it. The
    caller makes it current (:func:`handling`). Only with a tracer."""
    assert _tracer is not None
    sent = traced.headers.get("traceparent")
    return _tracer.start_span(
        f"process {topic}",
        _remote(sent) if sent is not None else otel_context.Context(),
        trace.SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.consumer.group.name": group,
            "messaging.destination.partition.id": str(partition),
            "messaging.kafka.offset": offset,
        },
    )


@contextlib.contextmanager
def handling(started: Span) -> Iterator[None]:
    """``started`` current (and ended, with any exception recorded) around the block."""
    token = _current_trace.set(traceparent_of(started))
    try:
        with trace.use_span(started, end_on_exit=True):
            yield
    finally:
        _current_trace.reset(token)


def sending(topic: str, continues: bytes | None) -> tuple[Span, bytes]:
    """The span a message is sent in, and the ``traceparent`` it carries (that span's
    context): child of ``continues``, else of the current trace. Only with a tracer; the
    caller ends it when the broker answers (:func:`sent`)."""
    assert _tracer is not None
    started = _tracer.start_span(
        f"send {topic}",
        _parent(continues),
        trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    )
    return started, traceparent_of(started) or _ids(continues)[1]


def sent(spans: list[Span], acknowledged: asyncio.Future[Any]) -> None:
    """End ``spans`` when the broker answers ``acknowledged`` (a refusal recorded)."""

    def end(done: asyncio.Future[Any]) -> None:
        failure = None if done.cancelled() else done.exception()
        for started in spans:
            if failure is not None:
                started.record_exception(failure)
                started.set_status(trace.StatusCode.ERROR, str(failure))
            started.end()

    acknowledged.add_done_callback(end)
