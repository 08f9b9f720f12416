"""Another tenant's answers, read off the broker with the client's own credentials: every
tenant's client may read the answer topics (an ACL cannot tell tenants apart), but what
the services answer is sealed for its tenant, so the attacker sees who it is for and no
more, and the victim reads it with its own key."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import AIOKafkaConsumer

from lepton.bus import provision
from lepton.config import Actor, KafkaAccess
from lepton.contract import default_codec
from lepton.contract.codec import Codec, NotForThisReaderError
from lepton.contract.identity import IdentityKey, Principal
from lepton.contract.sealed import SEALED_MAGIC, Keyring
from lepton.services.evaluator.app import create_app as evaluator_app
from lepton.services.evaluator.settings import EvaluatorSettings
from lepton.services.ingest.app import create_app as ingest_app
from tests.integration import ingest_support
from tests.integration.scheduler_support import Namespaced, now_ms, signed_space
from tests.security.conftest import RedTeam

pytestmark = pytest.mark.integration

VICTIM, ATTACKER = "victim", "acme"
SECRET_MODEL = "salaries-by-employee"


@pytest.fixture(scope="module")
async def space(kafka: KafkaAccess, codec: Codec) -> AsyncIterator[Namespaced]:
    async with signed_space(kafka, codec) as namespaced:
        await provision(kafka, namespaced.names)  # the client's ACLs on its topics
        yield namespaced


@pytest.fixture(scope="module")
async def services(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[Actor], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[None]:
    evaluator = evaluator_app(
        EvaluatorSettings(
            **kafka.settings(), database_url=database_for("evaluator"), topic_prefix=space.prefix
        )
    )
    root = tmp_path_factory.mktemp("inbox")
    ingest = ingest_app(ingest_support.settings(kafka, database_for("ingest"), space.prefix, root))
    running = [asyncio.create_task(service.run()) for service in (evaluator, ingest)]
    try:
        for service in (evaluator, ingest):
            await asyncio.wait_for(service.ready.wait(), 60)
        yield
    finally:
        for service in (evaluator, ingest):
            service.stop_soon()
        await asyncio.wait_for(asyncio.gather(*running), 60)


async def answer_as_the_client_reads_it(
    client: KafkaAccess, space: Namespaced, declared: str, key: str
) -> bytes:
    """The raw value of the answer under ``key``, read with the client principal's access."""
    consumer = AIOKafkaConsumer(
        space.names.topic(declared).name,
        **client.aiokafka(),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(60):
            async for message in consumer:
                if message.key == key.encode():
                    assert message.value is not None
                    return bytes(message.value)
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


def tenant_codec(master: IdentityKey, tenant: str) -> Codec:
    """What a tenant's client holds: its own key, derived for it, and no other."""
    return default_codec().keyed(Keyring(own=master.derive(Principal("tenant", tenant))))


def attempt(attacker: Codec, value: bytes) -> str:
    try:
        attacker.decode(value)
    except NotForThisReaderError as refused:
        return f"refused: {refused}"
    return "read another tenant's answer"


@pytest.mark.usefixtures("services")
async def test_another_tenants_prediction_cannot_be_read(
    space: Namespaced,
    stack_access: Callable[[Actor], KafkaAccess],
    identity: IdentityKey,
    red_team: RedTeam,
) -> None:
    request_id = f"req-{uuid.uuid4().hex[:10]}"
    await space.send(
        "lepton.predict.requested",
        request_id,
        {
            "request_id": request_id,
            "tenant": VICTIM,
            "model": SECRET_MODEL,
            "rows": [{"salary": 1.0}],
            "requested_by": "tests",
            "requested_at": now_ms(),
        },
    )
    value = await answer_as_the_client_reads_it(
        stack_access("client"), space, "lepton.predict.results", request_id
    )

    assert value.startswith(SEALED_MAGIC)
    assert SECRET_MODEL.encode() not in value
    red_team.check(
        "read another tenant's prediction off lepton.predict.results",
        "sealed for tenant:victim",
        attempt(tenant_codec(identity, ATTACKER), value),
    )
    kind, answer = tenant_codec(identity, VICTIM).decode(value)
    assert kind == "lepton.PredictionResult"
    assert (answer["request_id"], answer["model_name"]) == (request_id, SECRET_MODEL)
    assert answer["error"]["code"] == "unknown_model"


@pytest.mark.usefixtures("services")
async def test_another_tenants_rejected_dataset_cannot_be_read(
    space: Namespaced,
    stack_access: Callable[[Actor], KafkaAccess],
    identity: IdentityKey,
    red_team: RedTeam,
) -> None:
    dataset = f"payroll-{uuid.uuid4().hex[:8]}"
    asked = ingest_support.request(
        VICTIM, dataset, [{"name": "s", "kind": "csv", "uri": "bonuses.csv"}]
    )
    await space.send("lepton.data.requested", asked["request_id"], asked)
    # Its key names the dataset (the partitioning and the order of a dataset's versions
    # hang on it): the value, what ingest found in it, is what is sealed.
    value = await answer_as_the_client_reads_it(
        stack_access("client"), space, "lepton.data.rejected", f"{VICTIM}/{dataset}"
    )

    assert value.startswith(SEALED_MAGIC)
    assert b"no such file or directory" not in value
    red_team.check(
        "read another tenant's rejected dataset off lepton.data.rejected",
        "sealed for tenant:victim",
        attempt(tenant_codec(identity, ATTACKER), value),
    )
    _, rejected = tenant_codec(identity, VICTIM).decode(value)
    assert rejected["request_id"] == asked["request_id"]
    assert "no such file or directory" in rejected["reason"]
