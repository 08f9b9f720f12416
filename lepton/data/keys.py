"""The keys of sensitive columns: AES-256-GCM per value, with a data key per dataset
version that is wrapped by a per-tenant key derived from ``LEPTON_MASTER_KEY``."""

from __future__ import annotations

import base64
import json
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from lepton.data.access import KeyUnavailable

__all__ = [
    "NONCE_BYTES",
    "decode_master_key",
    "master_key_or_env",
    "tenant_key",
    "unwrap_data_key",
    "wrap_data_key",
]

NONCE_BYTES = 12


def decode_master_key(text: str) -> bytes:
    """The 32-byte master key from its base64 text."""
    key = base64.b64decode(text, validate=True)
    if len(key) != 32:
        raise ValueError("the master key must be 32 bytes (base64 of 32 random bytes)")
    return key


def tenant_key(master: bytes, tenant: str) -> bytes:
    """The tenant's key-wrapping key: HKDF-SHA256 of the master key, bound to the tenant."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"lepton-ingest",
        info=b"lepton tenant key v1\x00" + tenant.encode(),
    ).derive(master)


def _binding(owner: str, name: str) -> bytes:
    return json.dumps([owner, name], ensure_ascii=False).encode()


def wrap_data_key(master: bytes, owner: str, name: str, data_key: bytes) -> bytes:
    """A version's data key encrypted under its tenant's key, bound to the dataset."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(tenant_key(master, owner)).encrypt(nonce, data_key, _binding(owner, name))


def unwrap_data_key(master: bytes, owner: str, name: str, wrapped: bytes) -> bytes:
    return AESGCM(tenant_key(master, owner)).decrypt(
        wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _binding(owner, name)
    )


def master_key_or_env(master_key: bytes | None) -> bytes:
    if master_key is not None:
        return master_key
    text = os.environ.get("LEPTON_MASTER_KEY")
    if not text:
        raise KeyUnavailable(
            "the dataset has sensitive columns; set LEPTON_MASTER_KEY to read them"
        )
    return decode_master_key(text)
