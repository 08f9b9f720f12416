"""Fixtures of the Kafka Connect tests: the jars (built and fetched once per session), a
test's own topics readable by the client principal a Connect worker uses, and a PostgreSQL
schema and login of its own for the JDBC sink."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from lepton.bus import ensure_topics
from lepton.bus._acls import apply_acls
from lepton.config import KafkaAccess
from lepton.contract.topics import Namespace, grants
from tests.connect.worker import (
    ConnectJars,
    Warehouse,
    connect_jars,
    create_warehouse,
    drop_warehouse,
)


@pytest.fixture(scope="session")
def jars() -> ConnectJars:
    return connect_jars()


async def client_may_use(kafka: KafkaAccess, names: Namespace) -> None:
    """The ACLs of the client principal (which a Connect worker uses) on the topics and
    groups under ``names``, as ``lepton stack up`` makes them on the installation's."""
    await apply_acls(kafka, [grant for grant in grants(names) if grant.actor == "client"])


@pytest.fixture
async def names(kafka: KafkaAccess) -> Namespace:
    """This test's topics, which the client principal may use."""
    names = Namespace(f"t{uuid.uuid4().hex[:10]}.")
    await ensure_topics(kafka, names.all())
    await client_may_use(kafka, names)
    return names


@pytest.fixture
async def warehouse(database_url: str) -> AsyncIterator[Warehouse]:
    made = await create_warehouse(database_url)
    try:
        yield made
    finally:
        await drop_warehouse(database_url, made)
