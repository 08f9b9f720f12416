"""Every job's story, folded from its requests and lifecycle events.

The scheduler keeps no state of its own: at start it replays ``lepton.jobs.requested``
and ``lepton.jobs.events`` into :class:`Journal` (this module, no I/O), then rebuilds
the placement core from it. Live, the same fold keeps the journal current.

Leases. Every assignment carries a ``lease_epoch`` that grows with each reassignment of
the job and jumps at every leader takeover (``term << 32``), so epochs from two leaders
never collide. A report from a trainer counts only if it carries the job's current
epoch; anything else is a *void lease* and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from lepton.contract.authorship import NODE_JOB_EVENTS
from lepton.contract.names import clip
from lepton.scheduling.intake import Rejection, check_job_event, job_spec

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from lepton.scheduling.entities import JobSpec, NodeState
    from lepton.scheduling.placement import Scheduler

__all__ = ["Fold", "JobRecord", "Journal", "Status", "next_epoch", "restore"]


class Status(StrEnum):
    UNANNOUNCED = "unannounced"  # requested; the scheduler has said nothing about it yet
    QUEUED = "queued"
    ASSIGNED = "assigned"  # workers placed; not all started yet
    RUNNING = "running"
    LOST = "lost"  # its node lost it; to be requeued
    DONE = "done"  # succeeded, failed, rejected or cancelled


class Fold(StrEnum):
    """What folding one event did."""

    APPLIED = "applied"
    VOID_LEASE = "void_lease"  # a report for an epoch the job no longer holds
    FORGED = "forged"  # by someone with no say over the job (see Journal.forgery)
    IGNORED = "ignored"  # nothing to change (a duplicate, or a job never requested)


@dataclass(slots=True)
class JobRecord:
    request: dict[str, Any]
    spec: JobSpec | Rejection
    status: Status = Status.UNANNOUNCED
    epoch: int = 0
    attempt: int = 0
    nodes: dict[int, str] = field(default_factory=dict)  # worker index -> node id
    started: set[int] = field(default_factory=set)  # worker indexes that reported started
    cancel_requested: bool = False
    # Who asked, as the request says ("by alice: wrong dataset"); None for a request read
    # before the job's (the journal keeps no free text of those).
    cancel_reason: str | None = None
    # The W3C traceparent what is decided for the job continues: its request's (its wait
    # in the queue, with spans), so that one trace runs from submit to promotion.
    trace: bytes | None = None

    @property
    def tenant(self) -> str:
        return str(self.request.get("tenant", ""))

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(self.nodes[index] for index in sorted(self.nodes))


def next_epoch(current: int, term: int) -> int:
    """A lease epoch above ``current`` that no other leader term can also hand out."""
    return max(term << 32, current + 1)


_FINISHING = frozenset({"succeeded", "failed", "cancelled"})
# What folding reads of an event: all an early one (below) keeps of it.
_FOLDED = ("job_id", "kind", "tenant", "node_id", "lease_epoch", "worker_index", "attempt")


@dataclass(slots=True)
class Journal:
    """Every job's record. Requests and events live in different topics, so a replay may
    read a job's events before its request: those wait in ``early`` until it arrives.

    Anyone may send events about job ids nobody requested: ``early`` keeps at most
    ``max_early_events`` of them, each only as much as folding reads (no free text), and
    no ``progress`` (which changes nothing in the journal)."""

    jobs: dict[str, JobRecord] = field(default_factory=dict)
    early: dict[str, list[Mapping[str, Any]]] = field(default_factory=dict)
    max_early_events: int = 100_000
    early_events: int = 0
    early_dropped: int = 0

    def request(self, record: dict[str, Any]) -> JobRecord | None:
        """A job request; None if the job is already known (redelivery, replay)."""
        job_id = record.get("job_id")
        if not isinstance(job_id, str) or job_id in self.jobs:
            return None
        entry = JobRecord(request=record, spec=job_spec(record))
        self.jobs[job_id] = entry
        waiting = self.early.pop(job_id, ())
        self.early_events -= len(waiting)
        for event in waiting:
            self.fold(event)
        return entry

    def forgery(self, event: Mapping[str, Any]) -> str | None:
        """Why ``event`` cannot be from someone with a say over its job, if it cannot.

        Its signature proved who wrote it, and that they wrote it about themselves
        (:mod:`lepton.contract.authorship`): a tenant names itself, a node names itself.
        Only the journal knows whose job it is, and which node holds which worker's lease.
        """
        job = event["job_id"]
        entry = self.jobs.get(job)
        if entry is None:
            return None
        kind, node = event["kind"], event.get("node_id")
        if kind == "cancel_requested" and event.get("tenant") != entry.tenant:
            return f"tenant {event.get('tenant')} may not cancel job {job} of another tenant"
        if kind in NODE_JOB_EVENTS and node is not None and event.get("lease_epoch") == entry.epoch:
            holder = entry.nodes.get(event.get("worker_index") or 0)
            if holder is not None and holder != node:
                return f"node {node} does not hold the lease of job {job} (node {holder} does)"
        return None

    def fold(self, event: Mapping[str, Any]) -> Fold:
        """Apply one ``lepton.JobEvent``, wherever it came from (this scheduler too).
        Raises :class:`~lepton.contract.names.InvalidField`, changing nothing, for an event
        no producer of the contract writes (see :func:`check_job_event`)."""
        check_job_event(event)
        entry = self.jobs.get(event["job_id"])
        if entry is None:
            if event["kind"] == "progress":
                return Fold.IGNORED
            if self.early_events >= self.max_early_events:
                self.early_dropped += 1
                return Fold.IGNORED
            self.early.setdefault(event["job_id"], []).append(
                {name: event.get(name) for name in _FOLDED}
            )
            self.early_events += 1
            return Fold.IGNORED
        kind = event["kind"]
        epoch = event.get("lease_epoch")
        if entry.status is Status.DONE:
            return Fold.IGNORED
        if self.forgery(event) is not None:
            return Fold.FORGED
        if kind == "cancel_requested":
            entry.cancel_requested = True
            # A tenant's free text, kept until the job ends and sent on in `cancelled`:
            # bounded like every other text a service keeps.
            entry.cancel_reason = clip(event.get("reason")) or entry.cancel_reason
            return Fold.APPLIED
        if kind in ("queued", "requeued", "preempted"):
            if kind == "preempted" and epoch is not None and epoch != entry.epoch:
                return Fold.VOID_LEASE
            entry.status = Status.QUEUED
            entry.nodes.clear()
            entry.started.clear()
            entry.attempt = max(entry.attempt, event.get("attempt", 0))
            return Fold.APPLIED
        if kind == "rejected":
            entry.status = Status.DONE
            return Fold.APPLIED
        if kind == "assigned":
            if epoch is None or epoch < entry.epoch:
                return Fold.VOID_LEASE
            if epoch > entry.epoch:
                entry.epoch = epoch
                entry.nodes.clear()
                entry.started.clear()
            entry.nodes[event.get("worker_index") or 0] = event["node_id"]
            entry.attempt = event.get("attempt", entry.attempt)
            entry.status = Status.ASSIGNED
            return Fold.APPLIED
        # From here on: reports about a run, which must name the current lease
        # (the scheduler's own failed/cancelled of a queued job carry no epoch).
        if epoch is not None and epoch != entry.epoch:
            return Fold.VOID_LEASE
        if kind == "started":
            entry.started.add(event.get("worker_index") or 0)
            if len(entry.started) >= len(entry.nodes):
                entry.status = Status.RUNNING
            return Fold.APPLIED
        if kind == "progress":
            return Fold.APPLIED
        if kind == "lost":
            if entry.status not in (Status.ASSIGNED, Status.RUNNING):
                return Fold.IGNORED
            entry.status = Status.LOST
            return Fold.APPLIED
        if kind in _FINISHING:
            if epoch is None and entry.status in (Status.ASSIGNED, Status.RUNNING):
                # Only a report naming the lease can end a placed job.
                return Fold.VOID_LEASE
            entry.status = Status.DONE
            return Fold.APPLIED
        return Fold.IGNORED


def restore(
    core: Scheduler, nodes: Iterable[NodeState], journal: Journal, now_ms: int
) -> list[JobRecord]:
    """Load what the log says into a fresh core: every node, then every placed job.

    A placed job whose node the log no longer knows cannot be restored: it is marked
    ``LOST`` and returned, for the caller to requeue. Queued jobs are left to the caller,
    which knows what else (a dataset, say) they wait for.
    """
    for node in nodes:
        core.upsert_node(node)
    lost = []
    for entry in journal.jobs.values():
        spec = entry.spec
        if entry.status not in (Status.ASSIGNED, Status.RUNNING) or isinstance(spec, Rejection):
            continue
        try:
            core.restore_assignment(spec, entry.node_ids, now_ms, entry.attempt)
        except KeyError:
            entry.status = Status.LOST
            lost.append(entry)
    return lost
