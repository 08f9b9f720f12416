"""Several instances of a service in one consumer group, on the real broker: partitions
move between members as they join, stop and die, and each piece of work is done once in
effect (issue 18, item 3)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from lepton.bus import Event, Publisher, Subscriber
from lepton.config import KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.contract.topics import Namespace, Topic
from lepton.data import artifacts
from lepton.data.reading import read_dataset
from lepton.data.samples import house_prices
from lepton.runtime.identity import master_key
from lepton.services.monitor.app import build
from lepton.services.trainer.training import SearchConfig
from lepton.testing import impersonating, leased
from tests.integration.ingest_support import (
    delete_topics,
    request,
    running_ingest,
    unique_tenant,
)
from tests.integration.model_support import stored_model
from tests.integration.processes import BIN, Service, data_service_env, start, stop_all
from tests.integration.test_monitor import (
    fresh_prefix,
    job_request,
    json_when,
    now_ms,
    running,
    settings_for,
)
from tests.integration.test_monitor import topic as monitor_topic
from tests.samples import sample

pytestmark = pytest.mark.integration


class Member:
    """A subscriber of the group run as a task, recording what it handled."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.task = asyncio.create_task(subscriber.run())

    async def stop(self) -> None:
        self.subscriber.stop_soon()
        await self.task
        await self.subscriber.close()


@contextlib.asynccontextmanager
async def group_of(
    kafka: KafkaAccess, codec: Codec, publisher: Publisher, topic: Topic, group: str
) -> AsyncIterator[tuple[Callable[[str], Any], list[tuple[str, str | None]], asyncio.Event]]:
    """``join(name)`` starts a member; every handled message lands in the shared list as
    (member, key); the event is set at each handling."""
    handled: list[tuple[str, str | None]] = []
    progress = asyncio.Event()
    members: list[Member] = []

    async def join(name: str) -> Member:
        async def handle(event: Event) -> None:
            handled.append((name, event.key))
            progress.set()

        subscriber = Subscriber(
            kafka, codec, publisher, topics=[topic], group_id=group, handler=handle
        )
        await subscriber.start()
        member = Member(subscriber)
        members.append(member)
        return member

    try:
        yield join, handled, progress
    finally:
        for member in members:
            if not member.task.done():
                await member.stop()


async def handled_all(handled: list[Any], progress: asyncio.Event, count: int) -> None:
    async with asyncio.timeout(60):
        while len({key for _, key in handled}) < count:
            progress.clear()
            await progress.wait()


