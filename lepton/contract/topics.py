"""Every Lepton topic, declared once: name, key, event type, broker settings, and which
actors write and read it.

``lepton.bus.ensure_topics`` creates them from this list; ``schemas/asyncapi.yaml``
documents the same channels, and a test keeps the two in agreement. The writers and
readers, with :data:`CONSUMER_GROUPS`, are the Kafka ACLs (:func:`grants`) that
``lepton stack up`` applies and ``lepton contract acls`` writes out for an operator: each
actor may do exactly what its code does, nothing more.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from lepton.config import Actor

__all__ = [
    "ALL_TOPICS",
    "CONSUMER_GROUPS",
    "DLQ_SUFFIX",
    "Grant",
    "GroupAccess",
    "Namespace",
    "Operation",
    "Topic",
    "by_name",
    "dead_letter_topic",
    "grants",
]

DLQ_SUFFIX = ".dlq"
_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic and the one event type its values carry."""

    name: str
    event: str  # full Avro name of the value schema
    key: str  # what the message key holds
    # The unit of parallelism: the instances of a service in one consumer group share the
    # partitions, so at most this many work at once (README "Scaling out"). Raising it
    # later moves keys to other partitions (per-key order breaks across the change).
    partitions: int = 6
    config: dict[str, str] = field(default_factory=dict)
    # Who may produce to it and consume it (Kafka ACLs); the admin may do anything.
    writers: tuple[Actor, ...] = ()
    readers: tuple[Actor, ...] = ()
    # Values sealed for the record's tenant (lepton.contract.sealed): what the record
    # reveals of a tenant's data, on a topic every tenant's client reads.
    sealed: bool = False


