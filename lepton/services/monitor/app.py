"""The monitor service: the monitoring node. Metrics, alerts and a live dashboard.

It consumes every Lepton topic in its own consumer group into :class:`MonitorState`, and
runs four loops beside the consumer. One instance is active at a time (a PostgreSQL
leader lock, as the scheduler's); others stand by and take over from the last snapshot
and the group's offsets. Its view is of every event: instances sharing the group's
partitions would each see a part, and each raise alerts and write series from it.

- *sample*: every ``LEPTON_MONITOR_SAMPLE_INTERVAL_S``, evaluates the alert rules (their
  transitions go to ``lepton.alerts`` and the alert history), records a point of every
  time series in PostgreSQL, prunes old points, and saves a snapshot of the state
  (also on a graceful stop; restored at start);
- *pipeline*: reads consumer lag and dead-letter counts from the broker's offsets;
- *web*: the dashboard, JSON API and SSE stream on ``LEPTON_MONITOR_HOST``/``PORT``,
  each request with a credential (a token checked with the master identity key), and
  ``/metrics`` and ``/healthz``, open, on ``LEPTON_MONITOR_METRICS_HOST``/``PORT``;
- *push*: sends the newest view to connected dashboards when something changed;
- *audit*: publishes the web app's refusals on ``lepton.audit``;
- *broker denials*: with ``LEPTON_MONITOR_BROKER_LOG``, the broker's refusals too
  (:mod:`lepton.services.monitor.broker_denials`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from lepton.contract.identity import Verifier
from lepton.contract.topics import ALL_TOPICS
from lepton.runtime.service import Context, EmbeddedServer, Service, ServiceFault, run
from lepton.services.monitor.broker_denials import broker_relays
from lepton.services.monitor.metrics_export import registered_collector
from lepton.services.monitor.pipeline_watch import OUTAGES, PipelineWatch
from lepton.services.monitor.replay import EventFold, catch_up
from lepton.services.monitor.rules import (
    FRESHNESS_SIGNALS,
    RuleEngine,
    Transition,
    default_rules,
    read_signals,
)
from lepton.services.monitor.sampling import Sampler
from lepton.services.monitor.settings import MonitorSettings
from lepton.services.monitor.state import MonitorState
from lepton.services.monitor.store import SeriesStore
from lepton.services.monitor.views import Monitor, now_ms
from lepton.services.monitor.web import (
    Authenticator,
    Denials,
    create_open_app,
    create_web_app,
    encode_json,
)

if TYPE_CHECKING:
    from lepton.bus import BatchHandler
    from lepton.config import Settings

__all__ = ["MonitorService", "build", "create_app", "main"]

MIGRATIONS = Path(__file__).parent / "migrations"
_PUSH_INTERVAL_S = 0.25  # at most four dashboard updates a second, however busy the bus
_PUSH_AT_LEAST_S = 2.0  # ages and liveness change with time alone
_PRUNE_EVERY_MS = 60_000
_PER_NODE_EVERY_MS = 10_000
_AUDIT_RETRY_S = 1.0


class MonitorService:
    """The monitor: a :class:`Service` plus the loops around its state."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.monitor: Monitor | None = None
        self.authenticator: Authenticator | None = None
        self.denials = Denials(structlog.get_logger("monitor"))
        self.url: str | None = None  # the dashboard, once the web server listens
        self.metrics_url: str | None = None  # where /metrics and /healthz are, likewise
        self.web_ready = asyncio.Event()
        self._sampler = Sampler()
        self._unsent: list[Transition] = []
        self._nodes_written = 0
        self._pipeline = PipelineWatch(settings)
        self.service = Service(
            name="monitor",
            actor="monitor",
            consumes=[topic.name for topic in ALL_TOPICS],
            settings=settings,
            migrations=MIGRATIONS,
            handler_factory=self._handler,
            # Each retried with backoff by the Service if it fails (its /healthz says so).
            background=[
                self._serve,
                self._sample,
                self._watch_pipeline,
                self._push,
                self._relay_denials,
                *broker_relays(settings),
            ],
            production_checks=[_tokens_stay_on_this_machine],
            # More instances are for availability, not load: one folds every event.
            singleton=True,
        )

    async def _handler(self, context: Context) -> BatchHandler:
        settings = self.settings
        # The master key the service checks records with checks tokens too.
        assert context.master is not None, "a service holds the master key"
        self.authenticator = Authenticator(Verifier(context.master))
        store = SeriesStore(context.pool, settings.topic_prefix, settings.monitor_retention_days)
        bounds: dict[str, Any] = {
            "max_jobs": settings.monitor_max_jobs,
            "max_nodes": settings.monitor_max_nodes,
            "forget_after_ms": int(settings.monitor_forget_nodes_after_s * 1000),
            "stall_after_ms": int(settings.monitor_node_dead_after_s * 1000),
        }
        state = MonitorState(**bounds)
        engine = RuleEngine(
            default_rules(
                node_dead_after_s=settings.monitor_node_dead_after_s,
                lag_groups=settings.monitor_lag_alert_groups,
            )
        )
        saved = await store.load_snapshot()
        if saved is not None:
            state = MonitorState.from_snapshot(saved[0], **bounds)
            engine.restore(saved[1])
            replayed = await catch_up(context, settings, state)
            context.log.info(
                "restored", nodes=len(state.nodes), jobs=len(state.jobs), replayed=replayed
            )
        if state.positions is None:
            state.positions = {}
        self.monitor = Monitor(state, engine, store, int(settings.monitor_node_dead_after_s * 1000))
        return EventFold(state, len(settings.topic_prefix))

    def _require(self) -> Monitor:
        assert self.monitor is not None, "the handler factory runs before the loops"
        return self.monitor

    async def _relay_denials(self, context: Context) -> None:
        topic = context.topic("lepton.audit")
        while True:
            batch = await self.denials.next_batch()
            try:
                # One refusal that can never be sent is set aside, not retried for ever.
                acks, _ = await context.publisher.send_sendable(
                    topic, [(event["tenant"], event) for event in batch]
                )
                await asyncio.gather(*acks)
            except OUTAGES as exc:
                # Kept until the broker has them; what arrives meanwhile waits (bounded).
                context.log.warning("audit publish failed", error=repr(exc))
                await asyncio.sleep(_AUDIT_RETRY_S)
                continue
            self.denials.sent(len(batch))

    # -- sample: rules, time series, retention, snapshots -----------------------------------

    async def _sample(self, context: Context) -> None:
        monitor = self._require()
        interval = self.settings.monitor_sample_interval_s
        pruned = saved = monitor.clock()
        try:
            while True:
                now = monitor.clock()
                try:
                    await self._sample_once(context, monitor, now)
                    if now - pruned >= _PRUNE_EVERY_MS:
                        await monitor.store.prune(now)
                        pruned = now
                    if now - saved >= self.settings.monitor_snapshot_interval_s * 1000:
                        await self._save(monitor, now)
                        saved = now
                except OUTAGES as exc:
                    context.log.warning("sample failed", error=repr(exc))
                await asyncio.sleep(interval)
        finally:
            # The consumer has stopped and committed: this snapshot holds all it handled.
            with contextlib.suppress(*OUTAGES):
                await self._save(monitor, monitor.clock())

    async def _sample_once(self, context: Context, monitor: Monitor, now: int) -> None:
        signals = read_signals(monitor.state, monitor.engine.rules, now)
        held = FRESHNESS_SIGNALS if self._behind(monitor.state) else ()
        self._unsent.extend(monitor.engine.evaluate(signals, now, held))
        if self._unsent:
            # Kept until the broker and the database have them, so none is lost in an outage.
            topic = context.topic("lepton.alerts")
            for transition in list(self._unsent):
                # An alert that can never be sent is set aside (and still stored), so one
                # bad record never stops the sampler for good.
                acks, _ = await context.publisher.send_sendable(
                    topic, [(transition.key, transition.record())]
                )
                await asyncio.gather(*acks)
                await monitor.store.record_alerts([transition])
                self._unsent.remove(transition)
                context.log.info("alert", **transition.record())
        # Per-node series once per finest bucket (10 s): one point each is all it keeps.
        per_node = now - self._nodes_written >= _PER_NODE_EVERY_MS
        points = self._sampler.points(monitor.state, now, monitor.dead_after_ms, per_node=per_node)
        await monitor.store.write(now, points)
        if per_node:
            self._nodes_written = now

    def _behind(self, state: MonitorState) -> bool:
        """Whether the monitor's own consumer is too far behind (or not measured yet) for
        verdicts that compare what it read with the current time."""
        if state.pipeline_checked_at is None:
            return True
        limit = self.settings.monitor_node_dead_after_s / 3
        return any(
            lag.seconds is not None and lag.seconds > limit
            for (group, _), lag in state.lag.items()
            if group == "lepton-monitor"
        )

    async def _save(self, monitor: Monitor, now: int) -> None:
        await monitor.store.save_snapshot(
            now, monitor.state.to_snapshot(), monitor.engine.to_snapshot()
        )

    async def _watch_pipeline(self, context: Context) -> None:
        await self._pipeline.run(context, self._require())

    # -- web: dashboard, API and SSE behind a credential; /metrics and /healthz open ----------

    async def _serve(self, context: Context) -> None:
        monitor = self._require()
        collector = registered_collector()
        collector.monitors.add(monitor)
        assert self.authenticator is not None, "the handler factory runs before the loops"
        settings = self.settings
        apps = {
            "dashboard": (
                create_web_app(monitor, self.authenticator, self.denials),
                settings.monitor_host,
                settings.monitor_port,
            ),
            "metrics": (
                create_open_app(self._health),
                settings.monitor_metrics_host,
                settings.monitor_metrics_port,
            ),
        }
        started: list[tuple[EmbeddedServer, asyncio.Task[None]]] = []
        urls: dict[str, str] = {}
        try:
            for name, (app, host, port) in apps.items():
                server = EmbeddedServer(
                    app, host, port, lifespan="off", timeout_graceful_shutdown=2
                )
                task = asyncio.create_task(server.serve())
                started.append((server, task))
                while not server.started:
                    if task.done():
                        # A monitor without its dashboard or its metrics is not running:
                        # stop (exit status 1), saying why.
                        raise ServiceFault(
                            f"the monitor's {name} cannot listen on {host}:{port}: "
                            f"{task.exception()!r}"
                        )
                    await asyncio.sleep(0.01)
                bound = server.servers[0].sockets[0].getsockname()[1]
                urls[name] = f"http://{host}:{bound}/"
            self.url, self.metrics_url = urls["dashboard"], urls["metrics"]
            context.log.info(
                "dashboard",
                url=self.url,
                metrics=f"{self.metrics_url}metrics/",
                healthz=f"{self.metrics_url}healthz",
            )
            self.web_ready.set()
            # Shielded: cancelling this loop must stop the servers gracefully, not kill them.
            await asyncio.shield(asyncio.gather(*(task for _, task in started)))
        finally:
            monitor.hub.close()
            for server, _ in started:
                server.should_exit = True
            await asyncio.shield(
                asyncio.gather(*(task for _, task in started), return_exceptions=True)
            )
            collector.monitors.discard(monitor)

    def _health(self) -> dict[str, Any]:
        """What /healthz answers: up, what keeps it from working if anything, and how far
        the view has come (nothing of a tenant)."""
        problems = dict(self.service.health.problems)
        status = "degraded" if problems else "ok" if self.web_ready.is_set() else "starting"
        return {
            "service": "monitor",
            "status": status,
            "problems": problems,
            "state_version": self.monitor.state.version if self.monitor is not None else None,
        }

    async def _push(self, context: Context) -> None:
        monitor = self._require()
        seen, pushed = -1, 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_PUSH_INTERVAL_S)
            changed = monitor.state.version != seen
            if monitor.hub.clients and (changed or loop.time() - pushed >= _PUSH_AT_LEAST_S):
                seen, pushed = monitor.state.version, loop.time()
                now = now_ms()
                # One update per audience connected: each tenant's shows only its own.
                for tenant in monitor.hub.audiences():
                    monitor.hub.publish(encode_json(monitor.live_update(now, tenant)), tenant)


def build(settings: MonitorSettings | None = None) -> MonitorService:
    return MonitorService(settings or MonitorSettings())


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: only "localhost" is known to stay on this machine
        return host == "localhost"


def _tokens_stay_on_this_machine(settings: Settings) -> str | None:
    # The monitor speaks plain HTTP: bearer tokens must not cross a network in clear.
    if isinstance(settings, MonitorSettings) and not _loopback(settings.monitor_host):
        return (
            f"LEPTON_MONITOR_HOST is {settings.monitor_host}: the monitor speaks plain HTTP, "
            "so bind it to loopback behind a TLS-terminating proxy"
        )
    return None


def create_app(settings: MonitorSettings | None = None) -> Service:
    return build(settings).service


def main() -> None:
    run(create_app)