async def committed(kafka: KafkaAccess, group: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {partition.partition: meta.offset for partition, meta in offsets.items()}


async def owns_some(member: Member) -> None:
    """Returns once the member was given partitions (the rebalance it joined is over)."""
    async with asyncio.timeout(60):
        # librdkafka assigns in its own thread: no event to await for it.
        while not await member.subscriber.assignment():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def publish(publisher: Publisher, topic: Topic, keys: list[str]) -> None:
    record = sample(topic.event)
    await publisher.publish_many(topic, [(key, record) for key in keys])


async def test_a_member_that_leaves_never_moves_back_the_position_of_a_partition_it_gave_up(
    kafka, codec, publisher, make_topic, unique
) -> None:
    """A member keeps what it handled of every partition it ever had; committing all of
    it as it stops moved back the offsets of partitions another member owned and had
    gone further in (the classic protocol accepts a member's commit for any partition)."""
    topic = await make_topic("lepton.JobRequested", partitions=3)
    group = unique("leaver")
    async with group_of(kafka, codec, publisher, topic, group) as (join, handled, progress):
        first = await join("first")
        await publish(publisher, topic, [f"a{i}" for i in range(30)])
        await handled_all(handled, progress, 30)
        second = await join("second")
        await owns_some(second)
        await publish(publisher, topic, [f"b{i}" for i in range(30)])
        await handled_all(handled, progress, 60)
        await second.stop()  # its partitions' offsets are committed at their ends
        after_second = await committed(kafka, group)
        await first.stop()
    assert await committed(kafka, group) == after_second
    assert sorted(key for _, key in handled) == sorted(
        [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(30)]
    )


async def test_members_joining_and_leaving_handle_every_message_once(
    kafka, codec, publisher, make_topic, unique
) -> None:
    """Partitions move at each join and each graceful leave: what a member handled is
    committed as its partitions go, so no message is handled twice, and none is lost."""
    topic = await make_topic("lepton.JobRequested", partitions=6)
    group = unique("movers")
    keys = [f"k{i}" for i in range(400)]
    async with group_of(kafka, codec, publisher, topic, group) as (join, handled, progress):
        members = [await join("m0")]
        await owns_some(members[0])
        for step in range(4):
            # Each change while the step's messages are being handled.
            await publish(publisher, topic, keys[step * 100 : (step + 1) * 100])
            if step % 2 == 0:
                members.append(await join(f"m{step + 1}"))
                await owns_some(members[-1])
            else:
                await members.pop(0).stop()
            await handled_all(handled, progress, (step + 1) * 100)
    assert sorted(key for _, key in handled) == sorted(keys)  # each once: no duplicate
    assert len({member for member, _ in handled}) > 1


# -- ingest instances as processes -----------------------------------------------------------


async def _answers(
    consumer: AIOKafkaConsumer,
    codec: Codec,
    want: set[str],
    timeout_s: float,
    answers: dict[str, list[dict[str, Any]]],
    field: str = "request_id",
) -> None:
    """Every answer into ``answers``, by its ``field``, until each of ``want`` has one."""
    async with asyncio.timeout(timeout_s):
        while not want <= answers.keys():
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for message in messages:
                    record = codec.decode(message.value)[1]
                    answers.setdefault(record[field], []).append(record)


@contextlib.asynccontextmanager
async def group_under_test(
    kafka: KafkaAccess,
    database_url: str,
    prefix: str,
    start_one: Callable[[], Awaitable[Service]],
    answers: list[Topic],
) -> AsyncIterator[tuple[asyncpg.Pool, list[Service], AIOKafkaConsumer]]:
    """A database pool, three instances (``start_one``; the list is the test's to add to)
    and a consumer of the ``answers`` topics from their start (once the instances created
    them). On the way out the consumer stops, every instance still running is stopped, the
    pool closes and ``prefix``'s topics are deleted, each even when one before it failed."""
    async with contextlib.AsyncExitStack() as cleanup:
        cleanup.push_async_callback(delete_topics, kafka, prefix)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        cleanup.push_async_callback(pool.close)
        instances: list[Service] = []
        cleanup.push_async_callback(
            lambda: stop_all([one for one in instances if one.process.returncode is None])
        )
        for _ in range(3):
            instances.append(await start_one())
        consumer = AIOKafkaConsumer(
            *(topic.name for topic in answers), **kafka.aiokafka(), auto_offset_reset="earliest"
        )
        await consumer.start()
        cleanup.push_async_callback(consumer.stop)
        yield pool, instances, consumer


async def _ingest(env: dict[str, str]) -> Service:
    return await start([str(BIN / "lepton-ingest")], env, until="consuming")


async def test_ingest_instances_share_requests_through_stops_kills_and_joins(
    kafka: KafkaAccess,
    database_url: str,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
) -> None:
    """Three ingest processes share a stream of dataset requests; one is stopped (SIGTERM),
    one killed (SIGKILL) and a new one joins while it flows. Every request is answered,
    with one stored outcome each; a request redelivered after the kill is answered again
    with the identical answer (the contract: ingest republishes the recorded outcome)."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    names = Namespace(prefix)
    env = data_service_env(kafka, database_for("ingest"), prefix, tmp_path)
    tenant = unique_tenant()
    requests = []
    for i in range(60):
        (tmp_path / f"d{i}.csv").write_text(
            "x,y\n" + "".join(f"{i},{j}\n" for j in range(20)), encoding="utf-8"
        )
        requests.append(
            request(tenant, f"d{i}", [{"name": "s", "kind": "csv", "uri": f"d{i}.csv"}])
        )
    answered = [names.topic("lepton.data.ready"), names.topic("lepton.data.rejected")]
    async with group_under_test(kafka, database_url, prefix, lambda: _ingest(env), answered) as (
        pool,
        instances,
        consumer,
    ):
        async with Publisher(kafka, codec, source="tests", signer=impersonating()) as publisher:
            topic = names.topic("lepton.data.requested")

            async def send(part: list[dict[str, Any]]) -> None:
                for record in part:
                    await publisher.publish(topic, f"{tenant}/{record['dataset']}", record)

            await send(requests[:20])
            answers: dict[str, list[dict[str, Any]]] = {}
            first = {r["request_id"] for r in requests[:5]}
            await _answers(consumer, codec, first, 120, answers)
            await instances[0].stop()  # SIGTERM: finishes, commits, leaves
            await send(requests[20:40])
            instances[1].process.send_signal(signal.SIGKILL)  # mid-stream, no goodbye
            await instances[1].process.wait()
            instances.append(await _ingest(env))
            await send(requests[40:])
            want = {r["request_id"] for r in requests}
            await _answers(consumer, codec, want, 180, answers)
        stored = await pool.fetch(
            "SELECT request_id, outcome, result FROM lepton_ingest.requests WHERE tenant = $1",
            tenant,
        )
        versions = await pool.fetch(
            "SELECT name, version FROM lepton_ingest.datasets WHERE owner_tenant = $1", tenant
        )
    assert answers.keys() == want
    assert {row["request_id"] for row in stored} == want  # one stored outcome each
    assert all(row["outcome"] == "ready" for row in stored)
    assert len(versions) == len(requests)  # one version per dataset: none stored twice
    for row in stored:
        sent = answers[row["request_id"]]
        assert all(answer["version"] == sent[0]["version"] for answer in sent), sent
        assert sent[0]["version"] == json.loads(row["result"])["version"]


# -- evaluator instances as processes --------------------------------------------------------


def _models(root: Path, tenant: str, dataset: dict[str, str], frame: Any, count: int) -> list[Any]:
    """``count`` ModelReady records of one ridge model trained once, each under a model id
    of its own with its own copy of the artifact; three model names, so that instances
    judge challengers of one name concurrently (the champion's compare-and-set)."""
    _, first = stored_model(
        frame,
        SearchConfig(target_column="价格", algorithm="ridge", trial_budget=1, cv_folds=3, seed=7),
        artifact_root=root,
        tenant=tenant,
        model_id="m-first",
        model_name="n0",
        dataset=dataset,
    )
    source = Path(first["artifact_uri"])
    models = []
    for i in range(count):
        model_id = f"m-{uuid.uuid4().hex[:10]}"
        uri = artifacts.artifact_uri(str(root), tenant, model_id)
        shutil.copyfile(source, uri)
        models.append(
            first | {"model_id": model_id, "model_name": f"n{i % 3}", "artifact_uri": uri}
        )
    return models


async def test_evaluator_instances_share_models_through_stops_kills_and_joins(
    kafka: KafkaAccess,
    database_url: str,
    database_for: Callable[[str], str],
    codec: Codec,
    tmp_path: Path,
) -> None:
    """Three evaluator processes share a stream of models.ready; one is stopped, one
    killed and one joins while it flows. Each model is evaluated once (one stored
    evaluation; a redelivery publishes the stored one again, never a new one)."""
    tenant = unique_tenant()
    house_prices(300).to_csv(tmp_path / "houses.csv", index=False)
    async with running_ingest(kafka, database_for("ingest"), codec, tmp_path) as ingest:
        outcome, ready = await ingest.submit(
            request(tenant, "houses", [{"name": "s", "kind": "csv", "uri": "houses.csv"}])
        )
    assert outcome == "ready", ready
    dataset = {"name": "houses", "version": ready["version"], "owner": tenant}
    prefix = f"t{uuid.uuid4().hex[:10]}."
    names = Namespace(prefix)
    env = data_service_env(kafka, database_for("evaluator"), prefix, tmp_path)
    command = [str(BIN / "lepton-evaluator")]
    answers: dict[str, list[dict[str, Any]]] = {}
    evaluated = [names.topic("lepton.models.evaluated")]
    async with group_under_test(
        kafka, database_url, prefix, lambda: start(command, env, until="consuming"), evaluated
    ) as (pool, instances, consumer):
        frame = await read_dataset(pool, reader_tenant=tenant, name="houses")
        models = [
            leased(model, master_key(Settings()), names, codec)
            for model in _models(tmp_path / "artifacts", tenant, dataset, frame, 30)
        ]
        async with Publisher(kafka, codec, source="tests", signer=impersonating()) as publisher:
            topic = names.topic("lepton.models.ready")
            await publisher.publish_many(topic, [(m["model_id"], m) for m in models[:10]])
            await _answers(consumer, codec, {models[0]["model_id"]}, 120, answers, "model_id")
            await instances[0].stop()
            await publisher.publish_many(topic, [(m["model_id"], m) for m in models[10:20]])
            instances[1].process.send_signal(signal.SIGKILL)
            await instances[1].process.wait()
            instances.append(await start(command, env, until="consuming"))
            await publisher.publish_many(topic, [(m["model_id"], m) for m in models[20:]])
            want = {m["model_id"] for m in models}
            await _answers(consumer, codec, want, 300, answers, "model_id")
        stored = await pool.fetch(
            "SELECT model_id, status, evaluated FROM lepton_evaluator.evaluations "
            "WHERE tenant = $1 AND model_id <> 'm-first'",
            tenant,
        )
    assert answers.keys() == want
    assert {row["model_id"] for row in stored} == want
    assert all(row["status"] == "evaluated" for row in stored)
    for row in stored:
        sent = answers[row["model_id"]]
        # A redelivery republishes the stored evaluation: the same record, not a new one.
        assert all(answer == sent[0] for answer in sent), sent
        assert json.loads(row["evaluated"])["evaluated_at"] == sent[0]["evaluated_at"]


# -- the monitor: one active instance, standbys ----------------------------------------------


async def test_a_second_monitor_stands_by_and_takes_over_with_every_event(
    kafka: KafkaAccess, database_for: Callable[[str], str], publisher: Publisher
) -> None:
    """The monitor's view is of every event: two monitors sharing the group's partitions
    each showed a part of the jobs. The second stands by instead, and takes over (from the
    first's snapshot and the group's offsets) when the first stops."""
    prefix = fresh_prefix()
    settings = settings_for(kafka, database_for("monitor"), prefix)
    jobs = [f"job-{i}" for i in range(24)]  # spread over the topic's six partitions
    second = build(settings)
    second_task: asyncio.Task[None] | None = None
    try:
        async with running(settings) as first:
            second_task = asyncio.create_task(second.service.run())
            requested = monitor_topic(prefix, "lepton.jobs.requested")
            for job in jobs:
                await publisher.publish(requested, job, job_request(job, submitted_at=now_ms()))
            assert first.url is not None
            for job in jobs:
                await json_when(first.url, f"/api/jobs/{job}")
            assert not second.service.ready.is_set()  # standing by: reads nothing
        async with asyncio.timeout(60):
            await second.service.ready.wait()
            await second.web_ready.wait()
        assert second.url is not None
        for job in jobs:
            await json_when(second.url, f"/api/jobs/{job}")
    finally:
        second.service.stop_soon()
        if second_task is not None:
            await asyncio.wait_for(second_task, 60)
