"""Where a job would go now: the scheduler's core run on the cluster the log tells of.

Nothing is published: the heartbeats and the job topics are replayed into a scratch
:class:`~lepton.scheduling.placement.Scheduler`, the job is submitted to it, and its first
plan says what the real scheduler would do.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lepton.bus import Event, Publisher, Subscriber
from lepton.contract import default_codec
from lepton.scheduling.entities import Assign, Preempt, Wait
from lepton.scheduling.intake import Rejection, job_spec, node_state
from lepton.scheduling.journal import Journal, Status, restore
from lepton.scheduling.placement import Scheduler, feasibility
from lepton.sdk.builders import InvalidRequest

if TYPE_CHECKING:
    from lepton.config import KafkaAccess
    from lepton.contract.topics import Namespace
    from lepton.scheduling.entities import NodeState
    from lepton.sdk.builders import JobRequest


@dataclass(frozen=True, slots=True)
class Placement:
    """What the scheduler would do with a job now.

    ``when`` is ``now`` (on :attr:`node_ids`), ``waits`` (for :attr:`reason`) or
    ``never`` (no node could ever hold it: :attr:`reason`); :attr:`preempts` names the
    jobs it would preempt first."""

    when: Literal["now", "waits", "never"]
    node_ids: tuple[str, ...] = ()
    preempts: tuple[str, ...] = ()
    reason: str | None = None


async def place(job: JobRequest, kafka: KafkaAccess, names: Namespace) -> Placement:
    spec = job_spec(job.to_record())
    if isinstance(spec, Rejection):
        raise InvalidRequest(f"{spec.field}: {spec.reason}")
    nodes, journal = await _read_cluster(kafka, names)
    impossible = feasibility(spec, nodes)
    if impossible is not None:
        return Placement("never", reason=str(impossible))
    core = Scheduler()
    now = int(time.time() * 1000)
    restore(core, nodes, journal, now)
    for entry in journal.jobs.values():
        if entry.status is Status.QUEUED and not isinstance(entry.spec, Rejection):
            core.submit(entry.spec, entry.attempt)
    core.submit(spec)
    preempts: list[str] = []
    for decision in core.plan(now):
        if isinstance(decision, Preempt) and decision.for_job_id == spec.job_id:
            preempts.extend(decision.victim_job_ids)
        elif isinstance(decision, Assign) and decision.job_id == spec.job_id:
            return Placement("now", tuple(decision.node_ids), tuple(preempts))
        elif isinstance(decision, Wait) and decision.job_id == spec.job_id:
            reason = decision.reason.value.replace("_", " ")
            return Placement("waits", preempts=tuple(preempts), reason=reason)
    return Placement("waits", preempts=tuple(preempts))


async def _read_cluster(kafka: KafkaAccess, names: Namespace) -> tuple[list[NodeState], Journal]:
    """The cluster as the log tells it: the latest heartbeat per node, and every job."""
    latest: dict[str, dict[str, Any]] = {}
    journal = Journal()

    async def read(event: Event) -> None:
        declared = event.topic.removeprefix(names.prefix)
        if declared == "lepton.node.heartbeats":
            latest[event.record["node_id"]] = event.record
        elif declared == "lepton.jobs.requested":
            journal.request(event.record)
        else:
            journal.fold(event.record)

    topics = [
        names.topic(t)
        for t in ("lepton.node.heartbeats", "lepton.jobs.requested", "lepton.jobs.events")
    ]
    async with Publisher(kafka, default_codec(), source="lepton/sdk") as bus:
        reader = Subscriber(
            kafka,
            default_codec(),
            bus,
            topics=topics,
            group_id=names.group("lepton-plan"),  # named only: a replay joins no group
            handler=read,
            replay=True,
        )
        await reader.start()
        task = asyncio.create_task(reader.run())
        try:
            await reader.caught_up.wait()
        finally:
            reader.stop_soon()
            await task
            await reader.close()
    return [node_state(record) for record in latest.values()], journal
