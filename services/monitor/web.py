"""The monitor's web app: JSON API, server-sent events, the dashboard and /metrics.

Every query parameter is validated; a malformed query is a 400 with the reason, an unknown
resource a 404, never a 500. Responses carry a strict Content-Security-Policy (scripts and
styles only from this origin, nothing inline), and the dashboard builds its DOM with
``textContent``, so names that users chose are always shown as text.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prometheus_client
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.monitor.entities import TERMINAL
from services.monitor.sampling import METRICS
from services.monitor.views import Hub

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from services.monitor.views import Monitor

__all__ = ["BadRequestError", "create_web_app", "encode_json"]

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
_MAX_TEXT = 256
MAX_STREAMS = 200
_MAX_SERIES_ROWS = 50_000


# -- request validation ----------------------------------------------------------------------


class BadRequestError(Exception):
    """A malformed query; the message is the reason given to the client."""


class _Query:
    """The query parameters of a request, each read once and validated."""

    def __init__(self, request: Request, allowed: Iterable[str]) -> None:
        self._params = request.query_params
        allowed = set(allowed)
        for name in self._params:
            if name not in allowed:
                expected = ", ".join(sorted(allowed)) or "none"
                raise BadRequestError(f"unknown query parameter {name!r}; expected: {expected}")
            if len(self._params.getlist(name)) > 1:
                raise BadRequestError(f"query parameter {name!r} given more than once")

    def text(self, name: str) -> str | None:
        value = self._params.get(name)
        if value is None:
            return None
        if not value or len(value) > _MAX_TEXT or not value.isprintable():
            raise BadRequestError(
                f"{name} must be 1 to {_MAX_TEXT} printable characters, got {len(value)}"
            )
        return value

    def integer(self, name: str, default: int | None, low: int, high: int) -> int | None:
        value = self._params.get(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise BadRequestError(f"{name} must be an integer, got {value[:40]!r}") from None
        if not low <= number <= high:
            raise BadRequestError(f"{name} must be between {low} and {high}, got {number}")
        return number

    def choice(self, name: str, choices: Iterable[str], default: str | None) -> str | None:
        value = self._params.get(name)
        if value is None:
            return default
        options = sorted(choices)
        if value not in options:
            raise BadRequestError(f"{name} must be one of {', '.join(options)}, got {value[:40]!r}")
        return value


_JOB_STATES = {"requested", "queued", "assigned", "running", "preempted", "lost", *TERMINAL}
_MAX_TIME_MS = 253402300799999  # 9999-12-31, the largest time anyone means


def _finite(data: Any) -> Any:
    """The data with NaN and infinities (which JSON cannot carry) as null."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def encode_json(data: Any) -> bytes:
    return json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":")).encode()


def _json(data: Any, status: int = 200) -> Response:
    return Response(encode_json(data), status, media_type="application/json")


