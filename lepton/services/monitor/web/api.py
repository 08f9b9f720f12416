"""The monitor's web app: JSON API, server-sent events and the dashboard, behind a credential.

Every route but the sign-in page needs a credential (:mod:`lepton.services.monitor.web.auth`).
Every query parameter is validated; a malformed query is a 400 with the reason, an unknown
resource a 404, never a 500. Responses carry a strict Content-Security-Policy (scripts and
styles only from this origin, nothing inline), and the dashboard builds its DOM with
``textContent``, so names that users chose are always shown as text. ``/metrics`` and
``/healthz`` are not here: they are served without a credential on a bind of their own
(:mod:`lepton.services.monitor.web.open`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lepton.services.monitor.entities import TERMINAL
from lepton.services.monitor.sampling import METRICS, tenant_prefix
from lepton.services.monitor.views import Hub
from lepton.services.monitor.web.auth import (
    ForbiddenError,
    Gate,
    HiddenError,
    client_of,
    sign_in,
    sign_out,
)
from lepton.services.monitor.web.basics import (
    MAX_TEXT,
    BadRequestError,
    Query,
    SecurityHeaders,
    encode_json,
    json_response,
)
from lepton.services.monitor.web.denials import Denial

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request
    from starlette.types import ASGIApp

    from lepton.services.monitor.views import Monitor
    from lepton.services.monitor.web.auth import Authenticator, Session
    from lepton.services.monitor.web.denials import Denials

__all__ = ["create_web_app"]

STATIC = Path(__file__).parents[1] / "static"
MAX_STREAMS = 200
_MAX_SERIES_ROWS = 50_000
_JOB_STATES = {"requested", "queued", "assigned", "running", "preempted", "lost", *TERMINAL}
_MAX_TIME_MS = 253402300799999  # 9999-12-31, the largest time anyone means


def _session(request: Request) -> Session:
    session: Session = request.state.session  # set by the Gate before any route runs
    return session


# The time series a tenant may read: the nodes' (which every audience sees), and, of the
# queues', those whose subject is its own (<tenant>/<priority class>). The others add up
# every tenant's work (jobs, latency, throughput) or are the pipeline's.
_TENANT_SERIES = {
    "utilisation": False,
    "node_utilisation": False,
    "nodes": False,
    "queue_pending": True,
    "queue_wait_p95_s": True,
}


def _series_scope(session: Session, metric: str, subject: str | None) -> str | None:
    """The subject prefix a series read is confined to (None: none); ForbiddenError for a
    series or subject the session may not read."""
    if session.tenant is None:
        return None
    if metric not in _TENANT_SERIES:
        session.require_everyone(f"the {metric} series")
    if not _TENANT_SERIES[metric]:
        return None
    prefix = tenant_prefix(session.tenant)
    if subject is not None and not subject.startswith(prefix):
        owner = unquote(subject.partition("/")[0]) if "/" in subject else None
        raise ForbiddenError(
            f"{session.principal} may read {metric} only of subjects {prefix}<priority class>",
            owner,
        )
    return prefix


def create_web_app(monitor: Monitor, authenticator: Authenticator, denials: Denials) -> ASGIApp:
    """The Starlette app behind its :class:`Gate`, wrapped in the security headers."""

    async def index(request: Request) -> Response:
        Query(request, ())
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def overview(request: Request) -> Response:
        Query(request, ())
        return json_response(monitor.overview(monitor.clock(), _session(request).tenant))

    async def nodes(request: Request) -> Response:
        query = Query(request, ("state", "region", "limit"))
        liveness = query.choice("state", ("alive", "dead", "all"), "all")
        region = query.text("region")
        limit = query.integer("limit", 500, 1, 10_000)
        assert liveness is not None
        assert limit is not None
        found = monitor.nodes(
            monitor.clock(),
            liveness=liveness,
            region=region,
            limit=limit,
            tenant=_session(request).tenant,
        )
        return json_response({"nodes": found})

    async def node(request: Request) -> Response:
        Query(request, ())
        node_id = request.path_params["node_id"]
        if node_id not in monitor.state.nodes:
            raise HTTPException(404, f"no node {node_id[:MAX_TEXT]!r} is known")
        return json_response(monitor.node(node_id, monitor.clock(), _session(request).tenant))

    async def jobs(request: Request) -> Response:
        query = Query(request, ("state", "tenant", "limit"))
        state = query.choice("state", _JOB_STATES, None)
        tenant = _session(request).narrow(query.text("tenant"), "jobs")
        limit = query.integer("limit", 100, 1, 1000)
        assert limit is not None
        return json_response({"jobs": monitor.jobs(state=state, tenant=tenant, limit=limit)})

    async def job(request: Request) -> Response:
        Query(request, ())
        job_id = request.path_params["job_id"]
        unknown = f"no job {job_id[:MAX_TEXT]!r} is known"
        found = monitor.state.jobs.get(job_id)
        if found is None:
            raise HTTPException(404, unknown)
        if not _session(request).sees(found.tenant):
            raise HiddenError("the job is another tenant's", unknown, found.tenant)
        return json_response(monitor.job(job_id))

    async def queues(request: Request) -> Response:
        Query(request, ())
        now, tenant = monitor.clock(), _session(request).tenant
        return json_response(
            {
                "queues": monitor.queues(now, tenant),
                "scheduling_latency_ms": monitor.scheduling_latency(now, tenant),
            }
        )

    async def datasets(request: Request) -> Response:
        query = Query(request, ("tenant", "state", "limit"))
        tenant = _session(request).narrow(query.text("tenant"), "datasets")
        state = query.choice("state", ("requested", "ready", "rejected"), None)
        limit = query.integer("limit", 100, 1, 1000)
        assert limit is not None
        return json_response(
            {"datasets": monitor.datasets(tenant=tenant, state=state, limit=limit)}
        )

    async def models(request: Request) -> Response:
        query = Query(request, ("tenant", "limit"))
        tenant = _session(request).narrow(query.text("tenant"), "models")
        limit = query.integer("limit", 50, 1, 500)
        assert limit is not None
        return json_response({"leaderboard": monitor.leaderboard(tenant=tenant, limit=limit)})

    async def pipeline(request: Request) -> Response:
        Query(request, ())
        _session(request).require_everyone("the pipeline (consumer groups, dead letters, audit)")
        return json_response(monitor.pipeline())

    async def alerts(request: Request) -> Response:
        query = Query(request, ("state", "limit"))
        state = query.choice("state", ("firing", "resolved"), None)
        limit = query.integer("limit", 100, 1, 1000)
        assert limit is not None
        tenant = _session(request).tenant
        history = await monitor.store.alerts(limit, state, tenant)
        return json_response({"active": monitor.active_alerts(tenant), "history": history})

    async def series(request: Request) -> Response:
        query = Query(request, ("metric", "subject", "since", "until", "resolution"))
        metric = query.choice("metric", METRICS, None)
        if metric is None:
            raise BadRequestError(f"metric is required, one of {', '.join(sorted(METRICS))}")
        subject = query.text("subject")
        prefix = _series_scope(_session(request), metric, subject)
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
            metric,
            subject,
            since,
            until,
            resolution,
            max_rows=_MAX_SERIES_ROWS + 1,
            subject_prefix=prefix,
        )
        truncated = sum(len(series) for series in points.values()) > _MAX_SERIES_ROWS
        if truncated:
            # The one row past the limit only says that there were more.
            points[next(reversed(points))].pop()
        return json_response(
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
        Query(request, ())
        session = _session(request)
        if monitor.hub.clients >= MAX_STREAMS:
            # Each stream holds a connection and a share of every update's encoding.
            return json_response(
                {"error": f"more than {MAX_STREAMS} live dashboards; try later"}, 503
            )

        async def events() -> AsyncIterator[bytes]:
            with monitor.hub.subscribe(session.tenant) as mailbox:
                # The first message is the current state, so a fresh page is complete.
                first = encode_json(monitor.live_update(monitor.clock(), session.tenant))
                yield b"retry: 2000\nevent: update\ndata: " + first + b"\n\n"
                while True:
                    # The stream ends with its credential: the client's reconnection must
                    # then show a valid one.
                    left = session.seconds_left(authenticator.clock())
                    if left <= 0:
                        return
                    try:
                        async with asyncio.timeout(min(monitor.keepalive_s, left)):
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

    async def whoami(request: Request) -> Response:
        Query(request, ())
        session = _session(request)
        return json_response(
            {
                "principal": str(session.principal),
                "tenant": session.tenant,  # the only tenant it sees; null: every tenant
                "expires_at": session.expires_at * 1000,
            }
        )

    async def login(request: Request) -> Response:
        return await sign_in(request, authenticator, denials)

    async def bad_request(request: Request, exc: Exception) -> Response:
        return json_response({"error": str(exc)}, 400)

    def refused(request: Request, status: int, reason: str, owner: str | None) -> None:
        session = _session(request)
        denials.record(
            Denial(
                status=status,
                reason=reason,
                method=request.method,
                path=request.url.path,
                client=client_of(request),
                actor=str(session.principal),
                tenant=session.tenant or "",
                owner=owner,
            )
        )

    async def forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ForbiddenError)
        refused(request, 403, str(exc), exc.owner)
        return json_response({"error": str(exc)}, 403)

    async def hidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HiddenError)
        refused(request, 404, str(exc), exc.owner)
        return json_response({"error": exc.public}, 404)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return json_response({"error": exc.detail}, exc.status_code)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", sign_out, methods=["POST"]),
            Route("/api/whoami", whoami),
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
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        exception_handlers={
            BadRequestError: bad_request,
            HTTPException: http_error,
            ForbiddenError: forbidden,
            HiddenError: hidden,
        },
    )
    return SecurityHeaders(Gate(app, authenticator, denials))
