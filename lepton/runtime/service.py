"""What every Lepton service shares: start-up, the consume loop, health, graceful shutdown.

A service module builds a :class:`Service` in its ``create_app`` factory (no work at import
time) and its console entry point calls :func:`run`. At start the service finds Kafka and
PostgreSQL (:func:`lepton.runtime.endpoints.resolve`), creates the declared topics, applies its
migrations, starts its publisher, then consumes its topics until SIGTERM or SIGINT, when
it finishes the message in hand, commits and closes. A test runs the same service on an
in-memory broker, without servers, with :meth:`Service.serve` (see :mod:`lepton.testing`).

Once started, a service waits out Kafka or PostgreSQL being away
(:mod:`lepton.runtime.resilience`): ``/healthz`` answers 503 with the reason meanwhile
while ``/livez`` stays 200 (:mod:`lepton.runtime.probes`), a
handler's outage error is retried (never dead-lettered, never committed past), a failing
background task is retried with backoff, and a singleton that loses its leader lock
steps down and campaigns again. Only a :class:`ServiceFault` stops a service (exit ≠ 0).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from lepton.bus import (
    Authenticator,
    BatchHandler,
    BrokerUnavailableError,
    Event,
    Handler,
    Publisher,
    Subscriber,
    Transport,
    ensure_topics,
)
from lepton.config import Actor, KafkaAccess, Settings
from lepton.contract import default_codec
from lepton.contract.identity import IdentityKey, Principal, Verifier
from lepton.contract.registry import attach_registry
from lepton.contract.sealed import Keyring
from lepton.contract.topics import Namespace, Topic
from lepton.errors import StackError
from lepton.runtime import (
    database,
    early_stop,
    endpoints,
    identity,
    probes,
    production,
    tracing,
)
from lepton.runtime.collector import collect_less, keep_collections_short
from lepton.runtime.helpers import start_helper
from lepton.runtime.logs import configure_logging
from lepton.runtime.probes import EmbeddedServer
from lepton.runtime.resilience import (
    Backoff,
    Health,
    ServiceFault,
    outage,
    patient,
    supervised,
    watch_dependencies,
)

if TYPE_CHECKING:
    from pathlib import Path

    import asyncpg

    from lepton.contract.codec import Codec

__all__ = [
    "Context",
    "EmbeddedServer",
    "LeadershipLostError",
    "Service",
    "ServiceFault",
    "collect_less",
    "keep_collections_short",
    "run",
    "start_helper",
]


class BackgroundTaskError(RuntimeError):
    """A service's background task failed for good (a :class:`ServiceFault`), or any task
    of a service whose state is the log: that state may be ahead of what the broker took,
    so the service's session ends (it steps down, reads the log again and carries on)."""


class LeadershipLostError(RuntimeError):
    """A singleton lost its leader lock while active; it steps down rather than act twice."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a service's handler factory gets: its settings and its connections."""

    settings: Settings
    publisher: Publisher
    pool: asyncpg.Pool
    log: structlog.stdlib.BoundLogger
    topics: Namespace
    # Set once the service may act: for a replaying service, when it has read the log.
    caught_up: asyncio.Event
    # The leader term of a singleton service (grows at every takeover); None otherwise.
    term: int | None = None
    # The master identity key, when the service holds it (every one but a trainer).
    master: IdentityKey | None = None
    # The contract's codec with the service's keys: it seals and opens tenants' answers.
    codec: Codec = field(default_factory=default_codec)

    def authenticator(self) -> Authenticator | None:
        """What a further subscriber of the service checks records with (None: a trainer)."""
        if self.master is None:
            return None
        return Authenticator(Verifier(self.master), self.topics, self.codec)

    def topic(self, name: str) -> Topic:
        """A declared topic (``lepton.jobs.events``) as this installation names it."""
        return self.topics.topic(name)


# Messages a batch handler gets at most per fetch.
_BATCH_FETCH = 2000
# And a handler called per message: its work (an ingest, an evaluation) takes seconds, and
# a fetch is handled whole before the next one, which is also when a rebalance can move a
# partition and when Kafka sees the member alive (max.poll.interval.ms, 300 s): 500 slow
# messages in hand held up every rebalance for minutes and got the member expelled.
_MESSAGE_FETCH = 10
# How long the broker may hold a batch handler's fetch to gather more: at a steady
# trickle (the scheduler at 1,000 requests/s) a fetch of one or two events paid the whole
# cost of a flush each. The broker's side counts as much: a fetch that waits this long
# for nothing costs a Kafka broker on two shared cores ~1 ms (bench.broker_requests), so
# 5 ms cost it 0.16 of a core for each idle service, 10 ms half that; and with 20,000
# heartbeats/s besides, scheduler decisions were faster at 10 ms (p99 66-158 ms over six
# runs, 94-236 at 5). 20 ms pushed the p99 without heartbeats past 50 ms.
_BATCH_GATHER_MS = 10

