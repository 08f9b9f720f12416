"""The broker's own refusals on ``lepton.audit``: a client whose credentials it refused, a
principal its ACLs did not allow.

Kafka refuses those before any Lepton service sees a record, and says so only in its own
log. The local stack (``lepton/devstack/_kafka.py``) has log4j2 write them to a file of
their own, one line each: the authorizer's denials (``kafka.authorizer.logger``) and the
failed SASL authentications the broker's network layer reports; an operator gives the
monitor the same file of their brokers (``LEPTON_MONITOR_BROKER_LOG``, same layout).
:class:`BrokerDenialRelay` follows it (:mod:`lepton.services.monitor.log_follower`), reads each
line into who, what, which resource, why and when, and publishes one ``lepton.AuditEvent``
(outcome ``denied``, signed as the monitor) per kind of denial and window: a client
retrying in a loop, or one trying a thousand topic names, cannot flood the audit trail.

The position in the file is saved in PostgreSQL after the events before it are on the
broker, so a restart neither skips a denial nor (but for those published just before a
crash) repeats one. What a crash can lose is the count of repeats in an open window,
never the first denial of a kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lepton.bus import PublishError
from lepton.services.monitor.log_follower import LogFollower, Position
from lepton.services.monitor.pipeline_watch import OUTAGES

if TYPE_CHECKING:
    from pathlib import Path

    import asyncpg

    from lepton.contract.events import AuditAction, AuditEvent
    from lepton.contract.topics import Topic
    from lepton.runtime.service import BackgroundJob, Context
    from lepton.services.monitor.settings import MonitorSettings

__all__ = ["Aggregator", "BrokerDenial", "BrokerDenialRelay", "broker_relays", "parse"]

_POLL_S = 0.5
_RETRY_S = 1.0
_BATCH = 500
_MAX_KINDS = 1000  # kinds of denial itemised per window; beyond, counted together
_MAX_FIELD = 300  # characters kept of a principal, a resource or a reason
_STOP_FLUSH_S = 5.0

# The layout _kafka.py gives log4j2: "<UTC time> <logger> <message>", line breaks escaped.
_AUTHORIZER = re.compile(
    r"(?P<time>\S+) kafka\.authorizer\.logger Principal = (?P<principal>.+?) is Denied "
    r"[Oo]peration = (?P<operation>\w+) from host = (?P<host>\S+) on resource = "
    # Greedy: a name (a group's is the client's choice) may hold anything, the rule not.
    r"(?P<type>\w+):(?P<pattern>\w+):(?P<name>.*) for request = (?P<request>\w+) "
    r"with resourceRefCount = \d+ based on rule (?P<rule>.*)"
)
_NETWORK = (
    r"(?P<time>\S+) org\.apache\.kafka\.common\.network\.Selector (?:\[[^\]]*\] )?{what} "
    r"(?P<peer>\S+) \(channelId=(?P<listener>[^\s-]+)-[^)]*\){rest}"
)
_AUTHENTICATION = re.compile(
    _NETWORK.format(what="Failed (?:re-)?authentication with", rest=r" \((?P<reason>.*)\)")
)
# A connection the broker closed on an error it did not expect: a client speaking PLAINTEXT
# to the SASL listener ("... during SASL handshake"), or not speaking Kafka at all; the
# exception's message says which.
_CLOSED = re.compile(
    _NETWORK.format(what="Unexpected error from", rest=r"; closing connection \[(?P<reason>.*)\]")
)
# Kafka's operations as the audit trail's actions (AuditEvent.action).
_ACTIONS: dict[str, AuditAction] = {
    "READ": "read",
    "DESCRIBE": "read",
    "DESCRIBE_CONFIGS": "read",
    "WRITE": "publish",
    "IDEMPOTENT_WRITE": "publish",
    "DELETE": "delete",
}
_AUTHENTICATE = "kafka:AUTHENTICATE"


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_FIELD else text[: _MAX_FIELD - 1] + "…"


def _snake(name: str) -> str:
    """Kafka's resource type as the audit trail writes resources: ``TransactionalId`` →
    ``transactional_id``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _time_ms(text: str) -> int | None:
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class BrokerDenial:
    """One refusal the broker logged."""

    time_ms: int
    actor: str  # the Kafka principal (User:lepton-client), or host:<address> unauthenticated
    operation: str  # kafka:WRITE, kafka:AUTHENTICATE, …
    action: AuditAction
    resource: str  # topic:<name>, group:<name>, listener:<address:port>, …
    reason: str  # why, and from where, in the broker's words

    @property
    def kind(self) -> tuple[str, str, str]:
        return (self.actor, self.operation, self.resource)

    def event(self, *, time_ms: int | None = None, more: str = "") -> AuditEvent:
        return {
            "actor": self.actor,
            "tenant": "",  # the broker knows principals, not the tenant a client acts for
            "action": self.action,
            "resource": self.resource,
            "owner": None,
            "outcome": "denied",
            "detail": f"{self.operation} refused by the broker: {self.reason}{more}",
            "region": None,
            "time": self.time_ms if time_ms is None else time_ms,
        }


