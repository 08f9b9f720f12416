"""Fixtures of the Kafka Connect tests: the jars (built and fetched once per session), a
test's own topics readable by the client principal a Connect worker uses, and a PostgreSQL
schema and login of its own for the JDBC sink."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from lepton.bus import ensure_topics
from lepton.bus._acls import apply_acls
from lepton.config import KafkaAccess
from lepton.contract.topics import Namespace, grants
from tests.connect.worker import ConnectJars, connect_jars


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


@dataclass(frozen=True, slots=True)
class Warehouse:
    """A PostgreSQL schema the sink owns, and its login."""

    schema: str
    user: str
    password: str


@pytest.fixture
async def warehouse(database_url: str) -> AsyncIterator[Warehouse]:
    name = f"connect_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(24)
    connection = await asyncpg.connect(database_url)
    try:
        # Identifiers cannot be parameters; the name is made here, of hex digits.
        await connection.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        await connection.execute(f"CREATE SCHEMA {name} AUTHORIZATION {name}")
        yield Warehouse(name, name, password)
        await connection.execute(f"DROP SCHEMA {name} CASCADE")
        await connection.execute(f"DROP ROLE {name}")
    finally:
        await connection.close()
