"""The fault matrix, in the issue's order, and one run of an entry measured."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.chaos import faults
from bench.chaos.faults import BlockedError, Chaos, Outcome
from bench.chaos.stack import until_healthy

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from bench.chaos.faults import FaultFn
    from bench.chaos.stack import Process
    from bench.chaos.workload import Item, Ledger

STREAMED = ("ingest", "job", "evaluation")
KILLED = ("scheduler", "ingest", "evaluator", "monitor", "trainer")


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    fault: FaultFn
    stream: bool = True  # work streams during the run
    at: tuple[float, float] = (0.3, 0.6)  # the fault's point, as fractions of the window
    mixed: bool = False  # the window is the mixed load's length
    judge: Callable[[Chaos, str, Outcome], None] | None = None


def matrix(*, full: bool) -> list[Entry]:
    """Every fault; the short form leaves out the longest outages and the mixed load."""
    entries = [Entry(f"SIGKILL {s}", faults.signalled(s, signal.SIGKILL)) for s in KILLED]
    entries += [Entry(f"SIGTERM {s}", faults.signalled(s, signal.SIGTERM)) for s in KILLED]
    entries += [
        Entry("trainer paused past dead", faults.pause_trainer),
        Entry("every heartbeat stops", faults.heartbeats_stop),
        Entry("10% garbage on inputs", faults.garbage, at=(0.0, 0.0), judge=faults.judge_garbage),
    ]
    entries += [
        Entry(f"broker down {s} s", faults.outage("kafka", s))
        for s in ((10, 30, 90) if full else (10, 30))
    ]
    entries += [
        Entry(f"postgres down {s} s", faults.outage("postgres", s))
        for s in ((30, 120) if full else (30,))
    ]
    # After the outages: a file that poisons ingest (its request redelivered at every
    # restart) would otherwise leave every later run without ingest.
    entries.append(
        Entry(
            "hostile files",
            faults.hostile_files,
            stream=False,
            at=(0.0, 0.0),
            judge=faults.judge_hostile,
        )
    )
    if full:
        entries.append(Entry("mixed load 10 min", faults.mixed, at=(0.0, 0.0), mixed=True))
    return entries


async def recover(chaos: Chaos, run: str) -> float | None:
    """Seconds from now (the fault's end) until every service answers /healthz and a probe
    ingest is answered; None if not within the options' bound."""
    began = time.monotonic()
    bound = chaos.options.recover_timeout_s
    try:
        await until_healthy(chaos.stack, bound, "recovery")
    except TimeoutError:
        return None
    left = bound - (time.monotonic() - began)
    if left <= 0 or not await chaos.workload.probe(run, left):
        return None
    return time.monotonic() - began


async def restore(chaos: Chaos, run: str, outcome: Outcome) -> None:
    """Before a run: the stack healthy and a probe answered, so that one fault's damage is
    not counted against the next; else every service restarted, and the run says so."""
    if await recover(chaos, f"{run}/before") is not None:
        return
    sick = [s.spec.name for s in chaos.stack.services if not await s.healthy()]
    why = f"unhealthy: {', '.join(sick)}" if sick else "all healthy, the probe unanswered"
    outcome.notes.append(f"not recovered from the run before ({why}): every service restarted")
    for service in chaos.stack.services:
        service.signal(signal.SIGCONT)
        process = service.popen
        service.signal(signal.SIGKILL)
        if process is not None:
            await process.wait()
    if await recover(chaos, f"{run}/before") is None:
        outcome.notes.append("and it did not recover from that either")


async def run_entry(chaos: Chaos, entry: Entry, index: int) -> Outcome:
    run = f"{entry.name}#{index}"
    outcome = Outcome(entry.name, run)
    await restore(chaos, run, outcome)
    services = chaos.stack.services
    for service in services:
        service.peak_rss_mib = 0.0
        outcome.rss_before_mib[service.spec.name] = round(service.sample_rss(), 1)
    exits_before = {s.spec.name: len(s.unexpected_exits) for s in services}
    options = chaos.options
    window = options.mixed_s if entry.mixed else options.window_s
    job_every_s = options.mixed_job_every_s if entry.mixed else options.job_every_s
    stream = (
        asyncio.create_task(chaos.workload.stream(run, window, options.ingest_every_s, job_every_s))
        if entry.stream
        else None
    )
    try:
        await asyncio.sleep(chaos.rng.uniform(*entry.at) * window)  # the fault's random point
        try:
            await entry.fault(chaos, run, outcome)
        except BlockedError as blocked:
            outcome.status = str(blocked)
        except Exception as error:  # the matrix goes on; the table says it
            outcome.status = f"error: {type(error).__name__}: {error}"
        if stream is not None:
            await stream
    finally:
        if stream is not None and not stream.done():
            stream.cancel()
    outcome.recover_s = await recover(chaos, run)
    kinds = (*STREAMED, "hostile")
    await chaos.ledger.until_settled(run, options.settle_s, kinds)
    if entry.judge is not None:
        entry.judge(chaos, run, outcome)
    items = chaos.ledger.of_run(run, kinds)
    outcome.submitted = len(items)
    outcome.completed = sum(1 for item in items if chaos.ledger.completed(item.id))
    outcome.lost = outcome.submitted - outcome.completed
    lost = [item for item in items if not chaos.ledger.completed(item.id)]
    outcome.notes.extend(lost_notes(chaos.ledger, services, lost))
    outcome.refused = chaos.ledger.refused.get(run, 0)
    outcome.peak_rss_mib = {s.spec.name: round(s.peak_rss_mib, 1) for s in services}
    outcome.rss_after_mib = {s.spec.name: round(s.sample_rss(), 1) for s in services}
    for name in outcome.unexpected_exits:
        if logged := chaos.stack.service(name).last_error():
            outcome.notes.append(f"{name} last logged: {logged}")
    if outcome.refused:
        outcome.notes.append(f"{outcome.refused} publishes not acknowledged (not submitted)")
    outcome.unexpected_exits = {
        s.spec.name: s.unexpected_exits[exits_before[s.spec.name] :]
        for s in services
        if len(s.unexpected_exits) > exits_before[s.spec.name]
    }
    return outcome


def lost_notes(ledger: Ledger, services: Sequence[Process], lost: Sequence[Item]) -> list[str]:
    """What the row says of its lost items: the first five each with its events and the
    newest log line of every service naming it, the rest counted by their last event, and
    where each service was (a retry names a topic's offset, not the item it holds)."""
    notes: list[str] = []
    for item in lost[:5]:
        events = [kind for kind, _node, _seen in ledger.job_events.get(item.id, [])]
        seen = f" (its events: {', '.join(events)})" if events else ""
        notes.append(f"no outcome for {item.kind} {item.id}{seen}")
        named = [
            f"  {service.spec.name} last logged of it: {line}"
            for service in services
            if (line := service.newest_line(item.id))
        ]
        notes.extend(named or ["  no service logged it"])
    if len(lost) > 5:
        last = Counter(
            (ledger.job_events.get(item.id) or [(item.kind + " unanswered", None, 0)])[-1][0]
            for item in lost[5:]
        )
        notes.append(f"and {len(lost) - 5} more, by last event: {dict(last)}")
    if lost:
        for service in services:
            newest = service.newest_line()
            notes.append(f"{service.spec.name} last logged: {newest}")
    return notes


def judge(chaos: Chaos, outcome: Outcome) -> None:
    """The issue's targets for one run; duplicates counted as late as possible."""
    items = chaos.ledger.of_run(outcome.run, (*STREAMED, "hostile"))
    outcome.duplicated = sum(chaos.ledger.duplicated(item.id) for item in items)
    outcome.checks |= {
        "0 lost": outcome.lost == 0,
        "0 duplicated": outcome.duplicated == 0,
        "recovered within 30 s": outcome.recover_s is not None
        and outcome.recover_s <= faults.RECOVERY_TARGET_S,
        "no service crashed": not outcome.unexpected_exits,
    }
    if outcome.unexpected_exits:
        outcome.notes.append(f"exited on their own (exit codes): {outcome.unexpected_exits}")
    for item in items:
        if chaos.ledger.duplicated(item.id):
            effects = ", ".join(
                "/".join(str(part) for part in effect) for effect in chaos.ledger.effects[item.id]
            )
            outcome.notes.append(f"{item.kind} {item.id}: {effects}")
