"""A three-broker local cluster (`lepton stack up --brokers 3`): replicated and secured as
the single broker is, on ports it keeps; and the loss of one broker (SIGKILL) in the middle
of a stream of job requests, ingests and heartbeats through the real scheduler and ingest:
nothing acknowledged is lost, nothing is done twice, leadership moves, the flow goes on,
and the broker, started again by `lepton stack up`, rejoins the in-sync replicas.

The module starts its own cluster (three JVMs of 512 MiB heap each) through the CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import SecretStr

from lepton import devstack
from lepton.bus import BrokerUnavailableError, ensure_topics
from lepton.config import KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.contract.identity import IdentityKey
from lepton.contract.topics import Topic
from lepton.runtime.identity import master_key
from lepton.testing import service_codec
from tests.integration.ingest_support import request, unique_tenant
from tests.integration.outage_support import OwnStack
from tests.integration.processes import BIN, Service, lepton_cli, stop_all
from tests.integration.scheduler_support import (
    Namespaced,
    Reader,
    heartbeat,
    job,
    signed_space,
)

pytestmark = pytest.mark.integration

# What the CLI inherits from this environment: where Java, Maven and the jars are.
_INHERITED = ("LEPTON_CACHE_DIR", "LEPTON_JAVA", "LEPTON_MAVEN")
_JOBS = 30
_INGESTS = 6
_PACE_S = 0.1  # between two job requests of the stream
_BOUND_S = 60.0  # any one wait of the flow


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The CLI's environment: a state directory of its own, no other servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEPTON_") or k in _INHERITED}
    return env | {"LEPTON_STATE_DIR": str(tmp_path_factory.mktemp("cluster") / "state")}


@pytest.fixture(scope="module")
def cluster(cli_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """`lepton stack up --brokers 3`: its status (JSON)."""
    started = lepton_cli("stack", "up", "--brokers", "3", "--json", env=cli_env)
    assert started.returncode == 0, started.stderr
    settings = Settings(state_dir=Path(cli_env["LEPTON_STATE_DIR"]))
    with pytest.MonkeyPatch.context() as environment:
        # What this module signs and checks records with: its own stack's master key.
        environment.setenv("LEPTON_IDENTITY_KEY", devstack.identity_key(settings))
        try:
            yield json.loads(started.stdout)
        finally:
            lepton_cli("stack", "down", env=cli_env)


@pytest.fixture(scope="module")
def own_stack(cluster: dict[str, Any], cli_env: dict[str, str]) -> OwnStack:
    return OwnStack(
        Settings(
            state_dir=Path(cli_env["LEPTON_STATE_DIR"]), kafka_bootstrap=None, database_url=None
        )
    )


# The conftest's fixtures of the same names, on this module's cluster.
@pytest.fixture(scope="module")
def kafka(own_stack: OwnStack) -> KafkaAccess:
    return devstack.endpoints(own_stack.settings).kafka


@pytest.fixture(scope="module")
def identity(own_stack: OwnStack) -> IdentityKey:
    return master_key(Settings())


@pytest.fixture(scope="module")
def codec(identity: IdentityKey) -> Codec:
    return service_codec(identity)


async def _admin(kafka: KafkaAccess) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**kafka.aiokafka(), request_timeout_ms=10_000)
    await admin.start()
    return admin


async def _partitions(kafka: KafkaAccess, topic: str) -> list[dict[str, Any]]:
    admin = await _admin(kafka)
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    partitions: list[dict[str, Any]] = described["partitions"]
    return partitions


async def _topic_config(kafka: KafkaAccess, topic: str, name: str) -> str:
    admin = await _admin(kafka)
    try:
        [answer] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    entries = answer.to_object()["resources"][0]["config_entries"]
    value: str = next(e["config_value"] for e in entries if e["config_names"] == name)
    return value


async def test_three_brokers_replicate_each_topic_keep_their_ports_and_refuse_strangers(
    cluster: dict[str, Any], cli_env: dict[str, str], kafka: KafkaAccess
) -> None:
    assert cluster["kafka_brokers"] == 3
    assert len(cluster["kafka_bootstrap"].split(",")) == 3
    assert all(cluster["kafka_pids"])
    admin = await _admin(kafka)
    try:
        described = await admin.describe_cluster()
    finally:
        await admin.close()
    assert sorted(broker["node_id"] for broker in described["brokers"]) == [1, 2, 3]

    # The topics `lepton stack up` made: three replicas, all in sync, two needed per write.
    for partition in await _partitions(kafka, "lepton.jobs.requested"):
        assert sorted(partition["replicas"]) == [1, 2, 3]
        assert sorted(partition["isr"]) == [1, 2, 3]
    assert await _topic_config(kafka, "lepton.jobs.requested", "min.insync.replicas") == "2"
    assert await _topic_config(kafka, "lepton.jobs.requested.dlq", "min.insync.replicas") == "2"

    # Each node is secured as the single broker is: a wrong password is refused, and the
    # node logs the refusal in its own denials log for the monitor.
    for node, address in enumerate(cluster["kafka_bootstrap"].split(","), start=1):
        stranger = dataclasses.replace(
            kafka, bootstrap=address, password=SecretStr("not-the-password")
        )
        with pytest.raises(BrokerUnavailableError, match="refused the credentials"):
            await ensure_topics(
                stranger, [Topic("probe", "lepton.Alert", "k")], connect_timeout_s=5
            )
        denials = Path(cluster["kafka_denials_logs"][node - 1])
        await _until(
            lambda denials=denials: (
                denials.exists() and "Failed authentication" in denials.read_text()
            ),
            f"node {node}'s denials log names the failed authentication",
        )

    # A size other than the one the storage holds is refused, naming both.
    refused = lepton_cli("stack", "up", "--brokers", "1", env=cli_env)
    assert refused.returncode == 1
    assert "runs 3 Kafka broker(s), not 1" in refused.stderr

    # Stopped and started again: the same addresses, the data kept.
    assert lepton_cli("stack", "down", env=cli_env).returncode == 0
    again = lepton_cli("stack", "up", "--json", env=cli_env)
    assert again.returncode == 0, again.stderr
    restarted = json.loads(again.stdout)
    assert restarted["kafka_bootstrap"] == cluster["kafka_bootstrap"]
    assert restarted["kafka_brokers"] == 3
    # Each node catches up on what it missed while down, and is in sync again.
    await _until(
        lambda: all(
            sorted(partition["isr"]) == [1, 2, 3]
            for partition in asyncio.run(_partitions(kafka, "lepton.jobs.requested"))
        ),
        "every replica of lepton.jobs.requested in sync again",
    )


async def _until(condition: Any, what: str, timeout_s: float = _BOUND_S) -> None:
    """Poll ``condition`` (the broker pushes nothing to wait on) until true, within a bound."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                if await asyncio.to_thread(condition):
                    return
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"not within {timeout_s:.0f} s: {what}") from None


