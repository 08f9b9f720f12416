"""Production mode (``LEPTON_ENV=production``): a service refuses to start insecure.

In development Lepton fills gaps for you: the local stack's brokers, database and keys.
In production each of those conveniences is a way to run exposed without noticing, so a
service checks its configuration before it connects to anything and, if any check fails,
stops with every reason at once (:class:`InsecureConfiguration`), each naming the setting
that fixes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton.errors import LeptonError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lepton.config import Actor, Settings

__all__ = ["InsecureConfiguration", "check", "refusals"]


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
    if settings.kafka_bootstrap is None:
        found.append("LEPTON_KAFKA_BOOTSTRAP is unset: production never uses the local stack")
    if settings.database_url is None:
        found.append("LEPTON_DATABASE_URL is unset: production never uses the local stack")
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