def _retained(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


# The log is the source of truth: topics whose history rebuilds state keep it for weeks;
# heartbeats only matter as the latest value per node, so they are compacted.
# Who writes and reads what, from the code: "trainer" is every node's agent, "client" the
# SDK and the CLI acting for tenants and operators. The monitor reads every topic. The
# client reads heartbeats and job requests for its dry-run placement (`lepton plan`), and
# writes job events (`cancel_requested`) and promotions (a rollback): services verify who
# signed those (lepton.contract.identity), since an ACL cannot tell one tenant from another.
_EVERY_SERVICE: tuple[Actor, ...] = ("scheduler", "ingest", "evaluator", "monitor")

# The log is the source of truth: topics whose history rebuilds state keep it for weeks;
# heartbeats only matter as the latest value per node, so they are compacted.
ALL_TOPICS: tuple[Topic, ...] = (
    Topic(
        "lepton.node.heartbeats",
        "lepton.NodeHeartbeat",
        "node id",
        config={"cleanup.policy": "compact,delete", "retention.ms": str(_DAY_MS)},
        writers=("trainer",),
        readers=("scheduler", "monitor", "client"),
    ),
    Topic(
        "lepton.jobs.requested",
        "lepton.JobRequested",
        "job id",
        config=_retained(30),
        writers=("client",),
        readers=("scheduler", "monitor", "client"),
    ),
    # Keyed by node id so that each trainer agent reads only its own partition.
    Topic(
        "lepton.jobs.assigned",
        "lepton.JobAssigned",
        "node id",
        12,
        _retained(30),
        writers=("scheduler",),
        readers=("trainer", "monitor"),
    ),
    Topic(
        "lepton.jobs.events",
        "lepton.JobEvent",
        "job id",
        config=_retained(30),
        writers=("scheduler", "trainer", "client"),
        readers=("scheduler", "monitor", "client"),
    ),
    Topic(
        "lepton.data.requested",
        "lepton.DatasetRequested",
        "dataset id",
        3,
        _retained(30),
        writers=("client",),
        readers=("ingest", "monitor"),
    ),
    Topic(
        "lepton.data.ready",
        "lepton.DataReady",
        "dataset id",
        3,
        _retained(30),
        writers=("ingest",),
        readers=("scheduler", "monitor", "client"),
        sealed=True,
    ),
    Topic(
        "lepton.data.rejected",
        "lepton.DataRejected",
        "dataset id",
        3,
        _retained(30),
        writers=("ingest",),
        readers=("monitor", "client"),
        sealed=True,
    ),
    Topic(
        "lepton.models.ready",
        "lepton.ModelReady",
        "model id",
        3,
        _retained(30),
        writers=("trainer",),
        readers=("evaluator", "monitor", "client"),
    ),
    Topic(
        "lepton.models.evaluated",
        "lepton.ModelEvaluated",
        "model id",
        3,
        _retained(30),
        writers=("evaluator",),
        readers=("monitor", "client"),
        sealed=True,
    ),
    Topic(
        "lepton.models.promoted",
        "lepton.ModelPromoted",
        "model name",
        3,
        _retained(365),
        writers=("evaluator", "client"),
        readers=("evaluator", "monitor", "client"),
    ),
    # Request and reply: short-lived, but a few days let a client that was away read its answer.
    Topic(
        "lepton.predict.requested",
        "lepton.PredictRequested",
        "request id",
        config=_retained(3),
        writers=("client",),
        readers=("evaluator", "monitor"),
    ),
    Topic(
        "lepton.predict.results",
        "lepton.PredictionResult",
        "request id",
        config=_retained(3),
        writers=("evaluator",),
        readers=("monitor", "client"),
        sealed=True,
    ),
    Topic(
        "lepton.alerts",
        "lepton.Alert",
        "alert rule and subject",
        3,
        _retained(30),
        writers=("monitor",),
        readers=("monitor", "client"),
    ),
    # Every service may audit (a denial included); the trainer, on a node, decides no access.
    # Ingest reads it to keep the other services' denials in the audit table it owns.
    Topic(
        "lepton.audit",
        "lepton.AuditEvent",
        "tenant",
        3,
        _retained(365),
        writers=_EVERY_SERVICE,
        readers=("monitor", "ingest"),
    ),
)

_BY_NAME = {topic.name: topic for topic in ALL_TOPICS}


def by_name(name: str) -> Topic:
    return _BY_NAME[name]


def dead_letter_topic(source: str) -> str:
    return source + DLQ_SUFFIX


@dataclass(frozen=True, slots=True)
class Namespace:
    """Topic and consumer-group names under a prefix (``LEPTON_TOPIC_PREFIX``).

    Several Lepton installations, or test runs, can then share one Kafka cluster.
    """

    prefix: str = ""

    def topic(self, name: str) -> Topic:
        """The topic declared as ``name`` (e.g. ``lepton.jobs.events``), under the prefix."""
        declared = by_name(name)
        return dataclasses.replace(declared, name=self.prefix + declared.name)

    def all(self) -> tuple[Topic, ...]:
        return tuple(self.topic(topic.name) for topic in ALL_TOPICS)

    def group(self, name: str) -> str:
        return self.prefix + name

    def used_by(self, actor: Actor) -> tuple[tuple[Topic, ...], frozenset[str]]:
        """The topics ``actor`` reads or writes, and the names of those whose dead-letter
        topic it writes: what a service checks at start (it can see no other topic). The
        admin uses them all."""
        if actor == "admin":
            every = self.all()
            return every, frozenset(topic.name for topic in every)
        used = tuple(
            self.topic(topic.name)
            for topic in ALL_TOPICS
            if actor in topic.writers or actor in topic.readers
        )
        dead_lettered = frozenset(
            topic.name for topic in used if actor in topic.readers and actor in _DEAD_LETTERING
        )
        return used, dead_lettered


# describe_configs: read a topic's configuration (its max.message.bytes, which a writer
# weighs each message against before sending).
Operation = Literal["read", "write", "describe", "describe_configs"]


@dataclass(frozen=True, slots=True)
class GroupAccess:
    """A consumer group (or, ``prefixed``, every group whose name starts so) an actor uses."""

    actor: Actor
    name: str  # as declared, before the installation's prefix
    operation: Operation = "read"
    prefixed: bool = False


# Each consumer group belongs to the one actor whose code names it (services' groups are
# ``lepton-<service name>``). A librdkafka consumer given a group asks for its coordinator
# even when it only assigns partitions: the scheduler, which replays its topics without
# joining, and the SDK's dry-run placement (``lepton-plan``) need their group too. The
# SDK's other readers are aiokafka's, outside any group. The monitor describes every
# Lepton group (the lag it shows).
CONSUMER_GROUPS: tuple[GroupAccess, ...] = (
    GroupAccess("scheduler", "lepton-scheduler"),
    GroupAccess("ingest", "lepton-ingest"),
    GroupAccess("trainer", "lepton-trainer-", prefixed=True),  # one group per node
    GroupAccess("evaluator", "lepton-evaluator"),
    GroupAccess("evaluator", "lepton-evaluator-predict"),
    GroupAccess("monitor", "lepton-monitor"),
    GroupAccess("monitor", "lepton-", "describe", prefixed=True),
    GroupAccess("client", "lepton-plan"),
    # A Kafka Connect worker is an outside client (it reads what clients read and writes job
    # requests, signed with a tenant's key); a sink connector named ``lepton-…`` consumes in
    # Connect's group ``connect-<connector name>`` (docs-connect.md).
    GroupAccess("client", "connect-lepton-", prefixed=True),
)

# Who answers for the messages of a topic it could not handle: a consuming service writes
# the dead-letter topic of each topic it reads. The client reads answers only: it never
# dead-letters (and a tenant could otherwise fill the operators' dead-letter topics).
_DEAD_LETTERING: frozenset[str] = frozenset(
    {"scheduler", "ingest", "trainer", "evaluator", "monitor"}
)


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One Kafka ACL: ``actor`` may ``operation`` the topic or group ``name`` (the whole name,
    or every name starting with it when ``prefixed``)."""

    actor: Actor
    resource: Literal["topic", "group"]
    name: str
    operation: Operation
    prefixed: bool = False


def grants(names: Namespace | None = None) -> list[Grant]:
    """Every ACL of the installation under ``names``' prefix, sorted; the admin needs none
    (a super user)."""
    names = names or Namespace()
    found: set[Grant] = set()
    for declared in ALL_TOPICS:
        topic = names.topic(declared.name).name
        found.update(Grant(actor, "topic", topic, "write") for actor in declared.writers)
        found.update(Grant(actor, "topic", topic, "read") for actor in declared.readers)
        found.update(
            Grant(actor, "topic", dead_letter_topic(topic), "write")
            for actor in declared.readers
            if actor in _DEAD_LETTERING
        )
    # Whoever writes a topic may read its configuration: the size limit it writes under.
    found.update(
        Grant(grant.actor, "topic", grant.name, "describe_configs")
        for grant in list(found)
        if grant.operation == "write"
    )
    found.update(
        Grant(group.actor, "group", names.group(group.name), group.operation, group.prefixed)
        for group in CONSUMER_GROUPS
    )
    return sorted(found)


def who_may_do_what() -> str:
    """The README's table of who may write and read each topic and use each group, made
    from the declarations above (a test keeps the README equal to it)."""
    rows = [
        "| topic | written by | read by |",
        "| --- | --- | --- |",
        *(
            f"| `{topic.name}` | {_actors(topic.writers)} | {_actors(topic.readers)} |"
            for topic in ALL_TOPICS
        ),
        "| `<topic>.dlq` | each service that reads `<topic>` | the admin (the monitor counts "
        "its messages) |",
        "",
        "| consumer group | used by | may |",
        "| --- | --- | --- |",
        *(
            f"| `{group.name}{'…' if group.prefixed else ''}` | {group.actor} | {group.operation} |"
            for group in CONSUMER_GROUPS
        ),
    ]
    return "\n".join(rows) + "\n"


def _actors(actors: tuple[Actor, ...]) -> str:
    return ", ".join(actors)
