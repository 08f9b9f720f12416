"""OpenTelemetry for a Lepton process: spans exported over OTLP when an endpoint is set,
and the trace and span ids in every log line.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set,
:func:`configure` installs the OpenTelemetry SDK's tracer provider with a batching OTLP
exporter (HTTP/protobuf; the SDK's other ``OTEL_*`` settings apply: ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_RESOURCE_ATTRIBUTES``…), turns on
the bus's spans (:func:`lepton.bus.trace_with`: a ``send`` span per message published, a
``process`` span per message handled) and asyncpg's instrumentation (a span per query).
Without an endpoint nothing is imported from the SDK and no span is made: the bus only
carries each message's ``traceparent``, as it always did.

The SDK and the exporter come with ``[server]``; the SDK and the CLI need only
``opentelemetry-api``. A client with the SDK installed and an endpoint set starts the
trace of what it submits (:meth:`lepton.sdk.LeptonClient.submit`); without it, the trace
starts at the first service that handles the request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from lepton.bus import current_trace, trace_with

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

__all__ = ["TracingSettings", "add_trace_ids", "configure"]


class TracingSettings(BaseSettings):
    """OpenTelemetry's own settings that decide whether spans are exported at all (the
    SDK reads the rest of ``OTEL_*`` itself)."""

    model_config = SettingsConfigDict(
        env_prefix="OTEL_", env_file=".env", extra="ignore", frozen=True
    )

    exporter_otlp_endpoint: str | None = Field(
        default=None,
        description="OTEL_EXPORTER_OTLP_ENDPOINT: base URL of an OTLP/HTTP receiver "
        "(spans go to <url>/v1/traces); unset: no span is made or exported.",
    )
    exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        description="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: the full URL spans are posted to "
        "(wins over the base URL).",
    )
    service_name: str | None = Field(
        default=None,
        description="OTEL_SERVICE_NAME: the service.name of this process's spans; default "
        "lepton-<service> (lepton-cli for the CLI and the SDK).",
    )
    traces_sampler: str | None = Field(
        default=None,
        description="OTEL_TRACES_SAMPLER: the SDK's sampler; default: every trace, but no "
        "trace of its own for a database query outside any (a health probe, a poll).",
    )
    sdk_disabled: bool = Field(
        default=False, description="OTEL_SDK_DISABLED: true turns tracing off whatever is set."
    )

    def traces_endpoint(self) -> str | None:
        """Where spans are posted, or None: tracing is off."""
        if self.sdk_disabled:
            return None
        if self.exporter_otlp_traces_endpoint:
            return self.exporter_otlp_traces_endpoint
        if self.exporter_otlp_endpoint:
            return self.exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        return None


def configure(
    service: str, instance: str | None = None, settings: TracingSettings | None = None
) -> TracerProvider | None:
    """Export this process's spans when an OTLP endpoint is set; the provider (to
    :meth:`~TracerProvider.shutdown`, which sends what is left), or None when tracing is
    off. ``service`` is the default ``service.name``, ``instance`` the
    ``service.instance.id`` (a trainer's node). Call once, before anything is published."""
    settings = settings or TracingSettings()
    endpoint = settings.traces_endpoint()
    if endpoint is None:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased
    except ImportError:
        structlog.get_logger("lepton.tracing").warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry SDK is not installed: "
            "no spans are exported",
            hint="pip install 'lepton-control-plane[server]'",
        )
        return None
    attributes = {"service.name": settings.service_name or service}
    if instance is not None:
        attributes["service.instance.id"] = instance
    # OTEL_TRACES_SAMPLER, when set, is the SDK's to read (sampler=None).
    sampler = None if settings.traces_sampler else ParentBased(_root_sampler())
    provider = TracerProvider(resource=Resource.create(attributes), sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _instrument_asyncpg(provider)
    trace_with(provider.get_tracer("lepton"))
    return provider


def _root_sampler() -> Sampler:
    """Every trace, except those a database query would start on its own: the health
    probes and the polls of every service query PostgreSQL every few seconds, and a trace
    of one ``SELECT 1`` each time would bury the traces of work."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind

    class NoLoneQueries(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if kind is SpanKind.CLIENT:  # asyncpg's: the only client spans Lepton makes
                return SamplingResult(Decision.DROP)
            return ALWAYS_ON.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return "NoLoneQueries"

    return NoLoneQueries()


def _instrument_asyncpg(provider: TracerProvider) -> None:
    """A span per asyncpg query, without its parameters (they may hold tenants' data)."""
    try:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    except ImportError:  # [server] brings it; a client does not query PostgreSQL
        return
    instrumentor = AsyncPGInstrumentor(capture_parameters=False)  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def add_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the ``trace_id`` and ``span_id`` of what is being handled
    (the innermost span with a tracer; else the handled message's ``traceparent``)."""
    traceparent = current_trace()
    if traceparent is not None and len(traceparent) >= 52:
        event.setdefault("trace_id", traceparent[3:35].decode("ascii", "replace"))
        event.setdefault("span_id", traceparent[36:52].decode("ascii", "replace"))
    return event
