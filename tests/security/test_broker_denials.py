"""What the broker itself refuses is audited too: a client with a wrong password, one that
speaks PLAINTEXT to the SASL listener, and a principal the ACLs do not allow each leave an
event on ``lepton.audit`` (published by the monitor from the broker's denials log) and a
row in the audit table (copied by ingest), as the red team's table lists.

Against the session's local stack, whose broker writes that log; a client retrying in a
loop leaves far fewer events than attempts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from lepton import devstack
from lepton.bus import BrokerUnavailableError, Publisher, PublishError, provision
from lepton.config import Actor, KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.services.ingest.app import create_app as ingest_app
from lepton.services.monitor.app import MonitorService
from tests.integration.ingest_support import settings as ingest_settings
from tests.integration.scheduler_support import Namespaced, Reader, signed_space
from tests.integration.test_monitor import running, settings_for
from tests.samples import sample
from tests.security.conftest import RedTeam

pytestmark = pytest.mark.integration

WINDOW_S = 3.0  # short, so that a repeated denial's count arrives within the test


@pytest.fixture(scope="module")
def denials_log(stack_settings: Settings) -> Path:
    if stack_settings.kafka_access() is not None:
        pytest.skip("needs the local stack's broker, whose denials log the suite can read")
    return devstack.status(stack_settings).kafka_denials_log


@pytest.fixture(scope="module")
async def space(kafka: KafkaAccess, codec: Codec) -> AsyncIterator[Namespaced]:
    async with signed_space(kafka, codec) as namespaced:
        await provision(kafka, namespaced.names)  # the ACLs `lepton up` applies, for it
        yield namespaced


@pytest.fixture(scope="module")
async def monitor(
    space: Namespaced,
    kafka: KafkaAccess,
    database_for: Callable[[str], str],
    denials_log: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[MonitorService]:
    """The monitor following the broker's denials log, and ingest, which keeps the audit
    table, both on this module's topics."""
    ingest = ingest_app(
        ingest_settings(
            kafka, database_for("ingest"), space.prefix, tmp_path_factory.mktemp("inbox")
        )
    )
    task = asyncio.create_task(ingest.run())
    settings = settings_for(
        kafka,
        database_for("monitor"),
        space.prefix,
        monitor_broker_log=denials_log,
        monitor_broker_denial_window_s=WINDOW_S,
    )
    try:
        await asyncio.wait_for(ingest.ready.wait(), 60)
        async with running(settings) as service:
            yield service
    finally:
        ingest.stop_soon()
        await asyncio.wait_for(task, 60)


@pytest.fixture(scope="module")
async def audits(space: Namespaced) -> AsyncIterator[Reader]:
    async with space.reader("lepton.audit") as reader:
        yield reader


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def attempt(access: KafkaAccess, space: Namespaced, declared: str) -> str:
    """Publish one sample record as ``access``; how the client was refused."""
    topic = space.names.topic(declared)
    try:
        async with Publisher(access, space.codec, source="attacker", connect_timeout_s=6) as out:
            await asyncio.wait_for(out.publish(topic, "k", sample(topic.event)), 30)
    except (BrokerUnavailableError, PublishError) as refused:
        return str(refused)
    raise AssertionError(f"{declared} accepted a record it should have refused")


def _result(audit: dict[str, Any]) -> str:
    return f"{audit['outcome']} ({audit['actor']} on {audit['resource']}): {audit['detail']}"


async def audited(
    audits: Reader, since_ms: int, actor: str, resource: str, operation: str
) -> dict[str, Any]:
    """The first audit event since ``since_ms`` of a denial of this kind."""
    return await audits.until(
        lambda audit: (
            audit["time"] >= since_ms
            and (audit["actor"], audit["resource"]) == (actor, resource)
            and (audit["detail"] or "").startswith(f"{operation} ")
        ),
        60,
    )


@dataclass(frozen=True)
class Attack:
    name: str
    access: KafkaAccess
    declared: str
    actor: str
    resource: str
    operation: str
    reason: str

    def expected(self) -> str:
        return (
            f"denied ({self.actor} on {self.resource}): {self.operation} refused by the "
            f"broker: {self.reason}"
        )