def create_web_app(monitor: Monitor) -> ASGIApp:
    """The Starlette app, wrapped in the security headers."""

    async def index(request: Request) -> Response:
        _Query(request, ())
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def overview(request: Request) -> Response:
        _Query(request, ())
        return _json(monitor.overview(monitor.clock()))

    async def nodes(request: Request) -> Response:
        query = _Query(request, ("state", "region", "limit"))
        liveness = query.choice("state", ("alive", "dead", "all"), "all")
        region = query.text("region")
        limit = query.integer("limit", 500, 1, 10_000)
        assert liveness is not None
        assert limit is not None
        return _json(
            {"nodes": monitor.nodes(monitor.clock(), liveness=liveness, region=region, limit=limit)}
        )

    async def node(request: Request) -> Response:
        _Query(request, ())
        node_id = request.path_params["node_id"]
        if node_id not in monitor.state.nodes:
            raise HTTPException(404, f"no node {node_id[:_MAX_TEXT]!r} is known")
        return _json(monitor.node(node_id, monitor.clock()))

    async def jobs(request: Request) -> Response:
        query = _Query(request, ("state", "tenant", "limit"))
        state = query.choice("state", _JOB_STATES, None)
        tenant = query.text("tenant")
        limit = query.integer("limit", 100, 1, 1000)
        assert limit is not None
        return _json({"jobs": monitor.jobs(state=state, tenant=tenant, limit=limit)})

    async def job(request: Request) -> Response:
        _Query(request, ())
        job_id = request.path_params["job_id"]
        if job_id not in monitor.state.jobs:
            raise HTTPException(404, f"no job {job_id[:_MAX_TEXT]!r} is known")
        return _json(monitor.job(job_id))

    async def queues(request: Request) -> Response:
        _Query(request, ())
        now = monitor.clock()
        return _json(
            {
                "queues": monitor.queues(now),
                "scheduling_latency_ms": monitor.state.scheduling_latency.summary(now),
            }
        )

    async def datasets(request: Request) -> Response:
        query = _Query(request, ("tenant", "state", "limit"))
        tenant = query.text("tenant")
        state = query.choice("state", ("requested", "ready", "rejected"), None)
        limit = query.integer("limit", 100, 1, 1000)
        assert limit is not None
        return _json({"datasets": monitor.datasets(tenant=tenant, state=state, limit=limit)})

    async def models(request: Request) -> Response:
        query = _Query(request, ("tenant", "limit"))
        tenant = query.text("tenant")
        limit = query.integer("limit", 50, 1, 500)
        assert limit is not None
        return _json({"leaderboard": monitor.leaderboard(tenant=tenant, limit=limit)})

    async def pipeline(request: Request) -> Response:
        _Query(request, ())
        return _json(monitor.pipeline())

    async def alerts(request: Request) -> Response:
        query = _Query(request, ("state", "limit"))
        state = query.choice("state", ("firing", "resolved"), None)
        limit = query.integer("limit", 100, 1, 1000)
        assert limit is not None
        history = await monitor.store.alerts(limit, state)
        return _json({"active": monitor.active_alerts(), "history": history})

    async def series(request: Request) -> Response:
        query = _Query(request, ("metric", "subject", "since", "until", "resolution"))
        metric = query.choice("metric", METRICS, None)
        if metric is None:
            raise BadRequestError(f"metric is required, one of {', '.join(sorted(METRICS))}")
        subject = query.text("subject")
        now = monitor.clock()
        until = query.integer("until", now, 0, _MAX_TIME_MS)
        assert until is not None
        since = query.integer("since", until - 15 * 60_000, 0, _MAX_TIME_MS)
        assert since is not None
        if since >= until:
            raise BadRequestError(f"since ({since}) must be before until ({until})")
        chosen = query.choice("resolution", (str(r) for r in (10, 300, 3600)), None)
        resolution = (
            int(chosen) if chosen is not None else monitor.store.pick_resolution(since, until, now)
        )
        if (until - since) / (resolution * 1000) > 20_000:
            raise BadRequestError(
                f"{until - since} ms at {resolution} s is more than 20000 points; "
                "narrow the range or choose a coarser resolution"
            )
        points = await monitor.store.read(
            metric, subject, since, until, resolution, max_rows=_MAX_SERIES_ROWS + 1
        )
        truncated = sum(len(series) for series in points.values()) > _MAX_SERIES_ROWS
        if truncated:
            # The one row past the limit only says that there were more.
            points[next(reversed(points))].pop()
        return _json(
            {
                "truncated": truncated,
                "metric": metric,
                "description": METRICS[metric],
                "resolution_s": resolution,
                "since": since,
                "until": until,
                "series": points,
            }
        )

    async def stream(request: Request) -> Response:
        _Query(request, ())
        if monitor.hub.clients >= MAX_STREAMS:
            # Each stream holds a connection and a share of every update's encoding.
            return _json({"error": f"more than {MAX_STREAMS} live dashboards; try later"}, 503)

        async def events() -> AsyncIterator[bytes]:
            with monitor.hub.subscribe() as mailbox:
                # The first message is the current state, so a fresh page is complete.
                first = encode_json(monitor.live_update(monitor.clock()))
                yield b"retry: 2000\nevent: update\ndata: " + first + b"\n\n"
                while True:
                    try:
                        async with asyncio.timeout(monitor.keepalive_s):
                            message = await mailbox.get()
                    except TimeoutError:
                        yield b": keepalive\n\n"  # proxies close idle connections
                        continue
                    if message == Hub.CLOSE:
                        return
                    yield b"event: update\ndata: " + message + b"\n\n"

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def bad_request(request: Request, exc: Exception) -> Response:
        return _json({"error": str(exc)}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _json({"error": exc.detail}, exc.status_code)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/overview", overview),
            Route("/api/nodes", nodes),
            Route("/api/nodes/{node_id:str}", node),
            Route("/api/jobs", jobs),
            Route("/api/jobs/{job_id:str}", job),
            Route("/api/queues", queues),
            Route("/api/datasets", datasets),
            Route("/api/models", models),
            Route("/api/pipeline", pipeline),
            Route("/api/alerts", alerts),
            Route("/api/series", series),
            Route("/api/stream", stream),
            Mount("/metrics", prometheus_client.make_asgi_app()),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        exception_handlers={BadRequestError: bad_request, HTTPException: http_error},
    )
    return _SecurityHeaders(app)


class _SecurityHeaders:
    """Adds the security headers to every response (plain ASGI, so streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self._app(scope, receive, send_with_headers)
