"""Topic administration (aiokafka's admin client): create the declared topics and their
dead-letter topics, delete topics."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from lepton.bus._publisher import _start_within
from lepton.contract.topics import Topic, dead_letter_topic
from lepton.errors import UnavailableError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from lepton.config import KafkaAccess

log = logging.getLogger("lepton.bus")

# Topic and cluster authorization failures: the principal may not create topics.
_NOT_ALLOWED = frozenset(
    {TopicAuthorizationFailedError.errno, ClusterAuthorizationFailedError.errno}
)


class TopicsMissingError(UnavailableError):
    """A declared topic is missing and this principal may not create it."""


async def ensure_topics(
    kafka: KafkaAccess,
    topics: Iterable[Topic],
    *,
    with_dead_letters: bool | Collection[str] = True,
    connect_timeout_s: float = 20.0,
) -> list[str]:
    """Create every topic (and its ``.dlq``) that does not exist yet; returns those created.

    Each has ``min(3, brokers)`` replicas, and with three a write (the producers' acks=all)
    needs two in sync (``min.insync.replicas=2``): a lost broker loses no acknowledged
    record and stops no writer. The brokers are those the cluster reports live: on a
    cluster missing one, new topics get fewer replicas, so create them while it is whole.

    ``with_dead_letters``: a dead-letter topic for every topic, none, or for the topics
    named. Safe to run any number of times, from several processes at once.
    """
    admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=30_000)
    await _start_within(admin, connect_timeout_s, kafka)
    try:
        cluster = await admin.describe_cluster()
        replication = min(3, len(cluster["brokers"]))
        durable = _durability(replication)
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for topic in topics:
            wanted.append(
                NewTopic(
                    topic.name,
                    topic.partitions,
                    replication,
                    topic_configs=durable | dict(topic.config),
                )
            )
            if with_dead_letters is True or (
                not isinstance(with_dead_letters, bool) and topic.name in with_dead_letters
            ):
                wanted.append(
                    NewTopic(
                        dead_letter_topic(topic.name),
                        1,
                        replication,
                        topic_configs=durable | _DLQ_CONFIG,
                    )
                )
        missing = [new for new in wanted if new.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics(missing)
        created = []
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code in _NOT_ALLOWED:
                raise TopicsMissingError(
                    f"topic {name} does not exist, and {kafka.principal} may not create it",
                    "create the topics as the admin: `lepton up`, `lepton stack up`, or "
                    "`lepton contract acls` for what an operator runs",
                )
            elif code != TopicAlreadyExistsError.errno:
                raise KafkaError(f"creating topic {name} failed: error {code} {message}")
        await _until_led(admin, created, timeout_s=connect_timeout_s)
        return created
    finally:
        await admin.close()


async def _until_led(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float) -> None:
    """Wait until every partition of new topics has a leader, so first sends do not bounce."""
    async with asyncio.timeout(timeout_s):
        while topics:
            described = await admin.describe_topics(topics)
            topics = [
                topic["topic"]
                for topic in described
                if topic["error_code"] != 0
                or any(partition["leader"] < 0 for partition in topic["partitions"])
            ]
            if topics:
                await asyncio.sleep(0.05)  # the controller is electing: nothing to await


async def delete_topics(
    kafka: KafkaAccess, names: Iterable[str], *, timeout_s: float = 60.0
) -> None:
    """Delete topics (with their data). For tests and benchmarks that made their own."""
    doomed = list(names)
    if not doomed:
        return
    admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=int(timeout_s * 1000))
    await _start_within(admin, timeout_s, kafka)
    try:
        # A few at a time: one huge request can outlast the broker's request timeout.
        for start in range(0, len(doomed), 50):
            await admin.delete_topics(doomed[start : start + 50], timeout_ms=int(timeout_s * 1000))
    finally:
        await admin.close()


def _durability(replication: int) -> dict[str, str]:
    """The in-sync replicas a write needs, for topics of ``replication`` replicas: two of
    three (one may be lost meanwhile); below three, the broker's default (one)."""
    return {"min.insync.replicas": "2"} if replication >= 3 else {}


# Dead letters are kept long enough for someone to look at them and replay them.
_DLQ_CONFIG = {"cleanup.policy": "delete", "retention.ms": str(30 * 24 * 3600 * 1000)}


def _topic_errors(response: Any) -> Iterable[tuple[str, int, str | None]]:
    for entry in response.topic_errors:
        # v0 responses carry (name, code); later versions add a message.
        name, code = entry[0], entry[1]
        yield name, code, entry[2] if len(entry) > 2 else None
