"""The monitor service: the monitoring node. Metrics, alerts and a live dashboard.

It consumes every Lepton topic in its own consumer group into :class:`MonitorState`, and
runs four loops beside the consumer:

- *sample*: every ``LEPTON_MONITOR_SAMPLE_INTERVAL_S``, evaluates the alert rules (their
  transitions go to ``lepton.alerts`` and the alert history), records a point of every
  time series in PostgreSQL, prunes old points, and saves a snapshot of the state
  (also on a graceful stop; restored at start);
- *pipeline*: reads consumer lag and dead-letter counts from the broker's offsets;
- *web*: the dashboard, JSON API, SSE stream and /metrics on ``LEPTON_MONITOR_PORT``;
- *push*: sends the newest view to connected dashboards when something changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import prometheus_client
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lepton.contract import default_codec
from lepton.contract.topics import ALL_TOPICS, dead_letter_topic
from lepton.runtime import endpoints
from lepton.runtime.service import Context, EmbeddedServer, Service, run
from services.monitor.rules import (
    FRESHNESS_SIGNALS,
    RuleEngine,
    Transition,
    default_rules,
    read_signals,
)
from services.monitor.settings import MonitorSettings
from services.monitor.state import Lag, MonitorState, Sampler
from services.monitor.store import SeriesStore
from services.monitor.web import Monitor, create_web_app, encode_json, now_ms

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine, Iterator

    from lepton.bus import BatchHandler, Event

__all__ = ["LagTracker", "MonitorService", "create_app", "main"]

MIGRATIONS = Path(__file__).parent / "migrations"
_PUSH_INTERVAL_S = 0.25  # at most four dashboard updates a second, however busy the bus
_PUSH_AT_LEAST_S = 2.0  # ages and liveness change with time alone
_PRUNE_EVERY_MS = 60_000
_PER_NODE_EVERY_MS = 10_000
# What a loop survives and retries at its next turn: the broker or database being away.
_OUTAGES = (OSError, KafkaError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


@dataclass(slots=True)
class _Progress:
    time_ms: int
    committed: int
    advanced_at: int


class LagTracker:
    """Lag of each (group, topic) in messages, and in seconds estimated from how fast the
    group has been committing (or, when it stalled, from how long ago it last moved)."""

    def __init__(self) -> None:
        self._progress: dict[tuple[str, str], _Progress] = {}

    def update(self, key: tuple[str, str], committed: int, end: int, now: int) -> Lag:
        messages = max(0, end - committed)
        before = self._progress.get(key)
        self._progress[key] = progress = _Progress(now, committed, now)
        seconds: float | None = 0.0 if messages == 0 else None
        if before is not None and messages > 0:
            moved = committed - before.committed
            if moved > 0 and now > before.time_ms:
                seconds = messages / (moved / ((now - before.time_ms) / 1000))
            else:
                progress.advanced_at = before.advanced_at
                seconds = (now - before.advanced_at) / 1000
        return Lag(messages, seconds, committed, end)


class _Collector(Collector):
    """The live monitors' views as Prometheus gauges, computed when scraped.

    Registered once per process; a monitor is reported while it runs (in production one
    per process; tests and benchmarks run several, one after another).
    """

    def __init__(self) -> None:
        self.monitors: weakref.WeakSet[Monitor] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for monitor in list(self.monitors):
            yield from self._collect(monitor)

    def _collect(self, monitor: Monitor) -> Iterator[GaugeMetricFamily]:
        now = monitor.clock()
        state = monitor.state
        nodes = GaugeMetricFamily("lepton_nodes", "Known nodes by liveness.", labels=["state"])
        alive = sum(state.alive(n, now, monitor.dead_after_ms) for n in state.nodes.values())
        nodes.add_metric(["alive"], alive)
        nodes.add_metric(["dead"], len(state.nodes) - alive)
        yield nodes
        utilisation = GaugeMetricFamily(
            "lepton_cluster_utilisation",
            "Usage over capacity of the live nodes.",
            labels=["region", "resource"],
        )
        for region, shares in state.utilisation(now, monitor.dead_after_ms).items():
            for resource, share in shares.items():
                utilisation.add_metric([region, resource], share)
        yield utilisation
        pending = GaugeMetricFamily(
            "lepton_queue_pending", "Jobs waiting.", labels=["tenant", "priority_class"]
        )
        for (tenant, priority_class), jobs in state.pending.items():
            pending.add_metric([tenant, priority_class], len(jobs))
        yield pending
        latency = GaugeMetricFamily(
            "lepton_scheduling_latency_seconds",
            "Request to assignment over the last 5 minutes.",
            labels=["quantile"],
        )
        summary = state.scheduling_latency.summary(now)
        for name, q in (("p50", "0.5"), ("p95", "0.95")):
            value = summary[name]
            if value is not None:
                latency.add_metric([q], value / 1000)
        yield latency
        by_state = GaugeMetricFamily(
            "lepton_jobs", "Jobs in the live view by state.", labels=["state"]
        )
        for job_state, count in state.jobs_by_state.items():
            by_state.add_metric([job_state], count)
        yield by_state
        lag = GaugeMetricFamily(
            "lepton_consumer_lag_messages", "Consumer lag.", labels=["group", "topic"]
        )
        lag_s = GaugeMetricFamily(
            "lepton_consumer_lag_seconds", "Estimated consumer lag.", labels=["group", "topic"]
        )
        for (group, topic), behind in state.lag.items():
            lag.add_metric([group, topic], behind.messages)
            if behind.seconds is not None:
                lag_s.add_metric([group, topic], behind.seconds)
        yield lag
        yield lag_s
        dead = GaugeMetricFamily(
            "lepton_dead_letters", "Messages in a topic's dead-letter topic.", labels=["topic"]
        )
        for topic, count in state.dead_letters.items():
            dead.add_metric([topic], count)
        yield dead
        firing = GaugeMetricFamily(
            "lepton_alerts_firing", "Alerts firing.", labels=["rule", "severity"]
        )
        severity = {rule.name: rule.severity for rule in monitor.engine.rules}
        counts: dict[str, int] = {}
        for alert in monitor.engine.firing():
            counts[alert.rule] = counts.get(alert.rule, 0) + 1
        for rule, count in counts.items():
            firing.add_metric([rule, severity[rule]], count)
        yield firing


class _Fold:
    """The monitor's batch handler: every event of a fetch folded into the state; the
    loops read the state on their own schedule, so a flush has nothing to do."""

    def __init__(self, state: MonitorState, prefix_length: int) -> None:
        self._apply = state.apply
        assert state.positions is not None
        self._positions = state.positions
        self._skip = prefix_length

    def apply(self, event: Event) -> None:
        # Topics are shown by their declared names, whatever the installation's prefix.
        topic = event.topic[self._skip :]
        self._apply(event.type, topic, event.record)
        self._positions[topic, event.partition] = event.offset + 1

    async def flush(self) -> None:
        return None


class MonitorService:
    """The monitor: a :class:`Service` plus the loops around its state."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        self.monitor: Monitor | None = None
        self.url: str | None = None  # the dashboard, once the web server listens
        self.web_ready = asyncio.Event()
        self._sampler = Sampler()
        self._unsent: list[Transition] = []
        self._nodes_written = 0
        self._lag = LagTracker()
        self.service = Service(
            name="monitor",
            consumes=[topic.name for topic in ALL_TOPICS],
            settings=settings,
            migrations=MIGRATIONS,
            handler_factory=self._handler,
            background=[
                self._guarded(loop)
                for loop in (self._serve, self._sample, self._watch_pipeline, self._push)
            ],
        )

    def _guarded(
        self, loop: Callable[[Context], Awaitable[None]]
    ) -> Callable[[Context], Coroutine[Any, Any, None]]:
        """A loop that, if it dies of a bug, stops the monitor rather than leave it half
        working (the Service collects its background tasks only at the end)."""

        async def guarded(context: Context) -> None:
            try:
                await loop(context)
            except Exception:
                context.log.exception("monitor loop failed; stopping", loop=loop.__name__)
                self.service.stop_soon()
                raise

        return guarded

    async def _handler(self, context: Context) -> BatchHandler:
        settings = self.settings
        store = SeriesStore(context.pool, settings.topic_prefix, settings.monitor_retention_days)
        state = MonitorState(max_jobs=settings.monitor_max_jobs)
        engine = RuleEngine(default_rules(node_dead_after_s=settings.monitor_node_dead_after_s))
        saved = await store.load_snapshot()
        if saved is not None:
            state = MonitorState.from_snapshot(saved[0], max_jobs=settings.monitor_max_jobs)
            engine.restore(saved[1])
            replayed = await self._catch_up(context, state)
            context.log.info(
                "restored", nodes=len(state.nodes), jobs=len(state.jobs), replayed=replayed
            )
        if state.positions is None:
            state.positions = {}
        self.monitor = Monitor(state, engine, store, int(settings.monitor_node_dead_after_s * 1000))
        return _Fold(state, len(settings.topic_prefix))

    async def _catch_up(self, context: Context, state: MonitorState) -> int:
        """Applies what the consumer group committed after the snapshot was taken.

        The group resumes from its committed offsets, the snapshot holds the state up to
        its own positions; after a crash the events in between would be lost from the
        view. They are read here, before the consumer starts, so each is applied once.
        """
        if state.positions is None:
            return 0  # a snapshot without positions: nothing to measure the gap against
        prefix = self.settings.topic_prefix
        bootstrap = endpoints.resolve(self.settings).kafka_bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="lepton-monitor")
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(
                context.topics.group("lepton-monitor")
            )
        finally:
            await admin.close()
        declared = {context.topic(t.name).name: t for t in ALL_TOPICS}
        gaps: dict[TopicPartition, tuple[int | None, int]] = {}
        for partition, position in committed.items():
            if partition.topic in declared:
                start = state.positions.get((partition.topic[len(prefix) :], partition.partition))
                if start is None or position.offset > start:
                    gaps[partition] = start, position.offset
        if not gaps:
            return 0
        codec = default_codec()
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await reader.start()
        replayed = 0
        try:
            reader.assign(list(gaps))
            for partition, (start, _) in gaps.items():
                if start is None:
                    await reader.seek_to_beginning(partition)
                else:
                    reader.seek(partition, start)
            remaining = {partition: end for partition, (_, end) in gaps.items()}
            while remaining:
                batches = await reader.getmany(*remaining, timeout_ms=1000)
                for partition, messages in batches.items():
                    topic = partition.topic[len(prefix) :]
                    for message in messages:
                        if message.offset >= remaining.get(partition, 0):
                            break
                        state.positions[topic, partition.partition] = message.offset + 1
                        try:
                            event_type, record = codec.decode(
                                message.value, expected=declared[partition.topic].event
                            )
                            state.apply(event_type, topic, record)
                        except Exception as exc:  # it was dead-lettered when first read
                            context.log.debug("skipped", topic=topic, error=repr(exc))
                            continue
                        replayed += 1
                for partition in list(remaining):
                    if await reader.position(partition) >= remaining[partition]:
                        del remaining[partition]
        finally:
            await reader.stop()
        return replayed

    def _require(self) -> Monitor:
        assert self.monitor is not None, "the handler factory runs before the loops"
        return self.monitor

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
                except _OUTAGES as exc:
                    context.log.warning("sample failed", error=repr(exc))
                await asyncio.sleep(interval)
        finally:
            # The consumer has stopped and committed: this snapshot holds all it handled.
            with contextlib.suppress(*_OUTAGES):
                await self._save(monitor, monitor.clock())

    async def _sample_once(self, context: Context, monitor: Monitor, now: int) -> None:
        signals = read_signals(monitor.state, monitor.engine.rules, now)
        held = FRESHNESS_SIGNALS if self._behind(monitor.state) else ()
        self._unsent.extend(monitor.engine.evaluate(signals, now, held))
        if self._unsent:
            # Kept until the broker and the database have them, so none is lost in an outage.
            topic = context.topic("lepton.alerts")
            for transition in list(self._unsent):
                await context.publisher.publish(topic, transition.key, transition.record())
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

    # -- pipeline: lag and dead letters from the broker's offsets ---------------------------

    async def _watch_pipeline(self, context: Context) -> None:
        monitor = self._require()
        bootstrap = endpoints.resolve(self.settings).kafka_bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="lepton-monitor")
        offsets = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
        )
        await admin.start()
        await offsets.start()
        try:
            while True:
                try:
                    await self._read_pipeline(context, monitor, admin, offsets)
                except _OUTAGES as exc:
                    context.log.warning("pipeline check failed", error=repr(exc))
                await asyncio.sleep(self.settings.monitor_lag_interval_s)
        finally:
            await offsets.stop()
            await admin.close()

    async def _read_pipeline(
        self,
        context: Context,
        monitor: Monitor,
        admin: AIOKafkaAdminClient,
        offsets: AIOKafkaConsumer,
    ) -> None:
        prefix = self.settings.topic_prefix
        declared = {context.topic(t.name).name: t.name for t in ALL_TOPICS}
        dead_letters = {dead_letter_topic(name): source for name, source in declared.items()}
        partitions = [
            TopicPartition(name, number)
            for name in [*declared, *dead_letters]
            for number in sorted(await context.publisher.partitions(name))
        ]
        ends = await offsets.end_offsets(partitions)
        begins = await offsets.beginning_offsets(partitions)
        now = monitor.clock()
        lag: dict[tuple[str, str], Lag] = {}
        for group_id, *_ in await admin.list_consumer_groups():
            if not group_id.startswith(prefix):
                continue
            committed = await admin.list_consumer_group_offsets(group_id)
            totals: dict[str, tuple[int, int]] = {}
            for partition, position in committed.items():
                if partition.topic not in declared or partition not in ends:
                    continue
                done = position.offset if position.offset >= 0 else begins[partition]
                total = totals.get(partition.topic, (0, 0))
                totals[partition.topic] = total[0] + done, total[1] + ends[partition]
            for topic, (done, end) in totals.items():
                key = group_id[len(prefix) :], declared[topic]
                lag[key] = self._lag.update(key, done, end, now)
        counts: dict[str, int] = {}
        for partition in partitions:
            source = dead_letters.get(partition.topic)
            if source is not None:
                held = ends[partition] - begins[partition]
                counts[source] = counts.get(source, 0) + held
        monitor.state.set_pipeline(lag, counts, now)

    # -- web: dashboard, API, SSE and /metrics ------------------------------------------------

    async def _serve(self, context: Context) -> None:
        monitor = self._require()
        collector = _collector()
        collector.monitors.add(monitor)
        config = uvicorn.Config(
            create_web_app(monitor),
            host=self.settings.monitor_host,
            port=self.settings.monitor_port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        server = EmbeddedServer(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    # A monitor without its dashboard is not running: stop, saying why.
                    context.log.error(
                        "dashboard failed",
                        host=self.settings.monitor_host,
                        port=self.settings.monitor_port,
                        error=repr(task.exception()),
                    )
                    self.service.stop_soon()
                    return
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            self.url = f"http://{self.settings.monitor_host}:{port}/"
            context.log.info("dashboard", url=self.url)
            self.web_ready.set()
            # Shielded: cancelling this loop must stop the server gracefully, not kill it.
            await asyncio.shield(task)
        finally:
            monitor.hub.close()
            server.should_exit = True
            await asyncio.shield(task)
            collector.monitors.discard(monitor)

    async def _push(self, context: Context) -> None:
        monitor = self._require()
        seen, pushed = -1, 0.0
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(_PUSH_INTERVAL_S)
            changed = monitor.state.version != seen
            if monitor.hub.clients and (changed or loop.time() - pushed >= _PUSH_AT_LEAST_S):
                seen, pushed = monitor.state.version, loop.time()
                monitor.hub.publish(encode_json(monitor.live_update(now_ms())))


@functools.cache
def _collector() -> _Collector:
    collector = _Collector()
    prometheus_client.REGISTRY.register(collector)
    return collector


def build(settings: MonitorSettings | None = None) -> MonitorService:
    return MonitorService(settings or MonitorSettings())


def create_app(settings: MonitorSettings | None = None) -> Service:
    return build(settings).service


def main() -> None:
    run(create_app)
