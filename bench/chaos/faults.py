"""The faults, each a small coroutine, and how one run of a fault is measured.

A run streams work (:meth:`Workload.stream`), injects its fault at a point drawn from the
seeded generator, and returns once the fault has *ended* (the signal sent, the server
started again). From then on: *time to recover* runs until every service answers /healthz
with 200 and a probe ingest is answered; then the run's work gets a bounded time to
complete; what has no terminal outcome by then is *lost*.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.chaos import hostile
from bench.chaos.workload import GARBAGE_HEADER
from lepton.bus import partition_for
from lepton.contract.topics import ALL_TOPICS, Namespace
from lepton.errors import LeptonError

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable

    from bench.chaos.stack import Process, Stack
    from bench.chaos.workload import Ledger, Workload

    # A fault acts, notes what it did in the outcome, and returns once it has ended.
    FaultFn = Callable[["Chaos", str, "Outcome"], Awaitable[None]]

RECOVERY_TARGET_S = 30.0
# The scheduler's and the monitor's default LEPTON_*NODE_DEAD_AFTER_S, and a margin.
NODE_DEAD_AFTER_S = 15.0
PAUSE_S = NODE_DEAD_AFTER_S + 10.0
_DEAD_LETTERING = ("scheduler", "ingest", "trainer", "evaluator", "monitor")


@dataclass(slots=True)
class Options:
    window_s: float  # how long work streams in a run
    ingest_every_s: float
    job_every_s: float
    settle_s: float  # after recovery, how long the run's work may take to complete
    recover_timeout_s: float
    hostile_mib: int  # size of the bombs and the single line
    garbage_per_topic: int
    mixed_s: float  # the mixed load's length
    # a pace two trainers on two cores keep up with for ten minutes (a backlog would
    # count as lost work, which is not what the mixed load measures)
    mixed_job_every_s: float


@dataclass(slots=True)
class Chaos:
    """What a fault acts on."""

    stack: Stack
    workload: Workload
    ledger: Ledger
    rng: random.Random
    options: Options


@dataclass(slots=True)
class Outcome:
    """One run of one fault."""

    fault: str
    run: str
    submitted: int = 0
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    recover_s: float | None = None
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    # each service's RSS before the run and once its work settled: is memory flat?
    rss_before_mib: dict[str, float] = field(default_factory=dict)
    rss_after_mib: dict[str, float] = field(default_factory=dict)
    refused: int = 0  # publishes the broker never acknowledged (not submitted work)
    unexpected_exits: dict[str, list[int]] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)  # target -> met
    notes: list[str] = field(default_factory=list)
    status: str = "ran"  # or "blocked: <why>", "error: <what>"

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


class BlockedError(LeptonError):
    """The fault cannot be made with today's stack (the reason goes in the table)."""


# ----------------------------------------------------------------- process faults


def _target(chaos: Chaos, service: str, run: str) -> Process:
    """The service's process; for "trainer", the one running most of the run's jobs."""
    if service != "trainer":
        return chaos.stack.service(service)
    busy: Counter[str] = Counter()
    for item in chaos.ledger.of_run(run, ("job",)):
        events = chaos.ledger.job_events.get(item.id, [])
        if events and events[-1][0] in ("assigned", "started", "progress") and events[-1][1]:
            busy[str(events[-1][1])] += 1
    trainers = chaos.stack.trainers()
    if busy:
        node = busy.most_common(1)[0][0]
        return next((t for t in trainers if node in t.spec.command), trainers[0])
    return chaos.rng.choice(trainers)


def signalled(service: str, sig: signal.Signals) -> FaultFn:
    async def fault(chaos: Chaos, run: str, outcome: Outcome) -> None:
        target = _target(chaos, service, run)
        outcome.notes.append(f"{sig.name} {target.spec.name} (pid {target.pid})")
        process = target.popen
        target.signal(sig)
        if process is not None:
            # The fault ends when the process is gone (drained, for SIGTERM): bounded.
            try:
                await asyncio.wait_for(process.wait(), 60)
            except TimeoutError:
                outcome.notes.append(f"{target.spec.name} still running 60 s after {sig.name}")

    return fault


async def pause_trainer(chaos: Chaos, run: str, outcome: Outcome) -> None:
    """A trainer frozen past the dead threshold, then resumed: its late results must be
    fenced (a duplicated effect otherwise)."""
    target = _target(chaos, "trainer", run)
    outcome.notes.append(f"SIGSTOP {target.spec.name} for {PAUSE_S:.0f} s")
    target.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(PAUSE_S)  # the fault's duration, not a synchronisation
    finally:
        target.signal(signal.SIGCONT)


async def heartbeats_stop(chaos: Chaos, run: str, outcome: Outcome) -> None:
    """Every trainer frozen at once: our fault (one alert), not every node's (no mass
    requeue of their jobs)."""
    began = time.monotonic()
    for trainer in chaos.stack.trainers():
        trainer.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(PAUSE_S)
    finally:
        for trainer in chaos.stack.trainers():
            trainer.signal(signal.SIGCONT)
    await asyncio.sleep(5)  # what the resumed nodes and the rules say right after
    alerts = [
        a for a, seen in chaos.ledger.alerts if seen >= began and a.get("state") != "resolved"
    ]
    requeues = sum(
        1
        for events in chaos.ledger.job_events.values()
        for kind, _node, seen in events
        if seen >= began and kind in ("requeued", "lost")
    )
    rules = Counter(str(a.get("rule")) for a in alerts)
    outcome.notes.append(f"alerts raised {dict(rules)}; requeued/lost job events {requeues}")
    outcome.checks["one alert"] = len(alerts) == 1
    outcome.checks["no mass requeue"] = requeues == 0


