"""Jaeger v2 on this machine, as a real trace backend for the tracing tests: its OTLP/HTTP
receiver, in-memory storage and query API on loopback ports chosen free.

``make jaeger`` builds it from the Go module proxy into the virtual environment; the tests
fail, saying so, where it is missing rather than skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.deploy.chart import tool

_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memory_store:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memory_store
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memory_store
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(slots=True)
class Span:
    """One span of a trace as Jaeger's query API returns it."""

    span_id: str
    name: str
    service: str
    parent: str | None  # the CHILD_OF reference's span id
    links: list[tuple[str, str]]  # (trace id, span id) of FOLLOWS_FROM references
    tags: dict[str, Any]


@dataclass(slots=True)
class Jaeger:
    otlp_endpoint: str  # for OTEL_EXPORTER_OTLP_ENDPOINT
    query_url: str

    async def traces(self, service: str, operation: str | None = None, **tags: str) -> list[str]:
        """Ids of the traces that have a span of ``service`` (named ``operation``) with
        ``tags``."""
        query = {"service": service, "limit": "50", "tags": json.dumps(tags)}
        if operation is not None:
            query["operation"] = operation
        async with httpx.AsyncClient() as client:
            answer = await client.get(
                f"{self.query_url}/api/traces?{urllib.parse.urlencode(query)}", timeout=10
            )
        answer.raise_for_status()
        return [trace["traceID"] for trace in answer.json()["data"] or []]

    async def spans(self, trace_id: str) -> list[Span]:
        """Every span of the trace Jaeger holds (none if it holds no such trace)."""
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{self.query_url}/api/traces/{trace_id}", timeout=10)
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        (trace,) = answer.json()["data"]
        services = {key: process["serviceName"] for key, process in trace["processes"].items()}
        found = []
        for raw in trace["spans"]:
            references = raw.get("references") or []
            parents = [
                r["spanID"]
                for r in references
                if r["refType"] == "CHILD_OF" and r["traceID"] == trace_id
            ]
            found.append(
                Span(
                    raw["spanID"],
                    raw["operationName"],
                    services[raw["processID"]],
                    parents[0] if parents else None,
                    [(r["traceID"], r["spanID"]) for r in references if r["refType"] != "CHILD_OF"],
                    {tag["key"]: tag["value"] for tag in raw.get("tags") or []},
                )
            )
        return found


@contextlib.asynccontextmanager
async def jaeger(workdir: Path) -> AsyncIterator[Jaeger]:
    """Jaeger running until the block ends."""
    ports = {"otlp": _free_port(), "query": _free_port(), "query_grpc": _free_port()}
    config = workdir / "jaeger.yaml"
    config.write_text(_CONFIG.format(**ports))
    log = (workdir / "jaeger.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        tool("jaeger"), "--config", str(config), stdout=log, stderr=log
    )
    query_url = f"http://127.0.0.1:{ports['query']}"
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while True:  # bounded: Jaeger answers within a second or two of starting
                assert process.returncode is None, (
                    f"jaeger exited: {(workdir / 'jaeger.log').read_text()[-2000:]}"
                )
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{query_url}/api/services")).status_code == 200:
                        break
                await asyncio.sleep(0.2)
        yield Jaeger(f"http://127.0.0.1:{ports['otlp']}", query_url)
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
        log.close()
