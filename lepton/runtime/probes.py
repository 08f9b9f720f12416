"""A service's probe and metrics endpoints, on ``LEPTON_HEALTH_HOST``:``LEPTON_HEALTH_PORT``.

Two questions, two endpoints, because their answers call for different actions:

- ``/livez`` (liveness) answers 200 for as long as the service's event loop runs: the loop
  itself answers, so a loop that is stuck (a blocking call, a deadlock) times out and the
  platform restarts the process. Nothing else fails it: a service waits out an outage by
  itself (:mod:`lepton.runtime.resilience`), and one that can no longer do its job at all
  exits on its own (a :class:`~lepton.runtime.resilience.ServiceFault`, exit status 1).
- ``/healthz`` (readiness) answers 200 only while the service can use Kafka and PostgreSQL
  and its background tasks run, else 503 with the ``problems``: send it no work, count it
  as unavailable, but do not restart it, since a restart would not bring the broker back.

``/metrics/`` is the process's Prometheus registry. None of the three needs a credential
or names a tenant's work; they listen on loopback unless told otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import prometheus_client
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

    from starlette.requests import Request
    from starlette.types import ASGIApp

__all__ = ["EmbeddedServer", "base_url", "health_app", "serve"]


class EmbeddedServer(uvicorn.Server):
    """uvicorn serving ``app`` inside a service's event loop: the service, not uvicorn, owns
    the signals, and uvicorn's log lines go through the service's JSON log (without a
    logging config of uvicorn's own, whose handler wrote raw lines such as "WARNING:
    Invalid HTTP request received." when bytes that are not HTTP reached the port)."""

    def __init__(self, app: ASGIApp, host: str, port: int, **options: Any) -> None:
        super().__init__(
            uvicorn.Config(
                app, host=host, port=port, log_level="warning", log_config=None, **options
            )
        )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def health_app(readiness: Callable[[], Mapping[str, Any]]) -> Starlette:
    """``/livez``; ``/healthz``, whose body is ``readiness()`` and whose code is 503 while
    that answer names ``problems``; ``/metrics/``."""

    async def livez(request: Request) -> Response:
        return PlainTextResponse("alive\n", headers={"cache-control": "no-store"})

    async def healthz(request: Request) -> Response:
        answer = readiness()
        return JSONResponse(
            answer,
            # A probe, a load balancer or a supervisor reads the code: not ready while degraded.
            status_code=503 if answer.get("problems") else 200,
            headers={"cache-control": "no-store"},
        )

    return Starlette(
        routes=[
            Route("/livez", livez),
            Route("/healthz", healthz),
            Mount("/metrics", prometheus_client.make_asgi_app()),
        ]
    )


@contextlib.asynccontextmanager
async def serve(app: Starlette, host: str, port: int) -> AsyncIterator[int]:
    """Serve ``app`` on ``host``:``port`` (0: a free port) for the duration of the block,
    which gets the port bound; the reason it cannot listen is raised at once."""
    server = EmbeddedServer(app, host, port)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises the reason it could not start
        await asyncio.sleep(0.01)
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        await task


def base_url(host: str, port: int) -> str:
    """Where this machine reaches a server listening on ``host``:``port``: a wildcard
    address is where it listens, not an address to ask, and loopback answers for it."""
    if host in ("0.0.0.0", ""):  # noqa: S104 - names the wildcard, binds nothing
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
