"""How a service waits out what it depends on: its health, its background tasks retried.

A service is *degraded* while it cannot reach Kafka or PostgreSQL, or while one of its
background tasks keeps failing: :class:`Health` holds each reason, ``/healthz`` answers
503 with them, and ``lepton_service_degraded`` counts them per component. Nothing of that
stops the service: it retries with backoff and is healthy again on its own once the
dependency is back. Only a :class:`ServiceFault`, raised by a part that can no longer do
its job at all (a port it must listen on is taken), stops it, with an exit status ≠ 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import confluent_kafka
import prometheus_client
from confluent_kafka.admin import AdminClient

from lepton.bus import PublishError, TransientError
from lepton.runtime import database

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    import asyncpg

    from lepton.bus import Event, Handler
    from lepton.config import KafkaAccess

__all__ = [
    "Backoff",
    "Health",
    "ServiceFault",
    "kafka_away",
    "outage",
    "patient",
    "supervised",
    "watch_dependencies",
]

_DEGRADED = prometheus_client.Gauge(
    "lepton_service_degraded",
    "1 while a service cannot use a component (kafka, postgresql, or one of its tasks).",
    ["service", "component"],
)
_TASK_FAILURES = prometheus_client.Counter(
    "lepton_background_task_failures_total",
    "Failures of a service's background task, each retried after a backoff.",
    ["service", "task"],
)

# librdkafka's answer when no broker could be asked: its own timeout, a dropped or
# refused connection, every broker down.
_KAFKA_AWAY = frozenset(
    {
        confluent_kafka.KafkaError._TIMED_OUT,
        confluent_kafka.KafkaError._TRANSPORT,
        confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
        confluent_kafka.KafkaError._MSG_TIMED_OUT,
    }
)
# A task that ran this long since its last failure is working again: it is healthy, and
# its next failure backs off from the start.
_STABLE_AFTER_S = 10.0


class ServiceFault(RuntimeError):
    """A part of a service can no longer do its job at all: the service stops (exit ≠ 0)."""


def kafka_away(error: BaseException) -> bool:
    """Whether ``error`` says the broker is away for now rather than refusing the request."""
    if isinstance(error, confluent_kafka.KafkaException):
        reason = error.args[0]
        return bool(reason.code() in _KAFKA_AWAY or reason.retriable())
    # The writer's wording for a message librdkafka gave up on (message.timeout.ms).
    return isinstance(error, PublishError) and "timed out" in str(error).lower()


def outage(error: BaseException) -> bool:
    """Whether ``error`` is Kafka or PostgreSQL being away: worth waiting out."""
    return database.unavailable(error) or kafka_away(error)


def patient(handler: Handler) -> Handler:
    """``handler``, with an outage it runs into turned into a :class:`TransientError`: the
    subscriber then retries the message with backoff instead of dead-lettering it, and
    commits nothing past it until it has had its effect."""

    async def handle(event: Event) -> None:
        try:
            await handler(event)
        except Exception as exc:
            if outage(exc):
                raise TransientError(f"{type(exc).__name__}: {exc}") from exc
            raise

    return handle


@dataclass(slots=True)
class Backoff:
    """Delays that double from ``first_s`` up to ``last_s``."""

    first_s: float = 0.5
    last_s: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        self.attempt += 1
        return float(min(self.first_s * 2 ** (self.attempt - 1), self.last_s))

    def reset(self) -> None:
        self.attempt = 0


@dataclass(slots=True)
class Health:
    """What keeps a service from doing its job right now, by component."""

    service: str
    problems: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Exported at 0 from the start, not only once a dependency was first away.
        for component in ("kafka", "postgresql"):
            _DEGRADED.labels(self.service, component)

    def degraded(self, component: str, reason: str) -> None:
        self.problems[component] = reason
        _DEGRADED.labels(self.service, component).set(1)

    def recovered(self, component: str) -> None:
        if self.problems.pop(component, None) is not None:
            _DEGRADED.labels(self.service, component).set(0)

    @property
    def ok(self) -> bool:
        return not self.problems


def _kafka_probe(kafka: KafkaAccess) -> AdminClient:
    config: dict[str, Any] = {  # librdkafka's settings take callables and loggers too
        **kafka.librdkafka(),
        "client.id": "lepton-health",
        "logger": logging.getLogger("lepton.health.kafka"),
        # Every error is also logged; the probe's answer is what counts.
        "error_cb": lambda _error: None,
    }
    return AdminClient(config)


async def watch_dependencies(
    health: Health, kafka: KafkaAccess, pool: asyncpg.Pool, interval_s: float, log: Any
) -> None:
    """Ask Kafka and PostgreSQL for a trivial answer every ``interval_s``; mark the
    service degraded with the reason while either does not give it."""
    admin = _kafka_probe(kafka)
    timeout_s = max(interval_s, 1.0)

    async def kafka_answers() -> None:
        await asyncio.to_thread(admin.list_topics, timeout=timeout_s)

    async def database_answers() -> None:
        async with asyncio.timeout(timeout_s):
            await pool.fetchval("SELECT 1")

    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "kafka": kafka_answers,
        "postgresql": database_answers,
    }
    while True:
        for component, probe in probes.items():
            try:
                await probe()
            except Exception as exc:
                if component not in health.problems:
                    log.warning("unreachable", component=component, error=repr(exc))
                health.degraded(component, f"unreachable: {type(exc).__name__}: {exc}"[:500])
            else:
                if component in health.problems:
                    log.warning("reachable again", component=component)
                health.recovered(component)
        await asyncio.sleep(interval_s)


async def supervised(
    name: str,
    job: Callable[[], Coroutine[Any, Any, None]],
    health: Health,
    log: Any,
    backoff: Backoff | None = None,
    stable_after_s: float = _STABLE_AFTER_S,
) -> None:
    """Run ``job`` for the life of the service: when it fails, count it, mark the service
    degraded, back off and run it again; healthy again once it has run a while. A
    :class:`ServiceFault` is not retried: it propagates, and the service stops."""
    backoff = backoff or Backoff()
    component = f"task {name}"
    while True:
        task = asyncio.create_task(job())
        try:
            done, _ = await asyncio.wait({task}, timeout=stable_after_s)
            if not done:
                backoff.reset()
                health.recovered(component)
            await task
            return  # a task may end by itself once its work is done
        except asyncio.CancelledError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise
        except ServiceFault:
            raise
        except Exception as exc:
            delay = backoff.next()
            _TASK_FAILURES.labels(health.service, name).inc()
            health.degraded(component, f"failing, retried in {delay:.1f} s: {exc!r}"[:500])
            log.warning(
                "background task failed; retrying",
                task=name,
                attempt=backoff.attempt,
                in_s=delay,
                exc_info=exc,
            )
            await asyncio.sleep(delay)
