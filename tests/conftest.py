"""Test fixtures: the real stack (started once per session) and unique names.

With ``LEPTON_KAFKA_BOOTSTRAP`` (and the ``LEPTON_KAFKA_*`` credentials, or a client
properties file), ``LEPTON_DATABASE_URL`` and ``LEPTON_IDENTITY_KEY`` set, the suite runs
against those servers; otherwise it starts its own stack (SASL/SCRAM and ACLs, as `lepton
stack up` does) in a temporary state directory and stops it at the end: one broker, or with
``LEPTON_STACK_KAFKA_BROKERS=3`` a three-broker cluster (topics replicated three times, two
in sync per write) to run the suite against replication. Tests connect as
the stack's admin unless they ask for an actor (``stack_access``): services in a test get
the admin's access, the security tests each actor's own.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from lepton import devstack
from lepton.bus import Publisher, delete_topics, ensure_topics
from lepton.config import Actor, KafkaAccess, Settings
from lepton.contract.codec import Codec
from lepton.contract.identity import IdentityKey
from lepton.contract.topics import Topic
from lepton.devstack._kafka import fetch_jars
from lepton.devstack._postgres import LOGINS, login_role, provision, url_as
from lepton.runtime.identity import master_key
from lepton.testing import impersonating, service_codec


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The settings the suite's servers are reached with: the environment's, or those of
    a local stack started for the session."""
    given = Settings()
    if given.kafka_access() and given.database_url:
        yield given
        return
    settings = Settings(state_dir=tmp_path_factory.mktemp("stack"))
    devstack.up(settings)
    # Every process the tests start is configured as for an existing stack: with its
    # master identity key in the environment, as an operator would set it.
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("LEPTON_IDENTITY_KEY", devstack.identity_key(settings))
        try:
            yield settings
        finally:
            devstack.down(settings)


@pytest.fixture(scope="session")
def identity(stack_settings: Settings) -> IdentityKey:
    """The master identity key of the stack the tests run against (its services verify
    with it): ``LEPTON_IDENTITY_KEY``, which an existing stack's tests must be given."""
    return master_key(Settings())


@pytest.fixture(scope="session")
def endpoints(stack_settings: Settings) -> devstack.Endpoints:
    """The administrator's endpoints (PostgreSQL's superuser, Kafka's super user)."""
    return devstack.endpoints(stack_settings)


@pytest.fixture(scope="session")
def kafka(endpoints: devstack.Endpoints) -> KafkaAccess:
    """The admin's access to the test broker (a super user: creates and deletes topics)."""
    return endpoints.kafka


@pytest.fixture(scope="session")
def stack_access(stack_settings: Settings) -> Callable[[Actor], KafkaAccess]:
    """An actor's own access to the local test stack (its SASL user, under its ACLs)."""
    return lambda actor: devstack.endpoints(stack_settings, actor).kafka


@pytest.fixture(scope="session")
def database_url(endpoints: devstack.Endpoints) -> str:
    """The superuser's URL: for what only an administrator does, and to look behind RLS."""
    return endpoints.database_url


@pytest.fixture(scope="session")
def database_for(stack_settings: Settings, database_url: str) -> Callable[[Actor], str]:
    """The URL each actor connects with: its own login, as in production.

    On given servers ``LEPTON_DATABASE_URL`` must be a superuser's: the suite runs the role
    setup and gives the logins passwords of its own (so give it a server of its own)."""
    if stack_settings.database_url is None:
        return lambda actor: devstack.endpoints(stack_settings, actor).database_url
    passwords = {actor: secrets.token_urlsafe(32) for actor in LOGINS}
    asyncio.run(provision(database_url, passwords))
    return lambda actor: (
        database_url
        if actor == "admin"
        else url_as(database_url, login_role(actor), passwords[actor])
    )


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A small connection pool on the test database, closed after the test."""
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture(autouse=True)
async def _topics_a_test_creates_are_deleted(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Every topic a test created is deleted after it: a single test broker holds a few
    files open per partition, and a suite that never cleaned up would exhaust them."""
    if "kafka" not in request.fixturenames:
        yield
        return
    kafka = request.getfixturevalue("kafka")
    before = await _topic_names(kafka)
    yield
    await delete_topics(kafka, sorted(await _topic_names(kafka) - before))


async def _topic_names(kafka: KafkaAccess) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka.aiokafka())
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def java_classpath() -> list[Path]:
    """Apache Kafka's and Avro's jars, through Maven (cached between runs)."""
    settings = Settings()
    return sorted(fetch_jars(settings.cache_dir, settings.maven).glob("*.jar"))


@pytest.fixture(scope="session")
def codec(identity: IdentityKey) -> Codec:
    """The contract's codec with the stack's master key: it opens every tenant's sealed
    answers, as a service does."""
    return service_codec(identity)


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names for topics and groups, so tests never see each other's messages."""
    run = uuid.uuid4().hex[:10]
    return lambda name: f"test.{run}.{name}"


@pytest.fixture
async def make_topic(kafka: KafkaAccess, unique: Callable[[str], str]) -> Callable[..., object]:
    async def create(event: str, partitions: int = 1) -> Topic:
        topic = Topic(unique(event.rsplit(".", 1)[-1]), event, "test key", partitions)
        await ensure_topics(kafka, [topic])
        return topic

    return create


@pytest.fixture
async def publisher(
    kafka: KafkaAccess, codec: Codec, identity: IdentityKey
) -> AsyncIterator[Publisher]:
    """A publisher that signs each record as the principal who would write it."""
    async with Publisher(kafka, codec, source="tests", signer=impersonating(identity)) as running:
        yield running


def pytest_report_header() -> str:
    return "stack: " + (
        "LEPTON_KAFKA_BOOTSTRAP=" + os.environ["LEPTON_KAFKA_BOOTSTRAP"]
        if "LEPTON_KAFKA_BOOTSTRAP" in os.environ
        else "a local stack started for this session"
    )
