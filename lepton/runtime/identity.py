"""Which keys a process signs and verifies with: the settings first, the local stack second.

A service holds the master :class:`~lepton.contract.identity.IdentityKey`
(``LEPTON_IDENTITY_KEY``) and signs as ``service:<actor>``. A tenant's client or a node's
trainer is given only its own :class:`~lepton.contract.identity.SigningKey`
(``LEPTON_SIGNING_KEY``). On one machine, whoever can read the local stack's state
directory holds its master key, and so acts as its operator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lepton.contract.identity import IdentityKey, Principal, SigningKey, Verifier
from lepton.contract.sealed import Keyring

if TYPE_CHECKING:
    from lepton.config import Settings

__all__ = ["LOCAL_OPERATOR", "keyring", "master_key", "service_keys", "signing_key"]

# Whom a client (the SDK, the CLI) acts as when it has no key of its own
# (LEPTON_SIGNING_KEY) but can read the local stack's master key: whoever can is that
# stack's operator.
LOCAL_OPERATOR = Principal("operator", "local")


def master_key(settings: Settings) -> IdentityKey:
    """The master key: ``LEPTON_IDENTITY_KEY``, else the running local stack's."""
    if settings.identity_key is not None:
        return IdentityKey.from_text(settings.identity_key.get_secret_value())
    from lepton import devstack  # only a process without the setting needs the stack

    return IdentityKey.from_text(devstack.identity_key(settings))


def signing_key(settings: Settings, default: Principal) -> SigningKey:
    """The key this process signs with: ``LEPTON_SIGNING_KEY``, else ``default``'s, derived
    from the master key (a service; an operator, trainer or client of the local stack)."""
    if settings.signing_key is not None:
        return SigningKey.from_text(settings.signing_key.get_secret_value())
    return master_key(settings).derive(default)


def keyring(settings: Settings, default: Principal = LOCAL_OPERATOR) -> Keyring:
    """What a client opens sealed answers with: its own key (``LEPTON_SIGNING_KEY``: a
    tenant reads its own), else the master key (``LEPTON_IDENTITY_KEY`` or the local
    stack's: an operator reads every tenant's)."""
    own = signing_key(settings, default)
    holds_master = settings.identity_key is not None or settings.signing_key is None
    return Keyring(master=master_key(settings) if holds_master else None, own=own)


def service_keys(
    settings: Settings, principal: Principal, master: IdentityKey | None = None
) -> tuple[SigningKey, Verifier | None]:
    """What a service signs with, and checks what it reads with. A Lepton service holds the
    master key and verifies every record; a trainer, signing as its node, holds only its
    own key and verifies nothing: it reads only ``lepton.jobs.assigned``, which the
    scheduler alone may write (Kafka's ACLs). ``master`` stands for the settings' (a test's
    in-memory broker)."""
    if principal.kind == "service":
        master = master or master_key(settings)
        return master.derive(principal), Verifier(master)
    if master is not None and settings.signing_key is None:
        return master.derive(principal), None
    return signing_key(settings, principal), None
