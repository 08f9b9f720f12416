"""Production mode (``LEPTON_ENV=production``): a service refuses to start insecure.

In development Lepton fills gaps for you: the local stack's brokers, database and keys.
In production each of those conveniences is a way to run exposed without noticing, so a
service checks its configuration before it connects to anything and, if any check fails,
stops with every reason at once (:class:`InsecureConfiguration`), each naming the setting
that fixes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lepton.errors import ConfigError, LeptonError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lepton.config import Actor, Settings

__all__ = ["InsecureConfiguration", "check", "refusals"]

# Logins that are superusers on every PostgreSQL installation (and in the local stack).
_SUPERUSERS = frozenset({"postgres"})
# Passwords an installer leaves behind; and a length below which a password is guessable.
_DEFAULTS = frozenset({"admin", "changeme", "kafka", "lepton", "password", "postgres", "secret"})
_MIN_PASSWORD = 12


class InsecureConfiguration(LeptonError):
    """A service in production mode found its configuration insecure; it did not start."""

    hint = "fix each setting named, or run with LEPTON_ENV=development on a trusted machine"


def refusals(
    settings: Settings, actor: Actor, extra: Iterable[Callable[[Settings], str | None]] = ()
) -> list[str]:
    """Every reason this configuration is unfit for production (none in development)."""
    if settings.env != "production":
        return []
    found = []
    found.extend(_kafka(settings))
    found.extend(_database(settings, actor))
    if actor in ("trainer", "client"):
        if settings.signing_key is None:
            found.append(f"LEPTON_SIGNING_KEY is unset: a {actor} signs with its own key")
    elif settings.identity_key is None:
        found.append("LEPTON_IDENTITY_KEY is unset: a service verifies with the master key")
    found.extend(reason for rule in extra if (reason := rule(settings)) is not None)
    return found


def check(
    settings: Settings, actor: Actor, extra: Iterable[Callable[[Settings], str | None]] = ()
) -> None:
    """Raise :class:`InsecureConfiguration` listing every refusal, if there is any."""
    found = refusals(settings, actor, extra)
    if found:
        raise InsecureConfiguration("refusing to start in production: " + "; ".join(found))


def _weak(password: str | None) -> bool:
    return not password or len(password) < _MIN_PASSWORD or password.lower() in _DEFAULTS


def _kafka(settings: Settings) -> list[str]:
    try:
        access = settings.kafka_access()
    except ConfigError as incomplete:
        return [str(incomplete)]
    if access is None:
        return ["LEPTON_KAFKA_BOOTSTRAP is unset: production never uses the local stack"]
    protocol = access.security_protocol
    if protocol == "PLAINTEXT":
        return [
            "LEPTON_KAFKA_SECURITY_PROTOCOL is PLAINTEXT: anyone who reaches the broker "
            "could act as anyone; use SASL_SSL (or SASL_PLAINTEXT on a private network)"
        ]
    if protocol == "SSL" and access.ssl_certfile is None:
        return [
            "LEPTON_KAFKA_SECURITY_PROTOCOL is SSL without LEPTON_KAFKA_SSL_CERTFILE: "
            "the broker cannot tell who this client is"
        ]
    if protocol.startswith("SASL") and _weak(
        access.password.get_secret_value() if access.password else None
    ):
        return ["LEPTON_KAFKA_SASL_PASSWORD is short or a well-known default"]
    return []


def _database(settings: Settings, actor: Actor) -> list[str]:
    if settings.database_url is None:
        return ["LEPTON_DATABASE_URL is unset: production never uses the local stack"]
    url = urlsplit(settings.database_url.get_secret_value())
    if url.username in _SUPERUSERS:
        return [
            "LEPTON_DATABASE_URL logs in as a superuser, whom row-level security does not "
            f"bind: give the {actor} its own login (deploy/postgres/roles.sql)"
        ]
    if url.password is not None and _weak(url.password):
        return ["LEPTON_DATABASE_URL's password is short or a well-known default"]
    return []
