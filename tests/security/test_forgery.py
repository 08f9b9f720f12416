"""Forged records, against the real broker and the real scheduler and evaluator: each is
refused with its specific reason, dead-lettered, and audited on ``lepton.audit``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from lepton.bus import Publisher
from lepton.config import KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.contract.identity import IdentityKey, Principal
from lepton.contract.topics import dead_letter_topic
from lepton.runtime.identity import master_key
from lepton.services.evaluator.app import create_app as evaluator_app
from lepton.services.evaluator.settings import EvaluatorSettings
from lepton.services.ingest.app import create_app as ingest_app
from lepton.testing import leased
from tests.integration.ingest_support import settings as ingest_settings
from tests.integration.scheduler_support import (
    Namespaced,
    Reader,
    heartbeat,
    job,
    now_ms,
    running_scheduler,
    signed_space,
)
from tests.samples import sample
from tests.security.conftest import RedTeam

pytestmark = pytest.mark.integration

VICTIM, ATTACKER = "victim", "acme"


@pytest.fixture(scope="module")
async def space(kafka: KafkaAccess, codec: Codec) -> AsyncIterator[Namespaced]:
    async with signed_space(kafka, codec) as namespaced:
        yield namespaced


@pytest.fixture(scope="module")
async def stack(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Any]]:
    """The scheduler, the evaluator and ingest (which keeps the audit table) running, with
    a victim's job placed on ``holder``."""
    await space.send("lepton.node.heartbeats", "holder", heartbeat("holder", sequence=1))
    evaluator = evaluator_app(
        EvaluatorSettings(
            **kafka.settings(),
            database_url=database_for("evaluator"),
            topic_prefix=space.prefix,
        )
    )
    root = tmp_path_factory.mktemp("inbox")
    ingest = ingest_app(ingest_settings(kafka, database_for("ingest"), space.prefix, root))
    running = [asyncio.create_task(service.run()) for service in (evaluator, ingest)]
    try:
        async with (
            running_scheduler(space.settings(kafka, database_for("scheduler"))),
            space.reader("lepton.jobs.events") as events,
        ):
            for service in (evaluator, ingest):
                await asyncio.wait_for(service.ready.wait(), 60)
            await space.send("lepton.jobs.requested", "j", job("j", tenant=VICTIM))
            assigned = await events.until(lambda r: r["job_id"] == "j" and r["kind"] == "assigned")
            yield {"assigned": assigned}
    finally:
        for service in (evaluator, ingest):
            service.stop_soon()
        await asyncio.wait_for(asyncio.gather(*running), 60)


@pytest.fixture(scope="module")
async def audits(space: Namespaced) -> AsyncIterator[Reader]:
    async with space.reader("lepton.audit") as reader:
        yield reader


class Attacker:
    """Publishes as someone, then reads the audit its attempt left."""

    def __init__(self, space: Namespaced, audits: Reader, master: IdentityKey) -> None:
        self.space, self.audits, self.master = space, audits, master

    async def publish(
        self, who: Principal | None, declared: str, key: str, record: dict[str, Any]
    ) -> dict[str, Any]:
        """Publish ``record`` signed by ``who`` (unsigned for None); the audit record of its
        refusal (each attempt uses a key of its own, which the audit names)."""
        signer = None if who is None else self.master.derive(who)
        async with Publisher(
            self.space.kafka, self.space.codec, source="attacker", signer=signer
        ) as publisher:
            await publisher.publish(self.space.names.topic(declared), key, record)
        resource = f"topic:{declared}/{key}"
        return await self.audits.until(lambda audit: audit["resource"] == resource, 60)


@pytest.fixture(scope="module")
def attacker(space: Namespaced, audits: Reader) -> Attacker:
    return Attacker(space, audits, master_key(Settings()))


def _result(audit: dict[str, Any]) -> str:
    return f"{audit['outcome']} ({audit['actor']} on {audit['resource']}): {audit['detail']}"


TENANT, OTHER_NODE = Principal("tenant", ATTACKER), Principal("node", "other")
HOLDER = Principal("node", "holder")


