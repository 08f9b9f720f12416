"""Every Lepton topic, declared once: name, key, event type and broker settings.

``lepton.bus.ensure_topics`` creates them from this list; ``schemas/asyncapi.yaml``
documents the same channels, and a test keeps the two in agreement.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["ALL_TOPICS", "DLQ_SUFFIX", "Namespace", "Topic", "by_name", "dead_letter_topic"]

DLQ_SUFFIX = ".dlq"
_DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic and the one event type its values carry."""

    name: str
    event: str  # full Avro name of the value schema
    key: str  # what the message key holds
    partitions: int = 6
    config: dict[str, str] = field(default_factory=dict)


def _retained(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


# The log is the source of truth: topics whose history rebuilds state keep it for weeks;
# heartbeats only matter as the latest value per node, so they are compacted.
ALL_TOPICS: tuple[Topic, ...] = (
    Topic(
        "lepton.node.heartbeats",
        "lepton.NodeHeartbeat",
        "node id",
        config={"cleanup.policy": "compact,delete", "retention.ms": str(_DAY_MS)},
    ),
    Topic("lepton.jobs.requested", "lepton.JobRequested", "job id", config=_retained(30)),
    # Keyed by node id so that each trainer agent reads only its own partition.
    Topic("lepton.jobs.assigned", "lepton.JobAssigned", "node id", 12, _retained(30)),
    Topic("lepton.jobs.events", "lepton.JobEvent", "job id", config=_retained(30)),
    Topic("lepton.data.requested", "lepton.DatasetRequested", "dataset id", 3, _retained(30)),
    Topic("lepton.data.ready", "lepton.DataReady", "dataset id", 3, _retained(30)),
    Topic("lepton.data.rejected", "lepton.DataRejected", "dataset id", 3, _retained(30)),
    Topic("lepton.models.ready", "lepton.ModelReady", "model id", 3, _retained(30)),
    Topic("lepton.models.evaluated", "lepton.ModelEvaluated", "model id", 3, _retained(30)),
    Topic("lepton.models.promoted", "lepton.ModelPromoted", "model name", 3, _retained(365)),
    # Request and reply: short-lived, but a few days let a client that was away read its answer.
    Topic("lepton.predict.requested", "lepton.PredictRequested", "request id", config=_retained(3)),
    Topic("lepton.predict.results", "lepton.PredictionResult", "request id", config=_retained(3)),
    Topic("lepton.alerts", "lepton.Alert", "alert rule and subject", 3, _retained(30)),
    Topic("lepton.audit", "lepton.AuditEvent", "tenant", 3, _retained(365)),
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
