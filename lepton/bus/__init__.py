"""The Kafka bus that every service and the SDK share: librdkafka reads and writes, aiokafka admin.

- :class:`Publisher`: idempotent producer (``acks=all``) that Avro-encodes records and adds
  CloudEvents headers and a W3C ``traceparent`` to every message.
- :class:`Subscriber`: decodes, calls a handler, and commits an offset only after the
  handler returned (at-least-once). A message that cannot be decoded, or whose handler
  fails, goes to ``<topic>.dlq`` with the reason in its headers; the stream goes on.
  A :class:`TransientError` (or a lost connection) is retried instead: the message is
  neither dead-lettered nor committed until it succeeds. The handler is either an async
  function of one event, or a :class:`BatchHandler` that folds each event of a fetch in
  memory and then acts on the whole fetch at once (one placement pass, one batch of
  events published), which is how a busy service keeps up.
- Sizes: every message is weighed, before it is sent, against its topic's
  ``max.message.bytes`` (read once from the broker; Kafka's default when the principal
  may not read it). A record over it is a :class:`MessageTooLargeError`, one that does
  not encode an :class:`UnsendableRecordError`, raised before anything of the call is
  sent; :meth:`Publisher.set_aside` and :meth:`Publisher.send_sendable` send such a
  service's own record to ``<topic>.dlq`` instead, and a dead letter that would be too
  large with its reason headers is cut to fit (``dlq_truncated``, with the original
  value's size and SHA-256), so dead-lettering never fails on size.
- :func:`ensure_topics`: creates the declared topics and their dead-letter topics (the
  admin; a service only finds them there). :func:`provision` adds the ACLs of
  :func:`lepton.contract.topics.grants` (:func:`apply_acls`, :func:`live_grants`).

- Traces: every message carries a W3C ``traceparent`` that continues what caused it;
  with a tracer (:func:`trace_with`) each message is sent and handled in an OpenTelemetry
  span, and :func:`span` adds a service's own (``_tracing``).

The modules behind these names: ``_event`` (the event a handler sees),
  ``_handlers`` (handler protocols), ``_publisher``, ``_subscriber``, ``_admin`` (topics),
  ``_sizes`` (limits, weights, dead letters cut to fit), ``_transport`` (the seam
  :mod:`lepton.testing` plugs an in-memory broker into),
  ``_reader`` / ``_writer`` (librdkafka), ``_acls`` (ACLs).
"""

from __future__ import annotations

from lepton.bus._acls import AclError, apply_acls, live_grants, provision, user_principal
from lepton.bus._admin import TopicsMissingError, delete_topics, ensure_topics
from lepton.bus._authenticator import Authenticator
from lepton.bus._event import (
    DLQ_HEADERS,
    Event,
    Handler,
    Headers,
    TransientError,
)
from lepton.bus._handlers import BatchHandler, Selective, Skimming
from lepton.bus._publisher import BrokerUnavailableError, Publisher, murmur2, partition_for
from lepton.bus._reader import Message, Positions
from lepton.bus._sizes import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
    MessageTooLargeError,
    UnsendableRecordError,
    message_bytes,
)
from lepton.bus._subscriber import MessageCounts, Subscriber
from lepton.bus._tracing import (
    continue_trace,
    current_trace,
    span,
    start_span,
    trace_with,
    traceparent_of,
    tracing,
)
from lepton.bus._transport import Transport
from lepton.bus._writer import PublishError

__all__ = [
    "DLQ_HEADERS",
    "KAFKA_DEFAULT_MAX_MESSAGE_BYTES",
    "AclError",
    "Authenticator",
    "BatchHandler",
    "BrokerUnavailableError",
    "Event",
    "Handler",
    "Headers",
    "Message",
    "MessageCounts",
    "MessageTooLargeError",
    "Positions",
    "PublishError",
    "Publisher",
    "Selective",
    "Skimming",
    "Subscriber",
    "TopicsMissingError",
    "TransientError",
    "Transport",
    "UnsendableRecordError",
    "apply_acls",
    "continue_trace",
    "current_trace",
    "delete_topics",
    "ensure_topics",
    "live_grants",
    "message_bytes",
    "murmur2",
    "partition_for",
    "provision",
    "span",
    "start_span",
    "trace_with",
    "traceparent_of",
    "tracing",
    "user_principal",
]