# ----------------------------------------------------------------- garbage


def _readers(declared: str, key: bytes, stack: Stack) -> int:
    """How many services dead-letter a garbage message with ``key`` on ``declared``:
    each reading actor, a trainer only if the key's partition is its node's."""
    topic = Namespace().topic(declared)
    count = 0
    for actor in topic.readers:
        if actor not in _DEAD_LETTERING:
            continue
        if actor != "trainer":
            count += 1
            continue
        partition = partition_for(key, topic.partitions)
        count += sum(
            1
            for trainer in stack.trainers()
            if partition_for(trainer.spec.command[2].encode(), topic.partitions) == partition
        )
    return count


async def garbage(chaos: Chaos, run: str, outcome: Outcome) -> None:
    """Garbage interleaved on every topic a service reads, during the run's stream."""
    publisher = chaos.workload.publisher
    assert publisher is not None
    inputs = [t.name for t in ALL_TOPICS if set(t.readers) & set(_DEAD_LETTERING)]
    expected: dict[str, int] = {}
    count = chaos.options.garbage_per_topic
    for _ in range(count):
        for declared in inputs:
            gid = uuid.uuid4().hex
            key = b"node-1" if declared == "lepton.jobs.assigned" else gid[:8].encode()
            value = os.urandom(chaos.rng.randint(1, 300))
            await publisher.send_raw(
                Namespace().topic(declared).name, key, value, [(GARBAGE_HEADER, gid.encode())]
            )
            expected[gid] = _readers(declared, key, chaos.stack)
        await asyncio.sleep(chaos.options.window_s / (2 * count))
    chaos.ledger.garbage_expected[run] = expected  # judged once the run settled
    outcome.notes.append(f"{len(expected)} garbage messages on {len(inputs)} topics")


def judge_garbage(chaos: Chaos, run: str, outcome: Outcome) -> None:
    expected = chaos.ledger.garbage_expected.get(run, {})
    copies = {gid: chaos.ledger.dead_letters.get(gid, 0) for gid in expected}
    never = sum(1 for gid, n in copies.items() if n == 0)
    extra = sum(max(0, n - expected[gid]) for gid, n in copies.items())
    short = sum(1 for gid, n in copies.items() if 0 < n < expected[gid])
    total, wanted = sum(copies.values()), sum(expected.values())
    outcome.notes.append(
        f"dead letters {total} of {wanted} expected; never dead-lettered {never}, "
        f"by fewer readers than expected {short}, extra copies {extra}"
    )
    outcome.checks["dead letters = garbage x readers"] = total == wanted and extra == 0
    legit = dict(chaos.ledger.dead_legit)
    if legit:
        outcome.notes.append(f"valid messages dead-lettered so far: {legit}")


# ----------------------------------------------------------------- hostile files


async def hostile_files(chaos: Chaos, run: str, outcome: Outcome) -> None:
    """Each file of the battery through ingest, one after another."""
    inbox = chaos.stack.inbox
    for number, label in enumerate(hostile.BATTERY):
        source, dataset = await asyncio.to_thread(
            hostile.make, label, inbox, chaos.options.hostile_mib
        )
        # Each its own dataset, hence its own key: one file that hangs ingest does not
        # hold back the others of its partition only because they share a name.
        await chaos.workload.ingest(
            run, source, dataset=dataset or f"hostile-{number}", kind="hostile", label=label
        )


def judge_hostile(chaos: Chaos, run: str, outcome: Outcome) -> None:
    verdicts = []
    accepted = 0
    for item in chaos.ledger.of_run(run, ("hostile",)):
        effects = sorted(chaos.ledger.effects.get(item.id, {}), key=str)
        if not effects:
            verdicts.append(f"{item.label}: no answer")
            continue
        kinds = {effect[0] for effect in effects}
        if "ready" in kinds:
            accepted += 1
            verdicts.append(f"{item.label}: ACCEPTED")
        else:
            verdicts.append(f"{item.label}: rejected {effects[0][1]}")
    outcome.notes.extend(verdicts)
    outcome.checks["every hostile file rejected"] = accepted == 0 and all(
        "no answer" not in v for v in verdicts
    )


# ----------------------------------------------------------------- outages


def outage(server: str, seconds: float) -> FaultFn:
    """Kafka or PostgreSQL stopped, then started again on the same port."""

    async def fault(chaos: Chaos, run: str, outcome: Outcome) -> None:
        stack = chaos.stack
        stop, start = (
            (stack.stop_broker, stack.start_broker)
            if server == "kafka"
            else (stack.stop_database, stack.start_database)
        )
        outcome.notes.append(f"{server} stopped for {seconds} s")
        await asyncio.to_thread(stop)
        await asyncio.sleep(seconds)  # the outage's length
        blocked = await asyncio.to_thread(start)
        if blocked:
            raise BlockedError(blocked)

    return fault


async def mixed(chaos: Chaos, run: str, outcome: Outcome) -> None:
    """Faults 1 (SIGKILL of a service), 3 (a trainer paused) and 7 (the broker down 10 s),
    one in each third of the run's window, at seeded points; the run starts it at once."""
    began = time.monotonic()
    third = chaos.options.mixed_s / 3
    service = chaos.rng.choice(["scheduler", "ingest", "evaluator", "monitor", "trainer"])
    faults = (signalled(service, signal.SIGKILL), pause_trainer, outage("kafka", 10))
    for index, fault in enumerate(faults):
        at = began + (index + chaos.rng.uniform(0.1, 0.5)) * third
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        await fault(chaos, run, outcome)