def attacks(client: KafkaAccess, prefix: str) -> list[Attack]:
    listener = f"listener:{client.bootstrap}"
    return [
        Attack(
            "a produce the ACLs do not allow (client on models.evaluated)",
            client,
            "lepton.models.evaluated",
            "User:lepton-client",
            f"topic:{prefix}lepton.models.evaluated",
            "kafka:WRITE",
            "no ACL allows it (Produce request from 127.0.0.1)",
        ),
        Attack(
            "a produce with a wrong password",
            dataclasses.replace(client, password=SecretStr("not-the-password")),
            "lepton.jobs.requested",
            "host:127.0.0.1",
            listener,
            "kafka:AUTHENTICATE",
            "authentication failed: Authentication failed during authentication due to "
            "invalid credentials with SASL mechanism SCRAM-SHA-512",
        ),
        Attack(
            "an unauthenticated produce (PLAINTEXT to the SASL listener)",
            KafkaAccess(client.bootstrap),
            "lepton.jobs.requested",
            "host:127.0.0.1",
            listener,
            "kafka:CONNECT",
            "connection closed: Unexpected Kafka request of type ",
        ),
    ]


@pytest.fixture(scope="module")
async def refused(
    monitor: MonitorService,
    space: Namespaced,
    audits: Reader,
    stack_access: Callable[[Actor], KafkaAccess],
) -> list[tuple[Attack, str, dict[str, Any]]]:
    """Each attack, how the client was refused, and the audit event it left."""
    done = []
    for attack in attacks(stack_access("client"), space.prefix):
        # The broker's clock and this process's are one machine's; log times are in ms.
        since = now_ms() - 1000
        refusal = await attempt(attack.access, space, attack.declared)
        audit = await audited(audits, since, attack.actor, attack.resource, attack.operation)
        done.append((attack, refusal, audit))
    return done


async def test_refusals_by_the_broker_are_on_lepton_audit(
    refused: list[tuple[Attack, str, dict[str, Any]]], red_team: RedTeam
) -> None:
    for attack, refusal, audit in refused:
        red_team.check(f"broker: {attack.name} ({refusal[:70]})", attack.expected(), _result(audit))
        assert (audit["tenant"], audit["owner"], audit["region"]) == ("", None, None)
    assert [audit["action"] for _, _, audit in refused] == ["publish", "read", "read"]


async def test_refusals_by_the_broker_are_kept_in_the_audit_table(
    refused: list[tuple[Attack, str, dict[str, Any]]], space: Namespaced, database_url: str
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        for attack, _, audit in refused:
            async with asyncio.timeout(60):
                while (  # noqa: ASYNC110 - no event says ingest copied it
                    row := await connection.fetchrow(
                        "SELECT actor, action, outcome, detail, login FROM lepton_ingest.audit "
                        "WHERE resource = $1 AND time = to_timestamp($2 / 1000.0) "
                        "AND starts_with(bus_position, $3)",
                        attack.resource,
                        audit["time"],
                        f"{space.prefix}lepton.audit/",
                    )
                ) is None:
                    await asyncio.sleep(0.1)
            assert dict(row) == {
                "actor": attack.actor,
                "action": audit["action"],
                "outcome": "denied",
                "detail": audit["detail"],
                "login": "lepton_ingest",
            }
    finally:
        await connection.close()


async def test_a_client_retrying_in_a_loop_is_counted_not_itemised(
    refused: list[tuple[Attack, str, dict[str, Any]]], audits: Reader, denials_log: Path
) -> None:
    attack, _, first = refused[1]  # the wrong password: librdkafka retries for seconds
    lines = [
        line
        for line in (await asyncio.to_thread(denials_log.read_text)).splitlines()
        if "Failed authentication" in line and attack.resource.split(":", 1)[1] in line
    ]
    attempts = sum(1 for line in lines if _log_time(line) >= first["time"])
    # The window of the first attempt closes WINDOW_S later; its event counts the rest.
    counted = await audits.until(
        lambda audit: (
            audit["time"] > first["time"]
            and (audit["actor"], audit["resource"]) == (attack.actor, attack.resource)
            and "more time(s)" in (audit["detail"] or "")
        ),
        60,
    )
    events = [
        audit
        for audit in audits.seen
        if (audit["actor"], audit["resource"]) == (attack.actor, attack.resource)
        and first["time"] <= audit["time"]
        and (audit["detail"] or "").startswith(attack.operation)
    ]
    assert counted in events
    assert attempts >= 5, lines[-5:]
    assert len(events) < attempts / 2, (len(events), attempts)


def _log_time(line: str) -> int:
    moment = datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)