def parse(line: str) -> BrokerDenial | None:
    """The denial a line of the broker's denials log records; None for any other line."""
    if found := _AUTHORIZER.fullmatch(line):
        operation = found["operation"].upper()
        rule = "no ACL allows it" if found["rule"] == "DefaultDeny" else found["rule"]
        return _denial(
            found["time"],
            found["principal"],
            f"kafka:{operation}",
            _ACTIONS.get(operation, "write"),
            f"{_snake(found['type'])}:{found['name']}",
            f"{rule} ({found['request']} request from {found['host']})",
        )
    for pattern, operation, why in (
        (_AUTHENTICATION, _AUTHENTICATE, "authentication failed"),
        (_CLOSED, "kafka:CONNECT", "connection closed"),
    ):
        if found := pattern.fullmatch(line):
            peer = found["peer"].rsplit("/", 1)[-1]  # "/10.0.0.7" or "name/10.0.0.7"
            return _denial(
                found["time"],
                f"host:{peer}",
                operation,
                "read",  # no action of the audit trail names signing in; nothing was read
                f"listener:{found['listener']}",
                f"{why}: {found['reason']}",
            )
    return None


def _denial(
    time_text: str, actor: str, operation: str, action: AuditAction, resource: str, reason: str
) -> BrokerDenial | None:
    time_ms = _time_ms(time_text)
    if time_ms is None:
        return None
    return BrokerDenial(
        time_ms, _bounded(actor), operation, action, _bounded(resource), _bounded(reason)
    )


@dataclass(slots=True)
class _Window:
    first: BrokerDenial
    repeats: int = 0
    last_ms: int = 0


_OVERFLOW = ("*", "kafka:*", "*")


class Aggregator:
    """One audit event per kind of denial (who, what operation, which resource) and
    window: the first at once, and at the window's end one that counts the repeats.

    Windows run on the log's clock (a backlog read at once is counted as it happened) and
    are closed by :meth:`due` on the wall clock when the log is quiet. Beyond ``max_kinds``
    kinds open at once, further kinds are counted together in one window of their own.
    """

    def __init__(self, window_s: float, *, max_kinds: int = _MAX_KINDS) -> None:
        self._window_ms = int(window_s * 1000)
        self._max_kinds = max_kinds
        self._open: dict[tuple[str, str, str], _Window] = {}

    def add(self, denial: BrokerDenial) -> list[AuditEvent]:
        events: list[AuditEvent] = []
        kind = denial.kind
        window = self._open.get(kind)
        if window is not None and denial.time_ms - window.first.time_ms >= self._window_ms:
            events += self._close(kind)
            window = None
        if window is None and len(self._open) - (_OVERFLOW in self._open) >= self._max_kinds:
            kind, window = _OVERFLOW, self._open.get(_OVERFLOW)
            if window is None:
                denial = BrokerDenial(
                    denial.time_ms,
                    "*",
                    "kafka:*",
                    denial.action,
                    "*",
                    f"more than {self._max_kinds} kinds of denial within "
                    f"{self._window_ms / 1000:g} s, counted together; the first: "
                    f"{denial.actor} {denial.operation} on {denial.resource}",
                )
        if window is None:
            self._open[kind] = _Window(denial, last_ms=denial.time_ms)
            events.append(denial.event())
        else:
            window.repeats += 1
            window.last_ms = max(window.last_ms, denial.time_ms)
        return events

    def due(self, now_ms: int) -> list[AuditEvent]:
        """The counts of the windows that ended by ``now_ms``."""
        ended = [k for k, w in self._open.items() if now_ms - w.first.time_ms >= self._window_ms]
        return [event for kind in ended for event in self._close(kind)]

    def flush(self) -> list[AuditEvent]:
        """The counts of every open window (the relay is stopping)."""
        return [event for kind in list(self._open) for event in self._close(kind)]

    def _close(self, kind: tuple[str, str, str]) -> list[AuditEvent]:
        window = self._open.pop(kind)
        if window.repeats == 0:
            return []
        more = (
            f"; and {window.repeats} more time(s) within "
            f"{(window.last_ms - window.first.time_ms) / 1000:g} s after "
            f"{_iso(window.first.time_ms)}"
        )
        return [window.first.event(time_ms=window.last_ms, more=more)]


