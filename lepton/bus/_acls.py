"""Kafka ACLs from :func:`lepton.contract.topics.grants` (librdkafka's admin client), and
:func:`provision`, what the admin does before the services start: topics and ACLs.

:func:`apply_acls` makes the cluster's ACLs on Lepton's topics and groups equal the table:
it creates what is missing and deletes what the table no longer grants, on exactly the
resources the table names (so several installations under other prefixes, or test runs,
never touch each other's). :func:`live_grants` reads them back, for a test that compares.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import confluent_kafka
from confluent_kafka.admin import AdminClient

# Where confluent-kafka defines them (its admin package re-exports them without __all__).
from confluent_kafka.admin._acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
)
from confluent_kafka.admin._resource import ResourcePatternType, ResourceType

from lepton.bus._admin import ensure_topics
from lepton.config import ACTORS, kafka_user
from lepton.contract.topics import Grant, Namespace, Operation, grants
from lepton.errors import LeptonError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from concurrent.futures import Future

    from lepton.config import Actor, KafkaAccess

__all__ = ["AclError", "apply_acls", "live_grants", "provision", "user_principal"]

_RESOURCES: dict[Literal["topic", "group"], ResourceType] = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
}
_OPERATIONS: dict[Operation, AclOperation] = {
    "read": AclOperation.READ,
    "write": AclOperation.WRITE,
    "describe": AclOperation.DESCRIBE,
    "describe_configs": AclOperation.DESCRIBE_CONFIGS,
}
_TIMEOUT_S = 30.0
_T = TypeVar("_T")


class AclError(LeptonError, RuntimeError):
    """The cluster refused to create, delete or list ACLs (the caller is no admin)."""


def user_principal(actor: Actor) -> str:
    """The Kafka principal of an actor: ``User:lepton-<actor>`` (the local stack's users)."""
    return f"User:{kafka_user(actor)}"


def _binding(grant: Grant, principal: Callable[[Actor], str]) -> AclBinding:
    return AclBinding(
        _RESOURCES[grant.resource],
        grant.name,
        ResourcePatternType.PREFIXED if grant.prefixed else ResourcePatternType.LITERAL,
        principal(grant.actor),
        "*",
        _OPERATIONS[grant.operation],
        AclPermissionType.ALLOW,
    )


def _admin(kafka: KafkaAccess) -> AdminClient:
    # librdkafka's own lines (a cluster's "Purging … background queue" on close) go
    # through logging, not to stderr in librdkafka's format.
    config: dict[str, Any] = {
        **kafka.librdkafka(),
        "client.id": "lepton-acls",
        "logger": logging.getLogger(__name__),
    }
    return AdminClient(config)


def _wait(futures: Iterable[Future[_T]], what: str) -> list[_T]:
    results: list[_T] = []
    for future in futures:
        try:
            results.append(future.result(timeout=_TIMEOUT_S))
        except confluent_kafka.KafkaException as exc:
            raise AclError(
                f"{what} failed: {exc.args[0].str()}",
                "ACLs are made by a super user: the admin's credentials",
            ) from None
    return results


def _live(
    admin: AdminClient, resources: set[tuple[str, str, bool]], principals: dict[str, Actor]
) -> dict[Grant, AclBinding]:
    """The ALLOW ACLs of Lepton's principals on the given (resource, name, prefixed)."""
    # None matches any name, principal and host (the stubs say str).
    everything = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ALLOW,
    )
    (bindings,) = _wait(
        [admin.describe_acls(everything, request_timeout=_TIMEOUT_S)], "listing ACLs"
    )
    kinds = {kind: name for name, kind in _RESOURCES.items()}
    operations = {operation: name for name, operation in _OPERATIONS.items()}
    found: dict[Grant, AclBinding] = {}
    for binding in bindings:
        resource = kinds.get(binding.restype)
        prefixed = binding.resource_pattern_type == ResourcePatternType.PREFIXED
        actor = principals.get(binding.principal)
        operation = operations.get(binding.operation)
        if (
            resource is None
            or actor is None
            or operation is None
            or (resource, binding.name, prefixed) not in resources
        ):
            continue
        found[Grant(actor, resource, binding.name, operation, prefixed)] = binding
    return found


def _resources(grants: Iterable[Grant]) -> set[tuple[str, str, bool]]:
    return {(grant.resource, grant.name, grant.prefixed) for grant in grants}


def _apply(
    kafka: KafkaAccess, grants: list[Grant], principal: Callable[[Actor], str]
) -> tuple[int, int]:
    admin = _admin(kafka)
    principals = {principal(actor): actor for actor in ACTORS}
    live = _live(admin, _resources(grants), principals)
    wanted = set(grants)
    missing = [_binding(grant, principal) for grant in sorted(wanted - live.keys())]
    stale = [binding for grant, binding in live.items() if grant not in wanted]
    if missing:
        _wait(admin.create_acls(missing, request_timeout=_TIMEOUT_S).values(), "creating ACLs")
    if stale:
        filters = [
            AclBindingFilter(
                b.restype,
                b.name,
                b.resource_pattern_type,
                b.principal,
                b.host,
                b.operation,
                b.permission_type,
            )
            for b in stale
        ]
        _wait(admin.delete_acls(filters, request_timeout=_TIMEOUT_S).values(), "deleting ACLs")
    # The controller has them; the broker's authorizer applies them a moment later, and it
    # is what answers a describe: once it shows the table, the table is in force.
    deadline = time.monotonic() + _TIMEOUT_S
    while (missing or stale) and set(_live(admin, _resources(grants), principals)) != wanted:
        if time.monotonic() > deadline:
            raise AclError("the broker did not show the ACLs it accepted in time")
        time.sleep(0.05)
    return len(missing), len(stale)


async def apply_acls(
    kafka: KafkaAccess,
    grants: list[Grant],
    *,
    principal: Callable[[Actor], str] = user_principal,
) -> tuple[int, int]:
    """Make the ACLs on the resources ``grants`` name equal ``grants``, as the admin
    ``kafka`` is; returns how many were created and deleted. Safe to run again."""
    return await asyncio.to_thread(_apply, kafka, grants, principal)


async def live_grants(
    kafka: KafkaAccess,
    resources_of: list[Grant],
    *,
    principal: Callable[[Actor], str] = user_principal,
) -> set[Grant]:
    """The grants the cluster holds for Lepton's principals on the resources that
    ``resources_of`` names."""

    def read() -> set[Grant]:
        principals = {principal(actor): actor for actor in ACTORS}
        return set(_live(_admin(kafka), _resources(resources_of), principals))

    return await asyncio.to_thread(read)


async def provision(kafka: KafkaAccess, names: Namespace) -> list[str]:
    """As the admin: create the installation's topics (and their dead-letter topics) and
    make its ACLs those of the table; returns the topics created. Services then only
    check that their topics exist: none may create topics."""
    created = await ensure_topics(kafka, names.all())
    await apply_acls(kafka, grants(names))
    return created
