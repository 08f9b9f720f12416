"""A job's story as the SDK reads it from the log, and cancelling a job: its events are
folded as the scheduler's journal folds them (:class:`Story`, no I/O), read over the Kafka
transport (:func:`read_story`).

Folding with the scheduler's own :class:`~lepton.scheduling.journal.Journal` means the
client decides a job's outcome exactly as the scheduler does (a report under a lease the
job no longer holds ends nothing), and predicts a cancel's refusal with the scheduler's
own rule (:meth:`~lepton.scheduling.journal.Journal.forgery`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING

from lepton.contract.authorship import check as check_authorship
from lepton.contract.job_events import job_event
from lepton.contract.names import InvalidField
from lepton.errors import ForgedRecordError, LeptonTimeout, RequestError
from lepton.scheduling.journal import Fold, Journal, Status
from lepton.sdk.results import Cancellation, JobEvent, JobHistory

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from lepton.contract.codec import Record
    from lepton.contract.identity import Principal
    from lepton.sdk._kafka import KafkaTransport, KeyedRecords

__all__ = [
    "CANCEL_TIMEOUT_S",
    "CLOCK_SKEW_MS",
    "MAX_HISTORY_EVENTS",
    "Story",
    "cancel_job",
    "read_story",
]

# A job's events are read from this long before its submit time, not from the start of
# the topic: other machines' clocks (which stamp the events) may be behind this one's.
CLOCK_SKEW_MS = 5 * 60_000
# The scheduler answers a cancel at once (it does not wait for the workers to stop).
CANCEL_TIMEOUT_S = 60.0

# Events a history keeps (the newest): anyone may write records under a job's key (the
# scheduler refuses the forged ones, but they stay on the log), so a history is bounded.
MAX_HISTORY_EVENTS = 10_000


class Story:
    """One job's events, folded as they are added.

    ``request`` is its ``lepton.JobRequested`` if the log still has it; without it the job
    is taken to be ``tenant``'s (its first event's)."""

    def __init__(
        self, job_id: str, request: Record | None = None, tenant: str | None = None
    ) -> None:
        self.job_id = job_id
        self.request = request
        self.tenant = str(request["tenant"]) if request is not None else tenant
        self._journal = Journal()
        self._journal.request(
            dict(request) if request is not None else {"job_id": job_id, "tenant": tenant}
        )
        self._entry = self._journal.jobs[job_id]
        self.events: deque[JobEvent] = deque(maxlen=MAX_HISTORY_EVENTS)
        self.added = 0
        self.outcome: JobEvent | None = None

    @classmethod
    def of(cls, job_id: str, request: Record | None, records: list[Record]) -> Story:
        """The story of ``records`` (the job's events so far, in log order)."""
        mine = [record for record in records if record["job_id"] == job_id]
        story = cls(job_id, request, str(mine[0]["tenant"]) if mine else None)
        for record in mine:
            story.add(record)
        return story

    @property
    def known(self) -> bool:
        """Whether the log says anything of this job at all."""
        return self.request is not None or self.added > 0

    def add(self, record: Record) -> JobEvent | None:
        """Fold one event (records of other jobs under the same key are left out); the
        event, or None if it was not this job's."""
        if record["job_id"] != self.job_id:
            return None
        event = JobEvent.from_record(record)
        self.events.append(event)
        self.added += 1
        try:
            folded = self._journal.fold(record)
        except InvalidField:
            return event  # no producer of the contract writes it: shown, decides nothing
        if folded is Fold.APPLIED and self.outcome is None and self._entry.status is Status.DONE:
            self.outcome = event
        return event

    def refusal(self, cancel: Mapping[str, object]) -> str | None:
        """Why the scheduler would refuse ``cancel`` (a ``cancel_requested`` event), if it
        would: a tenant cancels only its own jobs."""
        return self._journal.forgery(cancel)

    @property
    def state(self) -> str:
        if self.outcome is not None:
            return self.outcome.kind
        status = self._entry.status
        return "requested" if status is Status.UNANNOUNCED else status.value

    def history(self) -> JobHistory:
        return JobHistory(
            job_id=self.job_id,
            tenant=self.tenant,
            request=self.request,
            events=list(self.events),
            omitted=self.added - len(self.events),
            state=self.state,
            outcome=self.outcome,
            cancel_requested=self._entry.cancel_requested and self.outcome is None,
        )


@contextlib.asynccontextmanager
async def read_story(
    kafka: KafkaTransport, job_id: str
) -> AsyncIterator[tuple[Story, KeyedRecords]]:
    """The job's story so far, and a reader of its events that goes on from there: from
    its request's submit time when ``lepton.jobs.requested`` still has it, else from the
    oldest event kept. Raises :class:`RequestError` for a job the log knows nothing of."""
    async with kafka.history("lepton.jobs.requested", job_id, None) as requests:
        asked = await requests.until_now()
    request = next((record for record in asked if record["job_id"] == job_id), None)
    since = request["submitted_at"] - CLOCK_SKEW_MS if request is not None else None
    async with kafka.history("lepton.jobs.events", job_id, since) as more:
        story = Story.of(job_id, request, await more.until_now())
        if not story.known:
            raise RequestError(
                f"no job {job_id!r} is known",
                "`lepton jobs` lists jobs (requests are kept 30 days)",
            )
        yield story, more


async def cancel_job(
    kafka: KafkaTransport,
    job_id: str,
    tenant: str | None,
    signer: Callable[[], Principal],
    reason: str,
    timeout_s: float,
) -> Cancellation:
    """See :meth:`lepton.LeptonClient.cancel`: ``tenant`` is who asks (None: the job's
    own), ``signer`` who signs the request (asked once the job is found)."""
    async with read_story(kafka, job_id) as (story, more):
        if story.outcome is not None:
            return Cancellation(job_id, story.outcome.kind, story.outcome, sent=False)
        record: Record = dict(
            job_event(job_id, "cancel_requested", tenant or story.tenant or "", reason=reason)
        )
        refusal = _authorship_refusal(record, signer()) or story.refusal(record)
        await kafka.publish("lepton.jobs.events", job_id, record)
        if refusal is not None:
            raise RequestError(
                f"refused: {refusal}",
                "a job is cancelled by its own tenant (--tenant) or an operator; "
                "`lepton auth whoami` says who this client signs as",
            )
        try:
            async with asyncio.timeout(timeout_s):
                async for later in more:
                    story.add(later)
                    if story.outcome is not None:
                        return Cancellation(job_id, story.outcome.kind, story.outcome, sent=True)
        except TimeoutError:
            pass
        raise LeptonTimeout(
            f"job {job_id} was not cancelled within {timeout_s:.0f} s; the request stands "
            "and the scheduler answers it when it runs",
            "is the scheduler running (`lepton status`)?",
        )


def _authorship_refusal(record: Record, signer: Principal) -> str | None:
    """Why every reader would refuse ``record`` from ``signer``, if it would
    (:mod:`lepton.contract.authorship`)."""
    try:
        check_authorship("lepton.jobs.events", str(record["job_id"]).encode(), record, signer)
    except ForgedRecordError as refused:
        return str(refused)
    return None
