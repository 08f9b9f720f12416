"""The heartbeat digester: a process of the scheduler that reads every heartbeat.

A cluster of 100,000 nodes beating every 5 s sends 20,000 heartbeats a second. Reading,
decoding and judging them took most of a core, and the process that did it also had to
answer job requests within milliseconds: each fetch of heartbeats made the requests
behind it wait. So the scheduler runs two processes. This one replays
``lepton.node.heartbeats`` from the beginning, judges liveness, and tells the deciding
process only what placement needs (:class:`~lepton.services.scheduler.heartbeats.HeartbeatDigest`)
as JSON lines on its standard output; a busy cluster's steady beat is then a handful of
lines a second. It publishes nothing but dead letters, holds no state of its own that
is not rebuilt from the log, and needs no database: the scheduler that starts it (when it
leads) stops it, and it stops by itself when its standard input closes (the scheduler
stopped or died).

Beyond the digest's messages it writes a ``CaughtUp`` once it has read what the log held
when it started (after a first liveness sweep), and after each sweep a ``PipelineState``
for the scheduler's metrics (see :mod:`lepton.services.scheduler.heartbeats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import structlog

from lepton.bus import Authenticator, Publisher, Subscriber
from lepton.contract import default_codec
from lepton.contract.identity import IdentityKey, Principal, Verifier
from lepton.contract.registry import attach_registry
from lepton.contract.topics import Namespace
from lepton.runtime.logs import configure_logging
from lepton.runtime.service import Context, collect_less, keep_collections_short, start_helper
from lepton.services.scheduler.heartbeats import HeartbeatDigest, Message
from lepton.services.scheduler.liveness import Liveness
from lepton.services.scheduler.settings import SchedulerSettings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Digester", "DigesterError", "main", "running_digester"]

# How often liveness is judged.
SWEEP_INTERVAL_S = 0.5
_STOP_BOUND_S = 10.0
# Heartbeats may wait this long in the broker to come in larger fetches: a fraction of
# the liveness thresholds (seconds), and less CPU for the broker and the digester.
_GATHER_MS = 100


class DigesterError(RuntimeError):
    """The heartbeat digester process ended while the scheduler needed it."""


class Digester:
    """The running digester process, as the scheduler reads it."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    async def messages(self) -> AsyncIterator[Message]:
        """Its messages, in order; raises :class:`DigesterError` if it ends."""
        assert self._process.stdout is not None
        while line := await self._process.stdout.readline():
            message: Message = json.loads(line)
            yield message
        code = await self._process.wait()
        raise DigesterError(f"the heartbeat digester exited with code {code} (see its log)")


@contextlib.asynccontextmanager
async def running_digester(context: Context) -> AsyncIterator[Digester]:
    """Start the digester with the service's settings, reading Kafka as the scheduler does
    (its own access); stop it when the block ends."""
    assert context.master is not None  # the scheduler holds it, to verify heartbeats
    # It needs no database, so the database URL, a secret, is not passed at all; the
    # master key and the Kafka password go through the pipe, never the command line or
    # the environment (the settings' dump would mask the password).
    dumped = context.settings.model_dump(
        mode="json", exclude={"database_url", "identity_key", "signing_key"}
    )
    config = {
        "settings": {**dumped, **context.publisher.kafka.settings()},
        "identity_key": context.master.to_text(),
    }
    process = await start_helper("lepton.services.scheduler.digester", config)
    try:
        yield Digester(process)
    finally:
        # Nothing of the digester's is lost by ending it at once: what it read is read
        # again by the next one, and it commits nothing.
        assert process.stdin is not None
        process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            async with asyncio.timeout(_STOP_BOUND_S):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


# ---------------------------------------------------------------- the process itself


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _write(message: Message) -> None:
    # Blocking on purpose: a scheduler slow to read holds the digester back (its pipe is
    # the queue), rather than letting lines pile up in memory.
    sys.stdout.buffer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    sys.stdout.buffer.flush()


class _StopAtEof(asyncio.Protocol):
    def __init__(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    def connection_lost(self, exc: Exception | None) -> None:
        self._subscriber.stop_soon()


async def _sweep_forever(digest: HeartbeatDigest, subscriber: Subscriber) -> None:
    await subscriber.caught_up.wait()
    # From here on a refused heartbeat is new: dead-lettered, not only counted.
    digest.live = True
    # Nodes already silent in the log are judged before the scheduler builds on them.
    digest.sweep(_now_ms())
    _write({"kind": "caught_up"})
    while True:
        stalled = digest.sweep(_now_ms())
        _write(
            {
                "kind": "pipeline",
                "stalled_ms": stalled,
                "overflow": digest.liveness.overflow,
                "counts": [(t, outcome, n) for (t, outcome), n in subscriber.counts.items()],
            }
        )
        await asyncio.sleep(SWEEP_INTERVAL_S)


async def _digest(settings: SchedulerSettings, master: IdentityKey) -> None:
    kafka = settings.kafka_access()
    assert kafka is not None, "the scheduler passes its Kafka access"
    names = Namespace(settings.topic_prefix)
    codec = await attach_registry(default_codec(), settings, names)
    digest = HeartbeatDigest(
        Liveness(
            suspect_after_ms=int(settings.node_suspect_after_s * 1000),
            dead_after_ms=int(settings.node_dead_after_s * 1000),
            max_nodes=settings.max_nodes,
        ),
        settings.node_headroom,
        _write,
        codec,
    )
    async with Publisher(
        kafka,
        codec,
        source="lepton/scheduler",
        client_id=settings.client_id,
        connect_timeout_s=settings.connect_timeout_s,
        signer=master.derive(Principal("service", "scheduler")),
    ) as publisher:
        subscriber = Subscriber(
            kafka,
            codec,
            publisher,
            topics=[names.topic("lepton.node.heartbeats")],
            group_id=names.group("lepton-scheduler"),
            handler=digest,
            client_id=settings.client_id,
            connect_timeout_s=settings.connect_timeout_s,
            replay=True,
            max_batch=5000,
            gather_ms=_GATHER_MS,
            authenticator=Authenticator(Verifier(master), names, codec),
        )
        await subscriber.start()
        structlog.get_logger("scheduler.digester").info("digesting heartbeats", pid=os.getpid())
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: _StopAtEof(subscriber), sys.stdin
        )
        sweeping = asyncio.create_task(_sweep_forever(digest, subscriber))
        freezing = asyncio.create_task(keep_collections_short(subscriber.caught_up))
        try:
            await subscriber.run()
        finally:
            sweeping.cancel()
            freezing.cancel()
            await subscriber.close()


def main() -> None:
    config: dict[str, Any] = json.loads(sys.stdin.buffer.readline())
    settings = SchedulerSettings(**config["settings"])
    configure_logging(settings.log_level)
    collect_less()  # as every service: it holds every node's newest heartbeat
    with contextlib.suppress(BrokenPipeError):  # the scheduler is gone: so are we
        master = IdentityKey.from_text(config["identity_key"])
        asyncio.run(_digest(settings, master))


if __name__ == "__main__":
    main()