@pytest.fixture
async def space(kafka: KafkaAccess, codec: Codec) -> AsyncIterator[Namespaced]:
    async with signed_space(kafka, codec) as namespaced:
        yield namespaced


async def test_a_broker_killed_mid_stream_loses_nothing_acknowledged_and_rejoins(
    own_stack: OwnStack, space: Namespaced, kafka: KafkaAccess, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "small.csv").write_text("size,price\n" + "".join(f"{i},{i * 7}\n" for i in range(50)))
    env = own_stack.env
    prefix = space.prefix
    tenant = unique_tenant()
    services: list[Service] = []
    async with AsyncExitStack() as stack:
        stack.push_async_callback(stop_all, services)
        scheduler = await Service.launch(
            [str(BIN / "lepton-scheduler")], env("scheduler", prefix, LEPTON_NODE_HEADROOM="1")
        )
        services.append(scheduler)
        ingest = await Service.launch(
            [str(BIN / "lepton-ingest")],
            env("ingest", prefix, LEPTON_INGEST_ROOTS=json.dumps([str(inbox)])),
        )
        services.append(ingest)
        events = await stack.enter_async_context(space.reader("lepton.jobs.events"))
        instructions = await stack.enter_async_context(space.reader("lepton.jobs.assigned"))
        ready = await stack.enter_async_context(space.reader("lepton.data.ready"))
        # A node beats all along (the scheduler consumes its heartbeats), with room for
        # every job of the stream.
        await stack.enter_async_context(space.heartbeats("n-cluster", every_s=0.5, cpu=8000))
        await scheduler.event("leading")
        await ingest.event("consuming")
        await scheduler.metric_reaches("lepton_scheduler_nodes", 1)

        requests = space.names.topic("lepton.jobs.requested").name
        victim = (await _partitions(kafka, requests))[0]["leader"]
        # A topic whose writes need all three replicas: with acks=all, a record sent while
        # a broker is away is acknowledged only once that broker is back in sync.
        every_replica = Topic(
            f"{prefix}every-replica",
            "lepton.NodeHeartbeat",
            "node id",
            1,
            config={"min.insync.replicas": "3"},
        )
        await ensure_topics(kafka, [every_replica], with_dead_letters=False)
        acknowledged_jobs: list[str] = []
        acknowledged_ingests: list[str] = []

        a_third_sent = asyncio.Event()

        async def send_job(index: int) -> None:
            job_id = f"j-{index}-{uuid.uuid4().hex[:6]}"
            await space.send(
                "lepton.jobs.requested", job_id, job(job_id, tenant=tenant, cpu=100, memory=64)
            )
            acknowledged_jobs.append(job_id)
            if len(acknowledged_jobs) >= _JOBS // 3:
                a_third_sent.set()

        async def send_ingest(index: int) -> None:
            record = request(
                tenant, f"ds{index}", [{"name": "s", "kind": "csv", "uri": "small.csv"}]
            )
            await space.send("lepton.data.requested", f"{tenant}/ds{index}", record)
            acknowledged_ingests.append(record["request_id"])

        async def stream() -> None:
            for index in range(_JOBS):
                await send_job(index)
                if index % (_JOBS // _INGESTS) == 0:
                    await send_ingest(index)
                await asyncio.sleep(_PACE_S)  # the stream's rate, not a wait for anything

        # The broker is killed a third of the way into the stream, which goes on meanwhile.
        sending = asyncio.create_task(stream())
        await a_third_sent.wait()
        victim_pid = devstack.status(own_stack.settings).kafka_pids[victim - 1]
        assert victim_pid is not None
        os.killpg(victim_pid, signal.SIGKILL)
        await asyncio.wait_for(sending, _BOUND_S)
        needs_all = asyncio.create_task(
            space.publisher.publish(every_replica, "n-x", heartbeat("n-x", sequence=1))
        )

        # Leadership moved off the dead broker, and every request sent was acted on.
        await _all_assigned(events, acknowledged_jobs)
        for request_id in acknowledged_ingests:
            await ready.until(lambda r, wanted=request_id: r["request_id"] == wanted, _BOUND_S)
        # (The flow may not have needed the partition: the controller moves it anyway once
        # the dead broker's session expires.)
        await _until(
            lambda: asyncio.run(_partitions(kafka, requests))[0]["leader"] not in (victim, -1),
            f"partition 0 of {requests} led by another broker than {victim}",
        )
        moved = (await _partitions(kafka, requests))[0]
        assert victim not in moved["isr"], moved

        assert not needs_all.done(), "acknowledged with a replica away: not acks=all"

        # `lepton stack up` starts the dead node again; it catches up and rejoins the ISR.
        restarted = await asyncio.to_thread(devstack.up, own_stack.settings)
        assert restarted.note == f"started Kafka node(s) {victim} again"
        await _until(
            lambda: victim in asyncio.run(_partitions(kafka, requests))[0]["isr"],
            f"broker {victim} back in the in-sync replicas",
        )
        await asyncio.wait_for(needs_all, _BOUND_S)
        # The flow goes on with every broker back.
        await send_job(_JOBS)
        await _all_assigned(events, acknowledged_jobs)
        await instructions.until(lambda r: r["job_id"] == acknowledged_jobs[-1], _BOUND_S)
        assert scheduler.alive
        assert ingest.alive

    # Nothing was done twice: one assignment and one instruction per job (a node declared
    # dead meanwhile, its heartbeats held up, would have had its jobs assigned again), one
    # ingest per request (one row of the request in the catalog). A request whose offset
    # commit the dead broker lost is delivered again, and ingest publishes its recorded
    # answer again: the same record, never a second ingest.
    assigned = [r["job_id"] for r in events.seen if r["kind"] == "assigned"]
    assert sorted(assigned) == sorted(acknowledged_jobs)
    run = [r["job_id"] for r in instructions.seen if r["action"] == "run"]
    assert len(run) == len(set(run)), "an instruction was sent twice"
    answers: dict[str, list[dict[str, Any]]] = {}
    for answer in ready.seen:
        answers.setdefault(answer["request_id"], []).append(answer)
    assert sorted(answers) == sorted(acknowledged_ingests)
    for sent in answers.values():
        assert all(answer == sent[0] for answer in sent), sent
    connection = await asyncpg.connect(devstack.endpoints(own_stack.settings).database_url)
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM lepton_ingest.requests WHERE tenant = $1", tenant
        )
    finally:
        await connection.close()
    assert stored == len(acknowledged_ingests)


async def _all_assigned(events: Reader, job_ids: list[str]) -> None:
    """Wait for an ``assigned`` event of every job named."""
    for job_id in list(job_ids):
        try:
            await events.until(
                lambda r, wanted=job_id: r["job_id"] == wanted and r["kind"] == "assigned",
                _BOUND_S,
            )
        except TimeoutError:
            kinds = [(r["job_id"], r["kind"], r.get("reason")) for r in events.seen[-8:]]
            raise AssertionError(f"{job_id} not assigned within {_BOUND_S} s: {kinds}") from None
