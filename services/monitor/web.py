"""The monitor's web app: JSON API, server-sent events, the dashboard and /metrics.

Every query parameter is validated; a malformed query is a 400 with the reason, an unknown
resource a 404, never a 500. Responses carry a strict Content-Security-Policy (scripts and
styles only from this origin, nothing inline), and the dashboard builds its DOM with
``textContent``, so names that users chose are always shown as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import prometheus_client
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.monitor.entities import TERMINAL, primary_metric
from services.monitor.sampling import METRICS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator

    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from services.monitor.rules import RuleEngine
    from services.monitor.state import MonitorState
    from services.monitor.store import SeriesStore

__all__ = ["BadRequestError", "Hub", "Monitor", "create_web_app", "now_ms"]

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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Hub:
    """Hands the newest live update to every connected dashboard.

    Each client has a one-slot mailbox: a slow client skips intermediate updates instead
    of queueing them, so it always sees the newest state and never holds memory.
    """

    CLOSE = b""  # tells every stream to end, so the server can stop without waiting

    def __init__(self) -> None:
        self._clients: set[asyncio.Queue[bytes]] = set()

    @property
    def clients(self) -> int:
        return len(self._clients)

    def publish(self, message: bytes) -> None:
        for mailbox in self._clients:
            if mailbox.full():
                mailbox.get_nowait()
            mailbox.put_nowait(message)

    def close(self) -> None:
        self.publish(self.CLOSE)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[bytes]]:
        mailbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=1)
        self._clients.add(mailbox)
        try:
            yield mailbox
        finally:
            self._clients.discard(mailbox)


@dataclass(slots=True, weakref_slot=True, eq=False)
class Monitor:
    """What the web app and the service loops share."""

    state: MonitorState
    engine: RuleEngine
    store: SeriesStore
    dead_after_ms: int
    hub: Hub = field(default_factory=Hub)
    clock: Callable[[], int] = now_ms
    keepalive_s: float = 15.0

    # -- views, as JSON-ready data --------------------------------------------------------

    def overview(self, now: int) -> dict[str, Any]:
        state = self.state
        alive = sum(state.alive(node, now, self.dead_after_ms) for node in state.nodes.values())
        outcomes = state.job_outcomes.values(now)
        durations = state.job_durations.summary(now)
        return {
            "time": now,
            "version": state.version,
            "nodes": {"total": len(state.nodes), "alive": alive, "dead": len(state.nodes) - alive},
            "utilisation": state.utilisation(now, self.dead_after_ms),
            "queue": {
                "pending": sum(len(jobs) for jobs in state.pending.values()),
                "queues": self.queues(now),
            },
            "scheduling_latency_ms": state.scheduling_latency.summary(now),
            "jobs": {
                "by_state": {name: n for name, n in state.jobs_by_state.items() if n},
                "failure_rate": sum(outcomes) / len(outcomes) if outcomes else None,
                "duration_ms": durations,
                "finished": state.counters["jobs_finished"],
                "preemptions": state.counters["job_preempted"],
                "requeues": state.counters["job_requeued"],
            },
            "data": {
                "requested": state.counters["datasets_requested"],
                "ready": state.counters["datasets_ready"],
                "rejected": state.counters["datasets_rejected"],
                "rows_ingested": state.counters["rows_ingested"],
                "rows_rejected": state.counters["rows_rejected"],
            },
            "models": {
                "count": len(state.models),
                "evaluated": sum(m.evaluated_at is not None for m in state.models.values()),
                "champions": len(state.champions),
            },
            "pipeline": {
                "dead_letters": sum(state.dead_letters.values()),
                "max_lag_messages": max((lag.messages for lag in state.lag.values()), default=0),
                "events": sum(state.events_by_topic.values()),
            },
            "alerts": {"firing": len(self.engine.firing())},
        }

    def queues(self, now: int) -> list[dict[str, Any]]:
        state = self.state
        oldest = state.oldest_waits(now)
        keys = sorted(set(state.pending) | set(state.queue_wait))
        rows = []
        for key in keys:
            window = state.queue_wait.get(key)
            waits = window.summary(now) if window is not None else {}
            rows.append(
                {
                    "tenant": key[0],
                    "priority_class": key[1],
                    "pending": len(state.pending.get(key, ())),
                    "oldest_wait_ms": oldest.get(key),
                    "wait_ms": waits,
                }
            )
        return rows

    def node(self, node_id: str, now: int) -> dict[str, Any]:
        node = self.state.nodes[node_id]
        return {
            "node_id": node.node_id,
            "region": node.region,
            "gpu_type": node.gpu_type,
            "labels": node.labels,
            "capacity": node.capacity,
            "usage": node.usage,
            "utilisation": node.utilisation(),
            "running_job_ids": node.running_job_ids,
            "alive": self.state.alive(node, now, self.dead_after_ms),
            "last_heartbeat_age_ms": now - node.sent_at,
            "sent_at": node.sent_at,
            "sequence": node.sequence,
            "restarts": node.restarts,
        }

    def nodes(
        self, now: int, *, liveness: str = "all", region: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        found = []
        for node_id in sorted(self.state.nodes):
            view = self.node(node_id, now)
            if region is not None and view["region"] != region:
                continue
            if liveness != "all" and view["alive"] != (liveness == "alive"):
                continue
            found.append(view)
            if len(found) >= limit:
                break
        return found

    def job(self, job_id: str) -> dict[str, Any]:
        job = self.state.jobs[job_id]
        return {
            "job_id": job.job_id,
            "name": job.name,
            "tenant": job.tenant,
            "state": job.state,
            "priority_class": job.priority_class,
            "priority": job.priority,
            "submitted_at": job.submitted_at,
            "assigned_at": job.assigned_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "updated_at": job.updated_at,
            "node_ids": job.node_ids,
            "attempt": job.attempt,
            "reason": job.reason,
            "progress_percent": job.progress_percent,
            "stage": job.stage,
            "preemptions": job.preemptions,
            "requeues": job.requeues,
            "dataset": job.dataset,
            "model_id": job.model_id,
        }

    def jobs(
        self, *, state: str | None = None, tenant: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first (most recently changed)."""
        matching = (
            job_id
            for job_id in reversed(self.state.jobs)
            if (state is None or self.state.jobs[job_id].state == state)
            and (tenant is None or self.state.jobs[job_id].tenant == tenant)
        )
        return [self.job(job_id) for job_id in itertools.islice(matching, limit)]

    def datasets(
        self, *, tenant: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        chosen = (
            d
            for d in self.state.datasets.values()
            if (tenant is None or d.tenant == tenant) and (state is None or d.state == state)
        )
        newest = heapq.nlargest(limit, chosen, key=lambda d: d.updated_at)
        return [
            {
                "tenant": d.tenant,
                "dataset": d.dataset,
                "state": d.state,
                "updated_at": d.updated_at,
                "version": d.version,
                "rows": d.rows,
                "reused": d.reused,
                "region": d.region,
                "quality": d.quality,
                "reject_code": d.reject_code,
                "reject_reason": d.reject_reason,
                "versions": d.versions,
                "rejects": d.rejects,
            }
            for d in newest
        ]

    def leaderboard(self, *, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Per (tenant, model name): its models ranked by primary metric, champion history."""
        groups: dict[tuple[str, str], list[Any]] = {}
        for model in self.state.models.values():
            if tenant is None or model.tenant == tenant:
                groups.setdefault((model.tenant, model.model_name), []).append(model)
        board = []
        for (owner, name), models in sorted(groups.items())[:limit]:
            evaluated = [m for m in models if m.metrics]
            chosen = primary_metric(evaluated[-1].metrics) if evaluated else None
            if chosen is not None:
                metric, higher = chosen
                ranked = sorted(
                    (m for m in evaluated if metric in m.metrics),
                    key=lambda m: m.metrics[metric],
                    reverse=higher,
                )
            else:
                metric, ranked = None, []
            champion = self.state.champions.get((owner, name))
            board.append(
                {
                    "tenant": owner,
                    "model_name": name,
                    "primary_metric": metric,
                    "champion": champion,
                    "models": [
                        {
                            "model_id": m.model_id,
                            "algorithm": m.algorithm,
                            "problem_type": m.problem_type,
                            "metrics": m.metrics,
                            "cv_score": m.cv_score,
                            "evaluated_at": m.evaluated_at,
                            "findings": m.findings,
                            "champion": m.model_id == champion,
                            "roc": m.roc,
                        }
                        for m in ranked[:20]
                    ],
                    "history": self.state.model_history.get((owner, name), []),
                    "promotions": self.state.promotions.get((owner, name), []),
                }
            )
        return board

    def pipeline(self) -> dict[str, Any]:
        state = self.state
        return {
            "checked_at": state.pipeline_checked_at,
            "lag": [
                {
                    "group": group,
                    "topic": topic,
                    "messages": lag.messages,
                    "seconds": lag.seconds,
                    "committed": lag.committed,
                    "end": lag.end,
                }
                for (group, topic), lag in sorted(state.lag.items())
            ],
            "dead_letters": dict(sorted(state.dead_letters.items())),
            "events_by_topic": dict(sorted(state.events_by_topic.items())),
            "audit": [
                {"action": action, "outcome": outcome, "count": count}
                for (action, outcome), count in sorted(state.audit.items())
            ],
        }

    def active_alerts(self) -> list[dict[str, Any]]:
        severity = {rule.name: rule.severity for rule in self.engine.rules}
        return [
            {
                "rule": alert.rule,
                "subject": alert.subject,
                "severity": severity.get(alert.rule, "unknown"),
                "value": alert.value,
                "since": alert.since,
                "fired_at": alert.fired_at,
                "labels": alert.labels,
                "tenant": alert.tenant,
            }
            for alert in sorted(self.engine.firing(), key=lambda a: a.fired_at or 0, reverse=True)
        ]

    def live_update(self, now: int) -> dict[str, Any]:
        """What the dashboard receives on every change."""
        return {
            "overview": self.overview(now),
            "nodes": self.nodes(now, limit=200),
            "jobs": self.jobs(limit=50),
            "datasets": self.datasets(limit=50),
            "alerts": self.active_alerts(),
        }


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
