"""Sealed artifacts: a model that reads sensitive columns, encrypted with its tenant's key.

The same envelope as sensitive columns (:mod:`lepton.data.keys`): a fresh AES-256-GCM data
key per artifact, stored only wrapped by the tenant's key (itself derived from
``LEPTON_MASTER_KEY``). The file is::

    MAGIC | length of the wrapped key (2 bytes, big-endian) | wrapped key | nonce | sealed

where ``sealed`` is the skops bytes under the data key, with everything before the nonce
as associated data. The wrapped key is bound to the tenant, so another tenant's key (a
model announced in another tenant's name) cannot open it.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lepton.data.access import KeyUnavailable
from lepton.data.keys import NONCE_BYTES, master_key_or_env, unwrap_data_key, wrap_data_key

__all__ = ["FORMAT", "NO_KEY", "UNSEALABLE", "SealingError", "is_sealed", "seal", "unseal"]

FORMAT = "skops+aes-256-gcm"
NO_KEY = "artifact is encrypted and LEPTON_MASTER_KEY is not set"
UNSEALABLE = "artifact cannot be decrypted with its tenant's key"

_MAGIC = b"lepton-sealed-v1\n"
_LENGTH = struct.Struct(">H")
# What the tenant's key wraps: the data key of a model artifact (a dataset version's is
# bound to the dataset's name instead).
_PURPOSE = "\x00model artifact"
# AES-GCM in the cryptography package takes at most 2**31 - 1 bytes at once.
_MAX_PLAIN = 2**31 - 1


class SealingError(ValueError):
    """An artifact that cannot be sealed or opened; the message says why (never a key)."""


def is_sealed(data: bytes) -> bool:
    return data.startswith(_MAGIC)


def _master(master_key: bytes | None) -> bytes:
    try:
        return master_key_or_env(master_key)
    except KeyUnavailable:
        raise SealingError(NO_KEY) from None
    except ValueError:  # not base64 of 32 bytes
        raise SealingError("LEPTON_MASTER_KEY is not base64 of 32 bytes") from None


def seal(data: bytes, tenant: str, master_key: bytes | None = None) -> bytes:
    """``data`` encrypted for ``tenant`` (``master_key`` default: ``LEPTON_MASTER_KEY``)."""
    if len(data) > _MAX_PLAIN:
        raise SealingError(f"a model of {len(data)} bytes is too large to encrypt")
    key = AESGCM.generate_key(bit_length=256)
    wrapped = wrap_data_key(_master(master_key), tenant, _PURPOSE, key)
    header = _MAGIC + _LENGTH.pack(len(wrapped)) + wrapped
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(key).encrypt(nonce, data, header)


def unseal(data: bytes, tenant: str, master_key: bytes | None = None) -> bytes:
    """The bytes :func:`seal` sealed for ``tenant``."""
    start = len(_MAGIC) + _LENGTH.size
    if not is_sealed(data) or len(data) < start:
        raise SealingError(UNSEALABLE)
    (length,) = _LENGTH.unpack_from(data, len(_MAGIC))
    header, nonce = data[: start + length], data[start + length : start + length + NONCE_BYTES]
    if len(nonce) != NONCE_BYTES:
        raise SealingError(UNSEALABLE)
    master = _master(master_key)
    try:
        key = unwrap_data_key(master, tenant, _PURPOSE, header[start:])
        return AESGCM(key).decrypt(nonce, data[start + length + NONCE_BYTES :], header)
    except (InvalidTag, ValueError):
        raise SealingError(UNSEALABLE) from None