# A service's handler: per message, or a BatchHandler that acts on a whole fetch at once.
HandlerFactory = Callable[[Context], Awaitable[Handler | BatchHandler]]
_T = TypeVar("_T")
# What runs beside a service's consumer for as long as it serves.
BackgroundJob = Callable[[Context], Coroutine[Any, Any, None]]


async def _count_only(context: Context) -> Handler:
    """The handler of a service whose behaviour is not built yet: it only counts."""

    async def handle(event: Event) -> None:
        context.log.debug("received", topic=event.topic, type=event.type, key=event.key)

    return handle


@dataclass(slots=True)
class Service:
    """A Lepton service: what it consumes, its migrations and how it builds its handler."""

    name: str
    consumes: Sequence[str]  # declared topic names, e.g. "lepton.jobs.events"
    actor: Actor  # whose credentials it connects with (a trainer-<node> acts as "trainer")
    # Whom the records it writes are signed as; None: service:<actor>. A trainer signs as
    # its node, and verifies nothing (see lepton.runtime.identity.service_keys).
    principal: Principal | None = None
    settings: Settings = field(default_factory=Settings)
    migrations: Path | None = None
    handler_factory: HandlerFactory = _count_only
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    health_port: int | None = None
    background: Sequence[BackgroundJob] = ()
    # One active instance at a time; others stand by and take over when it dies.
    singleton: bool = False
    # Rebuild state by reading the consumed topics from the beginning at every start.
    replay: bool = False
    # Read only the partition (and messages) of this key: a node agent's own assignments.
    subscribe_key: str | None = None
    # How long the publisher lets messages wait to go out together (librdkafka's
    # linger.ms): a service that publishes one event at a time needs a few milliseconds
    # to batch them; one that publishes each fetch's events at once needs only one.
    publish_linger_ms: int = 5
    # What else makes this service's own settings unfit for production (LEPTON_ENV): the
    # reason, or None when the check passes.
    production_checks: Sequence[Callable[[Settings], str | None]] = ()
    _subscriber: Subscriber | None = None
    _stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the current session must end (a fault, a lost lock) though no stop was asked.
    _session_over: asyncio.Event = field(default_factory=asyncio.Event)
    _role: str = "starting"
    _failure: BaseException | None = None
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.health = Health(self.name)

    def stop_soon(self) -> None:
        """Finish the message in hand, commit and return from :meth:`run`."""
        self._stop_requested.set()
        if self._subscriber is not None:
            self._subscriber.stop_soon()

    async def run(self) -> None:
        settings = self.settings
        production.check(settings, self.actor, self.production_checks)
        collect_less()
        # Bound now, not at every call (structlog's lazy proxy binds again each time).
        log = structlog.get_logger(self.name).bind()
        where = endpoints.resolve(settings, self.actor)
        names = Namespace(settings.topic_prefix)
        # Only the topics this actor uses: under ACLs, it can see no other.
        used, dead_lettered = names.used_by(self.actor)
        await ensure_topics(
            where.kafka,
            used,
            with_dead_letters=dead_lettered,
            connect_timeout_s=settings.connect_timeout_s,
        )
        pool = await database.connect(where.database_url, timeout_s=settings.connect_timeout_s)
        try:
            await database.migrate(
                pool, "lepton", database.load_migrations(database.LIBRARY_MIGRATIONS)
            )
            if self.migrations is not None:
                applied = await database.migrate(
                    pool, self.name, database.load_migrations(self.migrations)
                )
                log.info("migrated", versions=applied)
            async with self._health_server(log):
                watch = asyncio.create_task(
                    watch_dependencies(
                        self.health, where.kafka, pool, settings.health_check_interval_s, log
                    )
                )
                try:
                    await self._sessions(where, names, pool, log)
                finally:
                    watch.cancel()
                    await asyncio.gather(watch, return_exceptions=True)
        finally:
            await pool.close()

    async def _sessions(
        self, where: endpoints.Endpoints, names: Namespace, pool: asyncpg.Pool, log: Any
    ) -> None:
        """Serve until asked to stop. A singleton serves while it holds the leader lock:
        when it loses the lock (PostgreSQL went away) or its session fails, it steps down
        to standby and campaigns again, after a backoff; a new term fences the old one.

        Before it has ever served, an outage ends the service (a wrong address should say
        so at start); once it has, an outage that ends a session is waited out."""
        backoff = Backoff()
        while not self._stop_requested.is_set():
            try:
                if not self.singleton:
                    await self._serve(where.kafka, None, names, pool, log, term=None)
                    return
                self._role = "standby"
                log.info("standing by for leadership")
                lock = database.leadership(where.database_url, names.group(self.name))
                lead = await self._unless_stopped(lock.__aenter__())
                if lead is None:  # stopped while standing by
                    log.info("stopped", handled=0, role="standby")
                    return
                try:
                    self._role = "leader"
                    log.info("leading", term=lead.term)
                    await self._lead(lead, where, names, pool, log)
                finally:
                    await lock.__aexit__(None, None, None)
                if self._stop_requested.is_set():
                    return
                reason: BaseException = LeadershipLostError(f"{self.name} lost its leader lock")
            except BackgroundTaskError as exc:
                if not self.replay or isinstance(exc.__cause__, ServiceFault):
                    raise
                reason = exc
            except Exception as exc:
                away = outage(exc) or isinstance(
                    exc, BrokerUnavailableError | database.DatabaseUnavailableError
                )
                if not (self.ready.is_set() and away):
                    raise
                reason = exc
            self._role = "standby"
            delay = backoff.next()
            log.warning("stepped down; campaigning again", in_s=delay, reason=repr(reason))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop_requested.wait()

    async def _unless_stopped(self, waiting: Awaitable[_T]) -> _T | None:
        """What ``waiting`` gives, or None if the service is asked to stop first (a standby
        waits for the lock, or for PostgreSQL, for as long as it takes)."""
        task = asyncio.ensure_future(waiting)
        stop = asyncio.create_task(self._stop_requested.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        return task.result() if not task.cancelled() else None

    async def _lead(
        self,
        lead: database.Leadership,
        where: endpoints.Endpoints,
        names: Namespace,
        pool: asyncpg.Pool,
        log: Any,
    ) -> None:
        """Serve as the leader of ``lead``'s term until asked to stop or the lock is lost."""

        async def step_down_when_lost() -> None:
            await lead.lost.wait()
            log.error("leader lock lost: stepping down to avoid two active instances")
            if self._subscriber is not None:
                self._subscriber.stop_soon()
            self._session_over.set()

        watchdog = asyncio.create_task(step_down_when_lost())
        try:
            await self._serve(where.kafka, None, names, pool, log, term=lead.term)
        finally:
            watchdog.cancel()

    def _background_ended(self, task: asyncio.Task[None], log: Any) -> None:
        """A background task must run as long as the session: it ends only by a fault
        (see :meth:`_supervise`), which ends the session."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("background task failed; ending the session", exc_info=error)
            self._failure = error
            if self._subscriber is not None:
                self._subscriber.stop_soon()
            self._session_over.set()

    async def _supervise(self, job: BackgroundJob, context: Context, log: Any) -> None:
        """Run a background task: retried with backoff when it fails, unless the service's
        state is the log (a failed task may have left it ahead of the broker) or the
        failure is a :class:`ServiceFault`; then the failure ends the session."""
        if self.replay:
            await job(context)
            return
        await supervised(
            getattr(job, "__name__", type(job).__name__), lambda: job(context), self.health, log
        )

    async def serve(
        self,
        transport: Transport,
        pool: asyncpg.Pool,
        *,
        term: int | None = None,
        master: IdentityKey | None = None,
    ) -> None:
        """Consume and act as :meth:`run` does once connected, until :meth:`stop_soon`,
        but on ``transport`` (:class:`lepton.testing.InMemoryBroker`) instead of Kafka,
        with the given pool, leader term and master key: no migrations, leader lock,
        health server or collector tuning, so that a test can run a service without
        servers."""
        log = structlog.get_logger(self.name).bind()
        names = Namespace(self.settings.topic_prefix)
        await self._serve(
            KafkaAccess("in-memory"), transport, names, pool, log, term=term, master=master
        )

    async def _serve(
        self,
        kafka: KafkaAccess,
        transport: Transport | None,
        names: Namespace,
        pool: asyncpg.Pool,
        log: Any,
        *,
        term: int | None,
        master: IdentityKey | None = None,
    ) -> None:
        settings = self.settings
        self._failure = None
        self._session_over.clear()
        principal = self.principal or Principal("service", self.actor)
        signer, verifier = identity.service_keys(settings, principal, master)
        master = None if verifier is None else verifier.master
        # Registry mode (LEPTON_SCHEMA_REGISTRY_URL) waits here for the registry's ids.
        codec = (await attach_registry(default_codec(), settings, names)).keyed(
            Keyring(master=master, own=signer)
        )
        async with Publisher(
            kafka,
            codec,
            source=f"lepton/{self.name}",
            client_id=settings.client_id,
            connect_timeout_s=settings.connect_timeout_s,
            linger_ms=self.publish_linger_ms,
            transport=transport,
            signer=signer,
        ) as publisher:
            caught_up = asyncio.Event()
            context = Context(
                settings,
                publisher,
                pool,
                log,
                names,
                caught_up,
                term,
                master=master,
                codec=codec,
            )
            handler = await self.handler_factory(context)
            if not isinstance(handler, BatchHandler):
                handler = patient(handler)
            self._subscriber = Subscriber(
                kafka,
                codec,
                publisher,
                topics=[names.topic(name) for name in self.consumes],
                group_id=names.group(f"lepton-{self.name}"),
                handler=handler,
                client_id=settings.client_id,
                connect_timeout_s=settings.connect_timeout_s,
                replay=self.replay,
                caught_up=caught_up,
                only_key=self.subscribe_key,
                # A batch handler's cost per fetch is mostly fixed (a plan, one send): let a
                # backlog come in bigger fetches. Per message, small fetches.
                max_batch=_BATCH_FETCH if isinstance(handler, BatchHandler) else _MESSAGE_FETCH,
                gather_ms=_BATCH_GATHER_MS if isinstance(handler, BatchHandler) else 0,
                transport=transport,
                authenticator=context.authenticator(),
            )
            await self._subscriber.start()
            if not self.replay:
                caught_up.set()
            if self._stop_requested.is_set() or self._session_over.is_set():
                self._subscriber.stop_soon()
            tasks = [
                asyncio.create_task(self._supervise(job, context, log)) for job in self.background
            ]
            if transport is None:  # a real service's process, not a test's
                tasks.append(asyncio.create_task(keep_collections_short(caught_up)))
            for task in tasks:
                task.add_done_callback(lambda done: self._background_ended(done, log))
            try:
                self._role = "leader" if self.singleton else "active"
                self.ready.set()
                log.info("consuming", topics=list(self.consumes), replay=self.replay)
                await self._subscriber.run()
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._subscriber.close()
                log.info("stopped", handled=self._subscriber.handled)
            if self._failure is not None:
                raise BackgroundTaskError(
                    f"{self.name} stopped: {self._failure!r}"
                ) from self._failure

    def _readiness(self) -> dict[str, Any]:
        """What ``/healthz`` answers (see :mod:`lepton.runtime.probes`)."""
        subscriber = self._subscriber
        problems = dict(self.health.problems)
        return {
            "service": self.name,
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "role": self._role,
            "handled": subscriber.handled if subscriber else 0,
            "dead_lettered": subscriber.dead_lettered if subscriber else 0,
        }

    @contextlib.asynccontextmanager
    async def _health_server(self, log: structlog.stdlib.BoundLogger) -> AsyncIterator[None]:
        settings = self.settings
        app = probes.health_app(self._readiness)
        async with probes.serve(app, settings.health_host, settings.health_port) as port:
            self.health_port = port
            url = probes.base_url(settings.health_host, port)
            log.info("health", url=f"{url}/healthz", livez=f"{url}/livez")
            yield


def run(service_factory: Callable[[], Service]) -> None:
    """Console entry point: run a service until SIGTERM or SIGINT; one-line errors."""
    settings = Settings()
    configure_logging(settings.log_level)

    async def main() -> None:
        stopped = early_stop.asked()
        if stopped is not None:  # while the process was importing its libraries
            structlog.get_logger("lepton").info("stopped before starting", signal=stopped)
            return
        service = service_factory()
        provider = tracing.configure(f"lepton-{service.actor}", service.name)
        loop = asyncio.get_running_loop()
        for sig in early_stop.STOP_SIGNALS:
            loop.add_signal_handler(sig, service.stop_soon)
        try:
            await service.run()
        finally:
            if provider is not None:
                # Off the loop: the last export may wait for the receiver.
                await asyncio.to_thread(provider.shutdown)

    try:
        asyncio.run(main())
    except (
        StackError,
        database.DatabaseUnavailableError,
        BrokerUnavailableError,
        LeadershipLostError,
        BackgroundTaskError,
        ServiceFault,
    ) as exc:
        raise SystemExit(f"lepton: {exc}") from None
