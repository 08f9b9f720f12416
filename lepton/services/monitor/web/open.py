"""What the monitor serves without a credential, on a bind of its own: /metrics and /healthz.

Prometheus and a supervisor's health check carry no Lepton token, so these two answer
anyone who can reach them; they are therefore not on the API's address
(``LEPTON_MONITOR_HOST``/``PORT``) but on ``LEPTON_MONITOR_METRICS_HOST``/``PORT``, which
can be opened to a scraper without opening the API. Neither names a tenant's job, dataset
or model: ``/metrics`` holds cluster totals (nodes, utilisation, queues per tenant and
priority class, consumer lag, alerts firing) and the services' message counters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import prometheus_client
from starlette.applications import Starlette
from starlette.routing import Mount, Route

from lepton.services.monitor.web.basics import SecurityHeaders, json_response

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp

__all__ = ["create_open_app"]


def create_open_app(health: Callable[[], Mapping[str, Any]]) -> ASGIApp:
    """``/healthz`` answers ``health()``; ``/metrics/`` this process's Prometheus registry."""

    async def healthz(request: Request) -> Response:
        answer = dict(health())
        # A supervisor or load balancer reads the code: 503 while the monitor is degraded.
        status = 503 if answer.get("status") == "degraded" else 200
        return json_response(answer, status, headers={"cache-control": "no-store"})

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Mount("/metrics", prometheus_client.make_asgi_app()),
        ]
    )
    return SecurityHeaders(app)