async def test_forged_requests_and_reports_are_refused_and_audited(
    stack: dict[str, Any], attacker: Attacker, red_team: RedTeam
) -> None:
    assigned = stack["assigned"]
    report = assigned | {"time": now_ms(), "kind": "succeeded"}
    attacks: list[tuple[str, Principal | None, str, str, dict[str, Any], str]] = [
        (
            "an unsigned job request",
            None,
            "lepton.jobs.requested",
            "f1",
            job("f1", tenant=VICTIM),
            "unsigned record",
        ),
        (
            "tenant acme submits a job as tenant victim",
            TENANT,
            "lepton.jobs.requested",
            "f2",
            job("f2", tenant=VICTIM),
            "tenant:acme may not act for tenant victim",
        ),
        (
            "node holder sends heartbeats as an invented node",
            HOLDER,
            "lepton.node.heartbeats",
            "evil-node",
            heartbeat("evil-node", sequence=1),
            "node:holder may not report for node evil-node",
        ),
        (
            "a tenant sends heartbeats for a real node",
            TENANT,
            "lepton.node.heartbeats",
            "holder",
            heartbeat("holder", sequence=99),
            "tenant:acme may not report for node holder",
        ),
        (
            "a tenant reports another tenant's running job succeeded",
            TENANT,
            "lepton.jobs.events",
            "j",
            report | {"tenant": VICTIM},
            "tenant:acme may not write a 'succeeded' job event",
        ),
        (
            "a node reports a job it does not hold succeeded",
            OTHER_NODE,
            "lepton.jobs.events",
            "j",
            report | {"node_id": "other"},
            "node other does not hold the lease of job j (node holder does)",
        ),
        (
            "tenant acme cancels tenant victim's job",
            TENANT,
            "lepton.jobs.events",
            "j",
            report | {"kind": "cancel_requested", "tenant": ATTACKER, "node_id": None},
            "tenant acme may not cancel job j of another tenant",
        ),
        (
            "tenant acme cancels in tenant victim's name",
            TENANT,
            "lepton.jobs.events",
            "j",
            report | {"kind": "cancel_requested", "node_id": None},
            "tenant:acme may not act for tenant victim",
        ),
    ]
    for number, (attack, who, declared, key, record, expected) in enumerate(attacks):
        # A job's events are keyed by its id; a key of each attack's own names its audit.
        audit = await attacker.publish(who, declared, f"{key}#{number}", record)
        red_team.check(attack, expected, _result(audit))
        assert audit["outcome"] == "denied"


async def test_a_champion_takeover_is_refused_at_every_step(
    stack: dict[str, Any], space: Namespaced, attacker: Attacker, red_team: RedTeam
) -> None:
    ready = sample("lepton.ModelReady") | {"job_id": "j", "tenant": VICTIM, "model_id": "evil"}
    verdict = sample("lepton.ModelPromoted") | {"tenant": VICTIM, "model_id": "evil"}
    holder_lease = leased(ready, attacker.master, space.names, space.codec, node="holder")
    attacks: list[tuple[str, Principal, str, dict[str, Any], str]] = [
        (
            "a tenant announces a model in tenant victim's name",
            TENANT,
            "lepton.models.ready",
            ready,
            "tenant:acme may not announce a model (only a trainer node)",
        ),
        (
            "a node announces a model without a lease",
            OTHER_NODE,
            "lepton.models.ready",
            ready | {"lease": None},
            "node:other announced a model without the lease it trained under",
        ),
        (
            "a node announces a model under another node's lease",
            OTHER_NODE,
            "lepton.models.ready",
            holder_lease,
            "signature does not match for service:scheduler",
        ),
        (
            "a tenant promotes a model itself",
            TENANT,
            "lepton.models.promoted",
            verdict | {"tenant": ATTACKER, "verdict": "promoted"},
            "tenant:acme may not publish a 'promoted' verdict",
        ),
        (
            "tenant acme rolls tenant victim's champion back to its model",
            TENANT,
            "lepton.models.promoted",
            verdict | {"verdict": "rolled_back"},
            "tenant:acme may not act for tenant victim",
        ),
    ]
    for number, (attack, who, declared, record, expected) in enumerate(attacks):
        audit = await attacker.publish(who, declared, f"evil#{number}", record)
        red_team.check(attack, expected, _result(audit))


async def test_a_refused_record_is_dead_lettered_with_its_reason(
    stack: dict[str, Any], space: Namespaced, attacker: Attacker
) -> None:
    await attacker.publish(TENANT, "lepton.jobs.requested", "f9", job("f9", tenant=VICTIM))
    topic = dead_letter_topic(space.names.topic("lepton.jobs.requested").name)
    headers = await _dead_letter(space.kafka, topic, b"f9")
    assert headers["dlq_error_type"] == b"ForgedRecordError"
    assert headers["dlq_error_message"] == b"tenant:acme may not act for tenant victim"
    assert headers["lepton-principal"] == b"tenant:acme"


async def _dead_letter(kafka: KafkaAccess, topic: str, key: bytes) -> dict[str, bytes]:
    consumer = AIOKafkaConsumer(
        topic, **kafka.aiokafka(), auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            while True:
                message = await consumer.getone()
                if message.key == key:
                    return dict(message.headers)
    finally:
        await consumer.stop()


async def test_every_denial_is_kept_in_the_audit_table(
    stack: dict[str, Any], attacker: Attacker, database_url: str
) -> None:
    audit = await attacker.publish(
        TENANT, "lepton.jobs.requested", "f10", job("f10", tenant=VICTIM)
    )
    connection = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(60):
            while (  # noqa: ASYNC110 - no event says ingest copied it
                row := await connection.fetchrow(
                    "SELECT actor, tenant, action, outcome, detail, login, bus_position "
                    "FROM lepton_ingest.audit WHERE resource = $1",
                    audit["resource"],
                )
            ) is None:
                await asyncio.sleep(0.1)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("SET ROLE lepton_ingest; DELETE FROM lepton_ingest.audit")
    finally:
        await connection.close()
    assert dict(row) | {"bus_position": None} == {
        "actor": "tenant:acme",
        "tenant": VICTIM,
        "action": "publish",
        "outcome": "denied",
        "detail": "tenant:acme may not act for tenant victim",
        "login": "lepton_ingest",
        "bus_position": None,
    }
    assert row["bus_position"].startswith(f"{space_prefix(attacker)}lepton.audit/")


def space_prefix(attacker: Attacker) -> str:
    return attacker.space.prefix