class _Positions:
    """Where the relay has read the log to, per installation and file, in PostgreSQL."""

    def __init__(self, pool: asyncpg.Pool, namespace: str, path: Path) -> None:
        self._pool, self._namespace, self._path = pool, namespace, str(path)

    async def load(self) -> Position | None:
        row = await self._pool.fetchrow(
            "SELECT inode, position, head FROM monitor_broker_log "
            "WHERE namespace = $1 AND path = $2",
            self._namespace,
            self._path,
        )
        return None if row is None else Position(row["inode"], row["position"], row["head"])

    async def save(self, position: Position) -> None:
        await self._pool.execute(
            "INSERT INTO monitor_broker_log (namespace, path, inode, position, head) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (namespace, path) DO UPDATE "
            "SET inode = EXCLUDED.inode, position = EXCLUDED.position, head = EXCLUDED.head",
            self._namespace,
            self._path,
            position.inode,
            position.offset,
            position.head,
        )


class BrokerDenialRelay:
    """Follows the broker's denials log and publishes its denials on ``lepton.audit``."""

    def __init__(self, path: Path, window_s: float) -> None:
        self.path = path
        self._aggregator = Aggregator(window_s)
        self._unsent: list[AuditEvent] = []
        self.published = 0

    async def run(self, context: Context) -> None:
        positions = _Positions(context.pool, context.settings.topic_prefix, self.path)
        follower = LogFollower(self.path, await positions.load())
        topic = context.topic("lepton.audit")
        saved = follower.position
        context.log.info("following the broker's denials", path=str(self.path))
        try:
            while True:
                self._read(context, follower)
                self._unsent += self._aggregator.due(int(time.time() * 1000))
                # Until the broker has them, nothing further is read: the file is the buffer.
                await self._publish(context, topic)
                if follower.position != saved and follower.position is not None:
                    try:
                        await positions.save(follower.position)
                        saved = follower.position
                    except OUTAGES as exc:  # saved at the next turn; a restart repeats a few
                        context.log.warning("broker log position not saved", error=repr(exc))
                if not follower.behind:
                    await asyncio.sleep(_POLL_S)
        finally:
            follower.close()
            # Stopping: the repeats counted so far are published, best effort and bounded.
            self._unsent += self._aggregator.flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_STOP_FLUSH_S):
                    await self._publish(context, topic)

    def _read(self, context: Context, follower: LogFollower) -> None:
        unknown = 0
        for line in follower.read():
            denial = parse(line)
            if denial is None:
                unknown += 1
                continue
            self._unsent += self._aggregator.add(denial)
        if unknown:
            context.log.warning("broker log lines not understood", count=unknown)
        if follower.lost:
            context.log.warning("the broker log was replaced while stopped: denials may be lost")
            follower.lost = False

    async def _publish(self, context: Context, topic: Topic) -> None:
        """Publish what waits, retrying while the broker cannot take it."""
        while self._unsent:
            batch = self._unsent[:_BATCH]
            try:
                # A denial that can never be sent is set aside: the file behind it is read on.
                acks, _ = await context.publisher.send_sendable(
                    topic, [(event["tenant"], event) for event in batch]
                )
                await asyncio.gather(*acks)
            except (*OUTAGES, PublishError) as exc:
                context.log.warning("audit publish failed; retrying", error=repr(exc))
                await asyncio.sleep(_RETRY_S)
                continue
            del self._unsent[: len(batch)]
            self.published += len(batch)


def broker_relays(settings: MonitorSettings) -> list[BackgroundJob]:
    """The monitor's loops relaying the brokers' denials: one per log it is given."""
    return [
        BrokerDenialRelay(path, settings.monitor_broker_denial_window_s).run
        for path in settings.monitor_broker_log
    ]
