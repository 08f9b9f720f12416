"""Records only their tenant can read: answers sealed with a key derived from the tenant's.

Kafka's ACLs grant a *role* read access to a topic: every tenant's client reads
``lepton.predict.results`` to find its own answers there, and an ACL cannot hide one
tenant's records from another. So the services seal what a tenant's data reveals (its
predictions, its dataset's statistics and rejected values, its model's evaluation) for that
tenant: the value is encrypted (AES-256-GCM) with a key only that tenant and the services
can derive, and a reader without it sees who it is for and nothing else.

The sealing key of a principal is ``HMAC-SHA256(its signing key, "lepton sealing")``
(:mod:`lepton.contract.identity`): a tenant derives its own from the key it holds, a
service derives any from the master key, and nothing is stored. A sealed value is::

    c3 53 | n (1 byte) | principal (n bytes, UTF-8) | nonce (12 bytes) | ciphertext ‖ tag

where the plaintext is the record's Avro single-object encoding (``c3 01`` …) and the
first ``3 + n`` bytes are the associated data, so the name it is sealed for cannot be
changed. The record is signed over the sealed bytes: who wrote it is checked without
opening it.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lepton.contract.identity import IdentityKey, Principal, SigningKey

__all__ = ["SEALED_MAGIC", "Keyring", "NotSealedForUsError", "SealError", "sealed_for"]

SEALED_MAGIC = b"\xc3\x53"
_NONCE_BYTES = 12
_LABEL = b"lepton sealing\0"
_MAX_CACHED_KEYS = 10_000


class SealError(ValueError):
    """A sealed value that cannot be made or opened, and why."""


class NotSealedForUsError(SealError):
    """A value sealed for a principal whose key this reader does not hold (another
    tenant's answer): nothing wrong with it, it is just not ours to read."""


def sealed_for(data: bytes) -> tuple[str, int] | None:
    """The principal a value is sealed for and where its nonce starts; None when the value
    is not sealed."""
    if data[:2] != SEALED_MAGIC:
        return None
    if len(data) < 3:
        raise SealError("sealed value ends before its principal")
    end = 3 + data[2]
    if len(data) < end + _NONCE_BYTES + 16:
        raise SealError("sealed value is shorter than its header, nonce and tag")
    try:
        return data[3:end].decode(), end
    except UnicodeDecodeError:
        raise SealError("sealed value names a principal that is not UTF-8") from None


@dataclass(slots=True)
class Keyring:
    """The keys a process seals and opens with: the master key (a service, or the local
    stack's operator: any principal's) and its own signing key (a tenant: its own)."""

    master: IdentityKey | None = None
    own: SigningKey | None = None
    _ciphers: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    def _cipher(self, principal: str) -> AESGCM | None:
        cipher = self._ciphers.get(principal)
        if cipher is not None:
            return cipher
        if self.own is not None and str(self.own.principal) == principal:
            secret = self.own.secret
        elif self.master is not None:
            secret = self.master.derive(Principal.parse(principal)).secret
        else:
            return None
        if len(self._ciphers) >= _MAX_CACHED_KEYS:
            self._ciphers.clear()
        cipher = self._ciphers[principal] = AESGCM(hmac.digest(secret, _LABEL, "sha256"))
        return cipher

    def seal(self, tenant: str, plain: bytes) -> bytes:
        """``plain`` sealed for ``tenant:<tenant>``."""
        principal = str(Principal("tenant", tenant))
        cipher = self._cipher(principal)
        if cipher is None:
            raise SealError(
                f"cannot seal a record for {principal}: this process holds neither the master "
                "key (LEPTON_IDENTITY_KEY) nor that tenant's key"
            )
        name = principal.encode()
        if len(name) > 255:
            raise SealError(f"cannot seal for a principal of {len(name)} bytes (255 at most)")
        header = SEALED_MAGIC + bytes((len(name),)) + name
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + cipher.encrypt(nonce, plain, header)

    def open(self, data: bytes) -> bytes:
        """The plaintext of a sealed value (see :func:`sealed_for`)."""
        found = sealed_for(data)
        if found is None:
            raise SealError("not a sealed value")
        principal, end = found
        cipher = self._cipher(principal)
        if cipher is None:
            raise NotSealedForUsError(
                f"sealed for {principal}, whose key this reader does not hold"
            )
        nonce = data[end : end + _NONCE_BYTES]
        try:
            return cipher.decrypt(nonce, data[end + _NONCE_BYTES :], data[:end])
        except InvalidTag:
            raise SealError(
                f"sealed for {principal} but does not open: altered, or sealed with another key"
            ) from None
