"""Ingest and the sizes of what it produces, on the real servers: an answer too large for
its topic becomes a rejection saying so, and an audit row too large to publish is set
aside with its reason instead of stopping the service at every start."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from lepton.bus import ensure_topics
from lepton.config import KafkaAccess
from lepton.contract.codec import Codec
from lepton.contract.topics import Namespace
from lepton.data.samples import house_prices
from lepton.services.ingest import storage
from lepton.services.ingest.app import create_app
from lepton.services.ingest.settings import IngestSettings
from lepton.testing import InMemoryBroker, running
from tests.integration.ingest_support import (
    request,
    running_ingest,
    unique_prefix,
    unique_tenant,
)

pytestmark = pytest.mark.integration

HOUSES = [{"name": "listings", "kind": "csv", "uri": "house.csv", "options": {"delimiter": ";"}}]


async def test_an_answer_too_large_for_its_topic_becomes_a_rejection_saying_so(
    kafka: KafkaAccess, database_for: Callable[[str], str], codec: Codec, tmp_path: Path
) -> None:
    house_prices().to_csv(tmp_path / "house.csv", index=False, sep=";", encoding="gbk")
    prefix = unique_prefix()
    ready = Namespace(prefix).topic("lepton.data.ready")
    # A data.ready topic that takes only small messages: this answer (columns, quality,
    # spec, lineage) is larger.
    await ensure_topics(kafka, [dataclasses.replace(ready, config={"max.message.bytes": "400"})])
    tenant = unique_tenant()
    async with running_ingest(
        kafka, database_for("ingest"), codec, tmp_path, prefix=prefix
    ) as ingest:
        outcome, answer = await ingest.submit(request(tenant, "houses", HOUSES))
    assert outcome == "rejected", answer
    assert answer["code"] == "answer_too_large"
    assert "400-byte limit" in answer["reason"], answer["reason"]
    assert ready.name in answer["reason"]


async def test_an_audit_row_that_can_never_be_sent_is_set_aside_not_sent_at_every_start(
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
    pool: asyncpg.Pool,
) -> None:
    """The issue: an audit record too large for the broker waited in the outbox, and the
    relay stopped ingest within a second of every start."""
    house_prices().to_csv(tmp_path / "house.csv", index=False, sep=";", encoding="gbk")
    prefix = unique_prefix()
    tenant = unique_tenant()
    url = database_for("ingest")
    async with running_ingest(kafka, url, codec, tmp_path, prefix=prefix) as ingest:
        await pool.execute(
            "INSERT INTO lepton_ingest.audit (actor, tenant, action, resource, outcome, detail) "
            "VALUES ('service:ingest', $1, 'write', 'dataset:poison', 'denied', $2), "
            "('service:ingest', $1, 'write', 'dataset:after', 'allowed', 'fine')",
            tenant,
            "x" * 2_000_000,
        )
        letter = await ingest.consumers["lepton.audit.dlq"].getone()
        headers = dict(letter.headers)
        assert headers["dlq_error_type"] == b"MessageTooLargeError"
        assert headers["dlq_source_topic"] == ingest.names.topic("lepton.audit").name.encode()
        assert headers["dlq_truncated"] == b"value"
        while True:  # the row after it is published: the relay went on
            _, event = await ingest.next("lepton.audit")
            if event["tenant"] == tenant:
                break
        assert event["resource"] == "dataset:after"
        outcome, _ = await ingest.submit(request(tenant, "houses", HOUSES))
        assert outcome == "ready"

    # The batch that sent the row after it was committed by the time ingest stopped (a
    # stop lets the batch in hand finish). The submission's own audit rows may still wait
    # in the outbox: they are sent at the next start.
    reasons = await pool.fetch(
        "SELECT a.resource, o.set_aside_reason FROM lepton_ingest.audit_outbox o "
        "JOIN lepton_ingest.audit a USING (id) WHERE a.tenant = $1 "
        "AND a.resource IN ('dataset:poison', 'dataset:after')",
        tenant,
    )
    assert [(row["resource"], "over the" in row["set_aside_reason"]) for row in reasons] == [
        ("dataset:poison", True)
    ], "set aside with its reason; the row after it was published and left the outbox"

    # And a restart does not send it again: the service starts and answers.
    async with running_ingest(kafka, url, codec, tmp_path, prefix=prefix) as ingest:
        outcome, _ = await ingest.submit(request(tenant, "houses-2", HOUSES))
        assert outcome == "ready"


@dataclasses.dataclass
class RefusingBroker(InMemoryBroker):
    """An in-memory broker that says when it refused a send (see :meth:`refuse`)."""

    refused_a_send: asyncio.Event = dataclasses.field(default_factory=asyncio.Event, init=False)

    def writer(self, *, client_id: str, linger_ms: int, max_batch_bytes: int) -> Any:
        writer = super().writer(client_id=client_id, linger_ms=linger_ms, max_batch_bytes=0)
        send_all = writer.send_all

        def watched(topic: str, messages: Any) -> asyncio.Future[None]:
            if topic in self._refused:
                self.refused_a_send.set()
            return send_all(topic, messages)

        writer.send_all = watched  # type: ignore[method-assign]
        return writer


async def test_the_audit_relay_waits_out_a_broker_that_refuses_and_then_sends(
    database_for: Callable[[str], str], tmp_path: Path
) -> None:
    """A failing send was not among the failures the relay waited out: it stopped ingest."""
    url = database_for("ingest")
    service = create_app(
        IngestSettings(database_url=url, topic_prefix="t.", ingest_roots=[tmp_path])
    )
    broker = RefusingBroker()
    audit = Namespace("t.").topic("lepton.audit").name
    tenant = unique_tenant()
    broker.refuse(audit)
    async with (
        asyncpg.create_pool(url, min_size=1, max_size=4) as pool,
        running(service, broker, pool) as serving,
    ):
        async with pool.acquire() as connection, connection.transaction():
            await storage.audit(
                connection,
                tenant=tenant,
                action="write",
                resource="dataset:x",
                outcome="allowed",
                detail=None,
                region=None,
            )
        await asyncio.wait_for(broker.refused_a_send.wait(), 30)
        assert not serving.done(), "the relay's failure did not stop the service"
        broker.accept(audit)
        published = await broker.until(audit, lambda r: r["tenant"] == tenant, timeout_s=60)
    assert published["resource"] == "dataset:x"
